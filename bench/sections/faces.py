"""The faces side by side on one server (the embedded model, WebSocket and HTTP on): what a
new MCP client waits to connect, `initialize` and list the tools on each face, and a search
through MCP over HTTP against the same `tools/call` over the WebSocket, interleaved.

stdio has no connection to open: a host starts the server, so its figure is spawn to
`tools/list` answered (the server answers at once and loads in the background).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable

from bench.harness import (
    RUN_DIR,
    Context,
    Row,
    bench_flags,
    log,
    proc_cpu_s,
    result,
    summary,
    unique_queries,
)
from testkit.rpc import INITIALIZE, HttpPeer, Peer, StdioPeer

N_CONNECT = 100  # per network face, interleaved in blocks
N_STDIO = 3  # each one a fresh interpreter importing torch & co.
N_SEARCH = 100  # per face, new queries
N_SEARCH_QUICK = 50


async def ws_session(url: str) -> float:
    """Connect, `initialize`, `notifications/initialized`, `tools/list`, close: ms."""
    t0 = time.perf_counter()
    peer = await Peer.open(url)
    await peer.result("initialize", INITIALIZE)
    await peer.notify("notifications/initialized", {})
    listed = await peer.result("tools/list")
    ms = (time.perf_counter() - t0) * 1000
    assert listed["tools"], listed
    await peer.close()
    return ms


async def http_session(url: str) -> float:
    """The same over Streamable HTTP: a new client (a new TCP connection), the session
    opened by `initialize`, then `tools/list`; the DELETE that ends it is not timed."""
    t0 = time.perf_counter()
    peer = await HttpPeer.open(url)
    listed = await peer.result("tools/list")
    ms = (time.perf_counter() - t0) * 1000
    assert listed["tools"], listed
    await peer.close()
    return ms


async def stdio_session(ctx: Context) -> float:
    """Spawn `mcp_server.py --stdio`, `initialize`, `tools/list`: what a host waits."""
    t0 = time.perf_counter()
    peer = await StdioPeer.open(bench_flags(ctx.small, RUN_DIR / "summaries_stdio.csv", "embedded"))
    listed = await peer.result("tools/list", timeout=60)
    ms = (time.perf_counter() - t0) * 1000
    assert listed["tools"], listed
    await peer.close()
    return ms


async def run_connect(ctx: Context) -> list[Row]:
    log("connect + initialize + tools/list on each face")
    srv = (await ctx.shared("faces100")).server
    assert srv.http_url is not None
    mcp_url = srv.http_url + "/mcp"
    for _ in range(5):  # warm both paths
        await ws_session(srv.url)
        await http_session(mcp_url)
    cpu: dict[str, list[float]] = {"ws": [0.0, 0.0], "http": [0.0, 0.0]}  # client, server

    async def timed_cpu(face: str, session: Awaitable[float]) -> float:
        c0, s0 = time.process_time(), proc_cpu_s(srv.pid)
        ms = await session
        cpu[face][0] += time.process_time() - c0
        cpu[face][1] += proc_cpu_s(srv.pid) - s0
        return ms

    ws_t: list[float] = []
    http_t: list[float] = []
    for _ in range(N_CONNECT // 20):  # interleaved in blocks: both see the same noise
        ws_t += [await timed_cpu("ws", ws_session(srv.url)) for _ in range(20)]
        http_t += [await timed_cpu("http", http_session(mcp_url)) for _ in range(20)]
    stdio_t = [await stdio_session(ctx) for _ in range(N_STDIO)]
    per = {f: [c / N_CONNECT * 1000 for c in v] for f, v in cpu.items()}  # ms per session
    ws, http = summary(ws_t), summary(http_t)
    return [
        Row(
            "session_ws",
            "Connect + `initialize` + `tools/list`, WebSocket",
            "ms",
            ws,
            target="median < 5 ms",
            ok=ws["median"] < 5,
        ),
        Row(
            "session_http",
            "Connect + `initialize` + `tools/list`, MCP over HTTP",
            "ms",
            http,
            ws,
            "the WebSocket face, interleaved",
            "extra",
            "median < 5 ms",
            http["median"] < 5,
            note="a new HTTP client each time: TCP connect, the POST that opens the session, "
            "`notifications/initialized` (202) and `tools/list`; the closing DELETE not timed. "
            f"CPU per session, this client / the server: HTTP {per['http'][0]:.2f} / "
            f"{per['http'][1]:.2f} ms, WebSocket {per['ws'][0]:.2f} / {per['ws'][1]:.2f} ms",
        ),
        Row(
            "session_stdio",
            "Spawn + `initialize` + `tools/list`, MCP over stdio",
            "ms",
            summary(stdio_t),
            target="< 15 s (hosts give up after about 15 s)",
            ok=max(stdio_t) < 15_000,
            note=f"a fresh `mcp_server.py --stdio` each time (n = {N_STDIO}): the interpreter "
            "starts and imports, answers at once, and loads data, index and model in the "
            "background",
        ),
    ]


async def run_search(ctx: Context) -> list[Row]:
    n = N_SEARCH_QUICK if ctx.quick else N_SEARCH
    log(f"search: MCP over HTTP against the WebSocket, {n} queries each")
    srv = (await ctx.shared("faces100")).server
    assert srv.http_url is not None
    ws = await Peer.open(srv.url)
    await ws.result("initialize", INITIALIZE)
    http = await HttpPeer.open(srv.http_url + "/mcp")
    queries = unique_queries(2 * n + 20, seed=13)
    warm, fresh = queries[:20], queries[20:]

    cpu = {id(ws): [0.0, 0.0], id(http): [0.0, 0.0]}  # this client's, the server's: cached

    async def search(peer: Peer | HttpPeer, q: str, count: bool = False) -> float:
        params = {"name": "search", "arguments": {"query": q, "top_k": 5}}
        c0, s0 = time.process_time(), proc_cpu_s(srv.pid)
        s, res = await result(peer, "tools/call", params)
        if count:
            cpu[id(peer)][0] += time.process_time() - c0
            cpu[id(peer)][1] += proc_cpu_s(srv.pid) - s0
        assert not res.get("isError"), res
        return s * 1000

    for q in warm:
        await search(ws, q)
        await search(http, q)
    ws_t, http_t = [], []
    for i in range(n):  # each query new to the face it goes to; the faces take turns first
        a, b = fresh[2 * i], fresh[2 * i + 1]
        if i % 2:
            ws_t.append(await search(ws, a))
            http_t.append(await search(http, b))
        else:
            http_t.append(await search(http, a))
            ws_t.append(await search(ws, b))
    # Repeated queries (vectors cached): what is left is ranking, Chroma and the face.
    ws_c, http_c = [], []
    for i, q in enumerate(fresh[: n // 2]):
        for side in (0, 1) if i % 2 else (1, 0):
            peer = ws if side == 0 else http
            (ws_c if side == 0 else http_c).append(await search(peer, q, count=True))
    per = {p: [c / len(ws_c) * 1000 for c in v] for p, v in cpu.items()}  # ms per search
    pw, ph = per[id(ws)], per[id(http)]
    await ws.close()
    await http.close()
    h, w = summary(http_t), summary(ws_t)
    hc, wc = summary(http_c), summary(ws_c)
    return [
        Row(
            "search_http",
            "Search through MCP over HTTP, 100 patients",
            "ms",
            h,
            w,
            "`tools/call search` over the WebSocket, interleaved",
            "extra",
            "median within 2 ms of the WebSocket",
            abs(h["median"] - w["median"]) < 2,
            note="every query new to the face it is sent to, so each pays for its embedding",
        ),
        Row(
            "search_http_cached",
            "Search through MCP over HTTP, repeated query",
            "ms",
            hc,
            wc,
            "`tools/call search` over the WebSocket, interleaved",
            "extra",
            "median within 2 ms of the WebSocket",
            abs(hc["median"] - wc["median"]) < 2,
            note="the query vector comes from the cache: what is left is ranking, Chroma and "
            "the face, so the difference is the face's and the client's. CPU per search, "
            f"this client / the server: HTTP {ph[0]:.2f} / {ph[1]:.2f} ms, WebSocket "
            f"{pw[0]:.2f} / {pw[1]:.2f} ms (the HTTP client is httpx, the WebSocket one "
            "`websockets`)",
        ),
    ]
