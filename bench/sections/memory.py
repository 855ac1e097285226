"""Memory: RSS growth per idle connection, and the peak RSS of the 100-patient server."""

from __future__ import annotations

import asyncio

from bench.harness import Context, Row, log, proc_status, result, single
from testkit.processes import ServerProcess
from testkit.rpc import Peer

N_IDLE_CONNECTIONS = 200


async def idle_memory(srv: ServerProcess) -> dict[str, float]:
    """RSS growth per idle connection, from the second of two equal batches: the first also
    pays for allocator pools and buffers that every later connection reuses, and work that
    just finished may still be handing memory back."""
    log(f"memory per idle connection (2 x {N_IDLE_CONNECTIONS} connections)")

    async def batch() -> list[Peer]:
        peers = [await Peer.open(srv.url) for _ in range(N_IDLE_CONNECTIONS)]
        for p in peers:
            await result(p, "ping")
        await asyncio.sleep(1.0)
        return peers

    first = await batch()
    middle = proc_status(srv.pid)["VmRSS"]
    second = await batch()
    after = proc_status(srv.pid)["VmRSS"]
    for p in first + second:
        await p.close()
    return {
        "rss_middle_kib": middle,
        "rss_after_kib": after,
        "kib_per_connection": (after - middle) / N_IDLE_CONNECTIONS,
    }


async def run(ctx: Context) -> list[Row]:
    """Last of the sections on the shared embedded server, so its peak is the run's."""
    srv = (await ctx.shared("embedded100")).server
    idle = ctx.raw["idle_memory"] = await idle_memory(srv)
    peak = proc_status(srv.pid)["VmHWM"]
    return [
        single(
            "peak_rss_100",
            "Peak RSS, embedded model + 100-patient index",
            f"{peak / 1024:.0f} MiB",
            "< 1 GiB",
            peak < 1024 * 1024,
        ),
        single(
            "idle_memory",
            "Extra memory per idle connection",
            f"{idle['kib_per_connection']:.0f} KiB (RSS growth over a second batch of "
            f"{N_IDLE_CONNECTIONS} connections)",
        ),
    ]
