"""Fuzzed input, and the server survives it: seeded hostile WebSocket frames
(tests/fuzz_frames.py) at a pool server while a well-behaved client streams on, and the same as
HTTP requests at the Streamable HTTP face (issue #11). Every reply is one the spec allows, no
connection or thread is left behind, no traceback reaches the log.

One of the robustness tests: tests/server_pool.py says how they run (sizes, the report).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from testkit.inprocess import (
    Conn,
    OllamaThread,
    fd_census,
    fd_count,
    http_session,
    inprocess_http,
    settle,
    thread_count,
    ws_connect,
)
from testkit.rpc import HttpPeer

from .fuzz_frames import PARSE as PARSE_ERROR
from .fuzz_frames import SDK_CODES, Expect, Frame, Fuzzer, HttpCase, HttpFuzzer
from .server_pool import TOKEN, Pool

if TYPE_CHECKING:
    from .stress_report import Report

pytest_plugins = ["tests.stress_report", "tests.server_pool"]


# Every error code the README lists, except -32603: an internal error is a bug by definition.
KNOWN_CODES = {-32700, -32600, -32601, -32602, *range(-32007, -32000)}
BAD_LOG = ("Traceback", "Logging error", "Task exception was never retrieved", "internal error")


# ----- fuzz ----------------------------------------------------------------------------------


@dataclass
class FuzzStats:
    frames: int = 0
    reconnects: int = 0
    closes: dict[int, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    victim_summaries: int = 0
    victim_tokens: int = 0

    def fail(self, frame: Frame, why: str, got: Any = None) -> None:
        if len(self.failures) < 30:
            text = repr(got)
            got_text = text if len(text) < 300 else text[:300] + "..."
            self.failures.append(f"[{frame.label}] {why}: sent {frame.preview()} got {got_text}")


def check_response(reply: Any, expect: Expect) -> str | None:
    """Why `reply` is not what `expect` allows, or None."""
    if not isinstance(reply, dict) or reply.get("jsonrpc") != "2.0" or "id" not in reply:
        return "not a JSON-RPC response"
    if ("result" in reply) == ("error" in reply):
        return "needs exactly one of result and error"
    if reply["id"] != expect.id or type(reply["id"]) is not type(expect.id):
        return f"wrong id (expected {expect.id!r})"
    if "error" in reply:
        err = reply["error"]
        if not isinstance(err, dict) or not isinstance(err.get("message"), str):
            return "malformed error object"
        if err.get("code") not in KNOWN_CODES:
            return f"unknown or internal error code {err.get('code')}"
        if "Traceback" in err["message"]:
            return "traceback sent to the client"
        if err["code"] not in expect.codes:
            return f"error {err['code']} where {sorted(expect.codes) or 'a result'} was due"
        return None
    if not expect.result:
        return f"a result where error {sorted(expect.codes)} was due"
    if expect.tool_error is not None and reply["result"].get("isError") is not expect.tool_error:
        return f"tools/call isError should be {expect.tool_error}"
    return None


def harvest(reply: Any, summary_ids: list[str]) -> None:
    """Keep the ids of summaries the fuzz generated: valid ids for later saves. (The server
    keeps the last 1000 summaries; the fuzz picks among the newest few.)"""
    for item in reply if isinstance(reply, list) else [reply]:
        result = item.get("result") if isinstance(item, dict) else None
        if isinstance(result, dict):
            result = result.get("structuredContent", result)
            if isinstance(result, dict) and isinstance(result.get("summary_id"), str):
                summary_ids.append(result["summary_id"])
                del summary_ids[:-10]


async def fuzz_frame(
    ws: Any, frame: Frame, stats: FuzzStats, sync: str, summary_ids: list[str]
) -> bool:
    """Send one frame and check what comes back; True when the connection is gone."""
    expect = frame.expect
    try:
        if frame.binary:
            await ws.send(frame.data, text=False)
        elif isinstance(frame.data, list):
            await ws.send(frame.data, text=True)
        elif isinstance(frame.data, bytes):
            await ws.send(frame.data, text=True)  # raw bytes in a text frame: no UTF-8 check
        else:
            await ws.send(frame.data)
    except ConnectionClosed:
        if expect.kind != "close":
            stats.fail(frame, "connection closed while sending", ws.close_code)
            return True

    async def next_reply() -> Any:
        while True:
            msg = json.loads(await ws.recv())
            if isinstance(msg, dict) and "method" in msg and "id" not in msg:
                continue  # tokens of a summary the fuzz asked for
            return msg

    try:
        async with asyncio.timeout(30):
            if frame.vanish:
                while True:  # the first token, then the client is gone without a close frame
                    msg = json.loads(await ws.recv())
                    if isinstance(msg, dict) and msg.get("method") == "stream_token":
                        break
                ws.transport.abort()
                return True
            if expect.kind == "close":
                try:
                    while True:
                        got = await ws.recv()
                        stats.fail(frame, "a reply instead of the close", got)
                except ConnectionClosed:
                    pass
                code = ws.close_code
                stats.closes[code] = stats.closes.get(code, 0) + 1
                if code != expect.close:
                    stats.fail(frame, f"close code {code}, expected {expect.close}")
                return True
            if expect.kind == "none":
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": sync, "method": "ping"}))
                reply = await next_reply()
                if reply != {"jsonrpc": "2.0", "id": sync, "result": {}}:
                    stats.fail(frame, "a reply to a notification", reply)
                return False
            reply = await next_reply()
            harvest(reply, summary_ids)
            if expect.kind == "batch":
                if not isinstance(reply, list) or len(reply) != len(expect.members):
                    stats.fail(frame, f"batch reply of {len(expect.members)} expected", reply)
                    return False
                for item, member in zip(reply, expect.members, strict=True):
                    why = check_response(item, member)
                    if why:
                        stats.fail(frame, f"batch member: {why}", item)
                return False
            why = check_response(reply, expect)
            if why:
                stats.fail(frame, why, reply)
            return False
    except ConnectionClosed:
        stats.fail(frame, "connection closed unexpectedly", ws.close_code)
        return True
    except TimeoutError:
        stats.fail(frame, "no answer within 30 s")
        ws.transport.abort()
        return True


async def fuzz_worker(
    url: str, seed: int, n: int, stats: FuzzStats, summary_ids: list[str]
) -> None:
    fuzzer = Fuzzer(seed, summary_ids)
    ws = await ws_connect(url, TOKEN)
    for i in range(n):
        frame = fuzzer.next()
        stats.frames += 1
        stats.labels[frame.label] = stats.labels.get(frame.label, 0) + 1
        if await fuzz_frame(ws, frame, stats, f"sync-{seed}-{i}", summary_ids):
            ws = await ws_connect(url, TOKEN)
            stats.reconnects += 1
    await ws.close()


async def victim(url: str, stats: FuzzStats, stop: asyncio.Event, problems: list[str]) -> None:
    """A well-behaved client streaming summaries the whole time: every token in order."""
    conn = await Conn.open(url, TOKEN)
    try:
        while not stop.is_set():
            reply = await conn.call("summarize", {"patient_id": 41, "max_tokens": 60}, 60)
            rid = reply["id"]
            if "result" not in reply:
                problems.append(f"victim got {reply}")
                continue
            tokens = conn.tokens(rid)
            if [t["index"] for t in tokens] != list(range(len(tokens))):
                problems.append("victim's tokens out of order")
            if "".join(t["token"] for t in tokens) != reply["result"]["summary"]:
                problems.append("victim's tokens do not join to its summary")
            stats.victim_summaries += 1
            stats.victim_tokens += len(tokens)
            conn.notes.clear()
    finally:
        await conn.close()


async def run_fuzz(pool: Pool, fake: OllamaThread, report: Report, frames: int, name: str) -> None:
    await pool.ensure_live()
    fake.reset(tps=40)
    server = pool.members[0]
    pid, first_line = server.proc.pid, len(server.lines)
    census = functools.partial(fd_census, pid, server.port, fake.fake.port)
    # Warm up: a summary to save (the fuzz saves it by id), concurrent searches to start
    # worker threads, so fds and threads are counted in a steady state.
    warm = [await Conn.open(server.url, TOKEN) for _ in range(6)]
    done = await asyncio.gather(
        *(c.result("summarize", {"patient_id": 2, "max_tokens": 2}) for c in warm)
    )
    summary_ids = [done[0]["summary_id"]]
    await asyncio.gather(*(c.result("search", {"query": "cough"}) for c in warm))
    assert census()["clients"] >= len(warm)  # the census sees the server's connections
    for c in warm:
        await c.close()
    assert await settle(lambda: census()["clients"] == 0, 10)
    fds, threads = census(), thread_count(pid)

    stats = FuzzStats()
    stop = asyncio.Event()
    problems: list[str] = []
    t0 = time.monotonic()
    victim_task = asyncio.create_task(victim(server.url, stats, stop, problems))
    workers = 3
    await asyncio.gather(
        *(
            fuzz_worker(server.url, 1000 + w, frames // workers, stats, summary_ids)
            for w in range(workers)
        )
    )
    stop.set()
    await asyncio.wait_for(victim_task, 120)
    alive = server.proc.poll() is None
    if alive:  # the server still answers, and the connections it dropped are all gone
        conn = await Conn.open(server.url, TOKEN)
        assert await conn.result("ping") == {}
        await conn.close()
        await settle(lambda: census()["clients"] == 0 and census()["other"] <= fds["other"], 10)
    after = census() if alive else fds
    fd_delta = after["other"] - fds["other"]
    thread_delta = thread_count(pid) - threads if alive else 0
    log = "\n".join(server.lines[first_line:])
    bad_lines = [ln for ln in log.splitlines() if any(b in ln for b in BAD_LOG)]
    report.add(
        name,
        frames=stats.frames,
        reconnects=stats.reconnects,
        crashes=0 if alive else 1,
        seconds=time.monotonic() - t0,
        note=f"closes {dict(sorted(stats.closes.items()))}; victim {stats.victim_summaries} "
        f"summaries/{stats.victim_tokens} tokens; server after: {after['clients']} client "
        f"sockets, other fds {fd_delta:+d}, threads {thread_delta:+d}; "
        f"mismatches {len(stats.failures)}",
    )
    assert alive, server.log[-3000:]
    assert not stats.failures, "\n".join(stats.failures)
    assert not problems, problems
    assert stats.victim_summaries >= 1
    assert set(stats.closes) == {1003, 1007, 1009} or frames < 10_000, stats.closes
    assert not bad_lines, "\n".join(bad_lines[:10])
    # Every connection the fuzz opened (hundreds) is closed on the server's side too, and
    # nothing else piles up. (Worker threads, and Chroma's SQLite handle in each, are
    # bounded by the thread pool's size; keep-alive connections to the LLM by the load.)
    assert after["clients"] == 0 and fd_delta <= 0, (fds, after)
    assert thread_delta <= 6, thread_delta
    assert TOKEN not in log


async def test_fuzz_frames_server_survives(pool: Pool, fake: OllamaThread, report: Report) -> None:
    await run_fuzz(pool, fake, report, 10_200, "fuzz")


@pytest.mark.stress
async def test_fuzz_frames_server_survives_full(
    pool: Pool, fake: OllamaThread, report: Report
) -> None:
    await run_fuzz(pool, fake, report, 60_000, "fuzz")


# ----- the HTTP face (issue #11) -------------------------------------------------------------


def http_replies(resp: httpx.Response) -> list[Any]:
    """The JSON-RPC messages in an answer: a JSON body, or the data of an event stream."""
    kind = resp.headers.get("content-type", "")
    if kind.startswith("text/event-stream"):
        return [json.loads(ln[5:]) for ln in resp.text.splitlines() if ln.startswith("data:")]
    if kind.startswith("application/json") and resp.content.strip():
        return [resp.json()]
    return []


def check_http(case: HttpCase, resp: httpx.Response) -> str | None:
    """Why `resp` is not what `case` allows, or None."""
    if resp.status_code not in case.statuses:
        return f"status {resp.status_code}, expected {sorted(case.statuses)}"
    if "Traceback" in resp.text:
        return "traceback sent to the client"
    messages = http_replies(resp)
    replies = [m for m in messages if isinstance(m, dict) and ("result" in m or "error" in m)]
    for reply in replies:
        code = reply["error"].get("code") if "error" in reply else None
        if code is not None and code not in KNOWN_CODES | SDK_CODES:
            return f"unknown or internal error code {code}"
    if case.expect is None:
        return None
    if case.expect.codes == {PARSE_ERROR}:  # the SDK answers a parse error with no id
        return None if [r["error"]["code"] for r in replies] == [PARSE_ERROR] else "not -32700"
    if len(replies) != 1:
        return f"{len(replies)} replies"
    return check_response(replies[0], case.expect)


async def http_victim(url: str, stop: asyncio.Event, stats: FuzzStats, problems: list[str]) -> None:
    """A well-behaved MCP client streaming summaries with progress over HTTP the whole time."""
    peer = await HttpPeer.open(url, {"Authorization": f"Bearer {TOKEN}"})
    try:
        while not stop.is_set():
            params = {
                "name": "summarize",
                "arguments": {"patient_id": 41, "max_tokens": 60},
                "_meta": {"progressToken": "victim"},
            }
            reply = await peer.call("tools/call", params, 60)
            result = reply.get("result") or {}
            if "result" not in reply or result.get("isError"):
                problems.append(f"victim got {reply}")
                continue
            progress = [
                m["params"] for _, m in peer.notes if m["method"] == "notifications/progress"
            ]
            if [p["progress"] for p in progress] != list(range(1, len(progress) + 1)):
                problems.append("victim's progress out of order")
            if "".join(p["message"] for p in progress) != result["structuredContent"]["summary"]:
                problems.append("victim's progress does not join to its summary")
            stats.victim_summaries += 1
            stats.victim_tokens += len(progress)
            peer.notes.clear()
    finally:
        await peer.close()


async def run_http_fuzz(
    data_dir: Path, tmp_path: Path, fake: OllamaThread, report: Report, requests: int
) -> None:
    """The seeded fuzz over MCP Streamable HTTP: the frames of `Fuzzer` as request bodies,
    plus broken HTTP (content type, Accept, session, token, method, path, size), each with
    the status (and, where it means the same as over the WebSocket, the JSON-RPC answer) it
    is owed; a victim streams summaries all along; afterwards nothing may be left over."""
    fake.reset(tps=40)
    t0 = time.monotonic()
    async with (
        inprocess_http(data_dir, tmp_path / "s.csv", fake.url, auth_token=TOKEN) as live,
        httpx.AsyncClient(timeout=30) as client,
    ):
        headers = await http_session(client, live.url, TOKEN)
        await asyncio.sleep(0.3)
        fds, threads = fd_count(), thread_count()
        tasks = len(asyncio.all_tasks())
        stats, stop, problems = FuzzStats(), asyncio.Event(), []
        victim_task = asyncio.create_task(http_victim(live.url, stop, stats, problems))
        fuzzer = HttpFuzzer(2024 + requests, [])
        statuses: dict[int, int] = {}
        base = live.url.rsplit("/", 1)[0]
        for _ in range(requests):
            case = fuzzer.next()
            sent = {k: v for k, v in {**headers, **case.headers}.items() if v}
            try:
                resp = await client.request(
                    case.method, base + case.path, content=case.body, headers=sent
                )
            except httpx.HTTPError as exc:
                stats.failures.append(f"[{case.label}] {exc!r}: sent {case.preview()}")
                continue
            stats.frames += 1
            stats.labels[case.label] = stats.labels.get(case.label, 0) + 1
            statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
            why = check_http(case, resp)
            if why and len(stats.failures) < 30:
                stats.failures.append(
                    f"[{case.label}] {why}: sent {case.preview()} got "
                    f"{resp.status_code} {resp.text[:300]!r}"
                )
        stop.set()
        await asyncio.wait_for(victim_task, 120)
        assert (await client.delete(live.url, headers=headers)).status_code == 200
        quiet = await settle(lambda: live.face.sessions() == 0 and not live.app.summarizing, 10)
    await asyncio.sleep(0.3)
    fd_delta, thread_delta = fd_count() - fds, thread_count() - threads
    leaked = len(asyncio.all_tasks()) - tasks
    report.add(
        "fuzz, HTTP",
        frames=stats.frames,
        leaked_tasks=max(leaked, 0),
        seconds=time.monotonic() - t0,
        note=f"statuses {dict(sorted(statuses.items()))}; victim {stats.victim_summaries} "
        f"summaries/{stats.victim_tokens} tokens over HTTP; fds {fd_delta:+d}, threads "
        f"{thread_delta:+d}; mismatches {len(stats.failures)}",
    )
    assert not stats.failures, "\n".join(stats.failures)
    assert not problems, problems
    assert stats.victim_summaries >= 1
    assert quiet and leaked <= 0, (live.face.sessions(), leaked)
    assert fd_delta <= 2 and thread_delta <= 6, (fd_delta, thread_delta)


async def test_http_fuzz_server_survives(
    data_dir: Path, tmp_path: Path, fake: OllamaThread, report: Report
) -> None:
    await run_http_fuzz(data_dir, tmp_path, fake, report, 1500)


@pytest.mark.stress
async def test_http_fuzz_server_survives_full(
    data_dir: Path, tmp_path: Path, fake: OllamaThread, report: Report
) -> None:
    await run_http_fuzz(data_dir, tmp_path, fake, report, 15_000)
