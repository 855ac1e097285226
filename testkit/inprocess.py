"""In-process servers and what runs beside them, for the tests and bench/web_page.py: a fake
Ollama on its own thread, the search index loaded once per run, in-process servers whose
internals a test may count, raw WebSocket and HTTP clients, /proc counters.

The fake Ollama runs on a thread with its own event loop, so it outlives any one test's loop
(module-scoped server processes can use it) and keeps streaming on time while the test's
own loop is busy fuzzing. Its knobs (tps, stall_after, error_after, models) are plain
attributes, set from the test thread and read by the fake at each token.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx
from websockets.asyncio.client import ClientConnection, connect

from clinsum.compose import websocket
from clinsum.config import Config
from clinsum.faces import ws as ws_face
from clinsum.jsonrpc import Session
from testkit.fake_ollama import FakeOllama


class OllamaThread:
    """`FakeOllama(**knobs)` served from a daemon thread; use as a context manager."""

    def __init__(self, **knobs: Any) -> None:
        self.fake = FakeOllama(**knobs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return self.fake.url

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __enter__(self) -> OllamaThread:
        self._thread.start()
        self.run(self.fake.__aenter__())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.fake.__aexit__(None, None, None))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def reset(self, **knobs: Any) -> None:
        """Back to a healthy Ollama; then apply `knobs`."""
        self.fake.stall_after = None
        self.fake.error_after = None
        self.fake.models = ["phi:latest"]
        for key, value in knobs.items():
            setattr(self.fake, key, value)

    async def idle(self, timeout: float = 10) -> bool:
        """Whether every chat stream ends within `timeout` (polled from the caller's loop)."""
        async with asyncio.timeout(timeout):
            while self.fake.open_streams:
                await asyncio.sleep(0.02)
        return True


@functools.cache
def patients_and_index(data_path: str) -> tuple[dict, Any]:
    """The patients (any file or export the server reads) and the search index, loaded once
    per test process (~10 s)."""
    from clinsum.records import formats
    from clinsum.search import PatientIndex

    patients = formats.load(data_path).patients
    return patients, PatientIndex.open(patients, Path(data_path), show_progress=False)


class RecordingTransport(ws_face.Transport):
    """The real transport, remembering itself so a test can count its sessions."""

    instances: ClassVar[list[RecordingTransport]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        RecordingTransport.instances.append(self)


@dataclass
class Live:
    """An in-process server: its URL and the objects a test may inspect."""

    url: str
    server: Any  # websockets Server
    app: Any  # clinsum.app.App
    transport: RecordingTransport

    @property
    def sessions(self) -> dict[Any, Session]:
        return self.transport.sessions


@asynccontextmanager
async def inprocess(
    data_dir: Path,
    summaries: Path,
    ollama_url: str,
    *,
    llm_timeout: float = 10,
    max_inflight: int = 4,
    backend: Any = None,
    **config: Any,
) -> AsyncIterator[Live]:
    """`clinsum.compose.websocket` on a free loopback port, with the Ollama backend at
    `ollama_url` (or `backend`, if given) and the index shared by every in-process test.

    `data_dir` holds `patient_data.csv`, or is itself a FHIR export folder."""
    data = data_dir / "patient_data.csv"
    if not data.exists():
        data = data_dir
    app = await make_app(data, summaries, ollama_url, llm_timeout, max_inflight, backend)
    cfg = Config(port=0, data=data, summaries=summaries, max_inflight=max_inflight, **config)
    original = ws_face.Transport
    ws_face.Transport = RecordingTransport  # type: ignore[misc]
    try:
        async with websocket(cfg, app) as (server, app):
            transport = RecordingTransport.instances[-1]
            host, port = next(iter(server.sockets)).getsockname()[:2]
            yield Live(f"ws://{host}:{port}", server, app, transport)
    finally:
        ws_face.Transport = original  # type: ignore[misc]
        await app.backend.aclose()  # the face closes only a backend it built itself


async def make_app(
    data: Path,
    summaries: Path,
    ollama_url: str,
    llm_timeout: float,
    max_inflight: int,
    backend: Any = None,
) -> Any:
    """An `App` over the shared index, `backend` (default: the Ollama backend at
    `ollama_url`) and a fresh store."""
    from clinsum.app import App
    from clinsum.backends.ollama import OllamaBackend
    from clinsum.store import SummaryStore

    patients, index = await asyncio.to_thread(patients_and_index, str(data))
    store = SummaryStore(summaries)
    store.ensure_exists()
    backend = backend or OllamaBackend(ollama_url, "phi", timeout=llm_timeout)
    return App(patients, index, backend, store, max_inflight=max_inflight)


@dataclass
class LiveHttp:
    """An in-process HTTP face: its MCP endpoint and the objects a test may inspect."""

    url: str  # http://127.0.0.1:PORT/mcp
    face: Any  # clinsum.faces.http.HttpFace: connections(), sessions()
    app: Any  # clinsum.app.App


@asynccontextmanager
async def inprocess_http(
    data_dir: Path,
    summaries: Path,
    ollama_url: str,
    *,
    llm_timeout: float = 10,
    max_inflight: int = 4,
    **config: Any,
) -> AsyncIterator[LiveHttp]:
    """`clinsum.faces.http.running` on a free loopback port, like `inprocess`."""
    from clinsum.faces import http as http_face

    data = data_dir / "patient_data.csv"
    app = await make_app(data, summaries, ollama_url, llm_timeout, max_inflight)
    cfg = Config(
        port=0, http_port=0, data=data, summaries=summaries, max_inflight=max_inflight, **config
    )
    try:
        async with http_face.running(cfg, app, cfg.policy(), None) as face:
            yield LiveHttp(face.url + "/mcp", face, app)
    finally:
        await app.backend.aclose()


MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "robustness", "version": "0"},
    },
}


async def http_session(client: httpx.AsyncClient, url: str, token: str | None = None) -> dict:
    """Open an MCP session on `url` with `client`: the headers every later request sends."""
    headers = dict(MCP_HEADERS)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    reply = await client.post(url, json=INITIALIZE, headers=headers)
    assert reply.status_code == 200, (reply.status_code, reply.text)
    headers["Mcp-Session-Id"] = reply.headers["mcp-session-id"]
    headers["MCP-Protocol-Version"] = "2025-06-18"
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await client.post(url, json=note, headers=headers)).status_code == 202
    return headers


async def http_vanish_once(url: str, patient_id: int, token: str | None = None) -> None:
    """Open a session, start a long summary with progress, read two progress events, then
    drop the response stream and the connection: no DELETE, the client is just gone."""
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": "summarize",
            "arguments": {"patient_id": patient_id, "max_tokens": 1024},
            "_meta": {"progressToken": 1},
        },
    }
    async with httpx.AsyncClient(timeout=30) as client:
        headers = await http_session(client, url, token)
        seen = 0
        async with client.stream("POST", url, json=call, headers=headers) as stream:
            async for line in stream.aiter_lines():
                seen += line.startswith("data:") and "notifications/progress" in line
                if seen == 2:
                    break  # leaving the block closes the unfinished response's connection


async def ws_connect(
    url: str, token: str | None = None, headers: dict[str, str] | None = None, **kwargs: Any
) -> ClientConnection:
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return await connect(url, additional_headers=headers, max_size=None, open_timeout=10, **kwargs)


class Conn:
    """A sequential JSON-RPC client: one call at a time, stream notifications kept."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.notes: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    @classmethod
    async def open(cls, url: str, token: str | None = None) -> Conn:
        return cls(await ws_connect(url, token))

    async def reply(self, timeout: float = 30) -> Any:
        """The next frame that is not a server notification."""
        async with asyncio.timeout(timeout):
            while True:
                msg = json.loads(await self.ws.recv())
                if isinstance(msg, dict) and "method" in msg and "id" not in msg:
                    msg["_t"] = time.monotonic()  # when it arrived
                    self.notes.append(msg)
                    continue
                return msg

    async def call(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        rid = next(self._ids)
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        await self.ws.send(json.dumps(msg))
        reply = await self.reply(timeout)
        assert isinstance(reply, dict) and reply.get("id") == rid, (method, reply)
        return reply

    async def result(self, method: str, params: dict[str, Any] | None = None) -> Any:
        reply = await self.call(method, params)
        assert "result" in reply, reply
        return reply["result"]

    def tokens(self, request_id: Any) -> list[dict[str, Any]]:
        return [
            n["params"]
            for n in self.notes
            if n["method"] == "stream_token" and n["params"].get("request_id") == request_id
        ]

    async def close(self) -> None:
        await self.ws.close()


def fd_count(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_census(pid: int, server_port: int, llm_port: int) -> dict[str, int]:
    """A server process's open file descriptors by kind: `clients` (accepted connections),
    `llm` (keep-alive connections to the LLM, which come and go with the load), `index`
    (Chroma opens its SQLite file once per worker thread) and `other` (the rest)."""
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:  # closed meanwhile
            continue
    kinds: dict[str, str] = {}  # socket inode -> kind
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for row in f.readlines()[1:]:
                cols = row.split()
                local_port, remote_port = (int(c.rsplit(":", 1)[1], 16) for c in cols[1:3])
                state = cols[3]
                if remote_port == llm_port:
                    kinds[cols[9]] = "llm"
                elif local_port == server_port and state != "0A":  # 0A: listening
                    kinds[cols[9]] = "clients"
    census = {"clients": 0, "llm": 0, "index": 0, "other": 0}
    for link in links:
        if link.startswith("socket:["):
            census[kinds.get(link[8:-1], "other")] += 1
        elif link.endswith("chroma.sqlite3"):
            census["index"] += 1
        else:
            census["other"] += 1
    return census


def thread_count(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise RuntimeError(f"no Threads line for {pid}")


async def settle(predicate: Any, timeout: float = 10, step: float = 0.05) -> bool:
    """Poll `predicate()` until true or `timeout`; returns its last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (ok := predicate()) and loop.time() < deadline:
        await asyncio.sleep(step)
    return bool(ok)
