"""A raw JSON-RPC test peer: every frame visible, replies routed by id, notifications kept.

Also the benchmark's client (bench/harness.py): notifications are timestamped as they come
off the socket, and `timed` gives a reply's send and arrival times.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections.abc import Sequence
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect


class Peer:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.notes: list[tuple[float, dict[str, Any]]] = []
        self.replies: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self.unmatched: list[Any] = []
        self.arrived: dict[Any, float] = {}  # arrival times of the replies `timed` waits for
        self.closed = asyncio.Event()
        self._ids = itertools.count(1)
        self._sends: set[asyncio.Future[None]] = set()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls,
        url: str,
        subprotocols: Sequence[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Peer:
        ws = await connect(
            url,
            subprotocols=subprotocols,  # type: ignore[arg-type]
            additional_headers=headers,
            max_size=None,
            open_timeout=10,
        )
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                now = time.perf_counter()
                msg = orjson.loads(frame)
                if isinstance(msg, dict) and "method" in msg:
                    self.notes.append((now, msg))
                elif isinstance(msg, dict) and msg.get("id") in self.replies:
                    if msg["id"] in self.arrived:
                        self.arrived[msg["id"]] = now
                    fut = self.replies.pop(msg["id"])
                    if not fut.done():
                        fut.set_result(msg)
                else:
                    self.unmatched.append(msg)
        except Exception:
            pass
        finally:
            self.closed.set()
            for fut in self.replies.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection closed"))

    def start(
        self, method: str, params: dict[str, Any] | None = None, id: Any = None
    ) -> tuple[Any, asyncio.Future[dict[str, Any]]]:
        """Send a request without waiting; returns its id and the future of its reply."""
        rid, fut, frame = self._request(method, params, id)
        send = asyncio.ensure_future(self.ws.send(frame))
        self._sends.add(send)
        send.add_done_callback(self._sends.discard)
        return rid, fut

    def _request(
        self, method: str, params: dict[str, Any] | None, id: Any = None
    ) -> tuple[Any, asyncio.Future[dict[str, Any]], str]:
        rid = next(self._ids) if id is None else id
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[rid] = fut
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        return rid, fut, json.dumps(msg)

    async def timed(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 300
    ) -> tuple[float, float, dict[str, Any]]:
        """(sent, replied, reply): perf_counter times of the send and of the reply's arrival
        (taken before it is parsed), and the whole reply."""
        rid, fut, frame = self._request(method, params)
        self.arrived[rid] = math.nan
        sent = time.perf_counter()
        try:
            await self.ws.send(frame)
            reply = await asyncio.wait_for(fut, timeout)
            return sent, self.arrived[rid], reply
        finally:
            self.arrived.pop(rid, None)

    async def call(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 120
    ) -> dict[str, Any]:
        """The whole reply object (result or error)."""
        _, fut = self.start(method, params)
        return await asyncio.wait_for(fut, timeout)

    async def result(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 120
    ) -> Any:
        reply = await self.call(method, params, timeout)
        assert "result" in reply, reply
        return reply["result"]

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "method": method, "params": params}))

    async def raw(self, frame: str | bytes) -> None:
        await self.ws.send(frame)

    async def next_unmatched(self, timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        while not self.unmatched:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply")
            await asyncio.sleep(0.005)
        return self.unmatched.pop(0)

    def tokens(self, request_id: Any) -> list[dict[str, Any]]:
        return [
            m["params"]
            for _, m in self.notes
            if m["method"] == "stream_token" and m["params"]["request_id"] == request_id
        ]

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
