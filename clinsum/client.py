"""The async client both command-line tools share: one WebSocket, many calls in flight.

One background reader owns the socket's receiving side, so a summary can stream while a
`ping` or a `search` is answered on the same connection: replies are routed to their caller
by id, notifications by the `request_id` they carry. Every way the connection can fail ends
in a `ClientError` whose message is meant for the user as it is, so the command-line tools
never have to show a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from . import __version__, jsonrpc
from .errors import UNKNOWN_PATIENT  # noqa: F401 - read by render.py through the client

PROTOCOL_VERSION = "2025-11-25"
DEFAULT_URL = "ws://127.0.0.1:8765"
DEFAULT_TIMEOUT = 120.0
# list_summaries returns the whole CSV; a few thousand summaries easily pass websockets' 1 MiB.
MAX_FRAME_BYTES = 64 * 1024 * 1024

FrameHook = Callable[[str, str], None]  # (direction "send" | "recv", frame text)
NotificationHook = Callable[[str, dict[str, Any]], None]  # (method, params)


class ClientError(Exception):
    """A failure whose message can be shown to the user as it is."""

    exit_code = 1


class ConnectFailed(ClientError):
    """The connection could not be opened (bad URL, refused token, not our server)."""

    exit_code = 2  # nothing was done: like a usage error, the user has to change something


class ServerUnreachable(ConnectFailed):
    """Nothing answered at the URL: the one case where starting a local server helps."""


class ConnectionLost(ClientError):
    """The connection dropped; every call still waiting fails with this."""


class RequestTimeout(ClientError):
    """The server said nothing about a request for longer than the client's timeout."""


class RPCError(ClientError, jsonrpc.RPCError):
    """A JSON-RPC error reply: the server's code, message and data, kept as sent.

    The server's one `jsonrpc.RPCError`, and a `ClientError` too, so a tool that does not
    handle it shows its message like any other failure.
    """

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "data": self.data}


@dataclass
class _Pending:
    future: asyncio.Future[Any]
    on_notify: NotificationHook | None
    last_heard: float = field(default_factory=time.monotonic)


def is_loopback_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in {"localhost", "::1"} or host.startswith("127.")


class Client:
    """A JSON-RPC 2.0 / MCP client over one WebSocket; use `Client.connect`."""

    def __init__(
        self,
        ws: ClientConnection,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        on_frame: FrameHook | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.server_info: dict[str, Any] = {}
        self.protocol_version: str | None = None
        self.tools: list[dict[str, Any]] = []
        self.llm: tuple[str, str] | None = None  # (backend, model) once the server says
        self._ws = ws
        self._on_frame = on_frame
        self._ids = itertools.count(1)
        self._pending: dict[Any, _Pending] = {}
        self._lost: ConnectionLost | None = None
        self._reader = asyncio.create_task(self._read(), name="clinsum-client-reader")

    @classmethod
    async def connect(
        cls,
        url: str,
        token: str | None = None,
        on_frame: FrameHook | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Client:
        """Open the WebSocket, translating every way it can fail into one readable error."""
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            ws = await connect(
                url,
                additional_headers=headers,
                subprotocols=["mcp"],  # type: ignore[list-item]
                max_size=MAX_FRAME_BYTES,
                open_timeout=timeout,
                close_timeout=2,  # leaving must not hang on a server that stopped answering
                # A proxy from the environment must not swallow traffic meant for this machine.
                proxy=None if is_loopback_url(url) else True,
            )
        except InvalidURI:
            raise ConnectFailed(
                f"{url!r} is not a WebSocket URL; expected something like {DEFAULT_URL}"
            ) from None
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise ConnectFailed(
                    f"The server at {url} refused the connection (HTTP {status}): pass the "
                    "right --token or set MCP_AUTH_TOKEN"
                ) from None
            body = exc.response.body.decode(errors="replace").strip() if exc.response.body else ""
            raise ConnectFailed(
                f"The server at {url} refused the connection (HTTP {status})"
                + (f": {body}" if body else "")
            ) from None
        except InvalidHandshake as exc:
            raise ConnectFailed(f"{url} did not answer as a WebSocket server: {exc}") from None
        except TimeoutError:
            raise ServerUnreachable(f"No server answered at {url} within {timeout:g} s") from None
        except OSError as exc:
            raise ServerUnreachable(
                f"No server at {url} ({exc.strerror or exc.__class__.__name__})"
            ) from None
        return cls(ws, url, timeout=timeout, on_frame=on_frame)

    async def initialize(self, client_name: str = "clinsum-client") -> dict[str, Any]:
        """The MCP handshake, then `tools/list`, so the user sees what the server offers."""
        result = await self.call(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": client_name, "version": __version__},
            },
        )
        self.server_info = result.get("serverInfo", {})
        self.protocol_version = result.get("protocolVersion")
        llm = result.get("_meta", {}).get("clinsum/llm")
        if llm:
            self.llm = (llm["backend"], llm["model"])
        await self.notify("notifications/initialized", {})
        self.tools = (await self.call("tools/list"))["tools"]
        return result

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        on_notify: NotificationHook | None = None,
    ) -> Any:
        """Send a request and wait for its result.

        The timeout counts silence, not total time: a summary that keeps streaming tokens
        may take as long as it needs. If the caller is cancelled (Ctrl-C) or gives up, the
        server is told with `notifications/cancelled`, so it stops working for nobody.
        """
        request_id = next(self._ids)
        pending = _Pending(asyncio.get_running_loop().create_future(), on_notify)
        self._pending[request_id] = pending
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        try:
            await self._send(message)
            return await self._wait(request_id, method, pending)
        except (asyncio.CancelledError, RequestTimeout):
            await self.cancel(request_id, "cancelled by the user")
            raise
        finally:
            self._pending.pop(request_id, None)

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        await self._send({"jsonrpc": "2.0", "method": method, "params": params})

    async def cancel(self, request_id: Any, reason: str = "cancelled by the user") -> None:
        """Ask the server to stop a request; harmless if it already finished or the link is gone."""
        if self._lost is not None:
            return
        with suppress(ConnectionLost):
            await self.notify(
                "notifications/cancelled", {"requestId": request_id, "reason": reason}
            )

    async def search(
        self, query: str, top_k: int = 5, filters: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        return (await self.find(query, top_k, filters))["results"]

    async def find(
        self, query: str, top_k: int = 5, filters: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The whole search result: `results`, and `corrected` (the query as searched) when
        the server respelled a misspelled word."""
        params: dict[str, Any] = {"query": query, "top_k": top_k}
        if filters:
            params["filters"] = filters
        return await self.call("search", params)

    async def fetch(self, patient_id: int) -> dict[str, Any]:
        return (await self.call("fetch", {"patient_id": patient_id}))["patient"]

    async def summarize(
        self,
        patient_id: int,
        on_token: Callable[[int, str], None],
        on_queued: Callable[[int], None] | None = None,
        *,
        max_tokens: int | None = None,
    ) -> dict[str, Any]:
        """Generate a summary, handing each streamed token to `on_token(index, text)`.

        Index 0 is the server's prefill (the record's own first words); model tokens follow.
        """

        def route(method: str, params: dict[str, Any]) -> None:
            if method == "stream_token":
                on_token(params["index"], params["token"])
            elif method == "stream_queued" and on_queued is not None:
                on_queued(params["position"])

        params: dict[str, Any] = {"patient_id": patient_id}
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        result = await self.call("summarize", params, on_notify=route)
        self.llm = (result["backend"], result["model"])
        return result

    @property
    def llm_label(self) -> str | None:
        return " · ".join(self.llm) if self.llm else None

    async def save(
        self, summary_id: str, force: bool = False, text: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"summary_id": summary_id, "force": force}
        if text is not None:
            params["text"] = text
        return await self.call("save_summary", params)

    async def check_summary(self, summary_id: str, text: str) -> dict[str, Any]:
        """The grounding verdict on an edited text, before it is saved."""
        return (await self.call("check_summary", {"summary_id": summary_id, "text": text}))[
            "grounding"
        ]

    async def list_summaries(self) -> list[dict[str, str]]:
        return (await self.call("list_summaries"))["summaries"]

    async def close(self) -> None:
        self._reader.cancel()
        await self._ws.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _send(self, message: dict[str, Any]) -> None:
        if self._lost is not None:
            raise self._lost
        text = orjson.dumps(message).decode()
        if self._on_frame is not None:
            self._on_frame("send", text)
        try:
            await self._ws.send(text)
        except ConnectionClosed as exc:
            raise self._connection_lost(exc) from None

    async def _wait(self, request_id: Any, method: str, pending: _Pending) -> Any:
        while True:
            idle = time.monotonic() - pending.last_heard
            done, _ = await asyncio.wait({pending.future}, timeout=max(self.timeout - idle, 0))
            if done:
                return pending.future.result()
            if time.monotonic() - pending.last_heard >= self.timeout:
                raise RequestTimeout(
                    f"The server said nothing about {method} (request {request_id}) for "
                    f"{self.timeout:g} s; giving up (raise --timeout to wait longer)"
                )

    async def _read(self) -> None:
        try:
            async for frame in self._ws:
                text = frame if isinstance(frame, str) else frame.decode(errors="replace")
                if self._on_frame is not None:
                    self._on_frame("recv", text)
                try:
                    message = orjson.loads(text)
                except orjson.JSONDecodeError:
                    continue  # not ours to answer: a client never replies to a server's garbage
                if isinstance(message, dict):
                    await self._dispatch(message)
        except ConnectionClosed as exc:
            self._connection_lost(exc)
        finally:
            self._connection_lost(None)

    async def _dispatch(self, message: dict[str, Any]) -> None:
        if "method" in message:
            if "id" in message:
                await self._answer_server_request(message)
                return
            params = message.get("params")
            if isinstance(params, dict):
                self._route_notification(message["method"], params)
            return
        pending = self._pending.get(message.get("id"))
        if pending is None or pending.future.done():
            return
        if "error" in message:
            err = message["error"] if isinstance(message["error"], dict) else {}
            pending.future.set_exception(
                RPCError(err.get("code", 0), err.get("message", "unknown error"), err.get("data"))
            )
        else:
            pending.future.set_result(message.get("result"))

    def _route_notification(self, method: str, params: dict[str, Any]) -> None:
        pending = self._pending.get(params.get("request_id"))
        if pending is None or pending.future.done():
            return
        pending.last_heard = time.monotonic()
        if pending.on_notify is None:
            return
        try:
            pending.on_notify(method, params)
        except Exception as exc:  # a failing display must fail its call, not the reader
            pending.future.set_exception(exc)

    async def _answer_server_request(self, message: dict[str, Any]) -> None:
        # MCP lets a server ping its client; nothing else is offered (no capabilities).
        if message["method"] == "ping":
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"], "result": {}}
        else:
            reply = {
                "jsonrpc": "2.0",
                "id": message["id"],
                "error": {"code": -32601, "message": f"Method not found: {message['method']}"},
            }
        with suppress(ConnectionLost):
            await self._send(reply)

    def _connection_lost(self, exc: ConnectionClosed | None) -> ConnectionLost:
        if self._lost is None:
            reason = ""
            if exc is not None and exc.rcvd is not None and exc.rcvd.reason:
                reason = f": {exc.rcvd.reason}"
            self._lost = ConnectionLost(f"Connection to the server at {self.url} was lost{reason}")
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(self._lost)
        return self._lost


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    """The flags every client shares, so both tools spell and document them the same way."""
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--url",
        default=DEFAULT_URL,
        help=f"server WebSocket URL (default {DEFAULT_URL})",
    )
    group.add_argument(
        "--token",
        default=os.environ.get("MCP_AUTH_TOKEN") or None,
        help="bearer token the server requires (default $MCP_AUTH_TOKEN)",
    )
    group.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="give up on connecting, or on a request the server stays silent about, after "
        f"this long (default {DEFAULT_TIMEOUT:g})",
    )
    advanced = parser.add_argument_group("advanced")
    advanced.add_argument(
        "--max-tokens",
        type=_max_tokens,
        default=None,
        metavar="N",
        help="upper bound on generated tokens per summary, 1-1024 (default: the server's, 200)",
    )


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _max_tokens(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1024:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 1024, got {text!r}")
    return int(text)
