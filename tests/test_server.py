"""The real server over real WebSockets with the real embedded model and real files."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus

from clinsum.backends.base import DEFAULT_SETTINGS
from clinsum.backends.embedded import EmbeddedBackend
from testkit.fake_ollama import FakeOllama
from testkit.inprocess import Live, inprocess
from testkit.rpc import Peer, wait_until

from .conftest import CANCEL_SLACK, ServerProcess, server_args

SHORT = 24  # max_tokens for tests that only need a stream, not a full summary


@pytest.fixture
async def peer(shared_server: ServerProcess):
    p = await Peer.open(shared_server.url)
    yield p
    await p.close()


async def test_search_fetch_and_errors(peer: Peer) -> None:
    result = await peer.result("search", {"query": "diabetes", "top_k": 3})
    assert len(result["results"]) == 3
    hit = result["results"][0]
    assert set(hit) >= {"patient_id", "name", "age", "gender", "score", "matched"}
    record = (await peer.result("fetch", {"patient_id": hit["patient_id"]}))["patient"]
    assert record["name"] == hit["name"]
    assert isinstance(record["visit_history"], list) and record["visit_history"]

    unknown = await peer.call("fetch", {"patient_id": 99999})
    assert unknown["error"]["code"] == -32001
    assert "99999" in unknown["error"]["message"]


async def test_search_without_hits_says_why_and_bad_queries_are_refused(peer: Peer) -> None:
    nothing = await peer.result("search", {"query": "xenotransplantation"})
    assert nothing["results"] == [] and "No patient's record answers" in nothing["note"]
    assert "note" not in await peer.result("search", {"query": "asthma"})
    for query in ("the of and", "?!", "q"):
        reply = await peer.call("search", {"query": query})
        assert reply["error"]["code"] == -32602
        assert "has nothing to search for" in reply["error"]["message"]


@pytest.mark.parametrize(
    ("method", "params", "param"),
    [
        ("fetch", {}, "patient_id"),
        ("fetch", {"patient_id": "11"}, "patient_id"),
        ("fetch", {"patient_id": 0}, "patient_id"),
        ("fetch", {"patient_id": 2**80}, "patient_id"),
        ("fetch", {"patient_id": 1, "extra": 1}, "extra"),
        ("search", {"query": ""}, "query"),
        ("search", {"query": "x" * 501}, "query"),
        ("search", {"query": "asthma", "top_k": 51}, "top_k"),
        ("search", {"query": "asthma", "filters": {"colour": "red"}}, "filters.colour"),
        ("search", {"query": "asthma", "filters": {"min_age": "old"}}, "filters.min_age"),
        ("summarize", {"patient_id": 1, "max_tokens": 0}, "max_tokens"),
        ("save_summary", {"summary_id": 5}, "summary_id"),
    ],
)
async def test_invalid_params_name_the_parameter(
    peer: Peer, method: str, params: dict, param: str
) -> None:
    reply = await peer.call(method, params)
    assert reply["error"]["code"] == -32602
    assert f"'{param}'" in reply["error"]["message"]


async def test_protocol_errors_over_the_wire(peer: Peer) -> None:
    await peer.raw("{not json")
    assert (await peer.next_unmatched())["error"]["code"] == -32700
    await peer.raw('{"jsonrpc":"2.0","method":"nope","id":7}')
    assert (await peer.next_unmatched())["error"]["code"] == -32601
    await peer.raw("[]")
    assert (await peer.next_unmatched())["error"]["code"] == -32600
    await peer.raw('[{"jsonrpc":"2.0","method":"ping","id":"a"},{"jsonrpc":"2.0","method":"x"}]')
    assert await peer.next_unmatched() == [{"jsonrpc": "2.0", "id": "a", "result": {}}]
    # A notification for an unknown method is silently dropped; the connection stays up.
    await peer.notify("nothing/here", {})
    assert await peer.result("ping") == {}


@pytest.mark.parametrize(
    ("frame", "code"),
    [(b'{"jsonrpc":"2.0","method":"ping","id":1}', 1003), (b'"\xff\xfe"', 1007)],
    ids=["binary-frame-1003", "invalid-utf8-1007"],
)
async def test_frames_that_are_not_json_text_close_with_their_code(
    shared_server: ServerProcess, frame: bytes, code: int
) -> None:
    """A binary frame closes the connection with 1003 and a reason saying to send JSON text;
    a text frame that is not UTF-8 closes it with 1007. Mutation caught: either frame
    answered or dropped instead of closing with its code."""
    p = await Peer.open(shared_server.url)
    if code == 1003:
        await p.raw(frame)
    else:
        await p.ws.send(frame, text=True)  # bytes sent as a text frame, unchecked
    await asyncio.wait_for(p.closed.wait(), 10)
    assert p.ws.close_code == code
    if code == 1003:
        assert "JSON text" in (p.ws.close_reason or "")
    assert not p.unmatched  # nothing was answered
    other = await Peer.open(shared_server.url)  # and the server goes on serving
    assert await other.result("ping") == {}
    await other.close()


async def test_summarize_streams_every_token_in_order(
    peer: Peer, shared_server: ServerProcess
) -> None:
    rid, fut = peer.start("summarize", {"patient_id": 11, "max_tokens": 64})
    result = (await asyncio.wait_for(fut, 120))["result"]
    tokens = peer.tokens(rid)
    assert [t["index"] for t in tokens] == list(range(len(tokens)))
    assert "".join(t["token"] for t in tokens) == result["summary"]
    assert result["tokens"] == len(tokens) - 1  # index 0 is the prefill in the record's words
    record = (await peer.result("fetch", {"patient_id": 11}))["patient"]
    assert result["summary"].startswith(record["name"])
    assert result["backend"] == "embedded" and result["model"]
    for key in ("ttft_ms", "tokens_per_s", "duration_ms"):
        assert result[key] > 0
    assert set(result["grounding"]) >= {"supported", "unsupported", "missing", "coverage"}
    digest = (await peer.result("digest", {"patient_id": 11}))["digest"]
    assert result["digest"] == digest and result["style"] == "strict"
    assert shared_server.wait_for(f"Starting streaming summary generation for {record['name']}")
    assert shared_server.wait_for("Streaming complete (")


async def test_saved_row_is_exactly_the_generated_summary(tmp_path: Path, data_dir: Path) -> None:
    summaries = tmp_path / "patient_summaries.csv"
    server = ServerProcess(server_args(data_dir, summaries)).wait_ready()
    try:
        p = await Peer.open(server.url)
        result = await p.result("summarize", {"patient_id": 45, "max_tokens": 48})
        saved = await p.call("save_summary", {"summary_id": result["summary_id"]})
        if result["grounding"]["ok"]:
            assert "result" in saved, saved
        else:  # unsupported claims: saving needs a second, explicit yes
            assert saved["error"]["code"] == -32005, saved
            assert saved["error"]["data"]["unsupported"]
            saved = await p.call(
                "save_summary", {"summary_id": result["summary_id"], "force": True}
            )
        assert saved["result"]["saved"] is True
        with summaries.open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert [r["patient_id"] for r in rows] == ["45"]
        assert rows[0]["summary"] == result["summary"]
        assert rows[0]["grounded"] == str(result["grounding"]["ok"]).lower()
        unknown = await p.call("save_summary", {"summary_id": "f" * 32})
        assert unknown["error"]["code"] == -32002
        listed = await p.result("list_summaries")
        assert listed["summaries"][0]["summary"] == result["summary"]
        await p.close()
        assert server.wait_for("[CSV] Saved summary for patient 45")
    finally:
        server.stop()


@dataclass
class Model:
    """What generation the model behind an in-process server is doing."""

    live: Live
    fake: FakeOllama | None = None
    embedded: EmbeddedBackend | None = None
    held: int = 0  # the embedded backend's token count when `hold` ran

    def hold(self) -> None:
        """Hold the embedded model process still (SIGSTOP), so that a cancel lands mid-answer
        however fast the model is; `assert_stopped` lets it go again."""
        if self.embedded is not None:
            self.held = self.embedded.tokens_generated
            os.kill(self.embedded.pids()[0], signal.SIGSTOP)

    async def assert_stopped(self, seen: int) -> None:
        """The model stopped generating for the request that was cancelled or abandoned,
        after the `seen` tokens its client received."""
        live = self.live
        await wait_until(lambda: not live.app.summarizing, 10, "the summarize task to end")
        if self.fake is not None:
            fake = self.fake
            await wait_until(lambda: fake.open_streams == 0, 10, "the LLM stream to close")
            assert (fake.streams_closed_by_client, fake.streams_completed) == (1, 0)
            return
        # The process stops at its next token and says how many it sampled; without the
        # cancel it would go on to max_tokens (400: no stop strings here).
        backend = self.embedded
        assert backend is not None
        os.kill(backend.pids()[0], signal.SIGCONT)
        await wait_until(
            lambda: all(w.job is None for w in backend._workers), 10, "the model to stop"
        )
        assert backend.tokens_generated - self.held <= seen + CANCEL_SLACK


@contextlib.asynccontextmanager
async def model_server(kind: str, data_dir: Path, tmp_path: Path) -> AsyncIterator[Model]:
    """An in-process server whose model a test can watch: the embedded one (without stop
    strings, so that an answer is long; `Model.hold` makes it wait for the cancel) or a fake
    Ollama streaming 50 tokens a second."""
    if kind == "ollama":
        async with (
            FakeOllama(n_tokens=100_000, tps=50) as fake,
            inprocess(data_dir, tmp_path / "s.csv", fake.url) as live,
        ):
            yield Model(live, fake=fake)
        return
    backend = EmbeddedBackend(settings=replace(DEFAULT_SETTINGS, stop=()))
    backend.start()
    await wait_until(lambda: backend.health()["state"] == "ready", 60, "the model process")
    async with inprocess(data_dir, tmp_path / "s.csv", "", backend=backend) as live:
        yield Model(live, embedded=backend)


@pytest.mark.parametrize("kind", ["embedded", "ollama"])
async def test_cancel_stops_the_model_and_sends_no_reply(
    kind: str, data_dir: Path, tmp_path: Path
) -> None:
    """`notifications/cancelled` stops the generation at the model: the embedded worker
    samples no more tokens, the fake Ollama sees its stream closed. Mutations caught: cancel
    logs but does not stop the task; the embedded worker keeps sampling after its stream
    closed."""
    async with model_server(kind, data_dir, tmp_path) as model:
        p = await Peer.open(model.live.url)
        rid, fut = p.start("summarize", {"patient_id": 3, "max_tokens": 400})
        await wait_until(lambda: len(p.tokens(rid)) >= 4, 60, "four tokens")
        model.hold()
        await p.notify("notifications/cancelled", {"requestId": rid, "reason": "user"})
        assert await p.result("ping") == {}
        await model.assert_stopped(len(p.tokens(rid)))
        count = len(p.tokens(rid))
        await asyncio.sleep(0.3)
        assert len(p.tokens(rid)) == count
        assert not fut.done()  # no reply, as MCP says
        # The model is free for the next request.
        again = await p.result("summarize", {"patient_id": 3, "max_tokens": 2})
        assert again["tokens"] == 2
        await p.close()


@pytest.mark.parametrize("kind", ["embedded", "ollama"])
async def test_disconnect_mid_stream_stops_the_model(
    kind: str, data_dir: Path, tmp_path: Path
) -> None:
    """A client that disconnects mid-stream stops its generation at the model. Mutation
    caught: the embedded worker keeps sampling after its stream closed (and any leak of the
    LLM stream when a connection goes)."""
    async with model_server(kind, data_dir, tmp_path) as model:
        p = await Peer.open(model.live.url)
        rid, _ = p.start("summarize", {"patient_id": 7, "max_tokens": 400})
        await wait_until(lambda: len(p.tokens(rid)) >= 3, 60, "three tokens")
        model.hold()
        seen = len(p.tokens(rid))
        await p.close()
        await model.assert_stopped(seen)


async def test_ping_answers_while_ten_summaries_stream(
    peer: Peer, shared_server: ServerProcess
) -> None:
    others = [await Peer.open(shared_server.url) for _ in range(2)]
    conns = (peer, *others)
    running = []
    for i in range(10):
        running.append(conns[i % 3].start("summarize", {"patient_id": 20 + i, "max_tokens": SHORT}))
    await wait_until(lambda: any(c.notes for c in conns), 120, "a first token")
    delays = []
    for _ in range(20):
        t0 = time.perf_counter()
        assert await peer.result("ping") == {}
        delays.append(time.perf_counter() - t0)
        await asyncio.sleep(0.02)
    results = await asyncio.gather(*(asyncio.wait_for(f, 300) for _, f in running))
    assert all("result" in r for r in results)
    ids = [r["result"]["summary_id"] for r in results]
    assert len(set(ids)) == 10
    delays.sort()
    # Not a timing assertion on the model: a blocked loop would hold pings for whole tokens.
    assert delays[len(delays) // 2] < 0.25, delays
    for o in others:
        await o.close()


async def test_queued_clients_are_told_their_position(peer: Peer) -> None:
    started = [
        peer.start("summarize", {"patient_id": 30 + i, "max_tokens": SHORT}) for i in range(3)
    ]
    await asyncio.gather(*(asyncio.wait_for(f, 300) for _, f in started))
    positions = [
        m["params"]["position"]
        for _, m in peer.notes
        if m["method"] == "stream_queued" and m["params"]["request_id"] == started[2][0]
    ]
    assert positions and positions[0] >= 1


async def test_busy_beyond_max_inflight(tmp_path: Path, data_dir: Path) -> None:
    server = ServerProcess(
        server_args(data_dir, tmp_path / "s.csv", "--max-inflight", "1")
    ).wait_ready()
    try:
        p = await Peer.open(server.url)
        first_id, _ = p.start("summarize", {"patient_id": 1, "max_tokens": 200})
        second = await p.call("summarize", {"patient_id": 2, "max_tokens": SHORT})
        assert second["error"]["code"] == -32003
        assert "limit 1" in second["error"]["message"]
        await p.notify("notifications/cancelled", {"requestId": first_id})
        await p.close()
    finally:
        server.stop()


async def test_subprotocol_mcp_and_none_are_both_accepted(shared_server: ServerProcess) -> None:
    with_mcp = await Peer.open(shared_server.url, subprotocols=["mcp"])
    assert with_mcp.ws.subprotocol == "mcp"
    plain = await Peer.open(shared_server.url)
    assert plain.ws.subprotocol is None
    assert await plain.result("ping") == {}
    await with_mcp.close()
    await plain.close()


async def test_mcp_handshake_and_tools(peer: Peer) -> None:
    init = await peer.result(
        "initialize",
        {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    )
    assert init["protocolVersion"] == "2025-11-25"
    assert "tools" in init["capabilities"]
    old = await peer.result("initialize", {"protocolVersion": "2024-11-05", "capabilities": {}})
    assert old["protocolVersion"] == "2024-11-05"
    future = await peer.result("initialize", {"protocolVersion": "2099-01-01", "capabilities": {}})
    assert future["protocolVersion"] == "2025-11-25"
    await peer.notify("notifications/initialized", {})

    tools = {t["name"]: t for t in (await peer.result("tools/list"))["tools"]}
    assert set(tools) == {
        *("search", "fetch", "digest", "summarize", "check_summary"),
        *("save_summary", "list_summaries", "summary_history"),
    }
    for t in tools.values():
        assert t["inputSchema"]["type"] == "object" and t["description"]
        assert t["outputSchema"]["type"] == "object"

    found = await peer.result("tools/call", {"name": "search", "arguments": {"query": "asthma"}})
    assert found["isError"] is False
    assert json.loads(found["content"][0]["text"]) == found["structuredContent"]

    bad = await peer.result("tools/call", {"name": "fetch", "arguments": {"patient_id": -1}})
    assert bad["isError"] is True and "patient_id" in bad["content"][0]["text"]
    missing = await peer.result("tools/call", {"name": "fetch", "arguments": {"patient_id": 9999}})
    assert missing["isError"] is True and "9999" in missing["content"][0]["text"]

    unknown = await peer.call("tools/call", {"name": "drop_tables", "arguments": {}})
    assert unknown["error"]["code"] == -32602


async def test_tools_call_summarize_sends_progress(peer: Peer) -> None:
    result = await peer.result(
        "tools/call",
        {
            "name": "summarize",
            "arguments": {"patient_id": 12, "max_tokens": SHORT},
            "_meta": {"progressToken": "p-12"},
        },
    )
    progress = [
        m["params"]
        for _, m in peer.notes
        if m["method"] == "notifications/progress" and m["params"]["progressToken"] == "p-12"
    ]
    values = [p["progress"] for p in progress]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert "".join(p["message"] for p in progress) == result["structuredContent"]["summary"]


async def test_official_mcp_sdk_lists_and_calls_every_tool(shared_server: ServerProcess) -> None:
    import warnings
    from datetime import timedelta

    from mcp import ClientSession

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from mcp.client.websocket import websocket_client

        async with (
            websocket_client(shared_server.url) as (read, write),
            # Each answer from the server child within 120 s: a hang guard, not a figure.
            ClientSession(read, write, read_timeout_seconds=timedelta(seconds=120)) as session,
        ):
            init = await session.initialize()
            assert init.serverInfo.name == "clinsum"
            tools = (await session.list_tools()).tools
            assert {t.name for t in tools} >= {"search", "fetch", "summarize", "save_summary"}
            hits = await session.call_tool("search", {"query": "heart failure", "top_k": 2})
            assert not hits.isError
            pid = hits.structuredContent["results"][0]["patient_id"]
            rec = await session.call_tool("fetch", {"patient_id": pid})
            assert rec.structuredContent["patient"]["patient_id"] == pid
            seen: list[str] = []

            async def on_progress(progress: float, total: float | None, message: str | None):
                seen.append(message or "")

            summary = await session.call_tool(
                "summarize",
                {"patient_id": pid, "max_tokens": SHORT},
                progress_callback=on_progress,
            )
            assert not summary.isError
            assert "".join(seen) == summary.structuredContent["summary"]
            sid = summary.structuredContent["summary_id"]
            saved = await session.call_tool("save_summary", {"summary_id": sid, "force": True})
            assert saved.structuredContent["saved"] is True
            listed = await session.call_tool("list_summaries", {})
            assert any(int(r["patient_id"]) == pid for r in listed.structuredContent["summaries"])


async def test_sigterm_closes_connections_and_exits_zero(tmp_path: Path, data_dir: Path) -> None:
    server = ServerProcess(server_args(data_dir, tmp_path / "s.csv")).wait_ready()
    p = await Peer.open(server.url)
    rid, _ = p.start("summarize", {"patient_id": 5, "max_tokens": 400})
    await wait_until(lambda: p.tokens(rid), 60, "a first token")
    t0 = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(p.closed.wait(), 5)
    code = await asyncio.to_thread(server.proc.wait, 5)
    assert code == 0
    assert time.monotonic() - t0 < 2.5
    assert p.ws.close_code == 1001


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "patient data file not found"),
        ("patient_id,name\n1,A\n", "age"),
    ],
)
def test_bad_data_file_is_a_clear_startup_error(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    data = tmp_path / "bad.csv"
    if content is not None:
        data.write_text(content)
    server = ServerProcess(["--backend", "embedded", "--data", str(data)])
    assert server.proc.wait(60) == 2
    server.stop()
    assert expected in server.log
    assert "Traceback" not in server.log


def test_non_loopback_without_token_refuses_to_start() -> None:
    server = ServerProcess(["--host", "0.0.0.0"])
    assert server.proc.wait(60) == 2
    server.stop()
    assert "--auth-token" in server.log and "Traceback" not in server.log


async def test_bearer_token_is_required_when_set(tmp_path: Path, data_dir: Path) -> None:
    server = ServerProcess(
        server_args(data_dir, tmp_path / "s.csv", "--allowed-origin", "https://ok.example"),
        env={"MCP_AUTH_TOKEN": "s3cret-token"},
    ).wait_ready()
    try:
        for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
            with pytest.raises(InvalidStatus) as info:
                await Peer.open(server.url, headers=headers)
            assert info.value.response.status_code == 401
        good = {"Authorization": "Bearer s3cret-token"}
        p = await Peer.open(server.url, headers=good)
        assert await p.result("ping") == {}
        await p.close()
        with pytest.raises(InvalidStatus) as info:
            await Peer.open(server.url, headers={**good, "Origin": "https://evil.example"})
        assert info.value.response.status_code == 403
        p = await Peer.open(server.url, headers={**good, "Origin": "https://ok.example"})
        await p.close()
        assert "s3cret-token" not in server.log
    finally:
        server.stop()


async def test_ollama_backend_streams_and_fails_clearly(tmp_path: Path, data_dir: Path) -> None:
    """The real `ollama` client against a loopback server in Ollama's wire format."""
    from testkit.fake_ollama import FakeOllama

    from .conftest import free_port

    async with FakeOllama(tps=200) as fake:
        server = ServerProcess(
            server_args(
                data_dir,
                tmp_path / "s.csv",
                "--ollama-host",
                fake.url,
                "--llm-timeout",
                "2",
                backend="auto",
            )
        )
        await asyncio.to_thread(server.wait_ready)
        try:
            assert "LLM backend: ollama (model phi)" in server.log
            p = await Peer.open(server.url)
            rid, fut = p.start("summarize", {"patient_id": 9, "max_tokens": 64})
            result = (await asyncio.wait_for(fut, 30))["result"]
            assert result["backend"] == "ollama" and result["model"] == "phi"
            assert "".join(t["token"] for t in p.tokens(rid)) == result["summary"]
            assert server.wait_for("[OLLAMA] Streaming complete (")

            fake.error_after = 3
            failed = await p.call("summarize", {"patient_id": 9})
            assert failed["error"]["code"] == -32004
            assert fake.url in failed["error"]["message"] and "phi" in failed["error"]["message"]

            fake.error_after, fake.stall_after = None, 2
            t0 = time.monotonic()
            stalled = await p.call("summarize", {"patient_id": 9})
            elapsed = time.monotonic() - t0
            assert stalled["error"]["code"] == -32004
            assert "phi" in stalled["error"]["message"] and "nothing for 2 s" in str(stalled)
            assert 2 <= elapsed < 3, elapsed  # --llm-timeout 2, measured through the server
            assert await p.result("ping") == {}  # the server goes on serving
            await p.close()
        finally:
            server.stop()

    closed = f"http://127.0.0.1:{free_port()}"
    server = ServerProcess(
        server_args(
            data_dir,
            tmp_path / "s.csv",
            "--ollama-host",
            closed,
            "--llm-timeout",
            "2",
            backend="ollama",
        )
    )
    await asyncio.to_thread(server.wait_ready)
    try:
        p = await Peer.open(server.url)
        refused = await p.call("summarize", {"patient_id": 9}, timeout=15)
        assert refused["error"]["code"] == -32004
        assert closed.split("//")[1] in refused["error"]["message"]
        assert "phi" in refused["error"]["message"]
        assert await p.result("ping") == {}
        await p.close()
    finally:
        server.stop()
