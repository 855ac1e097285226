"""Helper processes the sections start (`harness.worker`), each in a process of its own so
this benchmark's own event loop does not colour what they time.

    python -m bench.workers echo              # bare websockets server: prints its port
    python -m bench.workers ping URL          # pings URL, idle then under load
    python -m bench.workers scrape PORT       # GET /metrics on PORT, idle then under load
    python -m bench.workers embedded DATA     # the embedded model, called in-process
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import re
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from websockets.asyncio.client import connect

PING_INTERVAL_S = 0.005
SCRAPE_INTERVAL_S = 0.02


async def echo_worker() -> None:
    """A bare websockets server answering every frame with a fixed reply: the floor for
    connect + initialize on this machine, with none of our code in the way."""
    from websockets.asyncio.server import serve

    reply = orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "x"}})

    async def handle(ws: Any) -> None:
        async for _ in ws:
            await ws.send(reply.decode())

    async with serve(handle, "127.0.0.1", 0, compression=None) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        print(port, flush=True)
        await asyncio.to_thread(sys.stdin.read)


async def embedded_worker(data: str) -> None:
    """Serves `relay.DirectWorker`: one line "PATIENT_ID MAX_TOKENS" in, one line of chunk
    times (perf_counter, which is the system-wide monotonic clock) out. The model runs in
    this process (`runner.Model`, as the model process runs it), with no process boundary:
    the reference the server's relay is measured against."""
    from dataclasses import asdict

    from clinsum.backends.base import DEFAULT_SETTINGS
    from clinsum.backends.embedded import EmbeddedBackend, default_model_path
    from clinsum.backends.runner import Model, Request, Settings
    from clinsum.prompt import build_messages, model_part_done, prefill
    from clinsum.records import load_patients

    patients = load_patients(data)
    threads = EmbeddedBackend().threads  # the server's share of the cores, the same here
    model = Model(str(default_model_path()), threads, Settings.of(asdict(DEFAULT_SETTINGS)))

    def generate(patient_id: int, max_tokens: int) -> tuple[list[float], float]:
        # The server's path: the strict style, stopped after the model's one sentence.
        patient = patients[patient_id]
        request = Request(1, build_messages(patient), prefill(patient), max_tokens)
        times: list[float] = []
        text = ""

        def send(chunk: str) -> None:
            nonlocal text
            times.append(time.perf_counter())
            text += chunk
            if model_part_done("strict", text):
                request.cancelled.set()

        start = time.perf_counter()
        model.generate(request, send)
        return times, start

    gc.freeze()
    print("ready", flush=True)
    while line := await asyncio.to_thread(sys.stdin.readline):
        patient_id, max_tokens = map(int, line.split())
        times, start = await asyncio.to_thread(generate, patient_id, max_tokens)
        print(orjson.dumps({"times": times, "start": start}).decode(), flush=True)


async def probe_worker(once: Callable[[], Awaitable[str | None]], interval: float) -> None:
    """Times `once()` (a round trip; it returns an error text or None) from a process of its
    own, so the load generator's own event loop does not inflate the round trips it reports.
    Prints the idle baseline (2 s), then, between "go" and "stop" on stdin, the figures under
    load with this process's own timer lateness as the control."""

    async def probe_for(until: Callable[[], bool]) -> dict[str, list]:
        rtts: list[float] = []
        at: list[float] = []
        errors: list[str] = []
        start = time.perf_counter()
        while not until():
            t0 = time.perf_counter()
            error = await once()
            rtts.append((time.perf_counter() - t0) * 1000)
            at.append(t0 - start)
            if error:
                errors.append(error)
            await asyncio.sleep(interval)
        return {"rtt_ms": rtts, "at_s": at, "errors": errors}

    end = time.perf_counter() + 2.0
    idle = await probe_for(lambda: time.perf_counter() > end)
    print(orjson.dumps(idle).decode(), flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # "go"
    stop = asyncio.Event()

    async def wait_stop() -> None:
        await asyncio.to_thread(sys.stdin.readline)
        stop.set()

    async def lag_probe() -> list[float]:
        # The control: how late this process's own timers fire. A round trip that is late
        # because this process was not scheduled says nothing about the server.
        lags = []
        while not stop.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(interval)
            lags.append((time.perf_counter() - t0 - interval) * 1000)
        return lags

    waiter = asyncio.create_task(wait_stop())
    probe = asyncio.create_task(lag_probe())
    loaded = await probe_for(stop.is_set)
    await waiter
    loaded["own_lag_ms"] = await probe
    print(orjson.dumps(loaded).decode(), flush=True)


async def ping_worker(url: str) -> None:
    """`ping` round trips over the WebSocket, every 5 ms."""
    async with connect(url, compression=None) as ws:
        ids = itertools.count(1)

        async def ping() -> str | None:
            await ws.send(f'{{"jsonrpc":"2.0","id":{next(ids)},"method":"ping"}}')
            reply = orjson.loads(await ws.recv())
            return None if "result" in reply else str(reply)

        await probe_worker(ping, PING_INTERVAL_S)


async def scrape_worker(port: str) -> None:
    """GET /metrics every 20 ms on one kept-alive connection, as lean as a Prometheus
    scraper: a request line out; status line, headers and a Content-Length body in."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(port))

    async def scrape() -> str | None:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        body = await reader.readexactly(int(length[1])) if length else b""
        if not head.startswith(b"HTTP/1.1 200") or b"clinsum_tokens_generated" not in body:
            return head.decode(errors="replace")[:200]
        return None

    try:
        await probe_worker(scrape, SCRAPE_INTERVAL_S)
    finally:
        writer.close()


WORKERS = {
    "echo": echo_worker,
    "ping": ping_worker,
    "scrape": scrape_worker,
    "embedded": embedded_worker,
}


def main(argv: list[str]) -> int:
    role, *rest = argv
    asyncio.run(WORKERS[role](*rest))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
