"""A raw JSON-RPC test peer: every frame visible, replies routed by id, notifications kept."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


class Peer:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.notes: list[tuple[float, dict[str, Any]]] = []
        self.replies: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self.unmatched: list[Any] = []
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
        failure: BaseException = ConnectionError("connection closed")
        try:
            async for frame in self.ws:
                msg = json.loads(frame)
                if isinstance(msg, dict) and "method" in msg:
                    self.notes.append((time.perf_counter(), msg))
                elif isinstance(msg, dict) and msg.get("id") in self.replies:
                    fut = self.replies.pop(msg["id"])
                    if not fut.done():
                        fut.set_result(msg)
                else:
                    self.unmatched.append(msg)
        except ConnectionClosed:
            pass  # an abnormal close; `ws.close_code` says which
        except Exception as exc:  # a frame that is not JSON: the test must hear of it
            failure = exc
            raise
        finally:
            self.closed.set()
            for fut in self.replies.values():
                if not fut.done():
                    fut.set_exception(failure)

    def start(
        self, method: str, params: dict[str, Any] | None = None, id: Any = None
    ) -> tuple[Any, asyncio.Future[dict[str, Any]]]:
        """Send a request without waiting; returns its id and the future of its reply."""
        rid = next(self._ids) if id is None else id
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[rid] = fut
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        send = asyncio.ensure_future(self.ws.send(json.dumps(msg)))
        self._sends.add(send)
        send.add_done_callback(self._sends.discard)
        return rid, fut

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


async def wait_until(condition: Callable[[], object], timeout: float = 30, what: str = "") -> None:
    """Poll `condition()` until true; a test that waits for something that never comes fails
    after `timeout` seconds, saying what it waited for, instead of hanging the run."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what or condition}")
        await asyncio.sleep(0.01)
