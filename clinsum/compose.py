"""The composition root: everything the server is made of, built once and handed down.

`serve_forever` checks access once, builds the one `Policy`, binds the ports, loads the app
once (`build_app`: records, index, model, store; in the background), builds the dispatchers
once (`build_dispatchers`: plain methods and MCP, with the original tool's aliases), and
gives each face what it serves: the WebSocket face its dispatchers, the HTTP and stdio faces
the app (or its loading future), which their SDK server calls. It runs them in one TaskGroup
on one event loop until SIGINT/SIGTERM, and stops them once. Ports are bound before the app
loads, so a taken port fails at once and the HTTP face can answer /healthz (503) while the
records, the index and the model load.

Nothing below this module builds an app, a policy or a dispatcher of its own.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager, suppress
from typing import Any

from . import records
from .access import Policy, check_access
from .app import App, wait_loaded
from .backends import Backend, LLMError, create_backend
from .config import Config
from .errors import StartupError
from .faces import http as http_face
from .faces import stdio as stdio_face
from .faces import ws as ws_face
from .jsonrpc import Dispatcher
from .legacy import protocol as legacy_protocol
from .mcp import build_dispatcher
from .prompt import build_messages, prefill
from .records import RecordError
from .search import PatientIndex, SearchError
from .steering import steer
from .store import StoreError, open_store

log = logging.getLogger("WebSocket")
server_log = logging.getLogger("Server")


async def build_app(config: Config) -> App:
    """Load the records, open the summaries store, start the model, open the index.

    The embedded model loads in processes of its own while the index opens here; summaries
    wait in its queue until it is ready, and everything else is served at once.
    """
    if config.data_note:
        server_log.info("%s", config.data_note)
    try:
        loaded = await asyncio.to_thread(records.load, config.data)
    except RecordError as exc:
        raise StartupError(str(exc)) from None
    patients = loaded.patients
    server_log.info(
        "Loaded %d patients from %s (%s; scores on a 0-%g scale%s)",
        len(patients),
        config.data,
        loaded.kind,
        loaded.scale,
        ", since some are above 1" if loaded.scale == 10 else "",
    )
    for note in loaded.notes:
        server_log.info("%s: %s", config.data, note)
    # Before the index and the model: a store that cannot be used fails the start at once.
    try:
        store = open_store(config.store, config.summaries, draft_ttl_s=config.draft_ttl_s)
        await store.open()
    except StoreError as exc:
        raise StartupError(f"cannot use the summaries store: {exc}") from None
    server_log.info("Summaries store: %s", store.label)

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
        # The embedded model loads in its own processes: it returns at once, and summaries
        # wait in its queue (hearing their place) until a process is ready.
        first = patients.at(0) if len(patients) else None
        style = config.summary_style or "strict"  # the embedded backend's default
        return await create_backend(
            config.backend,
            model=config.model,
            model_path=config.model_path,
            ollama_host=config.ollama_host,
            llm_url=config.llm_url,
            api_key=config.api_key,
            workers=config.model_workers,
            warm_up=(
                (build_messages(first, style), prefill(first, style), steer(first, style=style))
                if first
                else None
            ),
            timeout=config.llm_timeout,
        )

    try:
        backend, reason = await open_backend()
    except LLMError as exc:
        await store.close()
        raise StartupError(str(exc)) from None
    server_log.info("LLM backend: %s (model %s): %s", backend.name, backend.model, reason)
    try:
        index = await open_index()
    except SearchError as exc:
        await backend.aclose()
        await store.close()
        raise StartupError(str(exc)) from None
    except BaseException:  # cancelled (SIGTERM while loading): no model process outlives us
        await backend.aclose()
        await store.close()
        raise
    return App(
        patients,
        index,
        backend,
        store,
        max_inflight=config.max_inflight,
        summary_style=config.summary_style,
        draft_ttl_s=config.draft_ttl_s,
        token_id=token_id(config.auth_token),
    )


def token_id(token: str | None) -> str | None:
    """How the audit trail names the token a caller presented: a fingerprint, never the token."""
    if token is None:
        return None
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def build_dispatchers(app: App) -> tuple[Dispatcher, dict[str, Dispatcher]]:
    """The WebSocket face's dispatchers: plain methods and MCP, where the original tool's
    tools can be called too, and (by URL path) `/mcp`, where its clients connect and
    `tools/list` shows its names."""
    plain = legacy_protocol.install(build_dispatcher(app), app)
    legacy = legacy_protocol.install(build_dispatcher(app), app, listing=True)
    return plain, {legacy_protocol.PATH: legacy}


@asynccontextmanager
async def websocket(
    config: Config,
    app: App | None = None,
    policy: Policy | None = None,
    sock: socket.socket | None = None,
) -> AsyncIterator[tuple[ws_face.Server, App]]:
    """The WebSocket face over `app`'s dispatchers until the block exits.

    Builds the app unless given one, and then also closes its backend on exit; `policy`
    defaults to `config.policy()`; serves `sock` (from `ws_face.listen`) if given.
    """
    owned = app is None
    app = app or await build_app(config)
    try:
        plain, paths = build_dispatchers(app)
        async with ws_face.running(
            config, plain, policy or config.policy(), paths=paths, sock=sock
        ) as (server, transport):
            app.metrics.watch(
                "ws", lambda: len(transport.sessions), lambda: len(transport.sessions)
            )
            yield server, app
    finally:
        if owned:
            await app.backend.aclose()


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
        async with websocket(config, await loading, policy, ws_sock) as (server, _app):
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


__all__ = ["build_app", "build_dispatchers", "serve_forever", "token_id", "websocket"]
