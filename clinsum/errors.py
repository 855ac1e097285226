"""The errors every layer shares; imports nothing.

`StartupError` is raised by the access check, the app's loading and the faces' binding;
`server.main` reports its message and exits with status 2. The JSON-RPC error codes of our
own (the tools' failures a caller can act on) are listed here once, for the tools that raise
them and the client that reads them; the spec's own codes stay in `jsonrpc`.
"""

from __future__ import annotations


class StartupError(RuntimeError):
    """The server cannot start; the message tells the user what to change."""


# Our own codes, in the server-error range the spec reserves (-32000..-32099).
UNKNOWN_PATIENT = -32001
UNKNOWN_SUMMARY = -32002
BUSY = -32003
LLM_UNAVAILABLE = -32004
UNSUPPORTED_CLAIMS = -32005
SEARCH_UNAVAILABLE = -32006
SAVE_FAILED = -32007


__all__ = [
    "BUSY",
    "LLM_UNAVAILABLE",
    "SAVE_FAILED",
    "SEARCH_UNAVAILABLE",
    "UNKNOWN_PATIENT",
    "UNKNOWN_SUMMARY",
    "UNSUPPORTED_CLAIMS",
    "StartupError",
]
