"""Shared by the browser tests and bench/web_page.py: the page's server and Debian's chromium.

`PageServer` runs, on a thread with its own event loop, the server's own WebSocket face
(`inprocess.inprocess`, with the Ollama backend pointed at a fake whose speed the caller
sets) and its HTTP face (which serves the page, with its CSP), both on free loopback ports and
sharing one `Policy`, as `mcp_server.py --http-port` runs them. In-process, so the index is
loaded once per test run and a benchmark can time the server's sends.

The browser is the system's chromium, never one `playwright install` downloads.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from clinsum.config import Config
from clinsum.faces import http as http_face
from testkit.inprocess import inprocess

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

    Attributes once entered: `url` (the page), `ws_url`, `live` (inprocess.Live).
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
        self._stop = asyncio.Event()
        try:
            async with inprocess(*self.args, **self.config) as live:
                ws_port = int(live.url.rsplit(":", 1)[1])
                config = Config(port=ws_port, http_port=0)
                async with http_face.running(config, live.app, live.transport.policy, ws_port) as f:
                    self.live = live
                    self.ws_url = live.url
                    self.url = f"{f.url}/"
                    ready.set_result(None)
                    await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

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
