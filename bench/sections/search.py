"""Search through the server against `PatientIndex.search` in this process, new queries
(each pays for its embedding) and then repeated ones (the query vector is cached)."""

from __future__ import annotations

import time
from typing import Any

from bench.harness import Context, Row, log, result, summary, unique_queries
from testkit.processes import ServerProcess
from testkit.rpc import Peer

N_SEARCH = 200
N_SEARCH_QUICK = 100


async def search_rows(
    key: str, label: str, srv: ServerProcess, index: Any, n: int, target_ms: float
) -> list[Row]:
    """Two rows, new and repeated queries, each interleaved with the direct call."""
    log(f"search: {label}")
    queries = unique_queries(n + 20)
    warm, queries = queries[:20], queries[20:]
    peer = await Peer.open(srv.url)
    for q in warm:  # first torch calls are slow in any process: not what a user sees later
        await result(peer, "search", {"query": q, "top_k": 5})
        index.search(q, 5)
    server_t, direct_t = [], []
    for i, q in enumerate(queries):
        order = (0, 1) if i % 2 else (1, 0)
        for side in order:
            if side == 0:
                s, _ = await result(peer, "search", {"query": q, "top_k": 5})
                server_t.append(s * 1000)
            else:
                t0 = time.perf_counter()
                index.search(q, 5)
                direct_t.append((time.perf_counter() - t0) * 1000)
    # The same queries again: the query vector is cached, what is left is ranking + transport.
    cached_s, cached_d = [], []
    for q in queries[: n // 2]:
        s, _ = await result(peer, "search", {"query": q, "top_k": 5})
        cached_s.append(s * 1000)
        t0 = time.perf_counter()
        index.search(q, 5)
        cached_d.append((time.perf_counter() - t0) * 1000)
    await peer.close()
    s = summary(server_t)
    return [
        Row(
            key,
            label,
            "ms",
            s,
            summary(direct_t),
            "`PatientIndex.search` in-process",
            "ratio",
            f"median < {target_ms:g} ms",
            s["median"] < target_ms,
            note="every query new to both sides, so each pays for its embedding",
        ),
        Row(
            key + "_cached",
            label + ", repeated query",
            "ms",
            summary(cached_s),
            summary(cached_d),
            "`PatientIndex.search` in-process",
            "extra",
            "–",
            note="the query vector comes from the cache: ranking, Chroma and transport only",
        ),
    ]


async def run(ctx: Context) -> list[Row]:
    srv = (await ctx.shared("embedded100")).server
    n = N_SEARCH_QUICK if ctx.quick else N_SEARCH
    return await search_rows("search_100", "Search, 100 patients", srv, ctx.index, n, 25)
