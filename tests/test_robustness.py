"""The server holds up the way a trusted service must: fuzzed frames, kill -9 in the middle of
saves, several servers on one summaries file, an LLM that goes away, clients that vanish,
restarts, limits.

Each test runs at a small size in `make test`; its `stress`-marked twin runs the full size in
`make stress`. Every test adds its counts to the table printed at the end of the run
(tests/stress_report.py), before asserting, so a failure still shows what happened.

Most tests use a module-scoped pool of real `mcp_server.py` processes sharing one summaries
file, token-protected and logging at debug level, backed by a fake Ollama on its own thread
(tps 0 unless a test slows it down). Tests that count the server's own tasks and sessions
run it in-process instead.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import inspect
import itertools
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from clinsum.store import COLUMNS
from testkit.inprocess import (
    Conn,
    OllamaThread,
    fd_census,
    fd_count,
    http_session,
    http_vanish_once,
    inprocess,
    inprocess_http,
    settle,
    thread_count,
    ws_connect,
)
from testkit.rpc import HttpPeer

from .conftest import REPO, ServerProcess
from .fuzz_frames import PARSE as PARSE_ERROR
from .fuzz_frames import SDK_CODES, Expect, Frame, Fuzzer, HttpCase, HttpFuzzer

if TYPE_CHECKING:
    from .stress_report import Report

pytest_plugins = ["tests.stress_report"]

TOKEN = "tok-" + secrets.token_hex(16)
# Every error code the README lists, except -32603: an internal error is a bug by definition.
KNOWN_CODES = {-32700, -32600, -32601, -32602, *range(-32007, -32000)}
BAD_LOG = ("Traceback", "Logging error", "Task exception was never retrieved", "internal error")
SEARCHES = ("diabetes", "shortness of breath", "high blood pressure", "asthma")


# ----- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake() -> Iterator[OllamaThread]:
    """An Ollama look-alike on its own thread, shared by the module's servers."""
    with OllamaThread(n_tokens=64) as f:
        yield f


class Pool:
    """Real server processes sharing one summaries file; killed members are replaced."""

    def __init__(self, data: Path, summaries: Path, ollama_url: str, size: int) -> None:
        self.data, self.summaries, self.ollama_url = data, summaries, ollama_url
        self.size = size
        self.members: list[ServerProcess] = []
        self.retired: list[ServerProcess] = []
        self.crashes = 0  # members found dead that nobody killed

    def spawn(self) -> ServerProcess:
        return ServerProcess(
            [
                *("--backend", "ollama", "--ollama-host", self.ollama_url),
                *("--data", str(self.data), "--summaries", str(self.summaries)),
                *("--llm-timeout", "5", "--max-inflight", "8", "--log-level", "debug"),
            ],
            env={"MCP_AUTH_TOKEN": TOKEN},
        )

    def start(self) -> None:
        # One first: two servers building a missing index at once trip over each other.
        self.members = [self.spawn()]
        try:
            self.members[0].wait_ready()
            self.members += [self.spawn() for _ in range(self.size - 1)]
            for server in self.members[1:]:
                server.wait_ready()
        except BaseException:
            self.stop()
            raise

    async def replace(self, i: int) -> ServerProcess:
        self.retired.append(self.members[i])
        server = self.spawn()
        await asyncio.to_thread(server.wait_ready)
        self.members[i] = server
        return server

    async def ensure_live(self) -> None:
        for i, server in enumerate(self.members):
            if server.proc.poll() is not None:
                self.crashes += 1
                await self.replace(i)

    def log(self) -> str:
        return "\n".join(s.log for s in [*self.retired, *self.members])

    def stop(self) -> None:
        for server in self.members:
            server.stop()


@pytest.fixture(scope="module")
def pool(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory, fake: OllamaThread, report: Report
) -> Iterator[Pool]:
    size = 3 if report.stress else 2
    folder = tmp_path_factory.mktemp("pool")
    p = Pool(data_dir / "patient_data.csv", folder / "patient_summaries.csv", fake.url, size)
    p.start()
    yield p
    p.stop()


def read_rows(path: Path) -> list[dict[str, str]]:
    """Parse the summaries file strictly: right header, six cells a row, nothing torn."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f, strict=True)
        header = next(reader)
        assert tuple(header) == COLUMNS, header
        rows = []
        for cells in reader:
            assert len(cells) == len(COLUMNS), cells
            row = dict(zip(COLUMNS, cells, strict=True))
            assert row["patient_id"].isdigit() and row["grounded"] in ("true", "false"), row
            rows.append(row)
    return rows


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


# ----- the clients pass the token --------------------------------------------------------------


def run_client(url: str, *args: str, token_env: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MCP_AUTH_TOKEN"}
    env["NO_COLOR"] = "1"
    if token_env is not None:
        env["MCP_AUTH_TOKEN"] = token_env
    return subprocess.run(
        [sys.executable, str(REPO / "mcp_client.py"), "--url", url, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )


def test_client_token_flag_and_env(pool: Pool, fake: OllamaThread) -> None:
    fake.reset(tps=0)
    url = pool.members[0].url
    batch = ("--query", "diabetes", "--patients", "1", "--yes", "--json", "--max-tokens", "1")
    done = run_client(url, "--token", TOKEN, *batch)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is True and result["patients"][0]["status"] == "saved", result
    assert run_client(url, *batch, token_env=TOKEN).returncode == 0
    for args in ((), ("--token", "wrong-" + TOKEN)):
        refused = run_client(url, *args, *batch)
        assert refused.returncode == 2, refused.stderr
        assert "HTTP 401" in refused.stderr and "--token" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr


async def test_token_never_logged_even_at_debug(pool: Pool) -> None:
    url = pool.members[0].url
    near_misses = [TOKEN[:-1], TOKEN + "x", TOKEN.upper()]
    for header in [*(f"Bearer {t}" for t in near_misses), TOKEN, f"Basic {TOKEN}"]:
        with pytest.raises(InvalidStatus) as info:
            await ws_connect(url, headers={"Authorization": header})
        assert info.value.response.status_code == 401
    conn = await Conn.open(url, TOKEN)
    assert await conn.result("ping") == {}
    await conn.close()
    server = pool.members[0]
    assert server.wait_for("Refused") and server.wait_for("Client connected")
    log = pool.log()
    assert "[asyncio] Using selector" in log  # debug lines are written: the level is debug
    for secret in (TOKEN, *near_misses, TOKEN[4:]):
        assert secret not in log


# ----- saves that must survive: trackers and checks ----------------------------------------------


@dataclass
class Tracker:
    """Per patient, the text of each save by sequence number and the last one acknowledged.

    A patient saved by one client at a time has ordered saves: after a crash its row must
    hold the last acknowledged save or one issued after it. Patients in `contended` are saved
    by several clients through several servers at once: their row must be one of their saves.
    """

    contended: set[int] = field(default_factory=set)
    texts: dict[int, dict[int, str]] = field(default_factory=dict)
    issued: dict[int, int] = field(default_factory=dict)
    acked: dict[int, int] = field(default_factory=dict)
    n_acked: int = 0
    errors: list[Any] = field(default_factory=list)
    saving: dict[str, int] = field(default_factory=dict)  # url -> saves awaiting their reply

    def issue(self, patient: int) -> int:
        self.issued[patient] = seq = self.issued.get(patient, 0) + 1
        return seq

    def ack(self, patient: int, seq: int) -> None:
        self.acked[patient] = max(seq, self.acked.get(patient, 0))
        self.n_acked += 1

    def allowed(self, patient: int, since: int) -> set[str]:
        if patient in self.contended:
            since = 0
        return {t for s, t in self.texts.get(patient, {}).items() if s >= since}

    def check(self, rows: list[dict[str, str]], acked: dict[int, int]) -> list[str]:
        """What is wrong with `rows`, given `acked`: a snapshot of the acknowledged saves
        taken before the rows were read."""
        problems = []
        ids = [r["patient_id"] for r in rows]
        for pid in sorted({i for i in ids if ids.count(i) > 1}):
            problems.append(f"duplicated: patient {pid} has {ids.count(pid)} rows")
        by_id = {int(r["patient_id"]): r for r in rows}
        for patient, seq in acked.items():
            row = by_id.get(patient)
            if row is None:
                problems.append(f"lost: patient {patient}, acknowledged save {seq}: no row")
            elif row["summary"] not in self.allowed(patient, seq):
                problems.append(f"lost: patient {patient}: row older than acknowledged {seq}")
        return problems


async def saver(
    url: str,
    patients: list[int],
    tracker: Tracker,
    stop: asyncio.Event,
    rounds: int | None = None,
) -> None:
    """Summarize and save, round and round, until `stop`, `rounds` or the server is gone.
    Each save of a patient asks for a different number of tokens, so each has its own text."""
    try:
        conn = await Conn.open(url, TOKEN)
    except (OSError, InvalidStatus, TimeoutError):
        return
    try:
        for i in itertools.count():
            if stop.is_set() or i == rounds:
                break
            patient = patients[i % len(patients)]
            seq = tracker.issue(patient)
            params = {"patient_id": patient, "max_tokens": 1 + seq % 40}
            reply = await conn.call("summarize", params, timeout=30)
            if "result" not in reply:
                tracker.errors.append(reply)
                continue
            tracker.texts.setdefault(patient, {})[seq] = reply["result"]["summary"]
            sid = reply["result"]["summary_id"]
            tracker.saving[url] = tracker.saving.get(url, 0) + 1
            try:
                saved = await conn.call("save_summary", {"summary_id": sid, "force": True}, 30)
            finally:
                tracker.saving[url] -= 1
            if "result" in saved:
                tracker.ack(patient, seq)
            else:
                tracker.errors.append(saved)
    except (ConnectionClosed, ConnectionError, OSError, TimeoutError):
        pass  # the server was killed under us
    finally:
        with suppress(Exception):
            await conn.close()


async def searches(url: str) -> list[Any]:
    conn = await Conn.open(url, TOKEN)
    try:
        return [await conn.result("search", {"query": q, "top_k": 10}) for q in SEARCHES]
    finally:
        await conn.close()


async def list_rows(url: str) -> list[dict[str, str]]:
    conn = await Conn.open(url, TOKEN)
    try:
        return (await conn.result("list_summaries"))["summaries"]
    finally:
        await conn.close()


# ----- several servers on one summaries file ---------------------------------------------------


async def run_several_servers(pool: Pool, fake: OllamaThread, report: Report, rounds: int) -> None:
    await pool.ensure_live()
    fake.reset(tps=0)
    t0 = time.monotonic()
    tracker, stop = Tracker(contended={61, 62, 63}), asyncio.Event()
    own = itertools.count(31)
    jobs = []
    for server in pool.members:
        for _ in range(2):  # each server: two clients with patients of their own ...
            jobs.append(saver(server.url, [next(own), next(own)], tracker, stop, rounds))
        # ... and one saving the patients every server's client saves at the same time.
        jobs.append(saver(server.url, sorted(tracker.contended), tracker, stop, rounds))
    async with asyncio.timeout(600):
        await asyncio.gather(*jobs)
    rows = read_rows(pool.summaries)
    problems = tracker.check(rows, dict(tracker.acked))
    by_id = {int(r["patient_id"]): r["summary"] for r in rows}
    for patient, seq in tracker.acked.items():  # nothing in flight: exactly the last save
        if patient not in tracker.contended and by_id.get(patient) != tracker.texts[patient][seq]:
            problems.append(f"lost: patient {patient}: not the last acknowledged save")
    views = [await list_rows(server.url) for server in pool.members]
    ids = [r["patient_id"] for r in rows]
    report.add(
        "several servers, one file",
        acked=tracker.n_acked,
        lost=sum(p.startswith("lost") for p in problems),
        duplicated=len(ids) - len(set(ids)),
        seconds=time.monotonic() - t0,
        note=f"{len(pool.members)} servers, {len(jobs)} clients, patients "
        f"{sorted(tracker.contended)} saved through every server at once",
    )
    assert not problems, problems[:10]
    assert not tracker.errors, tracker.errors[:5]
    assert tracker.n_acked == len(jobs) * rounds
    assert all(view == rows for view in views)  # every server reads what the others wrote


async def test_several_servers_one_file(pool: Pool, fake: OllamaThread, report: Report) -> None:
    await run_several_servers(pool, fake, report, 20)


@pytest.mark.stress
async def test_several_servers_one_file_full(
    pool: Pool, fake: OllamaThread, report: Report
) -> None:
    await run_several_servers(pool, fake, report, 300)


# ----- kill -9 in the middle of saves: real servers -------------------------------------------


async def run_server_kills(pool: Pool, fake: OllamaThread, report: Report, kills: int) -> None:
    """Clients save through every server of the pool; again and again one server gets
    SIGKILL at a random moment, the file is checked, and a new server on the same files
    must serve the same search results and every acknowledged save."""
    await pool.ensure_live()
    fake.reset(tps=0)
    rng = random.Random(4242 + kills)
    t0 = time.monotonic()
    tracker, stop = Tracker(), asyncio.Event()
    baseline = await searches(pool.members[0].url)
    own = itertools.count(71)
    patients = {i: [[next(own) for _ in range(3)] for _ in range(2)] for i in range(pool.size)}
    savers: dict[int, list[asyncio.Task[None]]] = {}
    restarting: dict[int, asyncio.Task[None]] = {}
    problems: list[str] = []
    done = crashes = restarts = mid_save = 0

    def attach(i: int) -> None:
        url = pool.members[i].url
        savers[i] = [asyncio.create_task(saver(url, ps, tracker, stop)) for ps in patients[i]]

    async def restart(i: int) -> None:
        nonlocal restarts
        server = await pool.replace(i)
        acked = dict(tracker.acked)
        if await searches(server.url) != baseline:
            problems.append(f"restart {restarts}: different search results")
        problems.extend(f"restart: {p}" for p in tracker.check(await list_rows(server.url), acked))
        restarts += 1
        attach(i)

    for i in range(pool.size):
        attach(i)
    async with asyncio.timeout(120 + 40 * kills):
        while done < kills:
            for i, task in list(restarting.items()):
                if task.done():
                    del restarting[i]
                    task.result()
            live = [i for i in range(pool.size) if i not in restarting]
            if not live:
                await asyncio.wait(restarting.values(), return_when=asyncio.FIRST_COMPLETED)
                continue
            i = rng.choice(live)
            server = pool.members[i]
            before = tracker.n_acked
            await settle(lambda before=before: tracker.n_acked > before, 20)  # saves running
            await asyncio.sleep(rng.uniform(0.0, 0.6))
            if rng.random() < 0.7:  # most kills aimed at a save on its way through the server
                url = server.url
                await settle(lambda url=url: tracker.saving.get(url, 0) > 0, 5, step=0.001)
                await asyncio.sleep(rng.uniform(0.0, 0.005))
            if server.proc.poll() is not None:
                crashes += 1
            mid_save += tracker.saving.get(server.url, 0) > 0
            server.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(server.proc.wait, 10)
            done += 1
            await asyncio.wait(savers[i], timeout=30)
            acked = dict(tracker.acked)
            problems.extend(
                f"kill {done}: {p}" for p in tracker.check(read_rows(pool.summaries), acked)
            )
            restarting[i] = asyncio.create_task(restart(i))
        stop.set()
        for task in restarting.values():
            await task
        for tasks in savers.values():
            await asyncio.gather(*tasks)
    rows = read_rows(pool.summaries)
    problems.extend(f"final: {p}" for p in tracker.check(rows, dict(tracker.acked)))
    ids = [r["patient_id"] for r in rows]
    report.add(
        "kill -9 servers mid-save",
        kills=done,
        crashes=crashes + pool.crashes,
        acked=tracker.n_acked,
        lost=sum("lost" in p for p in problems),
        duplicated=len(ids) - len(set(ids)),
        seconds=time.monotonic() - t0,
        note=f"{pool.size} servers on one file, {2 * pool.size} clients; {mid_save} kills "
        f"with a save in flight; {restarts} restarts, each serving the same search results "
        "and every acknowledged save",
    )
    assert not problems, problems[:10]
    assert not tracker.errors, tracker.errors[:5]
    assert restarts == done and crashes == 0
    # Floors, so that a server whose saves never return cannot pass by losing nothing: the
    # full run acknowledges ~35 saves per kill and lands ~80% of its kills mid-save.
    assert tracker.n_acked >= 5 * kills, tracker.n_acked
    assert mid_save >= 1


async def test_kill_9_servers_mid_save(pool: Pool, fake: OllamaThread, report: Report) -> None:
    """Mutation caught (by the floors): `save_summary` hangs for ever."""
    await run_server_kills(pool, fake, report, 5)


@pytest.mark.stress
async def test_kill_9_servers_mid_save_full(pool: Pool, fake: OllamaThread, report: Report) -> None:
    await run_server_kills(pool, fake, report, 100)


# ----- kill -9 in the middle of saves: the store alone, many times -----------------------------

# The real `SummaryStore.save` in a loop, acknowledging each save on stdout: what a server
# does when it saves, without the seconds a server needs to start. "try" is printed (and
# flushed) before each save, "ack" after it returns.
STORE_CHILD = r"""
import sys
from clinsum.store import SummaryStore

path, first, count, seq, shared = sys.argv[1], *map(int, sys.argv[2:6])
store = SummaryStore(path)
store.ensure_exists()
print("ready", flush=True)
while True:
    for pid in [*range(first, first + count), shared]:
        seq += 1
        print(f"try {pid} {seq}", flush=True)
        summary = store_text(pid, seq)
        store.save(pid, f"Patient {pid}", summary, "m", "2026-01-01T00:00:00Z", seq % 2 == 0)
        print(f"ack {pid} {seq}", flush=True)
"""


def store_text(pid: int, seq: int) -> str:
    return f'summary of {pid} #{seq}, with "quotes", a comma\nand a newline ' + "x" * (seq % 997)


@dataclass
class Slot:
    """One writer child at a time: its patients and how far its saves got."""

    first: int
    count: int
    seq: int = 0  # the highest sequence number it tried
    proc: Any = None
    last: str = ""  # its last line: "try" means killed in the middle of a save


async def run_store_kills(tmp_path: Path, report: Report, kills: int) -> None:
    path = tmp_path / "patient_summaries.csv"
    rng = random.Random(7 + kills)
    shared = 999  # saved by every child
    slots = [Slot(first=1 + 10 * k, count=5) for k in range(3)]
    acked: dict[int, int] = {}  # patient -> highest acknowledged sequence number
    acks = shared_acks = done = mid_save = 0
    problems: list[str] = []
    t0 = time.monotonic()

    async def read_lines(slot: Slot) -> None:
        nonlocal acks, shared_acks
        async for raw in slot.proc.stdout:
            line = raw.decode()
            if not line.endswith("\n"):
                break  # cut short by the kill
            slot.last = line
            word, *nums = line.split()
            if word == "try":
                slot.seq = max(slot.seq, int(nums[1]))
            elif word == "ack":
                pid, seq = map(int, nums)
                acks += 1
                if pid == shared:
                    shared_acks += 1
                else:
                    acked[pid] = max(seq, acked.get(pid, 0))

    def check(rows: list[dict[str, str]], snapshot: dict[int, int], where: str) -> None:
        ids = [r["patient_id"] for r in rows]
        if len(ids) != len(set(ids)):
            problems.append(f"{where}: duplicated rows")
        by_id = {int(r["patient_id"]): r["summary"] for r in rows}
        for pid, summary in by_id.items():
            found = re.fullmatch(r"summary of (\d+) #(\d+),.*", summary, re.DOTALL)
            if not found or summary != store_text(pid, int(found[2])):
                problems.append(f"{where}: torn row for patient {pid}")
        for pid, seq in snapshot.items():
            found = re.search(r"#(\d+),", by_id.get(pid, ""))
            if not found or int(found[1]) < seq:
                problems.append(f"{where}: lost acknowledged save {seq} of patient {pid}")
        if shared_acks and shared not in by_id:
            problems.append(f"{where}: lost the shared patient")

    async def cycle(slot: Slot) -> None:
        nonlocal done, mid_save
        while done < kills:
            slot.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                inspect.getsource(store_text) + STORE_CHILD,
                str(path),
                str(slot.first),
                str(slot.count),
                str(slot.seq),
                str(shared),
                stdout=subprocess.PIPE,
                cwd=REPO,
            )
            reader = asyncio.create_task(read_lines(slot))
            async with asyncio.timeout(60):
                while not slot.last:
                    await asyncio.sleep(0.005)
            await asyncio.sleep(rng.uniform(0.0, 0.05))
            slot.proc.kill()
            async with asyncio.timeout(30):  # a killed child's pipe ends: a hang guard only
                await slot.proc.wait()
                await reader
            done += 1
            mid_save += slot.last.startswith("try")
            snapshot = dict(acked)
            check(read_rows(path), snapshot, f"kill {done}")
            slot.last = ""

    await asyncio.gather(*(cycle(slot) for slot in slots))
    orphans = len(list(tmp_path.glob(".patient_summaries.csv.*.tmp")))
    from clinsum.store import SummaryStore

    SummaryStore(path).ensure_exists()  # what the next server start does
    left = len(list(tmp_path.glob(".patient_summaries.csv.*.tmp")))
    rows = read_rows(path)
    check(rows, dict(acked), "final")
    report.add(
        "kill -9 store writers mid-save",
        kills=done,
        acked=acks,
        lost=sum("lost" in p for p in problems),
        duplicated=len(rows) - len({r["patient_id"] for r in rows}),
        seconds=time.monotonic() - t0,
        note=f"3 writer processes on one file; {mid_save} kills landed inside a save; "
        f"{orphans} temp files found after the last kills, {left} after the next start",
    )
    assert not problems, problems[:10]
    assert mid_save > 0 and acks > kills
    assert left == 0


async def test_kill_9_store_writers_mid_save(tmp_path: Path, report: Report) -> None:
    await run_store_kills(tmp_path, report, 120)


@pytest.mark.stress
async def test_kill_9_store_writers_mid_save_full(tmp_path: Path, report: Report) -> None:
    await run_store_kills(tmp_path, report, 600)


# ----- clients that vanish (in-process: the server's own tasks are counted) -------------------


async def vanish_once(url: str, patient_id: int) -> None:
    """Start a long summary, wait for two tokens, then drop the TCP connection: no close
    frame, no FIN handshake, just gone."""
    ws = await ws_connect(url)
    request = {"patient_id": patient_id, "max_tokens": 1024}
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "summarize", "params": request}))
    seen = 0
    async with asyncio.timeout(30):
        while seen < 2:
            msg = json.loads(await ws.recv())
            seen += msg.get("method") == "stream_token"
    ws.transport.abort()


async def run_vanishing(
    data_dir: Path,
    tmp_path: Path,
    fake: OllamaThread,
    report: Report,
    caplog: pytest.LogCaptureFixture,
    clients: int,
) -> None:
    caplog.set_level("INFO")
    fake.reset(tps=50, n_tokens=100_000)  # no summary can finish before its client is gone
    t0 = time.monotonic()
    async with inprocess(data_dir, tmp_path / "s.csv", fake.url) as live:
        # Warm-up: one full summary and one vanish, so pools and caches are in steady state.
        conn = await Conn.open(live.url)
        await conn.result("summarize", {"patient_id": 5, "max_tokens": 3})
        await conn.close()
        await vanish_once(live.url, 5)

        def quiet() -> bool:
            return (
                not live.sessions
                and not live.server.all_connections
                and not live.app.summarizing
                and not live.app._background
                and fake.fake.open_streams == 0
            )

        assert await settle(quiet, 20)
        await asyncio.sleep(0.3)
        tasks, fds, threads = len(asyncio.all_tasks()), fd_count(), thread_count()
        closed, completed = fake.fake.streams_closed_by_client, fake.fake.streams_completed
        kept = len(live.app.summaries)
        cancelled_logs = sum("cancelled after" in r.getMessage() for r in caplog.records)

        for start in range(0, clients, 10):  # ten at a time
            await asyncio.gather(
                *(vanish_once(live.url, 1 + i % 100) for i in range(start, start + 10))
            )
        settled = await settle(quiet, 30)
        await asyncio.sleep(0.3)  # the last done-callbacks
        leaked = len(asyncio.all_tasks()) - tasks
        fd_delta, thread_delta = fd_count() - fds, thread_count() - threads
        stopped = fake.fake.streams_closed_by_client - closed
        cancelled = sum("cancelled after" in r.getMessage() for r in caplog.records)
        cancelled -= cancelled_logs
        report.add(
            "vanishing clients",
            reconnects=clients,
            leaked_tasks=max(leaked, 0),
            seconds=time.monotonic() - t0,
            note=f"{clients} clients aborted mid-stream; generations stopped {stopped}, "
            f"cancel logged {cancelled}; open LLM streams after: {fake.fake.open_streams}; "
            f"sessions {len(live.sessions)}; fds {fd_delta:+d}, threads {thread_delta:+d}",
        )
        assert settled, (len(live.sessions), live.app.summarizing, fake.fake.open_streams)
        assert leaked <= 0, [t for t in asyncio.all_tasks()]
        assert stopped == clients and cancelled == clients
        assert fake.fake.streams_completed == completed  # no generation ran on unheard
        assert len(live.app.summaries) == kept  # and nothing of theirs can be saved
        assert fd_delta <= 2 and thread_delta <= 2, (fd_delta, thread_delta)
        conn = await Conn.open(live.url)
        assert await conn.result("ping") == {}
        await conn.close()


async def test_vanishing_clients_leak_nothing(
    data_dir: Path,
    tmp_path: Path,
    fake: OllamaThread,
    report: Report,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await run_vanishing(data_dir, tmp_path, fake, report, caplog, 100)


@pytest.mark.stress
async def test_vanishing_clients_leak_nothing_full(
    data_dir: Path,
    tmp_path: Path,
    fake: OllamaThread,
    report: Report,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await run_vanishing(data_dir, tmp_path, fake, report, caplog, 1000)


# ----- the LLM goes away ---------------------------------------------------------------------


async def test_llm_failures_fail_clearly_while_others_stream(
    data_dir: Path, tmp_path: Path, fake: OllamaThread, report: Report
) -> None:
    """Ollama refuses the model, errors mid-stream, stalls: the caller gets -32004 naming the
    host and model within the timeout; another client streams on meanwhile; nothing of the
    failed summaries can be saved; the failed calls leave no slot taken."""
    fake.reset(tps=50, n_tokens=100_000)
    timeout = 1.5
    summaries = tmp_path / "s.csv"
    t0 = time.monotonic()
    async with inprocess(
        data_dir, summaries, fake.url, llm_timeout=timeout, max_inflight=1
    ) as live:
        streamer, caller = await Conn.open(live.url), await Conn.open(live.url)
        # One long summary (400 tokens, 8 s) spanning every failure below; the knobs only
        # touch streams that reach them, and this one is past them all once it has 5 tokens.
        streaming = asyncio.create_task(
            streamer.call("summarize", {"patient_id": 41, "max_tokens": 400}, 60)
        )
        assert await settle(lambda: len(streamer.notes) > 5, 20)
        host = fake.url.split("//")[1]
        failures = []
        for knob, value, words in (
            ("models", [], "not pulled"),
            ("error_after", 3, "failed mid-answer"),
            ("stall_after", 2, f"sent nothing for {timeout:g} s"),
        ):
            setattr(fake.fake, knob, value)
            begin = time.monotonic()
            reply = await caller.call("summarize", {"patient_id": 7}, timeout=timeout + 10)
            end = time.monotonic()
            fake.reset()
            failures.append(reply)
            assert reply["error"]["code"] == -32004, reply
            message = reply["error"]["message"]
            assert words in message and "phi" in message, message
            assert host in message or knob == "models", message
            if knob == "stall_after":  # --llm-timeout, to within a second
                assert timeout <= end - begin < timeout + 1, end - begin
            # The other client received tokens while this one was failing.
            during = [n for n in streamer.notes if begin <= n["_t"] <= end]
            assert during or end - begin < 0.1, knob
            assert await caller.result("ping") == {}
        assert not streaming.done(), "the long summary ended before the failures did"
        reply = await asyncio.wait_for(streaming, 60)
        tokens = streamer.tokens(reply["id"])
        assert [t["index"] for t in tokens] == list(range(len(tokens))) and len(tokens) == 401
        assert "".join(t["token"] for t in tokens) == reply["result"]["summary"]
        # Nothing of patient 7 was kept, so nothing can be saved; its slot is free again.
        assert all(s.patient.patient_id != 7 for s in live.app.summaries.values())
        assert not live.app.summarizing
        ok = await caller.result("summarize", {"patient_id": 7, "max_tokens": 3})
        saved = await caller.result("save_summary", {"summary_id": ok["summary_id"], "force": True})
        assert saved["saved"] is True
        assert [r["patient_id"] for r in read_rows(summaries)] == ["7"]
        await fake.idle()
        for c in (streamer, caller):
            await c.close()
    report.add(
        "LLM goes away",
        seconds=time.monotonic() - t0,
        note=f"{len(failures)} failures (404 model, error mid-stream, stall) answered -32004 "
        "while another client streamed 400 tokens in order",
    )


async def test_llm_refused_fails_clearly_and_saves_nothing(data_dir: Path, tmp_path: Path) -> None:
    from .conftest import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    async with inprocess(data_dir, tmp_path / "s.csv", closed, llm_timeout=2) as live:
        caller, other = await Conn.open(live.url), await Conn.open(live.url)
        failing = asyncio.create_task(caller.call("summarize", {"patient_id": 9}, timeout=15))
        hits = await other.result("search", {"query": "asthma", "top_k": 3})
        record = await other.result("fetch", {"patient_id": hits["results"][0]["patient_id"]})
        assert record["patient"]["name"] == hits["results"][0]["name"]
        reply = await failing
        assert reply["error"]["code"] == -32004
        assert closed.split("//")[1] in reply["error"]["message"]
        assert "phi" in reply["error"]["message"]
        assert not live.app.summaries and not live.app.summarizing
        assert (await caller.result("list_summaries"))["summaries"] == []
        for c in (caller, other):
            await c.close()


# ----- limits --------------------------------------------------------------------------------


async def test_frame_size_limit_is_configurable(
    data_dir: Path, tmp_path: Path, fake: OllamaThread
) -> None:
    async with inprocess(data_dir, tmp_path / "s.csv", fake.url, max_message_bytes=4096) as live:
        ws = await ws_connect(live.url)
        ping = '{"jsonrpc":"2.0","id":1,"method":"ping"}'
        await ws.send(ping.ljust(4096))  # exactly the limit
        assert json.loads(await ws.recv())["result"] == {}
        await ws.send(ping.ljust(4097))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1009
        ws = await ws_connect(live.url)  # the server goes on
        await ws.send(ping)
        assert json.loads(await ws.recv())["result"] == {}
        await ws.close()


async def test_max_inflight_is_per_connection_and_slots_come_back(
    data_dir: Path, tmp_path: Path, fake: OllamaThread
) -> None:
    fake.reset(tps=20, n_tokens=100_000)
    async with inprocess(data_dir, tmp_path / "s.csv", fake.url, max_inflight=2) as live:
        a, b = await Conn.open(live.url), await Conn.open(live.url)
        for i in (1, 2):
            await a.ws.send(
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": f"long-{i}",
                        "method": "summarize",
                        "params": {"patient_id": i, "max_tokens": 1024},
                    }
                )
            )
        assert await settle(lambda: sum(live.app.summarizing.values()) == 2, 10)
        busy = await a.call("summarize", {"patient_id": 3, "max_tokens": 2})
        assert busy["error"]["code"] == -32003 and "limit 2" in busy["error"]["message"]
        # Another connection has its own two slots.
        assert (await b.result("summarize", {"patient_id": 4, "max_tokens": 2}))["summary_id"]
        # A cancelled summary gives its slot back (and gets no reply, as MCP says).
        await a.ws.send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": "long-1"},
                }
            )
        )
        assert await settle(lambda: sum(live.app.summarizing.values()) == 1, 10)
        ok = await a.call("summarize", {"patient_id": 3, "max_tokens": 2})
        assert "result" in ok, ok
        # So does a failed one.
        fake.fake.error_after = 0
        failed = await a.call("summarize", {"patient_id": 3, "max_tokens": 2})
        assert failed["error"]["code"] == -32004
        fake.reset()
        assert "result" in await a.call("summarize", {"patient_id": 3, "max_tokens": 2})
        await a.close()
        await b.close()
        assert await settle(lambda: not live.app.summarizing, 10)


async def test_max_connections_answers_503(
    data_dir: Path, tmp_path: Path, fake: OllamaThread
) -> None:
    async with inprocess(data_dir, tmp_path / "s.csv", fake.url, max_connections=3) as live:
        conns = [await Conn.open(live.url) for _ in range(3)]
        with pytest.raises(InvalidStatus) as info:
            await ws_connect(live.url)
        assert info.value.response.status_code == 503
        assert len(live.sessions) == 3  # refused before any JSON-RPC: no session at all
        await conns.pop().close()
        assert await settle(lambda: len(live.sessions) == 2, 10)
        conns.append(await Conn.open(live.url))
        assert await conns[-1].result("ping") == {}
        for c in conns:
            await c.close()


async def test_a_flood_from_one_client_does_not_hold_up_others(
    data_dir: Path, tmp_path: Path, fake: OllamaThread
) -> None:
    """One 40 KB frame can carry hundreds of searches (a batch); they wait for each other,
    not ahead of every other client's search in the shared thread pool."""
    async with inprocess(data_dir, tmp_path / "s.csv", fake.url) as live:
        flooder = await ws_connect(live.url)
        batch = [
            {"jsonrpc": "2.0", "id": i, "method": "search", "params": {"query": f"pain {i}"}}
            for i in range(400)
        ]
        await flooder.send(json.dumps(batch))
        flood = asyncio.create_task(flooder.recv())
        assert await settle(lambda: bool(live.app._threads), 10)  # the flood is under way
        other = await Conn.open(live.url)
        for query in SEARCHES:
            assert (await other.result("search", {"query": query}))["results"]
        assert not flood.done()  # served while the flood was still running
        assert len(json.loads(await asyncio.wait_for(flood, 300))) == len(batch)
        await other.close()
        await flooder.close()


async def test_query_and_top_k_bounds(data_dir: Path, tmp_path: Path, fake: OllamaThread) -> None:
    async with inprocess(data_dir, tmp_path / "s.csv", fake.url) as live:
        c = await Conn.open(live.url)
        longest = ("chest pain and shortness of breath " * 15)[:500]
        assert len((await c.result("search", {"query": longest, "top_k": 3}))["results"]) <= 3
        assert len((await c.result("search", {"query": "cough", "top_k": 1}))["results"]) == 1
        assert len((await c.result("search", {"query": "cough", "top_k": 50}))["results"]) <= 50
        for params, name in (
            ({"query": longest + "x"}, "query"),
            ({"query": " \t\n"}, "query"),
            ({"query": "cough", "top_k": 0}, "top_k"),
            ({"query": "cough", "top_k": -3}, "top_k"),
            ({"query": "cough", "top_k": 2**63}, "top_k"),
            ({"query": "cough", "top_k": 5.0}, "top_k"),
            ({"query": "cough", "top_k": True}, "top_k"),
            ({"query": "cough", "top_k": "5"}, "top_k"),
        ):
            reply = await c.call("search", params)
            assert reply["error"]["code"] == -32602 and f"'{name}'" in reply["error"]["message"]
        schema = {t["name"]: t for t in (await c.result("tools/list"))["tools"]}["search"]
        props = schema["inputSchema"]["properties"]
        assert props["query"]["maxLength"] == 500
        assert (props["top_k"]["minimum"], props["top_k"]["maximum"]) == (1, 50)
        await c.close()


# ----- restart -------------------------------------------------------------------------------


async def test_restart_serves_same_search_and_summaries(
    data_dir: Path, tmp_path: Path, fake: OllamaThread
) -> None:
    """The real start-up path (`running` builds the app) twice on the same files."""
    from clinsum.config import Config
    from clinsum.faces.ws import running

    fake.reset(tps=0)
    config = Config(
        port=0,
        backend="ollama",
        ollama_host=fake.url,
        data=data_dir / "patient_data.csv",
        summaries=tmp_path / "patient_summaries.csv",
        show_progress=False,
    )

    async def snapshot(url: str) -> tuple[list, list]:
        c = await Conn.open(url)
        found = [await c.result("search", {"query": q, "top_k": 10}) for q in SEARCHES]
        rows = (await c.result("list_summaries"))["summaries"]
        await c.close()
        return found, rows

    async with running(config) as (server, _app):
        url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"
        c = await Conn.open(url)
        ids = []
        for pid in (11, 45, 72):
            result = await c.result("summarize", {"patient_id": pid, "max_tokens": 8})
            await c.result("save_summary", {"summary_id": result["summary_id"], "force": True})
            ids.append(result["summary_id"])
        await c.close()
        before = await snapshot(url)
    assert [r["patient_id"] for r in before[1]] == ["11", "45", "72"]
    async with running(config) as (server, _app):
        url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"
        after = await snapshot(url)
        c = await Conn.open(url)
        # Summary ids live in the memory of the server that made them: unknown after restart.
        assert (await c.call("save_summary", {"summary_id": ids[0]}))["error"]["code"] == -32002
        await c.close()
    assert after == before


# ----- the HTTP face (issue #11): vanishing clients, fuzz, kill -9 with every face on ---------


async def run_http_vanishing(
    data_dir: Path, tmp_path: Path, fake: OllamaThread, report: Report, clients: int
) -> None:
    """As `run_vanishing`, over MCP Streamable HTTP: each client opens a session, starts a
    long summary with progress and drops the stream after two tokens, without a DELETE. The
    generation must stop at the next token, and the session, its tasks and its connection
    end with it: no waiting for the SDK's 30-minute idle timeout."""
    fake.reset(tps=50, n_tokens=100_000)  # no summary can finish before its client is gone
    t0 = time.monotonic()
    async with inprocess_http(data_dir, tmp_path / "s.csv", fake.url) as live:
        await http_vanish_once(live.url, 5)  # warm-up: pools and caches in steady state

        def quiet() -> bool:
            return (
                live.face.sessions() == 0
                and live.face.connections() == 0
                and not live.app.summarizing
                and fake.fake.open_streams == 0
            )

        assert await settle(quiet, 20)
        await asyncio.sleep(0.3)
        tasks, fds, threads = len(asyncio.all_tasks()), fd_count(), thread_count()
        closed, completed = fake.fake.streams_closed_by_client, fake.fake.streams_completed
        kept = len(live.app.summaries)

        for start in range(0, clients, 10):  # ten at a time
            await asyncio.gather(
                *(http_vanish_once(live.url, 1 + i % 100) for i in range(start, start + 10))
            )
        stopped_in_time = await settle(
            lambda: fake.fake.streams_closed_by_client - closed == clients, 10
        )
        settled = await settle(quiet, 20)
        await asyncio.sleep(0.3)  # the last done-callbacks
        leaked = len(asyncio.all_tasks()) - tasks
        fd_delta, thread_delta = fd_count() - fds, thread_count() - threads
        stopped = fake.fake.streams_closed_by_client - closed
        report.add(
            "vanishing clients, HTTP",
            reconnects=clients,
            leaked_tasks=max(leaked, 0),
            seconds=time.monotonic() - t0,
            note=f"{clients} MCP sessions dropped their stream mid-summary, no DELETE; "
            f"generations stopped {stopped}; sessions after {live.face.sessions()}, "
            f"connections {live.face.connections()}; open LLM streams after: "
            f"{fake.fake.open_streams}; fds {fd_delta:+d}, threads {thread_delta:+d}",
        )
        assert stopped_in_time and stopped == clients, (stopped, clients)
        assert settled, (live.face.sessions(), live.face.connections(), live.app.summarizing)
        assert leaked <= 0, [t for t in asyncio.all_tasks()]
        assert fake.fake.streams_completed == completed  # no generation ran on unheard
        assert len(live.app.summaries) == kept  # and nothing of theirs can be saved
        assert fd_delta <= 2 and thread_delta <= 2, (fd_delta, thread_delta)
        async with httpx.AsyncClient(timeout=10) as client:  # and the face still serves
            headers = await http_session(client, live.url)
            ping = await client.post(
                live.url, json={"jsonrpc": "2.0", "id": 9, "method": "ping"}, headers=headers
            )
            assert ping.status_code == 200 and '"result":{}' in ping.text


async def test_http_vanishing_clients_leak_nothing(
    data_dir: Path, tmp_path: Path, fake: OllamaThread, report: Report
) -> None:
    await run_http_vanishing(data_dir, tmp_path, fake, report, 30)


@pytest.mark.stress
async def test_http_vanishing_clients_leak_nothing_full(
    data_dir: Path, tmp_path: Path, fake: OllamaThread, report: Report
) -> None:
    await run_http_vanishing(data_dir, tmp_path, fake, report, 300)


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


async def http_saver(url: str, patients: list[int], tracker: Tracker, stop: asyncio.Event) -> None:
    """`saver` over MCP Streamable HTTP: summarize and save through `tools/call` until `stop`
    or the server is gone."""
    try:
        peer = await HttpPeer.open(url, {"Authorization": f"Bearer {TOKEN}"})
    except (OSError, ConnectionError, httpx.HTTPError):
        return
    try:
        for i in itertools.count():
            if stop.is_set():
                break
            patient = patients[i % len(patients)]
            seq = tracker.issue(patient)
            args = {"patient_id": patient, "max_tokens": 1 + seq % 40}
            reply = await peer.call("tools/call", {"name": "summarize", "arguments": args}, 30)
            made = reply.get("result") or {}
            if made.get("isError") is not False:
                tracker.errors.append(reply)
                continue
            tracker.texts.setdefault(patient, {})[seq] = made["structuredContent"]["summary"]
            save = {"summary_id": made["structuredContent"]["summary_id"], "force": True}
            tracker.saving[url] = tracker.saving.get(url, 0) + 1
            try:
                saved = await peer.call("tools/call", {"name": "save_summary", "arguments": save})
            finally:
                tracker.saving[url] -= 1
            if (saved.get("result") or {}).get("isError") is False:
                tracker.ack(patient, seq)
            else:
                tracker.errors.append(saved)
    except (ConnectionError, OSError, TimeoutError, httpx.HTTPError):
        pass  # the server was killed under us
    finally:
        with suppress(Exception):
            await peer.close()


def all_faces_server(data: Path, summaries: Path, ollama_url: str) -> ServerProcess:
    """A pool-style server (token, debug log) with the WebSocket and HTTP faces both on."""
    from .conftest import free_port

    return ServerProcess(
        [
            *("--backend", "ollama", "--ollama-host", ollama_url),
            *("--data", str(data), "--summaries", str(summaries), "--http-port", str(free_port())),
            *("--llm-timeout", "5", "--max-inflight", "8", "--log-level", "debug"),
        ],
        env={"MCP_AUTH_TOKEN": TOKEN},
    )


async def run_all_faces_kills(
    data_dir: Path, tmp_path: Path, fake: OllamaThread, report: Report, kills: int
) -> None:
    """The kill -9 save loop on a server with every network face on: two clients save over
    the WebSocket and two over MCP Streamable HTTP, into one tracker; the server gets SIGKILL
    at random moments (mostly with a save in flight), and each time the file must parse and
    hold every acknowledged save, and the restarted server must list them over HTTP too."""
    fake.reset(tps=0)
    rng = random.Random(9090 + kills)
    data, summaries = data_dir / "patient_data.csv", tmp_path / "patient_summaries.csv"
    tracker, problems = Tracker(), []
    own = itertools.count(81)
    ws_patients = [[next(own) for _ in range(3)] for _ in range(2)]
    http_patients = [[next(own) for _ in range(3)] for _ in range(2)]
    done = mid_save = 0
    t0 = time.monotonic()
    server = all_faces_server(data, summaries, fake.url)
    try:
        await asyncio.to_thread(server.wait_ready)
        while True:
            assert server.http_url is not None
            mcp_url = server.http_url + "/mcp"
            stop = asyncio.Event()
            clients = [
                asyncio.create_task(saver(server.url, ps, tracker, stop)) for ps in ws_patients
            ]
            clients += [
                asyncio.create_task(http_saver(mcp_url, ps, tracker, stop)) for ps in http_patients
            ]
            if done == kills:  # the last round: nothing is killed, only checked
                break
            before = tracker.n_acked
            await settle(lambda before=before: tracker.n_acked > before + 4, 30)
            await asyncio.sleep(rng.uniform(0.0, 0.4))
            if rng.random() < 0.7:  # aim at a save on its way through either face
                busy = (server.url, mcp_url)
                await settle(lambda b=busy: any(tracker.saving.get(u, 0) for u in b), 5, step=0.001)
            mid_save += any(tracker.saving.get(u, 0) for u in (server.url, mcp_url))
            assert server.proc.poll() is None, server.log[-2000:]
            server.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(server.proc.wait, 10)
            done += 1
            await asyncio.wait(clients, timeout=30)
            acked = dict(tracker.acked)
            problems += [f"kill {done}: {p}" for p in tracker.check(read_rows(summaries), acked)]
            server = all_faces_server(data, summaries, fake.url)
            await asyncio.to_thread(server.wait_ready)
            assert server.http_url is not None
            peer = await HttpPeer.open(
                server.http_url + "/mcp", {"Authorization": f"Bearer {TOKEN}"}
            )
            listed = await peer.result("tools/call", {"name": "list_summaries", "arguments": {}})
            await peer.close()
            rows = listed["structuredContent"]["summaries"]
            problems += [f"restart {done}, over HTTP: {p}" for p in tracker.check(rows, acked)]
        await settle(lambda: tracker.n_acked > 0, 10)
        stop.set()
        await asyncio.gather(*clients)
    finally:
        server.stop()
    rows = read_rows(summaries)
    problems += [f"final: {p}" for p in tracker.check(rows, dict(tracker.acked))]
    ids = [r["patient_id"] for r in rows]
    report.add(
        "kill -9 mid-save, every face on",
        kills=done,
        acked=tracker.n_acked,
        lost=sum("lost" in p for p in problems),
        duplicated=len(ids) - len(set(ids)),
        seconds=time.monotonic() - t0,
        note=f"one server with the WebSocket and HTTP faces, 2 clients on each; {mid_save} "
        "kills with a save in flight; each restart lists every acknowledged save over HTTP",
    )
    assert not problems, problems[:10]
    assert not tracker.errors, tracker.errors[:5]
    assert done == kills and tracker.n_acked > kills
    everyone = {p for ps in ws_patients + http_patients for p in ps}
    assert everyone <= set(tracker.acked), everyone - set(tracker.acked)  # both faces saved


async def test_kill_9_all_faces_mid_save(
    data_dir: Path, tmp_path: Path, fake: OllamaThread, report: Report
) -> None:
    await run_all_faces_kills(data_dir, tmp_path, fake, report, 3)


@pytest.mark.stress
async def test_kill_9_all_faces_mid_save_full(
    data_dir: Path, tmp_path: Path, fake: OllamaThread, report: Report
) -> None:
    await run_all_faces_kills(data_dir, tmp_path, fake, report, 30)
