"""The error every layer may raise at start-up; imports nothing.

Raised by the access check, the settings, the app's loading and the faces' binding;
`server.main` reports its message and exits with status 2.
"""

from __future__ import annotations


class StartupError(RuntimeError):
    """The server cannot start; the message tells the user what to change."""


__all__ = ["StartupError"]
