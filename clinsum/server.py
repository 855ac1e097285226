"""`python mcp_server.py`: build the app once, serve it on every chosen face until SIGINT or
SIGTERM, exit fast.

The faces live in `clinsum/faces/` (WebSocket always, unless `--stdio`; HTTP with
`--http-port`; stdio with `--stdio`), the settings in `config.py`, the composition root in
`app.py`; this module only runs them, in one TaskGroup on one event loop, and stops them once.
Ports are bound before the app loads, so a taken port fails at once and the HTTP face can
answer /healthz (503) while the records, the index and the model load.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from contextlib import suppress
from typing import Any, NoReturn

from . import logs
from .app import build_app, wait_loaded
from .config import Config, StartupError, check_access, parse_args
from .faces import http as http_face
from .faces import stdio as stdio_face
from .faces import ws as ws_face
from .tools import App

log = logging.getLogger("WebSocket")
server_log = logging.getLogger("Server")


async def _load(config: Config, after: asyncio.Event) -> App:
    # The HTTP face starts first: its start-up imports would otherwise queue for seconds
    # behind torch's and Chroma's, which run in loading threads, and /healthz with them.
    await after.wait()
    app = await build_app(config)
    # What start-up loaded (torch, Chroma, the records) lives as long as the server; left in
    # the collector's view, every full collection walks half a million objects or more and
    # stops the event loop for ~0.5 s (more with more patients; bench/results.md).
    gc.freeze()
    return app


async def serve_forever(config: Config, protocol_fd: int | None = None) -> None:
    """Run the chosen faces until SIGINT/SIGTERM (or, with `--stdio`, until stdin closes).

    `protocol_fd` is the stdout `claim_stdout` kept for `--stdio`.

    Raises:
        StartupError: a port cannot be bound, or (without `--stdio`) the app cannot load.
    """
    check_access(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    policy = config.policy()
    ws_sock = None if config.stdio else ws_face.listen(config)
    ws_port = ws_sock.getsockname()[1] if ws_sock else None
    http_started = asyncio.Event()
    if config.http_port is None:
        http_started.set()
    loading = asyncio.ensure_future(_load(config, http_started))

    async def ws() -> None:
        async with ws_face.running(config, await loading, policy, ws_sock) as (server, _app):
            port = next(iter(server.sockets)).getsockname()[1]
            log.info("Server ready on ws://%s:%d", config.host, port)
            await stop.wait()

    async def http() -> None:
        async with http_face.running(config, loading, policy, ws_port):
            http_started.set()
            await stop.wait()

    async def stdio() -> None:
        assert protocol_fd is not None
        try:
            await stdio_face.serve(loading, protocol_fd, config.max_message_bytes)
        finally:
            stop.set()  # the host closed stdin: it is done with us

    async def ready_on_stdio() -> None:
        # Loading failed is not fatal here: the host shows each tool call's error instead.
        with suppress(StartupError):
            await wait_loaded(loading)
            server_log.info("Server ready (MCP over stdio)")

    # The network faces end themselves once `stop` is set; stdio waits on the host's stdin,
    # so it is cancelled instead.
    faces: list[Coroutine[Any, Any, None]] = []
    cancelled_on_stop: list[Coroutine[Any, Any, None]] = []
    if config.stdio:
        cancelled_on_stop += [stdio(), ready_on_stdio()]
    else:
        faces.append(ws())
    if config.http_port is not None:
        faces.append(http())
    try:
        async with asyncio.TaskGroup() as group:
            for face in faces:
                group.create_task(face)
            to_cancel = [group.create_task(face) for face in cancelled_on_stop]
            await stop.wait()
            server_log.info("Shutting down: cancelling work and closing connections")
            loading.cancel()  # if still loading: nothing waits for it any more
            for task in to_cancel:
                task.cancel()
    except* StartupError as failed:
        raise failed.exceptions[0] from None
    finally:
        loading.cancel()
        app = await _settled(loading)
        if app is not None:
            await app.backend.aclose()
            await app.store.close()


async def _settled(loading: asyncio.Future[App]) -> App | None:
    with suppress(asyncio.CancelledError, StartupError):
        return await loading
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM; returns the exit code (2: cannot start)."""
    config = parse_args(argv)
    # Before the first log line and before anything loads: C libraries write to fd 1.
    protocol_fd = stdio_face.claim_stdout() if config.stdio else None
    logs.setup(config.log_level)
    # Searches and grounding checks run in worker threads that hold the GIL through long
    # Python stretches (transformers' module calls); at the default 5 ms switch interval a
    # burst of them kept the event loop waiting several intervals, and `ping` p99 went over
    # 20 ms with 100 clients searching. 1 ms brings it under (bench/results.md).
    sys.setswitchinterval(0.001)
    try:
        _run(serve_forever(config, protocol_fd))
    except StartupError as exc:
        server_log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


def _run(main_coro: Coroutine[Any, Any, None]) -> None:
    """`asyncio.run` without its last step, waiting for the worker threads: a model or index
    still loading in one cannot be interrupted, and would hold SIGTERM up for seconds.
    `exit_now` ends the process right after."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main_coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def exit_now(code: int) -> NoReturn:
    """Exit without the interpreter's teardown.

    By the time `main` returns, every save is fsynced and every connection closed; what is
    left is finalising torch, Chroma and llama.cpp, which takes seconds and would break the
    promise that SIGTERM stops the server within two.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run() -> NoReturn:
    """The `clinsum-server` command (and `python -m clinsum.server`): `main`, then `exit_now`."""
    exit_now(main())


__all__ = ["exit_now", "main", "run", "serve_forever"]

if __name__ == "__main__":
    run()
