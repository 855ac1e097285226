"""Shared by the browser tests and bench/web_page.py: the page's server and Debian's chromium.

`PageServer` runs, on a thread with its own event loop, the in-process WebSocket face
(`robust_helpers.inprocess`, with the Ollama backend pointed at a fake whose speed the test
sets) beside the page's routes under uvicorn, both on free loopback ports. The page's origin
is allowed the way the HTTP face allows it (`Policy.allow_page`).

The browser is the system's chromium, never one `playwright install` downloads.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from clinsum import web

from .robust_helpers import inprocess

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch_chromium(playwright: Any) -> Any:
    """Debian's chromium through Playwright (sync API)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


class PageServer:
    """The WebSocket face and the page, served from a daemon thread; a context manager.

    Attributes once entered: `url` (the page), `ws_url`, `live` (robust_helpers.Live).
    """

    def __init__(self, data_dir: Path, summaries: Path, ollama_url: str, **config: Any) -> None:
        self.args = (data_dir, summaries, ollama_url)
        self.config = config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stop: asyncio.Event | None = None
        self._done: Any = None
        self.url = ""
        self.ws_url = ""
        self.live: Any = None

    async def _serve(self, ready: asyncio.Future[None]) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        http_port = sock.getsockname()[1]
        self._stop = asyncio.Event()
        try:
            async with inprocess(*self.args, **self.config) as live:
                live.transport.policy.allow_page(http_port)
                ws_port = int(live.url.rsplit(":", 1)[1])
                app = Starlette(routes=web.routes(ws_port, live.transport.policy.needs_token))
                server = uvicorn.Server(
                    uvicorn.Config(app, log_level="warning", lifespan="off", ws="none")
                )
                task = asyncio.create_task(server.serve(sockets=[sock]))
                while not server.started:
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.01)
                self.live = live
                self.ws_url = live.url
                self.url = f"http://127.0.0.1:{http_port}/"
                ready.set_result(None)
                await self._stop.wait()
                server.should_exit = True
                await task
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise
        finally:
            sock.close()

    def __enter__(self) -> PageServer:
        self._thread.start()

        async def start() -> None:
            ready = self._loop.create_future()
            self._done = asyncio.ensure_future(self._serve(ready))
            await ready

        asyncio.run_coroutine_threadsafe(start(), self._loop).result(120)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._stop is not None
            self._stop.set()
            await asyncio.wait_for(self._done, 15)

        try:
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(20)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
