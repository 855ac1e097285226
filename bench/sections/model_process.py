"""Model processes: aggregate throughput of 1, 2 and 4 concurrent summaries with one model
process and with two (`--model-workers 2`), side by side in one run, and the resident memory
of the server and of each model process.

The summaries are the default ones (strict: the model writes one sentence after the record's
prefill), so a summary's time is mostly its prompt's evaluation; the figures are tokens the
model wrote per second and summaries per minute, first send to last reply. Rounds of the two
servers alternate, so the machine's load falls on both alike.
"""

from __future__ import annotations

import asyncio
import time

from bench.harness import RUN_DIR, Context, Row, log, proc_status, single, summary
from bench.harness import server as running_server
from testkit.processes import model_pids
from testkit.rpc import Peer

CONCURRENT = (1, 2, 4)
ROUNDS = 3
MAX_TOKENS = 160


async def aggregate_rate(peers: list[Peer], k: int, round_no: int) -> tuple[float, float]:
    """(tokens/s, summaries/minute) over `k` summaries started together, first send to last
    reply."""
    start = time.perf_counter()
    replies = await asyncio.gather(
        *(
            peers[i].result(
                "summarize",
                {"patient_id": 1 + (round_no * 7 + i * 13) % 100, "max_tokens": MAX_TOKENS},
                600,
            )
            for i in range(k)
        )
    )
    elapsed = time.perf_counter() - start
    return sum(r["tokens"] for r in replies) / elapsed, k * 60 / elapsed


async def run(ctx: Context) -> list[Row]:
    rates: dict[int, dict[int, list[float]]] = {1: {}, 2: {}}
    per_minute: dict[int, dict[int, list[float]]] = {1: {}, 2: {}}
    memory: dict[int, tuple[int, list[int]]] = {}
    async with (
        running_server(
            "workers1", ctx.small, RUN_DIR / "s_w1.csv", "embedded",
            "--model-workers", "1",
        ) as one,
        running_server(
            "workers2", ctx.small, RUN_DIR / "s_w2.csv", "embedded",
            "--model-workers", "2",
        ) as two,
    ):  # fmt: skip
        servers = {1: one, 2: two}
        peers = {
            n: [await Peer.open(s.url) for _ in range(max(CONCURRENT))] for n, s in servers.items()
        }
        for n in servers:  # both models loaded and warm before anything is timed
            await aggregate_rate(peers[n], 2, 0)
        for k in CONCURRENT:
            log(f"model processes: {k} concurrent summaries, 1 vs 2 processes")
            for r in range(ROUNDS):
                for n in (1, 2) if r % 2 else (2, 1):
                    rate, count = await aggregate_rate(peers[n], k, r + 1)
                    rates[n].setdefault(k, []).append(rate)
                    per_minute[n].setdefault(k, []).append(count)
        for n, srv in servers.items():
            memory[n] = (
                proc_status(srv.pid)["VmRSS"],
                [proc_status(p)["VmRSS"] for p in model_pids(srv.pid)],
            )
        for n in servers:
            for p in peers[n]:
                await p.close()
    ctx.raw["model_workers"] = {
        "tokens_per_s": {
            f"{n} processes, {k} at once": v for n in rates for k, v in rates[n].items()
        },
        "summaries_per_min": {
            f"{n} processes, {k} at once": v for n in per_minute for k, v in per_minute[n].items()
        },
        "rss_kib": {f"{n} processes": {"server": m[0], "models": m[1]} for n, m in memory.items()},
    }
    rows = []
    for k in CONCURRENT:
        for key, unit, values in (
            ("rate", "tokens/s", rates),
            ("count", "summaries/min", per_minute),
        ):
            rows.append(
                Row(
                    f"model_workers_{key}_{k}",
                    f"{k} concurrent summaries, 2 model processes vs 1",
                    unit,
                    summary(values[2][k]),
                    summary(values[1][k]),
                    "1 model process",
                    compare="ratio",
                    note=f"{ROUNDS} rounds each, alternating, first send to last reply",
                )
            )
    server_kib, models_kib = memory[1]
    rows.append(
        single(
            "model_process_rss",
            "Resident memory: server process / each model process (1 worker)",
            f"{server_kib / 1024:.0f} MiB / "
            + ", ".join(f"{m / 1024:.0f} MiB" for m in models_kib),
        )
    )
    return rows
