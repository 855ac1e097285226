"""kill -9 in the middle of saves: real servers (the WebSocket face, then every face on), and the
store alone, many times. No acknowledged save is lost, no row torn or duplicated, and a server
started again on the same files serves the same search results and every acknowledged save.

One of the robustness tests: tests/server_pool.py says how they run (sizes, the report).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import random
import re
import signal
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from testkit.inprocess import OllamaThread, settle
from testkit.rpc import HttpPeer

from .conftest import REPO, ServerProcess
from .server_pool import TOKEN, Pool, Tracker, list_rows, read_rows, saver, searches

if TYPE_CHECKING:
    from .stress_report import Report

pytest_plugins = ["tests.stress_report", "tests.server_pool"]


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


# ----- kill -9 with every face on (issue #11) ------------------------------------------------


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
