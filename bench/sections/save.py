"""`save_summary` through the server against `SummaryStore.save` on a same-size copy, with
100, 10,000 and 100,000 rows in the file, and how the time grows with the rows."""

from __future__ import annotations

import time
from pathlib import Path

from bench.harness import (
    RUN_DIR,
    SUMMARY_TEXT,
    Context,
    Row,
    ServerProcess,
    log,
    result,
    server,
    summary,
    write_summaries,
)
from tests.rpc import Peer

N_SAVE = 30
SAVE_BIG_ROWS = 100_000


async def save_row(
    srv: ServerProcess, summaries: Path, rows: int, key: str, prewritten: bool = False
) -> Row:
    """save_summary through the server against `SummaryStore.save` on a same-size copy.

    The first save is timed apart: after start-up (`prewritten`) or after the file changed
    on disk, the store has to read the file before it can replace a row.
    """
    from clinsum.store import SummaryStore

    log(f"save_summary with {rows} rows in the file")
    peer = await Peer.open(srv.url)
    _, res = await result(peer, "summarize", {"patient_id": 5, "max_tokens": 16})
    sid = res["summary_id"]
    if not prewritten:
        write_summaries(summaries, rows)
    direct_path = RUN_DIR / f"direct_{rows}.csv"
    write_summaries(direct_path, rows)
    store = SummaryStore(direct_path)
    if prewritten:
        store.ensure_exists()  # as the server does at start-up
    first_s, _ = await result(peer, "save_summary", {"summary_id": sid, "force": True})
    t0 = time.perf_counter()
    store.save(5, "Janet Torres", SUMMARY_TEXT, "m", "2025-06-30", True)
    first_d = time.perf_counter() - t0
    server_t, direct_t = [], []
    for i in range(N_SAVE):
        for side in (0, 1) if i % 2 else (1, 0):
            if side == 0:
                s, _ = await result(peer, "save_summary", {"summary_id": sid, "force": True})
                server_t.append(s * 1000)
            else:
                t0 = time.perf_counter()
                store.save(5, "Janet Torres", SUMMARY_TEXT, "m", "2025-06-30", True)
                direct_t.append((time.perf_counter() - t0) * 1000)
    await peer.close()
    s = summary(server_t)
    return Row(
        key,
        f"`save_summary`, {rows:,} rows in the file",
        "ms",
        s,
        summary(direct_t),
        "`SummaryStore.save` in-process",
        "ratio",
        "median < 10 ms" if rows <= 100 else "say how it grows",
        s["median"] < 10 if rows <= 100 else None,
        note=(
            f"first save {'after start-up' if prewritten else 'after the file changed on disk'}"
            f": server {first_s * 1000:.0f} ms, direct {first_d * 1000:.0f} ms; file "
            f"{summaries.stat().st_size / 1e6:.1f} MB"
        ),
        extra={"first_save_ms": {"server": first_s * 1000, "direct": first_d * 1000}},
    )


async def run(ctx: Context) -> list[Row]:
    served = await ctx.shared("ollama100")
    assert served.server.summaries is not None and served.llm_url is not None
    rows = [
        await save_row(served.server, served.server.summaries, 100, "save_100"),
        await save_row(served.server, served.server.summaries, 10_000, "save_10k"),
    ]
    # A fresh server on a file that already has the rows: its first save is the one a user
    # makes first after start-up.
    big_saves = RUN_DIR / "summaries_big_save.csv"
    write_summaries(big_saves, SAVE_BIG_ROWS)
    async with server(
        "save_big", ctx.small, big_saves, "ollama", "--ollama-host", served.llm_url
    ) as srv:
        big = await save_row(srv, big_saves, SAVE_BIG_ROWS, "save_big", prewritten=True)
    rows.append(big)
    small_ms, big_ms = rows[0].server["median"], big.server["median"]  # type: ignore[index]
    per_row_us = (big_ms - small_ms) / (SAVE_BIG_ROWS - 100) * 1000
    big.note += (
        f". Growth: linear, ~{per_row_us:.2f} µs per row ({per_row_us * 1000 / 330:.1f} ms "
        "per MB): every save writes the whole file to a temporary file, fsyncs it and "
        "renames it over the old one, which is what lets a crash leave the old file or the "
        "new one and nothing in between"
    )
    ctx.raw["save_us_per_row"] = per_row_us
    return rows
