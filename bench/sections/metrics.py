"""`/metrics` while 20 summaries stream: how long a Prometheus scrape takes when the server
is busy, against the same scrape on the idle server."""

from __future__ import annotations

import asyncio
import time

import httpx

from bench.harness import (
    RUN_DIR,
    Context,
    Row,
    fake_ollama,
    free_port,
    log,
    server,
    summarize,
    summary,
)
from tests.rpc import Peer

STREAMS = 20
STREAM_TOKENS = 500
STREAM_TPS = 100  # per stream, as in the concurrency section
SCRAPE_EVERY_S = 0.02
N_IDLE = 100


async def scrape(client: httpx.AsyncClient, url: str) -> float:
    """One GET /metrics on a kept-alive connection, body read: ms."""
    t0 = time.perf_counter()
    reply = await client.get(url)
    ms = (time.perf_counter() - t0) * 1000
    assert reply.status_code == 200 and b"clinsum_tokens_generated_total" in reply.content
    return ms


async def run(ctx: Context) -> list[Row]:
    log(f"/metrics scrapes while {STREAMS} summaries stream")
    summaries = RUN_DIR / "summaries_metrics.csv"
    async with (
        fake_ollama(STREAM_TPS, STREAM_TOKENS) as fake_url,
        server(
            "metrics",
            ctx.small,
            summaries,
            "ollama",
            *("--ollama-host", fake_url, "--http-port", str(free_port())),
        ) as srv,
        httpx.AsyncClient() as client,
    ):
        assert srv.http_url is not None
        url = srv.http_url + "/metrics"
        idle = []
        for _ in range(N_IDLE):
            idle.append(await scrape(client, url))
            await asyncio.sleep(SCRAPE_EVERY_S)
        peers = [await Peer.open(srv.url) for _ in range(STREAMS)]
        ids = list(ctx.patients)
        streams = asyncio.gather(
            *(summarize(p, ids[k % len(ids)], STREAM_TOKENS) for k, p in enumerate(peers))
        )
        busy = []
        while not streams.done():
            busy.append(await scrape(client, url))
            await asyncio.sleep(SCRAPE_EVERY_S)
        done = await streams
        tokens = sum(res["tokens"] for _, res in done)
        final = (await client.get(url)).text
        for p in peers:
            await p.close()
    s = summary(busy)
    return [
        Row(
            "metrics_scrape",
            f"`/metrics` scrape while {STREAMS} summaries stream",
            "ms",
            s,
            summary(idle),
            "the same scrape on the idle server",
            "ratio",
            "median < 5 ms",
            s["median"] < 5 and tokens == STREAMS * STREAM_TOKENS,
            note=f"{s['n']} scrapes on one kept-alive connection while {STREAMS}×"
            f"{STREAM_TOKENS} tokens streamed at {STREAM_TPS}/s each over the WebSocket; "
            f"the last scrape counted them: {tokens_line(final)}",
        )
    ]


def tokens_line(exposition: str) -> str:
    """The tokens-generated sample of a scrape, as written."""
    for line in exposition.splitlines():
        if line.startswith("clinsum_tokens_generated_total"):
            return f"`{line}`"
    return "no tokens line"
