"""Several servers on one summaries file: clients save through every server at once, some of
them the same patients; no save is lost or duplicated, and every server reads what the others
wrote.

One of the robustness tests: tests/server_pool.py says how they run (sizes, the report).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import TYPE_CHECKING

import pytest

from testkit.inprocess import OllamaThread

from .server_pool import Pool, Tracker, list_rows, read_rows, saver

if TYPE_CHECKING:
    from .stress_report import Report

pytest_plugins = ["tests.stress_report", "tests.server_pool"]


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
