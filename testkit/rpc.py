"""Raw JSON-RPC test peers, one per transport: every message visible, replies routed by id,
notifications kept with the time they came off the wire.

`Peer` speaks over the WebSocket, `HttpPeer` over MCP Streamable HTTP (one session; each
request a POST whose answer, JSON or an event stream, is read as it arrives), `StdioPeer`
to a `mcp_server.py --stdio` child. All three have the same methods, so a test or a
benchmark section can take the face as a parameter. They are also the benchmark's clients
(bench/harness.py): `timed` gives a reply's send and arrival times.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

REPO = Path(__file__).resolve().parent.parent
# One TLS context for every HttpPeer: httpx builds a new one per client otherwise (~20 ms of
# CPU each, which a benchmark of new sessions would count), and our URLs are plain http.
_TLS = ssl.create_default_context()
PROTOCOL_VERSION = "2025-06-18"
INITIALIZE = {
    "protocolVersion": PROTOCOL_VERSION,
    "capabilities": {},
    "clientInfo": {"name": "clinsum-tests", "version": "0"},
}


def _id_of(frame: str) -> Any:
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    rid = msg.get("id") if isinstance(msg, dict) else None
    return rid if isinstance(rid, str | int | float) else None


class _Routing:
    """What every peer shares: ids, reply futures, timestamped notes. A transport supplies
    `_send(frame)` and feeds what it receives to `_received`."""

    def __init__(self) -> None:
        self.notes: list[tuple[float, dict[str, Any]]] = []
        self.replies: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self.unmatched: list[Any] = []
        self.arrived: dict[Any, float] = {}  # arrival times of the replies `timed` waits for
        self.closed = asyncio.Event()
        self._ids = itertools.count(1)
        self._sends: set[asyncio.Future[None]] = set()

    async def _send(self, frame: str) -> None:
        raise NotImplementedError

    def _received(self, now: float, data: str | bytes) -> None:
        msg = orjson.loads(data)
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

    def _gone(self, failure: BaseException | None = None) -> None:
        """No more replies: each waiting call gets `failure` (a closed connection, or the
        error that stopped the reader, which the test must hear of)."""
        self.closed.set()
        for fut in self.replies.values():
            if not fut.done():
                fut.set_exception(failure or ConnectionError("connection closed"))

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

    def start(
        self, method: str, params: dict[str, Any] | None = None, id: Any = None
    ) -> tuple[Any, asyncio.Future[dict[str, Any]]]:
        """Send a request without waiting; returns its id and the future of its reply."""
        rid, fut, frame = self._request(method, params, id)
        send = asyncio.ensure_future(self._send(frame))
        self._sends.add(send)
        send.add_done_callback(self._sends.discard)
        return rid, fut

    async def timed(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 300
    ) -> tuple[float, float, dict[str, Any]]:
        """(sent, replied, reply): perf_counter times of the send and of the reply's arrival
        (taken before it is parsed), and the whole reply."""
        rid, fut, frame = self._request(method, params)
        self.arrived[rid] = math.nan
        sent = time.perf_counter()
        try:
            await self._send(frame)
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
        await self._send(json.dumps({"jsonrpc": "2.0", "method": method, "params": params}))

    def tokens(self, request_id: Any) -> list[dict[str, Any]]:
        return [
            m["params"]
            for _, m in self.notes
            if m["method"] == "stream_token" and m["params"]["request_id"] == request_id
        ]


class Peer(_Routing):
    """Over the WebSocket: the plain methods, or MCP."""

    def __init__(self, ws: ClientConnection) -> None:
        super().__init__()
        self.ws = ws
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
                self._received(time.perf_counter(), frame)
        except ConnectionClosed:
            pass  # an abnormal close; `ws.close_code` says which
        except Exception as exc:  # a frame that is not JSON: the test must hear of it
            failure = exc
            raise
        finally:
            self._gone(failure)

    async def _send(self, frame: str) -> None:
        await self.ws.send(frame)

    async def raw(self, frame: str | bytes) -> None:
        await self.ws.send(frame)

    async def next_unmatched(self, timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        while not self.unmatched:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply")
            await asyncio.sleep(0.005)
        return self.unmatched.pop(0)

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


class HttpPeer(_Routing):
    """Over MCP Streamable HTTP: `open` initializes a session; every request is a POST and
    its answer is read as it arrives (progress events first, then the result)."""

    def __init__(self, client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
        super().__init__()
        self.client = client
        self.url = url
        self.headers = headers
        self.statuses: list[int] = []  # of every POST, in order

    @classmethod
    async def open(cls, url: str, headers: dict[str, str] | None = None) -> HttpPeer:
        """`url` is the MCP endpoint (http://HOST:PORT/mcp).

        Raises:
            ConnectionError: the server did not open a session.
        """
        client = httpx.AsyncClient(timeout=httpx.Timeout(300, connect=10), verify=_TLS)
        base = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            **(headers or {}),
        }
        peer = cls(client, url, base)
        reply = await peer.call("initialize", INITIALIZE, timeout=30)
        if "result" not in reply or "mcp-session-id" not in peer.headers:
            await client.aclose()
            raise ConnectionError(f"no MCP session from {url}: {reply}")
        peer.headers["MCP-Protocol-Version"] = PROTOCOL_VERSION
        await peer.notify("notifications/initialized", {})
        return peer

    async def _send(self, frame: str) -> None:
        # The answer comes back on this POST's own response: read it in a task of its own,
        # so several requests can be in flight at once, as on a socket.
        post = asyncio.ensure_future(self._post(frame))
        self._sends.add(post)
        post.add_done_callback(self._sends.discard)

    async def _post(self, frame: str) -> None:
        why = "no reply in the answer"
        try:
            async with self.client.stream(
                "POST", self.url, content=frame, headers=self.headers
            ) as resp:
                self.statuses.append(resp.status_code)
                if "mcp-session-id" in resp.headers:
                    self.headers["mcp-session-id"] = resp.headers["mcp-session-id"]
                if resp.headers.get("content-type", "").startswith("text/event-stream"):
                    async for line in resp.aiter_lines():
                        if line.startswith("data:"):
                            self._received(time.perf_counter(), line[5:])
                else:
                    body = await resp.aread()
                    now = time.perf_counter()
                    try:
                        if body.strip():
                            self._received(now, body)
                    except orjson.JSONDecodeError:  # a plain-text refusal (404, 415, ...)
                        text = body.decode(errors="replace")
                        self.unmatched.append({"status": resp.status_code, "body": text})
                why = f"HTTP {resp.status_code} with no reply to this request"
        except httpx.HTTPError as exc:
            why = f"HTTP request failed: {exc!r}"
        finally:
            # Whatever the answer was, a request still waiting has none coming.
            rid = _id_of(frame)
            fut = self.replies.get(rid) if rid is not None else None
            if fut is not None and not fut.done():
                del self.replies[rid]
                fut.set_exception(ConnectionError(why))

    async def close(self) -> None:
        """End the session (DELETE), as a well-behaved client does."""
        with contextlib.suppress(httpx.HTTPError):
            await self.client.delete(self.url, headers=self.headers, timeout=10)
        for task in list(self._sends):
            task.cancel()
        await self.client.aclose()


class StdioPeer(_Routing):
    """To `mcp_server.py --stdio ARGS` as a child process: newline-delimited JSON-RPC on its
    stdin and stdout; its log goes to `stderr` (a file, or discarded)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        super().__init__()
        self.proc = proc
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls, args: Sequence[str], stderr: Any = subprocess.DEVNULL, initialize: bool = True
    ) -> StdioPeer:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(REPO / "mcp_server.py"),
            "--stdio",
            *args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=REPO,
            limit=1 << 24,
        )
        peer = cls(proc)
        if initialize:
            await peer.result("initialize", INITIALIZE, timeout=60)
            await peer.notify("notifications/initialized", {})
        return peer

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while line := await self.proc.stdout.readline():
                self._received(time.perf_counter(), line)
        finally:
            self._gone()

    async def _send(self, frame: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(frame.encode() + b"\n")
        await self.proc.stdin.drain()

    async def close(self) -> int:
        """Close stdin (the host is done) and wait for the exit code; kill after 10 s."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            return await asyncio.wait_for(self.proc.wait(), 10)
        finally:
            self._reader.cancel()
