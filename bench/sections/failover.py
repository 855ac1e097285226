"""Two replicas on one PostgreSQL behind HAProxy (testkit/pg.py, testkit/haproxy.py): a draft
made on one replica saved on the other, beside a save on the replica that made it; and the
failover time, from `kill -9` of the replica that made a draft to the first save of that
draft acknowledged through HAProxy."""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import time

from websockets.exceptions import InvalidHandshake

from bench.harness import (
    LOG_DIR,
    RUN_DIR,
    Context,
    Row,
    bench_flags,
    log,
    result,
    single,
    summary,
)
from testkit.processes import ServerProcess
from testkit.rpc import Peer

N_ROUND = 30  # drafts saved across replicas (and as many on the same replica)
N_FAILOVER = 3  # kills
FAILOVER_GUARD_S = 60


async def _failover(proxy_url: str, replicas: list[ServerProcess]) -> tuple[float, int]:
    """Summarize through HAProxy, kill -9 the replica that made it, save through HAProxy:
    seconds from the kill to the save's reply, and which replica died."""
    peer = await Peer.open(proxy_url)
    before = [len(r.lines) for r in replicas]
    _, made = await result(peer, "summarize", {"patient_id": 7, "max_tokens": 8})
    maker = next(
        i
        for i, r in enumerate(replicas)
        if any("Starting streaming summary generation" in ln for ln in r.lines[before[i] :])
    )
    t0 = time.perf_counter()
    replicas[maker].kill()
    async with asyncio.timeout(FAILOVER_GUARD_S):
        while True:
            try:
                again = await Peer.open(proxy_url)
                reply = await again.call(
                    "save_summary", {"summary_id": made["summary_id"], "force": True}, timeout=10
                )
            except (OSError, ConnectionError, InvalidHandshake, TimeoutError):
                await asyncio.sleep(0.02)
                continue
            if "result" not in reply:
                raise RuntimeError(f"save after failover failed: {reply}")
            elapsed = time.perf_counter() - t0
            await again.close()
            return elapsed, maker


async def run(ctx: Context) -> list[Row]:
    from testkit.haproxy import HAProxy
    from testkit.pg import OWNER, PgCluster

    served = await ctx.shared("ollama100")
    assert served.llm_url is not None
    cluster = await asyncio.to_thread(PgCluster)
    old_password = os.environ.get("PGPASSWORD")
    os.environ["PGPASSWORD"] = cluster.passwords[OWNER]
    folder = RUN_DIR / "failover"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    url = cluster.url(cluster.new_database())
    # --log-level info (the last one wins): the log says which replica generated a summary.
    flags = ("ollama", "--ollama-host", served.llm_url, "--store", url, "--log-level", "info")

    def replica(i: int, port: int | None = None) -> ServerProcess:
        args = bench_flags(ctx.small, folder / f"r{i}.csv", *flags)
        return ServerProcess(args, port=port, log_path=LOG_DIR / f"failover_{i}.log")

    replicas = [replica(0), replica(1)]
    proxy = None
    try:
        await asyncio.gather(*(asyncio.to_thread(r.wait_ready, 600) for r in replicas))
        log("draft round trip across replicas")
        a, b = await Peer.open(replicas[0].url), await Peer.open(replicas[1].url)
        across, same = [], []
        for _ in range(N_ROUND):
            for side, saver in (("across", b), ("same", a)):
                _, made = await result(a, "summarize", {"patient_id": 5, "max_tokens": 8})
                params = {"summary_id": made["summary_id"], "force": True}
                s, _ = await result(saver, "save_summary", params)
                (across if side == "across" else same).append(s * 1000)
        await a.close()
        await b.close()
        log("failover through HAProxy")
        proxy = await asyncio.to_thread(HAProxy, [("127.0.0.1", r.port) for r in replicas])
        times = []
        for _ in range(N_FAILOVER):
            elapsed, died = await _failover(proxy.url, replicas)
            times.append(elapsed)
            replicas[died].stop()
            # On the same port, so HAProxy's checks see it come back.
            replicas[died] = replica(died, replicas[died].port)
            await asyncio.to_thread(replicas[died].wait_ready, 600)
            await asyncio.sleep(1)  # two health checks: HAProxy has it back
    finally:
        if proxy is not None:
            await asyncio.to_thread(proxy.stop)
        for r in replicas:
            r.stop()
        if old_password is None:
            os.environ.pop("PGPASSWORD", None)
        else:
            os.environ["PGPASSWORD"] = old_password
        await asyncio.to_thread(cluster.stop)
    worst = max(times)
    return [
        Row(
            "draft_across_replicas",
            "`save_summary` of a draft made on the other replica (PostgreSQL)",
            "ms",
            summary(across),
            summary(same),
            "save on the replica that made it",
            "extra",
            "report",
            note="the other replica reads the draft from the `drafts` table first; the one "
            "that made it has it in memory",
        ),
        single(
            "failover_s",
            f"failover through HAProxy, kill -9 to the first save ({N_FAILOVER} kills)",
            f"median {statistics.median(times):.2f} s, max {worst:.2f} s",
            "≤ 3 s",
            worst <= 3,
        ),
    ]
