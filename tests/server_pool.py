"""What the robustness tests share: a pool of real servers on one summaries file, the fake
Ollama beside it, and the save trackers the crash and sharing tests check the file with.

The robustness tests (test_fuzz, test_client_token, test_store_shared_file, test_store_crash,
test_vanishing_clients, test_llm_failures, test_limits, test_restart) hold up the server the way
a trusted service must. Each test runs at a small size in `make test`; its `stress`-marked twin
runs the full size in `make stress`. Every test adds its counts to the table printed at the end
of the run (tests/stress_report.py), before asserting, so a failure still shows what happened.

Most tests use a module-scoped pool of real `mcp_server.py` processes sharing one summaries
file, token-protected and logging at debug level, backed by a fake Ollama on its own thread
(tps 0 unless a test slows it down). Tests that count the server's own tasks and sessions
run it in-process instead.

A pytest plugin: a test module registers it with
`pytest_plugins = ["tests.stress_report", "tests.server_pool"]` and takes the `fake` and `pool`
fixtures (one of each per module).
"""

from __future__ import annotations

import asyncio
import csv
import itertools
import secrets
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from clinsum.store import COLUMNS
from testkit.inprocess import Conn, OllamaThread

from .conftest import ServerProcess

if TYPE_CHECKING:
    from .stress_report import Report

TOKEN = "tok-" + secrets.token_hex(16)
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
