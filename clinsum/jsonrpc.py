"""JSON-RPC 2.0 without I/O: bytes or text in, reply objects out.

The faces only move frames; everything the spec says about ids, batches, notifications and
error codes lives here, so it is tested without a socket. Handlers are coroutines that
receive a `Call` (the request's id, its session, a way to send notifications, and the
`Events` the face spells) and the params object, and either return a result or raise
`RPCError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from .events import Events

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Our own codes (-32000..-32099) are in `errors`, beside the tools that raise them.

# JSON-RPC ids are strings, numbers or null; a float id is allowed by the spec but we keep
# what the client sent verbatim, so only the type is checked.
Id = str | int | float | None
Notify = Callable[[str, dict[str, Any]], Awaitable[None]]


class RPCError(Exception):
    """An error the client is meant to read: code, message and optional data."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


def invalid_params(name: str, reason: str) -> RPCError:
    return RPCError(INVALID_PARAMS, f"Invalid params: '{name}' {reason}", {"param": name})


@dataclass(slots=True)
class Call:
    """What a handler knows about the request it serves.

    `events` is set by the face before a tool runs: the tool reports tokens and queue
    positions through it, and the face decides how they are spelled on its wire.
    """

    id: Id
    method: str
    notify: Notify
    session: Session
    meta: dict[str, Any] = field(default_factory=dict)
    events: Events | None = None


Handler = Callable[[Call, dict[str, Any]], Awaitable[Any]]
NotificationHandler = Callable[["Session", dict[str, Any]], Awaitable[None]]


@dataclass
class Session:
    """Per-connection protocol state: what was negotiated and which requests are running."""

    peer: str = "?"
    protocol_version: str | None = None
    client_info: dict[str, Any] = field(default_factory=dict)
    initialized: bool = False
    in_flight: dict[Any, asyncio.Task[Any]] = field(default_factory=dict)
    # Sends one frame as it is, outside JSON-RPC (the original tool's token frames); set by
    # a transport that can. Raises CancelledError once the peer is gone.
    send_frame: Callable[[dict[str, Any]], Awaitable[None]] | None = None

    def cancel(self, request_id: Any) -> bool:
        """Cancel a running request; MCP says it then gets no reply at all."""
        if isinstance(request_id, bool) or not isinstance(request_id, str | int | float):
            return False  # not an id any request can have (and maybe not even hashable)
        task = self.in_flight.get(_id_key(request_id))
        if task is None or task.done():
            return False
        task.cancel()
        return True

    def cancel_all(self) -> None:
        for task in self.in_flight.values():
            task.cancel()


def _id_key(request_id: Any) -> Any:
    # 1 and 1.0 and True hash alike in Python; keep them apart as JSON does.
    return (type(request_id).__name__, request_id)


def error_reply(request_id: Id, err: RPCError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": err.to_dict()}


def result_reply(request_id: Id, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def notification(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params}


def parse(frame: str | bytes) -> tuple[Any, dict[str, Any] | None]:
    """Decode one frame. Returns (message, None) or (None, parse-error reply).

    orjson rejects NaN, lone surrogates, invalid UTF-8 and nesting deeper than 1024 levels,
    all of which the spec counts as a parse error.
    """
    try:
        return orjson.loads(frame), None
    except orjson.JSONDecodeError as exc:
        reason = str(exc).split(":", 1)[0]
        return None, error_reply(None, RPCError(PARSE_ERROR, f"Parse error: {reason}"))


def dumps(message: Any) -> str:
    return orjson.dumps(message).decode()


class Dispatcher:
    """Routes parsed JSON-RPC messages to registered handlers and builds the replies.

    `log` is where requests and internal errors are logged: the dialect that builds the
    dispatcher names it (`mcp` logs as "MCP Protocol").
    """

    def __init__(self, log: logging.Logger | None = None) -> None:
        self.log = log or logging.getLogger("JSON-RPC")
        self.methods: dict[str, Handler] = {}
        self.notifications: dict[str, NotificationHandler] = {}

    def method(self, name: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.methods[name] = fn
            return fn

        return register

    def on_notification(self, name: str) -> Callable[[NotificationHandler], NotificationHandler]:
        def register(fn: NotificationHandler) -> NotificationHandler:
            self.notifications[name] = fn
            return fn

        return register

    async def handle(self, message: Any, session: Session, notify: Notify) -> Any:
        """Answer one parsed message (object or batch); None means send nothing."""
        if isinstance(message, list):
            if not message:
                return error_reply(None, RPCError(INVALID_REQUEST, "Invalid Request: empty batch"))
            # return_exceptions: one cancelled member must not swallow the others' replies.
            replies = await asyncio.gather(
                *(self._handle_one(m, session, notify) for m in message), return_exceptions=True
            )
            kept = [r for r in replies if isinstance(r, dict)]
            return kept or None
        return await self._handle_one(message, session, notify)

    async def _handle_one(self, message: Any, session: Session, notify: Notify) -> Any:
        request_id, err = _check_envelope(message)
        if err is not None:
            return error_reply(request_id, err)
        method: str = message["method"]
        params = message.get("params", {})
        if "id" not in message:
            await self._notify(method, params, session)
            return None
        handler = self.methods.get(method)
        if handler is None:
            return error_reply(
                request_id, RPCError(METHOD_NOT_FOUND, f"Method not found: {clip(method)}")
            )
        if not isinstance(params, dict):
            return error_reply(
                request_id,
                RPCError(INVALID_PARAMS, "Invalid params: params must be an object (by name)"),
            )
        meta = params.get("_meta")
        if meta is not None and not isinstance(meta, dict):
            return error_reply(request_id, invalid_params("_meta", "must be an object"))
        self.log.info("%s (id %s)", method, _short(request_id))
        call = Call(request_id, method, notify, session, meta=meta or {})
        key = _id_key(request_id)
        task = asyncio.current_task()
        if task is not None and key not in session.in_flight:
            session.in_flight[key] = task
        try:
            return result_reply(request_id, await handler(call, params))
        except RPCError as exc:
            return error_reply(request_id, exc)
        except RecursionError:
            # The parser allows 1024 levels; printing or logging data nested that deep
            # (an unknown tool "name", a clientInfo) exceeds Python's own recursion limit.
            return error_reply(
                request_id, RPCError(INVALID_PARAMS, "Invalid params: nested too deeply")
            )
        except Exception:
            self.log.exception("internal error in %s (id %s)", method, _short(request_id))
            return error_reply(request_id, RPCError(INTERNAL_ERROR, "Internal error"))
        finally:
            if session.in_flight.get(key) is task:
                del session.in_flight[key]

    async def _notify(self, method: str, params: Any, session: Session) -> None:
        handler = self.notifications.get(method)
        if handler is None or not isinstance(params, dict):
            self.log.debug("ignored notification %s", method)
            return
        try:
            await handler(session, params)
        except Exception:
            self.log.exception("notification %s failed", method)


def clip(value: Any, limit: int = 80) -> str:
    """A client-supplied value cut short for a log line or an error message, so one request
    cannot make the server echo (or log) a megabyte."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(request_id: Any) -> str:
    return clip(repr(request_id), 40)


def _check_envelope(message: Any) -> tuple[Id, RPCError | None]:
    """Check the request object's shape; return the id to answer with and any error."""
    if not isinstance(message, dict):
        return None, RPCError(INVALID_REQUEST, "Invalid Request: expected an object")
    request_id = message.get("id")
    if "id" in message and (
        isinstance(request_id, bool) or not isinstance(request_id, str | int | float | None)
    ):
        return None, RPCError(
            INVALID_REQUEST, "Invalid Request: 'id' must be a string, number or null"
        )
    if message.get("jsonrpc") != "2.0":
        return request_id, RPCError(INVALID_REQUEST, "Invalid Request: 'jsonrpc' must be \"2.0\"")
    method = message.get("method")
    if not isinstance(method, str) or not method:
        return request_id, RPCError(
            INVALID_REQUEST, "Invalid Request: 'method' must be a non-empty string"
        )
    if "params" in message and not isinstance(message["params"], dict | list):
        return request_id, RPCError(
            INVALID_REQUEST, "Invalid Request: 'params' must be an object or an array"
        )
    return request_id, None
