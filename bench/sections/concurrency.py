"""Concurrency: `ping` round trips from a process of its own while 100 clients search and
20 summaries stream, against the same pings on the idle server."""

from __future__ import annotations

import asyncio
import time

import orjson

from bench.harness import (
    RUN_DIR,
    Context,
    Row,
    check_stream,
    fake_ollama,
    log,
    server,
    summarize,
    summary,
    unique_queries,
    worker,
)
from testkit.rpc import Peer

CONC_SEARCH_CLIENTS = 100
CONC_STREAMS = 20
CONC_STREAM_TOKENS = 500
CONC_STREAM_TPS = 100  # per stream: 2,000 tokens/s in all, several times a real model's pace


async def run(ctx: Context) -> list[Row]:
    log(f"concurrency: {CONC_SEARCH_CLIENTS} searching, {CONC_STREAMS} streaming, ping throughout")
    summaries = RUN_DIR / "summaries_conc.csv"
    async with (
        fake_ollama(CONC_STREAM_TPS, CONC_STREAM_TOKENS) as fake_url,
        server("concurrency", ctx.small, summaries, "ollama", "--ollama-host", fake_url) as srv,
        worker("ping", srv.url) as pinger,
    ):
        assert pinger.stdin is not None and pinger.stdout is not None
        idle = orjson.loads(await asyncio.to_thread(pinger.stdout.readline))  # idle baseline
        searchers = [await Peer.open(srv.url) for _ in range(CONC_SEARCH_CLIENTS)]
        streamers = [await Peer.open(srv.url) for _ in range(CONC_STREAMS)]
        queries = unique_queries(3000, seed=11)
        stop = asyncio.Event()
        search_t: list[float] = []
        errors: list[str] = []

        async def search_loop(p: Peer, k: int) -> None:
            i = k
            while not stop.is_set():
                _, replied, reply = await p.timed(
                    "search", {"query": queries[i % len(queries)], "top_k": 5}
                )
                if "result" not in reply:
                    errors.append(str(reply.get("error")))
                search_t.append(replied)
                i += CONC_SEARCH_CLIENTS

        async def stream_one(p: Peer, pid: int) -> list[str]:
            try:
                stream, result = await summarize(p, pid, CONC_STREAM_TOKENS)
            except RuntimeError as exc:
                return [str(exc)]
            out = check_stream(stream, result)
            if result["tokens"] != CONC_STREAM_TOKENS:
                out.append(f"{result['tokens']} tokens, expected {CONC_STREAM_TOKENS}")
            return out

        pinger.stdin.write("go\n")
        pinger.stdin.flush()
        await asyncio.sleep(0.5)
        t0 = time.perf_counter()
        loops = [asyncio.create_task(search_loop(p, k)) for k, p in enumerate(searchers)]
        ids = list(ctx.patients)
        problems = await asyncio.gather(
            *(stream_one(p, ids[k % len(ids)]) for k, p in enumerate(streamers))
        )
        elapsed = time.perf_counter() - t0
        stop.set()
        await asyncio.gather(*loops)
        await asyncio.sleep(0.3)
        pinger.stdin.write("stop\n")
        pinger.stdin.flush()
        pings = orjson.loads(await asyncio.to_thread(pinger.stdout.readline))
        for p in searchers + streamers:
            await p.close()
    errors += [p for ps in problems for p in ps]
    rtt = summary(pings["rtt_ms"])
    own = summary(pings["own_lag_ms"])
    ok = rtt["p99"] < 20 and not errors and not pings["errors"]
    return [
        Row(
            "concurrency",
            f"`ping` during {CONC_SEARCH_CLIENTS} searches + {CONC_STREAMS} streams",
            "ms",
            rtt,
            summary(idle["rtt_ms"]),
            "`ping` on the idle server",
            "p99",
            "p99 < 20 ms, all tokens in order, no errors",
            ok,
            note=(
                f"{len(search_t)} searches ({len(search_t) / elapsed:.0f}/s) and "
                f"{CONC_STREAMS}×{CONC_STREAM_TOKENS} tokens in {elapsed:.1f} s; "
                f"{len(errors)} errors/ordering problems; ping p99 {rtt['p99']:.1f} ms, max "
                f"{rtt['max']:.0f} ms over {rtt['n']} pings; control: the pinging process's own "
                f"timer lateness p99 {own['p99']:.1f} ms, max {own['max']:.0f} ms"
            ),
            extra={
                "errors": errors[:20],
                "searches": len(search_t),
                "seconds": elapsed,
                "pinger_own_lag_ms": own,
                "slowest_pings": sorted(
                    zip(pings["rtt_ms"], pings["at_s"], strict=True), reverse=True
                )[:10],
            },
        )
    ]
