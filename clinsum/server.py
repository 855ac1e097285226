"""`python mcp_server.py`: build the app once, serve it until SIGINT/SIGTERM, exit fast.

The faces live in `clinsum/faces/`, the settings in `config.py`, the composition root in
`app.py`; this module only runs them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import logs
from .config import Config, StartupError, parse_args
from .faces.ws import running

log = logging.getLogger("WebSocket")
server_log = logging.getLogger("Server")


async def serve_forever(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running(config) as (server, _app):
        # What start-up loaded (torch, Chroma, the records) lives as long as the server; left
        # in the collector's view, every full collection walks half a million objects or more
        # and stops the event loop for ~0.5 s (more with more patients; bench/results.md).
        gc.freeze()
        port = next(iter(server.sockets)).getsockname()[1]
        log.info("Server ready on ws://%s:%d", config.host, port)
        await stop.wait()
        server_log.info("Shutting down: cancelling work and closing connections")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM; returns the exit code (2: cannot start)."""
    config = parse_args(argv)
    logs.setup(config.log_level)
    # Searches and grounding checks run in worker threads that hold the GIL through long
    # Python stretches (transformers' module calls); at the default 5 ms switch interval a
    # burst of them kept the event loop waiting several intervals, and `ping` p99 went over
    # 20 ms with 100 clients searching. 1 ms brings it under (bench/results.md).
    sys.setswitchinterval(0.001)
    try:
        asyncio.run(serve_forever(config))
    except StartupError as exc:
        server_log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


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


__all__ = ["exit_now", "main"]
