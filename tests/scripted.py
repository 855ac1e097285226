"""In-process helpers for tests that need no socket: a model that writes what it is told, and
a client that sends JSON-RPC messages straight to the dispatcher both faces use."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

from clinsum.app import App
from clinsum.jsonrpc import Session
from clinsum.mcp import build_dispatcher
from clinsum.steering import NO_STEER, Steer

GUARD = 30  # seconds: only a hang should ever reach this


class ScriptedBackend:
    """A backend that streams the chunks it was given, after any prefill."""

    name = "scripted"
    model = "scripted-1"

    def __init__(self, chunks: list[str]) -> None:
        self.chunks = chunks
        self.steers: list[Steer] = []  # what each request asked the model to avoid

    async def stream(
        self,
        messages: list[dict],
        prefill: str,
        *,
        max_tokens: int,
        on_queued: Callable[[int], None] | None = None,
        steer: Steer = NO_STEER,
    ) -> AsyncIterator[str]:
        self.steers.append(steer)
        for chunk in self.chunks[:max_tokens]:
            yield chunk

    def health(self) -> dict[str, Any]:
        return {"state": "ready"}

    async def aclose(self) -> None:
        return None


class Rpc:
    """One connection's worth of requests to a dispatcher over `app`."""

    def __init__(self, app: App) -> None:
        self.dispatcher = build_dispatcher(app)
        self.session = Session(peer="test")
        self.notes: list[tuple[str, dict[str, Any]]] = []
        self._ids = itertools.count(1)

    async def _notify(self, method: str, params: dict[str, Any]) -> None:
        self.notes.append((method, params))

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        message = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        async with asyncio.timeout(GUARD):  # a handler that hangs fails the test
            reply = await self.dispatcher.handle(message, self.session, self._notify)
        assert isinstance(reply, dict), reply
        return reply

    async def result(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        reply = await self.call(method, params)
        assert "result" in reply, reply
        return reply["result"]
