"""Start-up: fresh servers, each from spawn to ready, then its first summary and search,
next to the floor no code of ours can lower (importing the libraries alone)."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

from bench.harness import (
    PY,
    REPO,
    RUN_DIR,
    Context,
    Row,
    log,
    proc_cpu_s,
    proc_status,
    result,
    single,
    start_server,
    stream_figures,
    summarize,
    summary,
)
from testkit.rpc import Peer

N_STARTUPS = 3


async def startup_once(name: str, data: Path, summaries: Path) -> dict[str, float]:
    """Spawn to listening, then the first summary's time to first generated token."""
    srv = start_server(name, data, summaries, "embedded")
    try:
        await asyncio.to_thread(srv.wait_ready, 600)
        cpu_s = proc_cpu_s(srv.pid)
        peer = await Peer.open(srv.url)
        stream, _ = await summarize(peer, 2, 64)
        gen_times = [t for t, ix in zip(stream.times, stream.indexes, strict=True) if ix]
        t0 = time.perf_counter()
        await result(peer, "search", {"query": "first search after start-up", "top_k": 5})
        first_search = (time.perf_counter() - t0) * 1000
        await peer.close()
        return {
            "ready_s": srv.ready_s,
            "cpu_s_at_ready": cpu_s,
            "first_ttft_ms": stream_figures(stream.sent, gen_times)[0],
            "first_search_ms": first_search,
            "peak_rss_kib": proc_status(srv.pid)["VmHWM"],
        }
    finally:
        srv.stop(15)


async def imports_alone() -> float:
    """Seconds for a fresh interpreter to import the libraries the server loads at start-up
    and exit: the floor under start-up that no code of ours can lower."""
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        PY,
        "-c",
        "import torch, tokenizers, safetensors, chromadb, llama_cpp, clinsum.server",
        cwd=REPO,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await proc.wait()
    return time.perf_counter() - t0


async def run(ctx: Context) -> list[Row]:
    log(f"start-up x{N_STARTUPS}, embedded backend, existing index")
    summaries = RUN_DIR / "summaries_embedded.csv"
    starts: list[dict[str, float]] = []
    floor: list[float] = []
    for i in range(N_STARTUPS):
        starts.append(await startup_once(f"startup{i}", ctx.small, summaries))
        floor.append(await imports_alone())
    ctx.raw["startup_100"] = starts
    ctx.raw["imports_alone_s"] = floor
    ready_s = summary([s["ready_s"] for s in starts])
    first_ttft = summary([s["first_ttft_ms"] for s in starts])
    first_search = summary([s["first_search_ms"] for s in starts])
    return [
        Row(
            "startup",
            "Start-up to ready, 100 patients, existing index",
            "s",
            ready_s,
            summary(floor),
            "importing torch, tokenizers, safetensors, chromadb, llama_cpp alone",
            "ratio",
            "< 8 s",
            ready_s["median"] < 8,
            note=(
                f"CPU seconds at ready: "
                f"{statistics.median(s['cpu_s_at_ready'] for s in starts):.1f} (median); "
                f"n = {N_STARTUPS}"
            ),
        ),
        single(
            "first_ttft",
            "First summary after start-up: time to first generated token",
            f"{first_ttft['median']:.0f} ms (max {first_ttft['max']:.0f}, n = {N_STARTUPS})",
        ),
        single(
            "first_search",
            "First search after start-up",
            f"{first_search['median']:.0f} ms (max {first_search['max']:.0f})",
        ),
    ]
