"""The HTTP face: one Starlette app under uvicorn, in the WebSocket face's process and loop.

All routes sit in one list (`build_asgi`): `/mcp` (MCP Streamable HTTP through the SDK's
session manager over `faces/sdk.py`'s server), `/healthz`, `/metrics`, and the web page.
One middleware (`_Guard`) asks the shared `Policy` before any protected route is served and
sets the Content-Security-Policy on every response; the SDK's own Host/Origin check is given
settings built from the same `Policy`, as a second line, never its default (which is off).

Rule 1: no route validates a tool's parameters or touches the store; `/mcp` reaches the tools
through `clinsum.mcp.call_tool`, like every MCP face.
Rule 2: this module, `sdk.py`, `stdio.py` and `clinsum/web` (the page's routes) are the only
ones that import `mcp`, `starlette` or `uvicorn`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import anyio
import uvicorn
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import web
from ..access import LOOPBACK_NAMES, Policy, RefusalLog, host_name
from ..app import App, AppSource, loaded, on_loaded
from ..config import Config
from ..errors import StartupError
from ..jsonrpc import INVALID_REQUEST, PARSE_ERROR, RPCError, error_reply, parse
from ..metrics import CONTENT_TYPE
from .sdk import build_server

log = logging.getLogger("HTTP")

# Paths anyone may read: the page and its files carry no patient data, and /healthz is what
# a supervisor polls. Everything else (/mcp, /metrics, any data route) needs the policy.
PUBLIC_PATHS = frozenset({"/", "/favicon.ico", "/config.json", "/healthz"})
PUBLIC_PREFIX = "/static/"
# The SDK parses a body again with stdlib json, whose recursion fails near 1,000 levels; no
# MCP message needs a tenth of this.
MAX_DEPTH = 256
SHUTDOWN_GRACE_S = 1  # uvicorn's wait for open responses once the sessions are closed


class _SdkClosedItsOwnStream(logging.Filter):
    """SDK 1.30 ends a session by closing its GET stream from both ends, then logs the
    reader's ClosedResourceError as an error with a traceback, at every shutdown with a
    client attached. Only that record is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (
            isinstance(exc, anyio.ClosedResourceError)
            and record.getMessage() == "Error in standalone SSE writer"
        )


logging.getLogger("mcp.server.streamable_http").addFilter(_SdkClosedItsOwnStream())


# A Host name that may stand in a CSP source: letters, digits, dots and hyphens only.
_HOST_NAME = re.compile(r"[A-Za-z0-9.-]{1,253}")


def content_security_policy(ws_port: int | None, host: str | None = None) -> str:
    """The CSP of every response: our own files only; the page may open our WebSocket, on
    the loopback names and on `host`, the name the page was asked for (a load balancer's)."""
    # Not "[::1]": CSP host-sources cannot be IPv6 literals (Chromium logs the policy as
    # invalid and ignores that source), so the page is for 127.0.0.1 and localhost.
    names = sorted(
        {n for n in LOOPBACK_NAMES if not n.startswith("[")} | ({host} if host else set())
    )
    ws = "".join(f" ws://{name}:{ws_port}" for name in names) if ws_port else ""
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'{ws}; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
    )


def security_settings(policy: Policy) -> TransportSecuritySettings:
    """The SDK's DNS-rebinding check, saying what `policy` says.

    The SDK checks Host and Origin under one switch: it is on exactly when the policy checks
    Host (a loopback bind) and limits origins; otherwise `_Guard` alone decides, which it
    does before the SDK sees the request anyway.
    """
    enabled = policy.check_host and not policy.any_origin
    hosts = sorted(policy.hosts)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=enabled,
        allowed_hosts=[*hosts, *(f"{h}:*" for h in hosts)],
        allowed_origins=sorted(policy.origins),
    )


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX)


def _is_json(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() == "application/json"


class _Guard:
    """Sets the CSP on every response; refuses protected paths as `Policy.refuse` says (401
    with WWW-Authenticate, 403), and a POST to /mcp that is not JSON (415)."""

    def __init__(self, app: ASGIApp, policy: Policy, ws_port: int | None) -> None:
        self.app = app
        self.policy = policy
        self.ws_port = ws_port
        self.csp = content_security_policy(ws_port)
        self._refusals = RefusalLog()

    def _csp(self, scope: Scope) -> str:
        """Behind a load balancer the page is asked for by the balancer's name, and opens the
        WebSocket there: that name joins connect-src, if the Host check accepts it."""
        name = host_name(Headers(scope=scope).get("host", ""))
        if (
            not name
            or name in LOOPBACK_NAMES
            or not _HOST_NAME.fullmatch(name)
            or (self.policy.check_host and name not in self.policy.hosts)
        ):
            return self.csp
        return content_security_policy(self.ws_port, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        csp = self._csp(scope)

        async def send_with_csp(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["Content-Security-Policy"] = csp
            await send(message)

        path: str = scope["path"]
        response: Response | None = None
        if not _is_public(path):
            raw = scope["headers"]
            refusal = self.policy.refuse((k.decode("latin-1"), v.decode("latin-1")) for k, v in raw)
            if refusal is not None:
                if self._refusals.should_log(refusal, time.monotonic()):
                    log.warning(
                        "Refused %s %s (%d): %s%s",
                        scope["method"],
                        path,
                        refusal.status,
                        refusal.reason,
                        f" [{refusal.header}: {refusal.value}]" if refusal.value else "",
                    )
                headers = {"WWW-Authenticate": 'Bearer realm="clinsum"'}
                response = PlainTextResponse(
                    refusal.reason + "\n",
                    refusal.status,
                    headers=headers if refusal.status == 401 else None,
                )
            elif (
                path == "/mcp"
                and scope["method"] == "POST"
                and not _is_json(Headers(scope=scope).get("content-type"))
            ):
                # The SDK answers 400 here; the spec's status for a body it cannot read is 415.
                response = PlainTextResponse(
                    "Unsupported Media Type: send JSON-RPC as Content-Type: application/json\n",
                    415,
                )
        if response is not None:
            await response(scope, receive, send_with_csp)
            return
        await self.app(scope, receive, send_with_csp)


def _deeper_than(value: object, limit: int) -> bool:
    """Whether JSON `value` nests lists and objects more than `limit` deep (no recursion)."""
    level = [value]
    for _ in range(limit):
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return False
    return any(isinstance(item, dict | list) for item in level)


class _McpEndpoint:
    """/mcp as a plain ASGI app, so Starlette hands the SDK the raw request.

    A POST's body is read and parsed here first, by the parser every face uses
    (`jsonrpc.parse`, orjson): the SDK's own (stdlib json) takes NaN, Infinity and lone
    surrogates, and answers 500 to invalid UTF-8 and to nesting deeper than Python's
    recursion limit. Those get 400 with -32700 here, as the WebSocket answers them -32700
    (there the limit is orjson's 1024 levels, here `MAX_DEPTH`); a body over `max_bytes`
    gets 413. The SDK then reads the same bytes, and every later `receive` (a disconnect)
    goes to the client's.
    """

    def __init__(self, manager: StreamableHTTPSessionManager, max_bytes: int) -> None:
        self.manager = manager
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await self.manager.handle_request(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                too_big = RPCError(
                    INVALID_REQUEST,
                    f"Payload Too Large: the body is over --max-message-bytes ({self.max_bytes})",
                )
                await JSONResponse(error_reply(None, too_big), 413)(scope, receive, send)
                return
        message, parse_error = parse(bytes(body))
        if parse_error is None and _deeper_than(message, MAX_DEPTH):
            parse_error = error_reply(
                None, RPCError(PARSE_ERROR, f"Parse error: nested deeper than {MAX_DEPTH} levels")
            )
        if parse_error is not None:
            await JSONResponse(parse_error, 400)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.manager.handle_request(scope, replay, send)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: `server.main` owns SIGINT/SIGTERM and stops
    every face in order (uvicorn's capture would also re-raise the signal after shutdown)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class HttpFace:
    """A running HTTP face: where it listens, and what `/metrics` counts."""

    url: str
    port: int
    manager: StreamableHTTPSessionManager
    server: uvicorn.Server

    def connections(self) -> int:
        return len(self.server.server_state.connections)

    def sessions(self) -> int:
        # The SDK keeps no public count; its table of live transports is the truth.
        return len(self.manager._server_instances)


def build_asgi(
    source: AppSource,
    policy: Policy,
    manager: StreamableHTTPSessionManager,
    ws_port: int | None,
) -> ASGIApp:
    """The HTTP face's whole ASGI app: every route in one list, behind `_Guard`.

    `ws_port` is the WebSocket face's port, which the page connects to; None with `--stdio`
    (no WebSocket face, so no page either).
    """

    async def healthz(request: Request) -> Response:
        app = loaded(source)
        if app is None:
            # "failed" only with --stdio, which keeps running to tell the host why.
            failed = not isinstance(source, App) and source.done()
            status = "failed" if failed else "loading"
            return JSONResponse({"status": status}, 503, headers={"Retry-After": "1"})
        return JSONResponse(
            {
                "status": "ok",
                "patients": len(app.patients),
                "backend": app.backend.name,
                "model": app.backend.model,
                "llm": app.backend.health(),
            }
        )

    async def metrics(request: Request) -> Response:
        app = loaded(source)
        if app is None:
            return PlainTextResponse("loading\n", 503, headers={"Retry-After": "1"})
        return Response(app.metrics.exposition(), media_type=CONTENT_TYPE)

    routes: list[BaseRoute] = [
        Route("/mcp", _McpEndpoint(manager, manager.max_request_body_size)),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    if ws_port is not None:  # the page is a client of the WebSocket face
        routes += web.routes(ws_port, policy.needs_token)
    return _Guard(Starlette(routes=routes), policy, ws_port)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host.strip("[]"), port), family=family)
        # As in faces/ws.py `listen`: without it uvicorn's header and body writes wait ~40 ms
        # for the client's delayed ACK. Accepted connections inherit it.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    except OSError as exc:
        raise StartupError(
            f"cannot listen on {host}:{port} for HTTP: {exc.strerror or exc}"
            " (is another server already running there? pick another --http-port)"
        ) from None


@contextlib.asynccontextmanager
async def running(
    config: Config, source: AppSource, policy: Policy, ws_port: int | None
) -> AsyncIterator[HttpFace]:
    """Serve HTTP on `config.http_port` until the block exits.

    Binds first, so the page's origin can be allowed (`policy.allow_page`) before anything is
    served. On exit the MCP sessions are closed first (their open streams end), then uvicorn
    stops, waiting at most `SHUTDOWN_GRACE_S` for responses still being written.

    Raises:
        StartupError: the port cannot be bound.
    """
    assert config.http_port is not None
    sock = _listen(config.host, config.http_port)
    port = sock.getsockname()[1]
    policy.allow_page(port)
    manager = StreamableHTTPSessionManager(
        build_server(source),
        security_settings=security_settings(policy),
        max_request_body_size=config.max_message_bytes,
        max_sessions=config.max_connections,
    )
    server = _Server(
        uvicorn.Config(
            build_asgi(source, policy, manager, ws_port),
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            ws="none",
            limit_concurrency=config.max_connections,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        )
    )
    host = f"[{config.host}]" if ":" in config.host else config.host
    face = HttpFace(f"http://{host}:{port}", port, manager, server)
    on_loaded(source, lambda app: app.metrics.watch("http", face.connections, face.sessions))
    task: asyncio.Task[None] | None = None
    try:
        # Leaving manager.run() cancels every MCP session (and its generation), which ends
        # their open streams; uvicorn, stopped after it, then has nothing left to wait for.
        async with manager.run():
            task = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started and not task.done():
                await asyncio.sleep(0.01)
            if task.done():
                task.result()  # uvicorn could not start: its error, as is
            log.info("HTTP face listening on %s (MCP at %s/mcp)", face.url, face.url)
            yield face
    finally:
        server.should_exit = True
        if task is not None:
            await task
        sock.close()


__all__ = ["HttpFace", "build_asgi", "content_security_policy", "running", "security_settings"]
