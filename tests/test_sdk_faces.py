"""The SDK faces (stdio, Streamable HTTP) with the official MCP SDK's own clients.

In process first: `faces/sdk.py`'s server through the SDK's memory streams, the HTTP face's
ASGI app through `httpx.ASGITransport` (bad input, access, /healthz, /metrics) and under a
real uvicorn on a loopback port (the SDK's Streamable HTTP client); then one subprocess per
transport (`--stdio` with `stdio_client`, and a server with every face on, stopped by
SIGTERM). The model is `testkit/fake_ollama.py`, which counts the streams a client closed, so
cancellation is checked where it matters: at the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import mcp.types as types
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import McpError
from mcp.shared.memory import create_connected_server_and_client_session

from clinsum import mcp as dialect
from clinsum.app import App
from clinsum.backends.ollama import OllamaBackend
from clinsum.config import Config, parse_args
from clinsum.errors import StartupError
from clinsum.faces import http as http_face
from clinsum.faces.sdk import build_server
from clinsum.store import SummaryStore
from testkit.inprocess import OllamaThread, patients_and_index, settle

from .conftest import REPO, ServerProcess, read_until, server_args

SHORT = 6  # tokens per summary where the length does not matter
# The longest the SDK's client waits for any one answer from a server child: a hang guard.
CHILD_READ = timedelta(seconds=120)
BAD_ID_TEXT = "Invalid params: 'patient_id' must be at least 1, got 0"  # the WebSocket's words
TOKEN = "s3cret-token"
JSON_POST = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    },
}


@pytest.fixture(scope="module")
def ollama() -> Any:
    with OllamaThread(tps=200) as fake:
        yield fake


@pytest.fixture
def app(data_dir: Path, tmp_path: Path, ollama: OllamaThread) -> App:
    ollama.reset(tps=200)
    patients, index = patients_and_index(str(data_dir / "patient_data.csv"))
    store = SummaryStore(tmp_path / "summaries.csv")
    store.ensure_exists()
    return App(patients, index, OllamaBackend(ollama.url, "phi", timeout=10), store, max_inflight=2)


async def _progress_summary(session: ClientSession, patient_id: int) -> tuple[list[str], Any]:
    seen: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(message or "")

    result = await session.call_tool(
        "summarize", {"patient_id": patient_id, "max_tokens": SHORT}, progress_callback=on_progress
    )
    return seen, result


async def _walk_every_tool(session: ClientSession) -> None:
    """What issue #11 asks of every SDK client: list, search, a bad argument, summarize with
    progress, save; the same results and the same error text as over the WebSocket."""
    listed = (await session.list_tools()).tools
    assert [t.name for t in listed] == [t["name"] for t in dialect.tool_list()]
    assert listed[0].inputSchema == dialect.tool_list()[0]["inputSchema"]
    hits = await session.call_tool("search", {"query": "diabetes", "top_k": 2})
    assert not hits.isError and len(hits.structuredContent["results"]) == 2
    bad = await session.call_tool("fetch", {"patient_id": 0})
    assert bad.isError and bad.content[0].text == BAD_ID_TEXT
    unknown = await session.call_tool("fetch", {"patient_id": 99999})
    assert unknown.isError and "Unknown patient" in unknown.content[0].text
    pid = hits.structuredContent["results"][0]["patient_id"]
    seen, summary = await _progress_summary(session, pid)
    assert not summary.isError
    assert len(seen) == summary.structuredContent["tokens"] + 1  # + the record-written start
    assert "".join(seen) == summary.structuredContent["summary"]
    sid = summary.structuredContent["summary_id"]
    saved = await session.call_tool("save_summary", {"summary_id": sid, "force": True})
    assert saved.structuredContent == {**saved.structuredContent, "saved": True, "patient_id": pid}


async def _cancel_at_the_model(session: ClientSession, ollama: OllamaThread) -> None:
    """Cancel a running summary with `notifications/cancelled`; the model's stream must close."""
    ollama.reset(tps=20)
    closed = ollama.fake.streams_closed_by_client
    request_id = session._request_id  # the id the next request gets
    started = asyncio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if progress > 1:
            started.set()

    call = asyncio.create_task(
        session.call_tool(
            "summarize", {"patient_id": 5, "max_tokens": 400}, progress_callback=on_progress
        )
    )
    await asyncio.wait_for(started.wait(), 10)
    await session.send_notification(
        types.ClientNotification(
            types.CancelledNotification(
                params=types.CancelledNotificationParams(requestId=request_id, reason="test")
            )
        )
    )
    # SDK 1.30 still answers a cancelled request (README says so); the WebSocket does not.
    with pytest.raises(McpError, match="Request cancelled"):
        await asyncio.wait_for(call, 10)
    assert await ollama.idle(5)
    assert ollama.fake.streams_closed_by_client == closed + 1
    ollama.reset(tps=200)


# --- the SDK server in memory ------------------------------------------------------------


async def test_memory_every_tool_and_cancel(app: App, ollama: OllamaThread) -> None:
    async with create_connected_server_and_client_session(build_server(app)) as session:
        await _walk_every_tool(session)
        await _cancel_at_the_model(session, ollama)
    counted = app.metrics.exposition().decode()
    assert 'clinsum_requests_total{method="summarize",outcome="cancelled"} 1.0' in counted
    assert 'clinsum_requests_total{method="fetch",outcome="error"} 2.0' in counted


async def test_memory_max_inflight_is_per_sdk_session(app: App, ollama: OllamaThread) -> None:
    ollama.reset(tps=20)
    server = build_server(app)
    args = {"patient_id": 4, "max_tokens": 30}
    async with (
        create_connected_server_and_client_session(server) as one,
        create_connected_server_and_client_session(server) as two,
    ):
        results = await asyncio.gather(*(one.call_tool("summarize", args) for _ in range(3)))
        busy = [r for r in results if r.isError]
        assert len(busy) == 1 and busy[0].content[0].text.startswith("Busy:")
        # The other session has its own budget.
        assert not (await two.call_tool("summarize", {**args, "max_tokens": 2})).isError


async def test_memory_tools_wait_for_loading_or_say_it_failed(app: App) -> None:
    loading: asyncio.Future[App] = asyncio.get_running_loop().create_future()
    async with create_connected_server_and_client_session(build_server(loading)) as session:
        assert len((await session.list_tools()).tools) == len(dialect.tool_list())
        call = asyncio.create_task(session.call_tool("fetch", {"patient_id": 1}))
        await asyncio.sleep(0.2)
        assert not call.done()
        loading.set_result(app)
        assert (await call).structuredContent["patient"]["patient_id"] == 1
    failed: asyncio.Future[App] = asyncio.get_running_loop().create_future()
    failed.set_exception(StartupError("patient data file x.csv: no such file"))
    async with create_connected_server_and_client_session(build_server(failed)) as session:
        result = await session.call_tool("fetch", {"patient_id": 1})
        assert result.isError
        assert result.content[0].text == (
            "The server could not start: patient data file x.csv: no such file"
        )


# --- the HTTP face's ASGI app in process -------------------------------------------------


@contextlib.asynccontextmanager
async def asgi_client(
    source: Any, config: Config | None = None, ws_port: int | None = 8765
) -> AsyncIterator[httpx.AsyncClient]:
    config = config or Config()
    policy = config.policy()
    manager = StreamableHTTPSessionManager(
        build_server(source),
        security_settings=http_face.security_settings(policy),
        max_request_body_size=config.max_message_bytes,
        max_sessions=config.max_connections,
    )
    asgi = http_face.build_asgi(source, policy, manager, ws_port)
    async with (
        manager.run(),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(asgi), base_url="http://127.0.0.1:8766"
        ) as client,
    ):
        yield client


async def _open_session(client: httpx.AsyncClient) -> dict[str, str]:
    reply = await client.post("/mcp", json=INIT, headers=JSON_POST)
    assert reply.status_code == 200, reply.text
    return {**JSON_POST, "Mcp-Session-Id": reply.headers["mcp-session-id"]}


async def test_http_bad_input_gets_clean_answers(app: App) -> None:
    config = Config(max_message_bytes=4096)
    async with asgi_client(app, config) as client:
        headers = await _open_session(client)
        big = {"jsonrpc": "2.0", "id": 2, "method": "ping", "params": {"x": "y" * 5000}}
        assert (await client.post("/mcp", json=big, headers=headers)).status_code == 413
        text = {**headers, "Content-Type": "text/plain"}
        assert (await client.post("/mcp", content=b"{}", headers=text)).status_code == 415
        ping = {"jsonrpc": "2.0", "id": 3, "method": "ping"}
        assert (await client.post("/mcp", json=ping, headers=JSON_POST)).status_code == 400
        gone = {**headers, "Mcp-Session-Id": "f" * 32}
        assert (await client.post("/mcp", json=ping, headers=gone)).status_code == 404
        broken = await client.post("/mcp", content=b'{"jsonrpc": "2.0", "id": ', headers=headers)
        assert broken.status_code == 400 and broken.json()["error"]["code"] == -32700
        assert (await client.get("/nowhere")).status_code == 404
        no_sse = await client.get("/mcp", headers={**headers, "Accept": "application/json"})
        assert no_sse.status_code in (405, 406)
        # ... and the session is still served after all of that.
        reply = await client.post("/mcp", json=ping, headers=headers)
        assert reply.status_code == 200 and '"result":{}' in reply.text
        # Internal details stay private: the CSP is on every answer, errors included.
        assert "ws://127.0.0.1:8765" in broken.headers["content-security-policy"]


async def test_http_token_and_origin_and_host(app: App) -> None:
    config = Config(auth_token=TOKEN)
    async with asgi_client(app, config) as client:
        for path in ("/mcp", "/metrics"):
            # No token: 401 before anything else about the request is looked at.
            refused = await client.post(path, content=b"not json", headers={"Host": "evil"})
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == 'Bearer realm="clinsum"'
            wrong = await client.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
        assert (await client.get("/healthz")).status_code == 200  # public: what supervisors poll
        auth = {"Authorization": f"Bearer {TOKEN}"}
        evil = await client.post(
            "/mcp", json=INIT, headers={**JSON_POST, **auth, "Origin": "https://evil.example"}
        )
        assert evil.status_code == 403
        rebound = await client.post(
            "/mcp", json=INIT, headers={**JSON_POST, **auth, "Host": "evil.example:8766"}
        )
        assert rebound.status_code == 403
        ok = await client.post("/mcp", json=INIT, headers={**JSON_POST, **auth})
        assert ok.status_code == 200


async def test_http_a_lan_bind_with_a_token_serves_its_lan_names() -> None:
    """`--host 0.0.0.0 --auth-token T`, a server for the LAN: its clients name it by the
    machine's LAN name or address in `Host`, and with the token they are served; a foreign
    Origin is still refused. On a loopback bind the same Host is DNS rebinding: 403. The
    policy comes from the command line through `Config.policy()`, as the server builds it.
    Mutation caught: `check_host=True` on every bind (LAN clients refused with 403)."""
    loading: asyncio.Future[App] = asyncio.get_running_loop().create_future()  # not needed
    auth = {**JSON_POST, "Authorization": f"Bearer {TOKEN}"}
    lan = parse_args(["--host", "0.0.0.0", "--auth-token", TOKEN])
    async with asgi_client(loading, lan) as client:
        for host in ("clinsum.lan:8766", "192.168.1.20:8766"):
            served = await client.post("/mcp", json=INIT, headers={**auth, "Host": host})
            assert served.status_code == 200, (host, served.status_code, served.text)
        evil = {**auth, "Host": "clinsum.lan:8766", "Origin": "https://evil.example"}
        assert (await client.post("/mcp", json=INIT, headers=evil)).status_code == 403
    loopback = parse_args(["--auth-token", TOKEN])
    async with asgi_client(loading, loopback) as client:
        rebound = {**auth, "Host": "clinsum.lan:8766"}
        assert (await client.post("/mcp", json=INIT, headers=rebound)).status_code == 403


async def test_http_healthz_then_metrics(app: App) -> None:
    loading: asyncio.Future[App] = asyncio.get_running_loop().create_future()
    async with asgi_client(loading) as client:
        assert (await client.get("/healthz")).status_code == 503
        loading.set_result(app)
        ready = await client.get("/healthz")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ok",
            "patients": len(app.patients),
            "backend": "ollama",
            "model": "phi",
            "llm": {"state": "remote", "url": app.backend.host},  # type: ignore[attr-defined]
        }
        headers = await _open_session(client)
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "search", "arguments": {"query": "asthma"}},
        }
        assert (await client.post("/mcp", json=call, headers=headers)).status_code == 200
        scraped = await client.get("/metrics")
    failed: asyncio.Future[App] = asyncio.get_running_loop().create_future()
    failed.set_exception(StartupError("no model"))
    async with asgi_client(failed) as client:
        broken = await client.get("/healthz")
        assert broken.status_code == 503 and broken.json() == {"status": "failed"}
    assert scraped.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    body = scraped.text
    assert 'clinsum_requests_total{method="search",outcome="ok"} 1.0' in body
    for series in (
        "clinsum_tokens_generated_total",
        "clinsum_search_seconds_bucket",
        "clinsum_summary_seconds_bucket",
        "clinsum_model_queue_length",
    ):
        assert re.search(rf"^{series}(\{{.*\}})? ", body, re.M), series
    assert "clinsum_search_seconds_count 1.0" in body


# --- the HTTP face under uvicorn, with the SDK's Streamable HTTP client -------------------


@contextlib.asynccontextmanager
async def live_http(app: App, **config: Any) -> AsyncIterator[http_face.HttpFace]:
    cfg = Config(http_port=0, **config)
    async with http_face.running(cfg, app, cfg.policy(), None) as face:
        yield face


async def test_http_sdk_client_every_tool_and_cancel(app: App, ollama: OllamaThread) -> None:
    async with (
        live_http(app) as face,
        streamable_http_client(face.url + "/mcp") as (read, write, _session_id),
        ClientSession(read, write) as session,
    ):
        init = await session.initialize()
        assert init.serverInfo.name == dialect.SERVER_INFO["name"]
        assert init.instructions == dialect.INSTRUCTIONS
        await _walk_every_tool(session)
        await _cancel_at_the_model(session, ollama)
        async with httpx.AsyncClient(base_url=face.url) as scraper:
            scraped = (await scraper.get("/metrics")).text
        assert 'clinsum_open_sessions{face="http"} 1.0' in scraped
        assert 'clinsum_open_connections{face="http"} 0.0' not in scraped
    assert await settle(lambda: face.sessions() == 0)  # the client's DELETE ended it


async def test_http_progress_streams_before_the_result(app: App) -> None:
    async with live_http(app) as face, httpx.AsyncClient(base_url=face.url) as client:
        headers = await _open_session(client)
        call = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {
                "name": "summarize",
                "arguments": {"patient_id": 3, "max_tokens": SHORT},
                "_meta": {"progressToken": "p7"},
            },
        }
        reply = await client.post("/mcp", json=call, headers=headers)
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[5:]) for line in reply.text.splitlines() if line.startswith("data:")]
    *progress, result = events
    assert [p["params"]["progress"] for p in progress] == list(range(1, len(progress) + 1))
    assert result["id"] == 7
    summary = result["result"]["structuredContent"]["summary"]
    assert "".join(p["params"]["message"] for p in progress) == summary


async def test_http_dropped_stream_or_delete_stops_generation(
    app: App, ollama: OllamaThread
) -> None:
    ollama.reset(tps=20)
    long_call = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "tools/call",
        "params": {
            "name": "summarize",
            "arguments": {"patient_id": 6, "max_tokens": 400},
            "_meta": {"progressToken": 9},
        },
    }
    async with live_http(app) as face, httpx.AsyncClient(base_url=face.url) as client:
        for ending in ("drop the stream", "DELETE the session"):
            closed = ollama.fake.streams_closed_by_client
            headers = await _open_session(client)
            async with client.stream("POST", "/mcp", json=long_call, headers=headers) as stream:
                async for line in stream.aiter_lines():
                    if '"progress":3' in line.replace(" ", ""):
                        break
                if ending == "DELETE the session":
                    assert (await client.delete("/mcp", headers=headers)).status_code == 200
            assert await ollama.idle(5), ending
            assert ollama.fake.streams_closed_by_client == closed + 1, ending
        assert await settle(lambda: face.sessions() <= 1)  # only the dropped one may linger
    ollama.reset(tps=200)


async def test_http_max_connections_caps_open_mcp_sessions() -> None:
    """`--max-connections 2`: over HTTP, at most 2 MCP sessions are open at once; a third
    `initialize` gets 503 until one ends (DELETE). One client on one connection opens them
    all, so the session count answers, not uvicorn's connection limit. The face is started
    from the parsed command line, as `server.main` starts it. Mutation caught: the HTTP face
    not passing `max_sessions` (the SDK's default is 10,000)."""
    config = parse_args(["--http-port", "0", "--max-connections", "2"])
    loading: asyncio.Future[App] = asyncio.get_running_loop().create_future()  # not needed
    one_connection = httpx.Limits(max_connections=1)
    async with (
        http_face.running(config, loading, config.policy(), None) as face,
        httpx.AsyncClient(base_url=face.url, limits=one_connection, timeout=30) as client,
    ):
        first = await _open_session(client)
        await _open_session(client)
        refused = await client.post("/mcp", json=INIT, headers=JSON_POST)
        assert refused.status_code == 503, (refused.status_code, refused.text)
        assert face.sessions() == 2 and face.connections() == 1
        assert (await client.delete("/mcp", headers=first)).status_code == 200
        assert await settle(lambda: face.sessions() == 1)
        await _open_session(client)  # room again


# --- one subprocess per transport ---------------------------------------------------------


def test_claim_stdout_keeps_c_level_writes_off_the_protocol() -> None:
    """What llama.cpp or Chroma would do: write to fd 1 beneath `sys.stdout`."""
    code = (
        "import os, sys\n"
        "from clinsum.faces.stdio import claim_stdout\n"
        "fd = claim_stdout()\n"
        "os.write(1, b'C library noise\\n')\n"
        "print('a stray print')\n"
        "sys.stdout.flush()\n"
        'os.write(fd, b\'{"jsonrpc":"2.0"}\\n\')\n'
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=60, check=True
    )
    assert done.stdout == b'{"jsonrpc":"2.0"}\n'
    assert done.stderr == b"C library noise\na stray print\n"


# `mcp_server.py` as hosts run it, but its records loader first writes to fd 1 through C's
# stdio, as llama.cpp or a Chroma extension may while the server loads.
NOISY_LOADING = """
import ctypes, runpy, sys
import clinsum.records as records
libc = ctypes.CDLL(None)
load = records.load
def noisy_load(path):
    libc.puts(b"C library noise while loading")
    libc.fflush(None)
    return load(path)
records.load = noisy_load
sys.argv[0] = "mcp_server.py"
runpy.run_path("mcp_server.py", run_name="__main__")
"""


@pytest.mark.slow
def test_stdio_server_keeps_c_writes_during_loading_off_the_protocol(
    data_dir: Path, tmp_path: Path, ollama: OllamaThread
) -> None:
    """The real `--stdio` server, with a C-level write to fd 1 while it loads: stdout carries
    JSON-RPC only, up to the answer of a tool call that waited for loading, and the write
    lands on stderr. Mutation caught: `server.main` not calling `claim_stdout()` under
    `--stdio` (the write then corrupts the protocol)."""
    args = server_args(data_dir, tmp_path / "s.csv", "--stdio", "--ollama-host", ollama.url)
    args[args.index("--backend") + 1] = "ollama"
    errlog = tmp_path / "stderr.log"
    with errlog.open("wb") as err:
        server = subprocess.Popen(
            [sys.executable, "-c", NOISY_LOADING, *args],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    assert server.stdin is not None and server.stdout is not None
    fetch = {"name": "fetch", "arguments": {"patient_id": 1}}
    try:
        for message in (
            INIT,
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": fetch},
        ):
            server.stdin.write(json.dumps(message).encode() + b"\n")
        server.stdin.flush()
        lines = read_until(server.stdout, b'"id":2', timeout=120)
        server.stdin.close()
        assert server.wait(30) == 0  # stdin closed: the host is done; a hang guard only
    finally:
        server.kill()
    assert [line for line in lines if not line.startswith(b'{"')] == []  # JSON-RPC only
    assert b"C library noise while loading" in errlog.read_bytes()  # the write did happen
    replies = [json.loads(line) for line in lines]
    assert [r.get("id") for r in replies] == [1, 2]
    assert replies[1]["result"]["structuredContent"]["patient"]["patient_id"] == 1


@pytest.mark.slow
async def test_stdio_subprocess_with_the_sdk_client(
    data_dir: Path, tmp_path: Path, ollama: OllamaThread
) -> None:
    """`--stdio` started as hosts start it: the SDK's `stdio_client` with its minimal
    environment (HOME, PATH and little else). Every line on stdout must be JSON-RPC."""
    errlog = tmp_path / "stderr.log"
    extra = ("--stdio", "--ollama-host", ollama.url)
    args = server_args(data_dir, tmp_path / "summaries.csv", *extra, backend="ollama")
    params = StdioServerParameters(command=sys.executable, args=["mcp_server.py", *args], cwd=REPO)
    not_json: list[Exception] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, Exception):
            not_json.append(message)

    with errlog.open("w") as err:
        async with (
            stdio_client(params, errlog=err) as (read, write),
            ClientSession(
                read, write, read_timeout_seconds=CHILD_READ, message_handler=on_message
            ) as session,
        ):
            await asyncio.wait_for(session.initialize(), 15)
            # Answered at once: loading goes on in the background.
            assert "Server ready" not in errlog.read_text()
            await _walk_every_tool(session)
            await _cancel_at_the_model(session, ollama)
    assert not not_json
    log = errlog.read_text()
    assert "Server ready (MCP over stdio)" in log and "stdin closed" in log


def test_stdio_sigterm_while_loading_and_files_refused(data_dir: Path, tmp_path: Path) -> None:
    """SIGTERM stops `--stdio` at once, even while the model loads in a thread; stdin from a
    file (not a pipe, as hosts give) is a clear start-up error."""
    cmd = [sys.executable, "mcp_server.py", *server_args(data_dir, tmp_path / "s.csv", "--stdio")]
    server = subprocess.Popen(
        cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert server.stderr is not None
    try:
        read_until(server.stderr, b"waiting for the host's initialize", timeout=120)
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0  # stdin still open; 30 s is a hang guard, not a figure
        out, err = server.communicate(timeout=10)
    finally:
        server.kill()
    assert out == b"" and b"Server ready" not in err
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps(INIT) + "\n")
    with requests.open("rb") as stdin:
        done = subprocess.run(cmd, cwd=REPO, stdin=stdin, capture_output=True, timeout=60)
    assert done.returncode == 2
    assert b"--stdio needs stdin and stdout to be pipes" in done.stderr


@pytest.mark.slow
async def test_all_faces_subprocess_sigterm_exits_zero(
    data_dir: Path, tmp_path: Path, ollama: OllamaThread
) -> None:
    ollama.reset(tps=20)
    args = ["--ollama-host", ollama.url, "--http-port", "0"]
    server = ServerProcess(server_args(data_dir, tmp_path / "s.csv", *args, backend="ollama"))
    assert server.wait_for("HTTP face listening", 60), server.log
    url = re.search(r"HTTP face listening on (http://\S+)", server.log)
    assert url is not None
    statuses = []
    async with httpx.AsyncClient(base_url=url.group(1)) as client, asyncio.timeout(120):
        # Served while the records, the index and the model load (seconds): 503, then 200.
        while not statuses or statuses[-1] != 200:
            statuses.append((await client.get("/healthz")).status_code)
            await asyncio.sleep(0.05)
    assert statuses[0] == 503 and set(statuses) == {503, 200}
    server.wait_ready()
    async with (
        streamable_http_client(url.group(1) + "/mcp") as (read, write, _),
        ClientSession(read, write, read_timeout_seconds=CHILD_READ) as session,
    ):
        await session.initialize()
        started = asyncio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            started.set()

        call = asyncio.create_task(
            session.call_tool(
                "summarize", {"patient_id": 2, "max_tokens": 400}, progress_callback=on_progress
            )
        )
        await asyncio.wait_for(started.wait(), 10)
        server.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(server.proc.wait, 10)  # a hang guard, not a figure
        call.cancel()
        with contextlib.suppress(BaseException):
            await call
    assert code == 0
    assert server.proc.poll() == 0
    assert "Traceback" not in server.log
    ollama.reset(tps=200)
