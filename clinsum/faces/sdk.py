"""The official MCP SDK's low-level server over our tool registry: the one place it is built.

The stdio and Streamable HTTP faces only make streams for it (`faces/stdio.py`,
`faces/http.py`). Rule 1: the tools, their schemas and their error texts come from
`clinsum.mcp` (`tool_list`, `call_tool`), so every MCP face lists the same tools and answers a
bad argument in the same words. The SDK's own input validation is off (`validate_input=False`):
it would answer `fetch {"patient_id": 0}` with jsonschema's wording instead of ours.
Rule 2: `initialize` and `ping` are the SDK's here and ours over the WebSocket; `SERVER_INFO`
and `INSTRUCTIONS` stay single.

SDK 1.30 (the v1.x line): when a client cancels a request (`notifications/cancelled`), the
SDK cancels our handler, which stops the generation within a token, but it still answers the
cancelled request with an error ("Request cancelled", code 0), where MCP says nothing should
be sent. The WebSocket face sends nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from weakref import WeakKeyDictionary

import anyio
import mcp.types as types
from mcp.server.lowlevel import Server
from mcp.server.session import ServerSession

from .. import mcp as dialect
from ..app import AppSource, wait_loaded
from ..errors import StartupError
from ..jsonrpc import Call, RPCError, Session, clip

log = logging.getLogger("MCP Protocol")

DISCONNECT_CHECK_S = 0.05  # how late a generation may notice an HTTP client that left


class SdkProgress:
    """The SDK faces' spelling: one `notifications/progress` per token, on the request's own
    stream (`related_request_id`), when the caller gave a progressToken; queue positions are
    not sent (MCP progress must only increase).

    Over HTTP it also notices a client that dropped the request's stream: the SDK would let the
    generation run on, unheard, so a token after the drop cancels it instead. Asking costs
    ~0.2 ms, a third of the relay's time per token when the model is fast, so it is asked at
    most every `DISCONNECT_CHECK_S`.
    """

    def __init__(
        self,
        session: ServerSession,
        request_id: types.RequestId,
        progress_token: types.ProgressToken | None,
        request: Any,
    ) -> None:
        self.session = session
        self.request_id = str(request_id)
        self.progress_token = progress_token
        self.request = request  # starlette's Request over HTTP, else None
        self._checked = 0.0  # loop time of the last disconnect check

    async def token(self, index: int, text: str) -> None:
        if self.request is not None:
            now = asyncio.get_running_loop().time()
            if now - self._checked >= DISCONNECT_CHECK_S:
                self._checked = now
                if await self.request.is_disconnected():
                    raise asyncio.CancelledError
        if self.progress_token is None:
            return
        try:
            await self.session.send_progress_notification(
                self.progress_token, index + 1, message=text, related_request_id=self.request_id
            )
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            # The session is gone (client DELETE, stdin closed): nobody listens any more.
            raise asyncio.CancelledError from None

    async def queued(self, position: int) -> None:
        return None


async def _no_notify(method: str, params: dict[str, Any]) -> None:
    """`Call.notify` for SDK requests: events go through `SdkProgress`; nothing else
    notifies."""


def build_server(app: AppSource) -> Server:
    """The SDK server over `app` (or over the app still loading: tool calls wait for it).

    Each SDK `ServerSession` gets one of our `Session`s, so `--max-inflight` and the
    per-connection thread budget apply per MCP session, as per WebSocket connection.
    """
    server: Server = Server(
        dialect.SERVER_INFO["name"],
        version=dialect.SERVER_INFO["version"],
        instructions=dialect.INSTRUCTIONS,
    )
    sessions: WeakKeyDictionary[ServerSession, Session] = WeakKeyDictionary()
    tools = [types.Tool.model_validate(t) for t in dialect.tool_list()]

    @server.list_tools()
    async def list_tools() -> list[types.Tool]:
        return tools

    @server.call_tool(validate_input=False)
    async def call_tool(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        ctx = server.request_context
        session = sessions.get(ctx.session)
        if session is None:
            session = sessions[ctx.session] = Session(peer=_peer(ctx.request))
        log.info("tools/call %s (id %s)", clip(name, 40), clip(repr(ctx.request_id), 40))
        meta = ctx.meta.model_dump(by_alias=True, exclude_none=True) if ctx.meta else {}
        events = SdkProgress(ctx.session, ctx.request_id, meta.get("progressToken"), ctx.request)
        call = Call(ctx.request_id, "tools/call", _no_notify, session, meta=meta, events=events)
        try:
            current = await wait_loaded(app)
            return types.CallToolResult.model_validate(
                await dialect.call_tool(current, call, name, arguments)
            )
        except StartupError as exc:
            return _error(f"The server could not start: {exc}")
        except RPCError as exc:  # an unknown tool: the same words as the WebSocket face
            return _error(exc.message)
        except Exception:
            log.exception("internal error in tools/call %s", clip(name, 40))
            return _error("Internal error")

    return server


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], isError=True)


def _peer(request: Any) -> str:
    client = getattr(request, "client", None)
    return f"{client.host}:{client.port}" if client else "stdio"


__all__ = ["SdkProgress", "build_server"]
