"""Model processes: aggregate tokens/s of 1, 2 and 4 concurrent summaries with one model
process and with two (`--model-workers 2`), side by side in one run, and the resident memory
of the server and of each model process.

The summaries are narrative (the model writes a paragraph), so that generation, not prompt
evaluation, is what is timed; rounds of the two servers alternate, so the machine's load
falls on both alike.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bench.harness import RUN_DIR, Context, Row, log, proc_status, single, summary
from bench.harness import server as running_server
from tests.rpc import Peer

CONCURRENT = (1, 2, 4)
ROUNDS = 3
MAX_TOKENS = 160


def model_pids(parent: int) -> list[int]:
    """The server's model processes (`runner.py` children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"runner.py" in cmdline:
            found.append(int(entry.name))
    return found


async def aggregate_rate(peers: list[Peer], k: int, round_no: int) -> float:
    """Tokens/s over `k` summaries started together, first send to last reply."""
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
    return sum(r["tokens"] for r in replies) / elapsed


async def run(ctx: Context) -> list[Row]:
    rates: dict[int, dict[int, list[float]]] = {1: {}, 2: {}}
    memory: dict[int, tuple[int, list[int]]] = {}
    async with (
        running_server(
            "workers1", ctx.small, RUN_DIR / "s_w1.csv", "embedded",
            "--summary-style", "narrative", "--model-workers", "1",
        ) as one,
        running_server(
            "workers2", ctx.small, RUN_DIR / "s_w2.csv", "embedded",
            "--summary-style", "narrative", "--model-workers", "2",
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
                    rates[n].setdefault(k, []).append(await aggregate_rate(peers[n], k, r + 1))
        for n, srv in servers.items():
            memory[n] = (
                proc_status(srv.pid)["VmRSS"],
                [proc_status(p)["VmRSS"] for p in model_pids(srv.pid)],
            )
        for n in servers:
            for p in peers[n]:
                await p.close()
    ctx.raw["model_workers"] = {"rates": rates, "memory_kib": memory}
    rows = [
        Row(
            f"model_workers_{k}",
            f"Aggregate tokens/s, {k} concurrent narrative summaries: 2 model processes vs 1",
            "tokens/s",
            summary(rates[2][k]),
            summary(rates[1][k]),
            "1 model process",
            compare="ratio",
            note=f"{ROUNDS} rounds each, alternating; {MAX_TOKENS} tokens at most per summary",
        )
        for k in CONCURRENT
    ]
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
