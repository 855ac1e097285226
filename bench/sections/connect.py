"""Connect + `initialize`: what a new client waits before its first call, next to a bare
`websockets` echo server doing the same exchange."""

from __future__ import annotations

import time

import orjson
from websockets.asyncio.client import connect

from bench.harness import Context, Row, log, summary, worker

N_CONNECT = 200

INITIALIZE = orjson.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "bench", "version": "0"},
        },
    }
).decode()


async def measure_connect(url: str, n: int) -> list[float]:
    """Open a connection, send `initialize`, get the reply, close: ms each time."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        ws = await connect(url, compression=None, open_timeout=30)
        await ws.send(INITIALIZE)
        reply = orjson.loads(await ws.recv())
        times.append((time.perf_counter() - t0) * 1000)
        assert "result" in reply, reply
        await ws.close()
    return times


async def run(ctx: Context) -> list[Row]:
    log("connect + initialize")
    srv = (await ctx.shared("embedded100")).server
    async with worker("echo") as echo:
        assert echo.stdout is not None
        port = int(echo.stdout.readline())
        base_url = f"ws://127.0.0.1:{port}"
        await measure_connect(base_url, 10)
        await measure_connect(srv.url, 10)
        server_t: list[float] = []
        base_t: list[float] = []
        for _ in range(N_CONNECT // 20):  # interleaved in blocks: both see the same noise
            server_t += await measure_connect(srv.url, 20)
            base_t += await measure_connect(base_url, 20)
    s = summary(server_t)
    return [
        Row(
            "connect",
            "Connect + `initialize`",
            "ms",
            s,
            summary(base_t),
            "bare `websockets` echo server",
            "extra",
            "median < 5 ms",
            s["median"] < 5,
        )
    ]
