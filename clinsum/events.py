"""What a running tool reports, without I/O: `Events`, spelled on the wire by each face.

Rule 1: a tool says *what happened* (a token was generated, the request is queued); how that
is spelled on the wire (`stream_token`, MCP progress, the original tool's frame) is decided by
the face that owns the connection, in an `Events` implementation of its own.
Rule 2: this file imports nothing from the rest of the package and knows no transport; it
sits beside `jsonrpc`, whose `Call` carries the events of the request it serves.
"""

from __future__ import annotations

from typing import Protocol


class Events(Protocol):
    """What a running tool tells its caller.

    Each method may raise `asyncio.CancelledError` once nobody listens any more; the tool
    then stops its work as a cancellation would.
    """

    async def token(self, index: int, text: str) -> None:
        """Token `index` (0 is the record-written prefill) was generated."""

    async def queued(self, position: int) -> None:
        """The request waits for the model behind `position` others."""


class NoEvents:
    """For callers that only want the result (the original tool's search, tests)."""

    async def token(self, index: int, text: str) -> None:
        return None

    async def queued(self, position: int) -> None:
        return None
