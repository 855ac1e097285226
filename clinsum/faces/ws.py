"""The WebSocket face: moves frames between connections and the JSON-RPC dispatchers.

This module moves frames and enforces the limits; who may connect is decided by the shared
`Policy` (`access.py`), and what a frame means by the dispatchers it is given (built once by
`compose.py`: plain methods and MCP, with the original tool's aliases). Each request runs in
its own task, so a `ping` is answered while summaries stream, and a cancelled or disconnected
request takes its generation down with it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..access import PAGE_SUBPROTOCOL, Policy, RefusalLog
from ..config import Config
from ..errors import StartupError
from ..jsonrpc import Dispatcher, Session, dumps, notification, parse

log = logging.getLogger("WebSocket")

# Requests from one connection that may run at once before we stop reading its frames.
MAX_PENDING_PER_CONNECTION = 64


class Transport:
    """Moves frames between WebSocket connections and the dispatcher."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        config: Config,
        policy: Policy,
        paths: dict[str, Dispatcher] | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.paths = paths or {}  # URL path -> its dispatcher; any other path: `dispatcher`
        self.config = config
        self.policy = policy
        self.sessions: dict[ServerConnection, Session] = {}
        self._refusals = RefusalLog()

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse before any JSON-RPC is read: the shared policy (401, 403), then too many
        connections (503)."""
        refusal = self.policy.refuse(request.headers.raw_items())
        if refusal is not None:
            if self._refusals.should_log(refusal, time.monotonic()):
                log.warning(
                    "Refused %s (%d): %s%s",
                    _peer(connection),
                    refusal.status,
                    refusal.reason,
                    f" [{refusal.header}: {refusal.value}]" if refusal.value else "",
                )
            response = connection.respond(HTTPStatus(refusal.status), refusal.reason + "\n")
            if refusal.status == HTTPStatus.UNAUTHORIZED:
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
        # MCP clients may ask for "mcp", the web page for "clinsum" (next to its token);
        # plain clients ask for nothing and are welcome too.
        for name in ("mcp", PAGE_SUBPROTOCOL):
            if name in offered:
                return name
        return None

    async def handle(self, ws: ServerConnection) -> None:
        session = Session(peer=_peer(ws))
        self.sessions[ws] = session
        path = urlsplit(ws.request.path).path if ws.request else "/"
        dispatcher = self.paths.get(path, self.dispatcher)
        log.info("Client connected from %s (%d open)", session.peer, len(self.sessions))
        pending = asyncio.Semaphore(MAX_PENDING_PER_CONNECTION)
        tasks: set[asyncio.Task[None]] = set()

        async def send(message: Any) -> None:
            with suppress(ConnectionClosed):
                await ws.send(dumps(message))

        async def send_frame(message: dict[str, Any]) -> None:
            try:
                await ws.send(dumps(message))
            except ConnectionClosed:
                # Nobody is listening any more: stop the work as a cancellation would.
                raise asyncio.CancelledError from None

        async def notify(method: str, params: dict[str, Any]) -> None:
            await send_frame(notification(method, params))

        session.send_frame = send_frame  # the original tool's bare token frames use it

        async def answer(message: Any) -> None:
            try:
                reply = await dispatcher.handle(message, session, notify)
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
                    reply = await dispatcher.handle(message, session, notify)
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


def listen(config: Config) -> socket.socket:
    """Bind the WebSocket port now, before the app loads, so a taken port fails start-up at
    once and the port is known to the other faces (the page's CSP names it); `running`
    serves it once the app is ready. Connections made meanwhile wait in the backlog.

    Raises:
        StartupError: the port cannot be bound.
    """
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    try:
        sock = socket.create_server((config.host.strip("[]"), config.port), family=family)
    except OSError as exc:
        raise StartupError(_cannot_listen(config, exc)) from None
    # asyncio sets TCP_NODELAY only on sockets it made (proto IPPROTO_TCP, not create_server's
    # 0); without it each reply written in two pieces waits ~40 ms for the client's delayed
    # ACK (bench/results.md). Accepted connections inherit it from the listening socket.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _cannot_listen(config: Config, exc: OSError) -> str:
    return (
        f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"
        " (is another server already running there? pick another --port)"
    )


@asynccontextmanager
async def running(
    config: Config,
    dispatcher: Dispatcher,
    policy: Policy,
    *,
    paths: dict[str, Dispatcher] | None = None,
    sock: socket.socket | None = None,
) -> AsyncIterator[tuple[Server, Transport]]:
    """Serve `dispatcher` (and `paths`: URL path -> its own dispatcher) over WebSocket until
    the block exits, asking `policy` before each connection.

    Serves `sock` (from `listen`) if given, else binds `config.host` and `config.port`.

    Raises:
        StartupError: the port cannot be bound.
    """
    if policy.any_origin:
        log.warning(
            "--allowed-origin '*': any web page the user opens may read patient records "
            "from this server"
        )
    transport = Transport(dispatcher, config, policy, paths)
    where: dict[str, Any] = {"sock": sock} if sock else {"host": config.host, "port": config.port}
    try:
        server = await serve(
            transport.handle,
            **where,
            select_subprotocol=transport.select_subprotocol,
            process_request=transport.process_request,
            max_size=config.max_message_bytes,
            compression=None,  # tokens are tiny; deflate would only add latency per frame
            server_header=None,
        )
    except OSError as exc:
        raise StartupError(_cannot_listen(config, exc)) from None
    try:
        yield server, transport
    finally:
        for session in transport.sessions.values():
            session.cancel_all()
        server.close(reason="server shutting down")
        with suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 1.5)


__all__ = ["Transport", "listen", "running"]
