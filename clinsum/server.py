"""`python mcp_server.py`: the process around the server: the command line, the log, stdout
for `--stdio`, and an exit that does not wait for the interpreter's teardown.

What runs (the app, the dispatchers and the faces, each built once) is `compose.serve_forever`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, NoReturn

from . import logs
from .compose import serve_forever
from .config import parse_args
from .errors import StartupError
from .faces import stdio as stdio_face

server_log = logging.getLogger("Server")


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
