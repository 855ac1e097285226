"""The two faces of one handler registry: plain JSON-RPC methods and MCP tools.

Thin clients call `search`, `fetch`, `summarize`, `save_summary` directly; any MCP client
does the `initialize` handshake, lists the same operations with `tools/list` and runs them
with `tools/call`. Both paths end in `Tool.run`, so validation and behaviour are identical.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from . import __version__
from .app import App
from .jsonrpc import (
    INVALID_PARAMS,
    Call,
    Dispatcher,
    Handler,
    RPCError,
    Session,
    clip,
    invalid_params,
)
from .tools import TOOLS, Tool

log = logging.getLogger("MCP Protocol")

# Newest first: a client asking for one we do not know gets the newest, as the spec says.
PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
# For an `initialize` that names no version (the original tool's clients may send empty
# params): the version that tool answered with.
UNNAMED_VERSION = "2024-11-05"
SERVER_INFO = {
    "name": "clinsum",
    "title": "Clinical patient summaries",
    "version": __version__,
}
INSTRUCTIONS = (
    "Search synthetic patient records with `search`, read one with `fetch`, write a clinical "
    "summary with `summarize` (pass _meta.progressToken to receive tokens as progress "
    "notifications) and keep it with `save_summary`."
)


class StreamEvents:
    """The plain face's spelling: one `stream_token` per token, `stream_queued` while waiting."""

    def __init__(self, call: Call) -> None:
        self.call = call

    async def token(self, index: int, text: str) -> None:
        await self.call.notify(
            "stream_token", {"request_id": self.call.id, "index": index, "token": text}
        )

    async def queued(self, position: int) -> None:
        await self.call.notify("stream_queued", {"request_id": self.call.id, "position": position})


class ProgressEvents(StreamEvents):
    """MCP's spelling when the caller gave `_meta.progressToken`: one progress per token.

    Queue positions still go out as `stream_queued`: MCP progress must only increase, and a
    position in a queue is not progress.
    """

    def __init__(self, call: Call, progress_token: str | int | float) -> None:
        super().__init__(call)
        self.progress_token = progress_token

    async def token(self, index: int, text: str) -> None:
        await self.call.notify(
            "notifications/progress",
            {"progressToken": self.progress_token, "progress": index + 1, "message": text},
        )


def mcp_events(call: Call) -> StreamEvents:
    """Progress notifications when the caller asked for them, else `stream_token`."""
    token = call.meta.get("progressToken")
    if token is None:
        return StreamEvents(call)
    if isinstance(token, bool) or not isinstance(token, str | int | float):
        # MCP: a string or a number. It is echoed in every progress notification.
        raise invalid_params("_meta.progressToken", "must be a string or a number")
    return ProgressEvents(call, token)


def build_dispatcher(app: App) -> Dispatcher:
    """Register every plain method and every MCP method for one running `App`."""
    d = Dispatcher(log)

    for tool in TOOLS.values():
        d.methods[tool.name] = _plain(app, tool)

    @d.method("initialize")
    async def initialize(call: Call, params: dict[str, Any]) -> dict[str, Any]:
        requested = params.get("protocolVersion", UNNAMED_VERSION)
        if not isinstance(requested, str):
            raise invalid_params("protocolVersion", "must be a string")
        version = requested if requested in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
        info = params.get("clientInfo")
        call.session.protocol_version = version
        call.session.client_info = info if isinstance(info, dict) else {}
        log.info(
            "initialize from %s: client asked for %s, using %s",
            clip(call.session.client_info.get("name", "unnamed client")),
            clip(requested),
            version,
        )
        return {
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": SERVER_INFO,
            "instructions": INSTRUCTIONS,
            # Clients show which model is writing before the first summary finishes.
            "_meta": {"clinsum/llm": {"backend": app.backend.name, "model": app.backend.model}},
        }

    @d.method("ping")
    async def ping(call: Call, params: dict[str, Any]) -> dict[str, Any]:
        return {}

    @d.method("tools/list")
    async def tools_list(call: Call, params: dict[str, Any]) -> dict[str, Any]:
        return {"tools": tool_list()}

    @d.method("tools/call")
    async def tools_call(call: Call, params: dict[str, Any]) -> dict[str, Any]:
        return await call_tool(app, call, params.get("name"), params.get("arguments", {}))

    @d.on_notification("notifications/initialized")
    async def initialized(session: Session, params: dict[str, Any]) -> None:
        session.initialized = True

    @d.on_notification("notifications/cancelled")
    async def cancelled(session: Session, params: dict[str, Any]) -> None:
        request_id = params.get("requestId")
        if session.cancel(request_id):
            log.info(
                "cancelled request %r (%s)", request_id, params.get("reason") or "no reason given"
            )

    return d


def tool_list() -> list[dict[str, Any]]:
    """Every tool as MCP's `tools/list` describes it; the SDK faces publish the same list."""
    return [
        {
            "name": t.name,
            "title": t.title,
            "description": t.description,
            "inputSchema": t.input_schema(),
            "outputSchema": t.output_schema(),
        }
        for t in TOOLS.values()
    ]


async def call_tool(app: App, call: Call, name: Any, arguments: Any) -> dict[str, Any]:
    """Run tool `name` for MCP's `tools/call`; the result is a `CallToolResult` as a dict.

    A face with its own spelling of progress sets `call.events` first (the SDK faces do);
    otherwise a tool that reports progress gets the WebSocket's spelling (`mcp_events`). A
    failure the model can read and fix (bad arguments, a bad progressToken, unknown patient,
    busy) is an `isError` result with the same text on every face.

    Raises:
        RPCError: `name` is not a tool, or `arguments` is not an object (protocol errors).
        asyncio.CancelledError: the request was cancelled or its client went away.
    """
    tool = TOOLS.get(name) if isinstance(name, str) else None
    if tool is None:
        raise RPCError(INVALID_PARAMS, f"Unknown tool: {clip(repr(name))}", {"param": "name"})
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise invalid_params("arguments", "must be an object")
    try:
        if call.events is None and tool.streams:
            call.events = mcp_events(call)
        result = await tool.run(app, call, arguments)
    except RPCError as exc:
        return {"content": [{"type": "text", "text": exc.message}], "isError": True}
    return {
        "content": [{"type": "text", "text": orjson.dumps(result).decode()}],
        "structuredContent": result,
        "isError": False,
    }


def _plain(app: App, tool: Tool) -> Handler:
    async def handler(call: Call, params: dict[str, Any]) -> dict[str, Any]:
        if tool.streams:  # only these look at _meta.progressToken
            call.events = mcp_events(call)
        return await tool.run(app, call, params)

    return handler
