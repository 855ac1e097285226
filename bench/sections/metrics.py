"""`/metrics` while 20 summaries stream: how long a Prometheus scrape takes when the server
is busy, against the same scrape on the idle server. The scrapes come from a process of
their own (`bench.workers scrape`), as the concurrency section's pings do."""

from __future__ import annotations

import asyncio

import orjson

from bench.harness import (
    RUN_DIR,
    Context,
    Row,
    fake_ollama,
    log,
    server,
    summarize,
    summary,
    worker,
)
from testkit.processes import free_port
from testkit.rpc import Peer

STREAMS = 20
STREAM_TOKENS = 500
STREAM_TPS = 100  # per stream, as in the concurrency section


async def run(ctx: Context) -> list[Row]:
    log(f"/metrics scrapes while {STREAMS} summaries stream")
    summaries = RUN_DIR / "summaries_metrics.csv"
    http_port = free_port()
    async with (
        fake_ollama(STREAM_TPS, STREAM_TOKENS) as fake_url,
        server(
            "metrics",
            ctx.small,
            summaries,
            "ollama",
            *("--ollama-host", fake_url, "--http-port", str(http_port)),
        ) as srv,
        worker("scrape", str(http_port)) as scraper,
    ):
        assert scraper.stdin is not None and scraper.stdout is not None
        idle = orjson.loads(await asyncio.to_thread(scraper.stdout.readline))
        peers = [await Peer.open(srv.url) for _ in range(STREAMS)]
        scraper.stdin.write("go\n")
        scraper.stdin.flush()
        ids = list(ctx.patients)
        done = await asyncio.gather(
            *(summarize(p, ids[k % len(ids)], STREAM_TOKENS) for k, p in enumerate(peers))
        )
        scraper.stdin.write("stop\n")
        scraper.stdin.flush()
        busy = orjson.loads(await asyncio.to_thread(scraper.stdout.readline))
        for p in peers:
            await p.close()
    tokens = sum(res["tokens"] for _, res in done)
    s, own = summary(busy["rtt_ms"]), summary(busy["own_lag_ms"])
    errors = idle["errors"] + busy["errors"]
    return [
        Row(
            "metrics_scrape",
            f"`/metrics` scrape while {STREAMS} summaries stream",
            "ms",
            s,
            summary(idle["rtt_ms"]),
            "the same scrape on the idle server",
            "ratio",
            "median < 5 ms",
            s["median"] < 5 and tokens == STREAMS * STREAM_TOKENS and not errors,
            note=f"{s['n']} scrapes on one kept-alive connection, from a process of their own, "
            f"while {STREAMS}×{STREAM_TOKENS} tokens streamed at {STREAM_TPS}/s each over the "
            f"WebSocket ({tokens} arrived); {len(errors)} failed scrapes; control: the "
            f"scraping process's own timer lateness median {own['median']:.1f} ms, p99 "
            f"{own['p99']:.1f} ms",
            extra={"errors": errors[:10]},
        )
    ]
