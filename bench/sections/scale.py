"""Scale: `--scale` patients (100,000 by default): start-up, search and peak memory, and the
figures of the index build that made the reused index (built once into bench/data/)."""

from __future__ import annotations

import gc
import statistics

from bench import prep
from bench.harness import RUN_DIR, Context, Row, log, proc_status, server, single, summary
from bench.sections.search import N_SEARCH, search_rows
from bench.sections.startup import N_STARTUPS, startup_once


async def run(ctx: Context) -> list[Row]:
    n = ctx.scale
    big = prep.ensure_data(n)
    log(f"opening the {n:,}-patient index (the first run builds it: slow)")
    build, _, big_index = prep.ensure_index(n, log)
    ctx.raw["build_big"] = build
    gc.freeze()
    big_summaries = RUN_DIR / "summaries_big.csv"
    # Interleaved with the same start-up on the 100-patient file: a ratio near 1 says the
    # start-up does not grow with the number of patients.
    starts: list[dict[str, float]] = []
    smalls: list[dict[str, float]] = []
    for i in range(N_STARTUPS):
        starts.append(await startup_once(f"startup_big{i}", big, big_summaries))
        smalls.append(await startup_once(f"startup_small{i}", ctx.small, big_summaries))
    ctx.raw["startup_big"], ctx.raw["startup_small"] = starts, smalls
    ready = summary([s["ready_s"] for s in starts])
    start_peak = statistics.median(s["peak_rss_kib"] for s in starts) / 1024
    async with server("embedded_big", big, big_summaries, "embedded") as srv:
        rows = await search_rows(
            "search_big", f"Search, {n:,} patients", srv, big_index, N_SEARCH, 25
        )
        peak = ctx.raw["peak_rss_big_kib"] = proc_status(srv.pid)["VmHWM"]
    return [
        *rows,
        Row(
            "startup_big",
            f"Start-up to ready, {n:,} patients, existing index",
            "s",
            ready,
            summary([s["ready_s"] for s in smalls]),
            "the same start-up, 100 patients",
            "ratio",
            "≤ 5 s",
            ready["median"] <= 5,
            note=f"peak RSS {start_peak:.0f} MiB after the first summary and search; "
            f"n = {N_STARTUPS} each, interleaved",
        ),
        single(
            "build_big",
            f"Index build, {build['patients']:,} patients, {build['cores']} cores",
            f"{build['rate_per_s']:,.0f} patients/s ({build['open_s'] / 60:.1f} min, "
            f"{build['rate_per_cpu_s']:,.0f} per CPU-second; built {build['when']}, "
            f"load avg {build['loadavg_before']:.1f})",
        ),
        single(
            "peak_rss_big",
            f"Peak RSS, embedded model + {n:,}-patient index",
            f"{peak / 1024:.0f} MiB",
            "< 1 GiB",
            peak < 1024 * 1024,
        ),
    ]
