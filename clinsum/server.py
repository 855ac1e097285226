"""The WebSocket transport around the JSON-RPC dispatcher, and the server's command line.

This module moves frames and enforces the limits and the access rules; what a frame means is
decided in `jsonrpc`, `mcp` and `tools`. Each request runs in its own task, so a `ping` is
answered while summaries stream, and a cancelled or disconnected request takes its generation
down with it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hmac
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager, suppress
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, NoReturn

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from . import logs
from .backends import KINDS, Backend, LLMError, create_backend
from .jsonrpc import Dispatcher, Session, dumps, notification, parse
from .mcp import build_dispatcher
from .prompt import STYLES, build_messages, prefill
from .records import Patient, RecordError, load_patients
from .search import PatientIndex, SearchError
from .store import StoreError, SummaryStore
from .tools import App

log = logging.getLogger("WebSocket")
server_log = logging.getLogger("Server")

DEFAULT_PORT = 8765
# Requests from one connection that may run at once before we stop reading its frames.
MAX_PENDING_PER_CONNECTION = 64


class StartupError(RuntimeError):
    """The server cannot start; the message tells the user what to change."""


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data: Path = Path("patient_data.csv")
    summaries: Path = Path("patient_summaries.csv")
    chroma_url: str | None = None
    backend: str = "auto"
    model: str | None = None
    model_path: str | None = None
    ollama_host: str | None = None
    llm_timeout: float = 60.0
    summary_style: str | None = None  # prompt.STYLES; None: the backend's default
    log_level: str = "info"
    max_message_bytes: int = 1 << 20
    max_inflight: int = 4
    max_connections: int = 256
    auth_token: str | None = None
    allow_unauthenticated: bool = False
    allowed_origins: list[str] = field(default_factory=list)
    show_progress: bool = True


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_access(config: Config) -> None:
    """Refuse to expose patient records to the network without a token."""
    if not is_loopback(config.host) and not config.auth_token and not config.allow_unauthenticated:
        raise StartupError(
            f"refusing to listen on {config.host} without authentication: patient records "
            "would be open to the network. Set --auth-token (or MCP_AUTH_TOKEN), or pass "
            "--allow-unauthenticated if this network is trusted."
        )


async def build_app(config: Config) -> App:
    """Load records, open the index and the model (in parallel), and the summaries file."""
    try:
        patients = await asyncio.to_thread(load_patients, config.data)
    except RecordError as exc:
        raise StartupError(str(exc)) from None
    server_log.info("Loaded %d patients from %s", len(patients), config.data)

    async def open_index() -> PatientIndex:
        index = await asyncio.to_thread(
            PatientIndex.open,
            patients,
            config.data,
            chroma_url=config.chroma_url,
            show_progress=config.show_progress,
        )
        # torch sets itself up on the first query (tens of ms): before anyone waits for it.
        with suppress(SearchError):
            await asyncio.to_thread(index.search, "warm-up", 1)
        return index

    async def open_backend() -> tuple[Backend, str]:
        backend, reason = await create_backend(
            config.backend,
            model=config.model,
            model_path=config.model_path,
            ollama_host=config.ollama_host,
            timeout=config.llm_timeout,
        )
        if backend.name == "embedded":
            await _warm_up(backend, next(iter(patients.values())))
        return backend, reason

    try:
        index, (backend, reason) = await asyncio.gather(open_index(), open_backend())
    except (SearchError, LLMError) as exc:
        raise StartupError(str(exc)) from None
    server_log.info("LLM backend: %s (model %s): %s", backend.name, backend.model, reason)
    store = SummaryStore(config.summaries)
    try:
        await asyncio.to_thread(store.ensure_exists)
    except (StoreError, OSError) as exc:
        raise StartupError(f"cannot use summaries file {config.summaries}: {exc}") from None
    return App(
        patients,
        index,
        backend,
        store,
        max_inflight=config.max_inflight,
        summary_style=config.summary_style,
    )


async def _warm_up(backend: Backend, patient: Patient) -> None:
    """Evaluate the prompt every summary starts with while the embedder is still loading,
    so the first summary after start-up waits no longer than later ones (bench/results.md)."""
    stream = backend.stream(build_messages(patient), prefill(patient), max_tokens=1)
    with suppress(LLMError):
        async with aclosing(stream):
            async for _ in stream:
                break


class Transport:
    """Moves frames between WebSocket connections and the dispatcher."""

    def __init__(self, dispatcher: Dispatcher, config: Config) -> None:
        self.dispatcher = dispatcher
        self.config = config
        self.sessions: dict[ServerConnection, Session] = {}
        self._token = (config.auth_token or "").encode()

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse before any JSON-RPC is read: no token (401) or too many connections (503)."""
        if self._token:
            # Exactly one Authorization header: `get` raises on two (a 500 and a traceback).
            values = request.headers.get_all("Authorization")
            given = values[0] if len(values) == 1 else ""
            scheme, _, credential = given.partition(" ")
            ok = scheme.lower() == "bearer" and hmac.compare_digest(
                credential.strip().encode(), self._token
            )
            if not ok:
                log.warning("Rejected %s: missing or wrong bearer token", _peer(connection))
                response = connection.respond(
                    HTTPStatus.UNAUTHORIZED, "Missing or invalid bearer token\n"
                )
                response.headers["WWW-Authenticate"] = 'Bearer realm="clinsum"'
                return response
        if len(self.sessions) >= self.config.max_connections:
            log.warning("Rejected %s: %d connections open", _peer(connection), len(self.sessions))
            return connection.respond(
                HTTPStatus.SERVICE_UNAVAILABLE, "Too many connections; try again later\n"
            )
        return None

    @staticmethod
    def select_subprotocol(connection: ServerConnection, offered: Sequence[str]) -> str | None:
        # MCP clients may ask for "mcp"; plain clients ask for nothing and are welcome too.
        return "mcp" if "mcp" in offered else None

    async def handle(self, ws: ServerConnection) -> None:
        session = Session(peer=_peer(ws))
        self.sessions[ws] = session
        log.info("Client connected from %s (%d open)", session.peer, len(self.sessions))
        pending = asyncio.Semaphore(MAX_PENDING_PER_CONNECTION)
        tasks: set[asyncio.Task[None]] = set()

        async def send(message: Any) -> None:
            with suppress(ConnectionClosed):
                await ws.send(dumps(message))

        async def notify(method: str, params: dict[str, Any]) -> None:
            try:
                await ws.send(dumps(notification(method, params)))
            except ConnectionClosed:
                # Nobody is listening any more: stop the work as a cancellation would.
                raise asyncio.CancelledError from None

        async def answer(message: Any) -> None:
            try:
                reply = await self.dispatcher.handle(message, session, notify)
                if reply is not None:
                    await send(reply)
            except (ConnectionClosed, asyncio.CancelledError):
                pass
            finally:
                pending.release()

        try:
            async for frame in ws:
                if isinstance(frame, bytes):
                    await ws.close(1003, "binary frames are not supported; send JSON text")
                    break
                message, error = parse(frame)
                if error is not None:
                    await send(error)
                    continue
                if isinstance(message, dict) and "id" not in message:
                    # Notifications (cancel above all) are handled at once, never queued.
                    # One that is not a valid request is still answered (-32600, id null).
                    reply = await self.dispatcher.handle(message, session, notify)
                    if reply is not None:
                        await send(reply)
                    continue
                await pending.acquire()
                task = asyncio.create_task(answer(message))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except ConnectionClosed:
            pass
        finally:
            session.cancel_all()
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            del self.sessions[ws]
            log.info(
                "Client %s disconnected (code %s, %d open)",
                session.peer,
                ws.close_code,
                len(self.sessions),
            )


def _peer(ws: ServerConnection) -> str:
    addr = ws.remote_address
    return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)


@asynccontextmanager
async def running(config: Config, app: App | None = None) -> AsyncIterator[tuple[Server, App]]:
    """Start the server (building the app unless given one) and close it on exit."""
    check_access(config)
    app = app or await build_app(config)
    transport = Transport(build_dispatcher(app), config)
    origins: list[str | None] | None = None
    if config.allowed_origins:
        # Browsers always send Origin; other clients send none and are let through.
        origins = [*config.allowed_origins, None]
    try:
        server = await serve(
            transport.handle,
            config.host,
            config.port,
            origins=origins,
            select_subprotocol=transport.select_subprotocol,
            process_request=transport.process_request,
            max_size=config.max_message_bytes,
            compression=None,  # tokens are tiny; deflate would only add latency per frame
            server_header=None,
        )
    except OSError as exc:
        raise StartupError(
            f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"
            " (is another server already running there? pick another --port)"
        ) from None
    try:
        yield server, app
    finally:
        for session in transport.sessions.values():
            session.cancel_all()
        server.close(reason="server shutting down")
        with suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 1.5)
        await app.backend.aclose()


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


def parse_args(argv: Sequence[str] | None = None) -> Config:
    p = argparse.ArgumentParser(
        prog="mcp_server.py",
        description="Clinical patient-summary server: JSON-RPC 2.0 and MCP over WebSocket.",
        epilog=(
            "examples:\n"
            "  python mcp_server.py                      # ws://127.0.0.1:8765, auto backend\n"
            "  python mcp_server.py --backend embedded --port 9000\n"
            "  python mcp_server.py --host 0.0.0.0 --auth-token s3cret\n"
            "  python mcp_server.py --chroma-url http://127.0.0.1:8000"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 8765; 0 = any)")
    p.add_argument("--data", type=Path, default=Path("patient_data.csv"), help="patients CSV")
    p.add_argument(
        "--summaries",
        type=Path,
        default=Path("patient_summaries.csv"),
        help="where saved summaries go (created if missing)",
    )
    p.add_argument(
        "--chroma-url", help="use a Chroma server (http://HOST:PORT) instead of embedded Chroma"
    )
    p.add_argument(
        "--backend",
        choices=KINDS,
        default="auto",
        help="LLM backend; auto = Ollama if reachable with the model pulled, else embedded",
    )
    p.add_argument("--model", help="Ollama model name (default phi)")
    p.add_argument("--model-path", help="GGUF file for the embedded backend (default SmolLM2)")
    p.add_argument(
        "--ollama-host",
        default=os.environ.get("OLLAMA_HOST"),
        help="Ollama URL (default $OLLAMA_HOST or http://127.0.0.1:11434)",
    )
    p.add_argument(
        "--llm-timeout",
        type=float,
        default=60.0,
        help="seconds a model may stay silent before the call fails (default 60)",
    )
    p.add_argument(
        "--summary-style",
        choices=STYLES,
        help="strict: the record's facts are written from the record and the model adds the "
        "assessment (default for embedded); narrative: the model writes the whole summary "
        "from the digest, checked afterwards (default for Ollama)",
    )
    p.add_argument("--log-level", choices=logs.LEVELS, default="info")
    p.add_argument(
        "--max-message-bytes",
        type=int,
        default=1 << 20,
        help="largest frame accepted; larger ones close the connection with 1009 (default 1 MiB)",
    )
    p.add_argument(
        "--max-inflight",
        type=int,
        default=4,
        help="summaries one connection may run at once; beyond it a busy error (default 4)",
    )
    p.add_argument(
        "--max-connections", type=int, default=256, help="open connections allowed (default 256)"
    )
    p.add_argument(
        "--auth-token",
        default=os.environ.get("MCP_AUTH_TOKEN") or None,
        help="require 'Authorization: Bearer TOKEN' (default $MCP_AUTH_TOKEN)",
    )
    p.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="allow a non-loopback --host without --auth-token",
    )
    p.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="accept browser clients from this Origin only (repeatable); others get 403",
    )
    a = p.parse_args(argv)
    for name in ("max_message_bytes", "max_inflight", "max_connections"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= a.port <= 65535:
        p.error("--port must be between 0 and 65535")
    if a.auth_token is not None and not a.auth_token.strip():
        # `--auth-token "$UNSET"` would otherwise run without authentication, silently.
        p.error("--auth-token must not be empty")
    return Config(
        host=a.host,
        port=a.port,
        data=a.data,
        summaries=a.summaries,
        chroma_url=a.chroma_url,
        backend=a.backend,
        model=a.model,
        model_path=a.model_path,
        ollama_host=a.ollama_host,
        llm_timeout=a.llm_timeout,
        summary_style=a.summary_style,
        log_level=a.log_level,
        max_message_bytes=a.max_message_bytes,
        max_inflight=a.max_inflight,
        max_connections=a.max_connections,
        auth_token=a.auth_token,
        allow_unauthenticated=a.allow_unauthenticated,
        allowed_origins=a.allowed_origin,
        show_progress=sys.stderr.isatty(),
    )


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


__all__ = ["Config", "StartupError", "Transport", "build_app", "exit_now", "main", "running"]
