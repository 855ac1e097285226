"""`save_summary` through the server against `SummaryStore.save` on a same-size copy, with
100, 10,000 and 100,000 rows in the file, and how the time grows with the rows; then
(`run_stores`) the CSV store beside the PostgreSQL store in one run: p50/p95 and saves/s."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

from bench.harness import (
    RUN_DIR,
    SUMMARY_TEXT,
    Context,
    Row,
    log,
    result,
    server,
    single,
    summary,
    write_summaries,
)
from testkit.processes import ServerProcess
from testkit.rpc import Peer

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


# ----------------------------------------------------------------------------- the two stores

N_STORE = 200  # sequential saves per store, interleaved CSV / PostgreSQL
STORE_CLIENTS = 8  # connections saving at once for saves/s
STORE_BURST = 400  # saves in the saves/s burst, per store


async def _burst(url: str) -> float:
    """saves/s: STORE_CLIENTS connections saving at once, each its own patient's summary
    again and again (a clinic saves many patients), STORE_BURST saves in all."""
    peers = [await Peer.open(url) for _ in range(STORE_CLIENTS)]
    per = STORE_BURST // STORE_CLIENTS
    sids = []
    for n, peer in enumerate(peers):
        _, res = await result(peer, "summarize", {"patient_id": 10 + n, "max_tokens": 16})
        sids.append(res["summary_id"])

    async def one(peer: Peer, sid: str) -> None:
        for _ in range(per):
            await result(peer, "save_summary", {"summary_id": sid, "force": True})

    t0 = time.perf_counter()
    await asyncio.gather(*(one(p, sid) for p, sid in zip(peers, sids, strict=True)))
    wall = time.perf_counter() - t0
    for p in peers:
        await p.close()
    return per * STORE_CLIENTS / wall


async def run_stores(ctx: Context) -> list[Row]:
    """save_summary on the CSV store and on PostgreSQL, side by side in one run: the same
    fake model, one server each, saves interleaved request by request; each beside its
    store's own `save` in-process. PostgreSQL is a private cluster (testkit/pg.py) with its
    default durability (fsync on, synchronous commit), on loopback."""
    from clinsum.store import CsvStore, Version
    from clinsum.store.postgres import PostgresStore
    from testkit.pg import OWNER, PgCluster

    served = await ctx.shared("ollama100")
    assert served.llm_url is not None
    cluster = await asyncio.to_thread(PgCluster)
    old_password = os.environ.get("PGPASSWORD")
    os.environ["PGPASSWORD"] = cluster.passwords[OWNER]  # the servers inherit it
    folder = RUN_DIR / "stores"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    url = cluster.url(cluster.new_database())
    direct_url = cluster.url(cluster.new_database())
    llm = ("--ollama-host", served.llm_url)
    try:
        async with (
            server("store_csv", ctx.small, folder / "s.csv", "ollama", *llm) as csv_srv,
            server(
                "store_pg", ctx.small, folder / "unused.csv", "ollama", *llm, "--store", url
            ) as pg_srv,
        ):
            log("save_summary: CSV store against PostgreSQL")
            sides = {"csv": csv_srv, "pg": pg_srv}
            peers = {k: await Peer.open(s.url) for k, s in sides.items()}
            sids = {}
            for k, peer in peers.items():
                _, res = await result(peer, "summarize", {"patient_id": 5, "max_tokens": 16})
                sids[k] = res["summary_id"]
            direct = {"csv": CsvStore(folder / "direct.csv"), "pg": PostgresStore(direct_url)}
            for store in direct.values():
                await store.open()
            version = Version(5, "Janet Torres", SUMMARY_TEXT, "m", "2025-06-30", True, False, None)
            through: dict[str, list[float]] = {"csv": [], "pg": []}
            inproc: dict[str, list[float]] = {"csv": [], "pg": []}
            for i in range(N_STORE):
                for k in ("csv", "pg") if i % 2 else ("pg", "csv"):
                    s, _ = await result(
                        peers[k], "save_summary", {"summary_id": sids[k], "force": True}
                    )
                    through[k].append(s * 1000)
                    t0 = time.perf_counter()
                    await direct[k].save(version)
                    inproc[k].append((time.perf_counter() - t0) * 1000)
            for store in direct.values():
                await store.close()
            for peer in peers.values():
                await peer.close()
            rates = {}
            for k in ("csv", "pg"):
                rates[k] = await _burst(sides[k].url)
    finally:
        if old_password is None:
            os.environ.pop("PGPASSWORD", None)
        else:
            os.environ["PGPASSWORD"] = old_password
        await asyncio.to_thread(cluster.stop)
    csv_s, pg_s = summary(through["csv"]), summary(through["pg"])
    ctx.raw["store_saves_per_s"] = rates
    return [
        Row(
            "save_store_csv",
            "`save_summary`, CSV store (each save a version)",
            "ms",
            csv_s,
            summary(inproc["csv"]),
            "`CsvStore.save` in-process",
            "ratio",
            "report",
            note=f"{N_STORE} saves interleaved with PostgreSQL's; the history file grows by "
            "one record a save, the current file is rewritten",
        ),
        Row(
            "save_store_pg",
            "`save_summary`, PostgreSQL store",
            "ms",
            pg_s,
            summary(inproc["pg"]),
            "`PostgresStore.save` in-process",
            "ratio",
            "p95 ≤ 5 ms",
            pg_s["p95"] <= 5,
            note="PostgreSQL 15 on loopback, fsync on: one transaction (per-patient advisory "
            "lock, version insert, audit insert)",
        ),
        single(
            "saves_per_s_csv",
            f"saves/s, CSV store ({STORE_CLIENTS} connections at once, one patient each)",
            f"{rates['csv']:.0f}",
        ),
        single(
            "saves_per_s_pg",
            f"saves/s, PostgreSQL store ({STORE_CLIENTS} connections at once, one patient each)",
            f"{rates['pg']:.0f}",
        ),
    ]
