"""The stdio face: MCP over stdin and stdout, for hosts that start the server themselves.

stdout carries newline-delimited JSON-RPC and nothing else. llama.cpp, Chroma and torch
write to file descriptor 1 directly, beneath Python's `sys.stdout`, so `claim_stdout` keeps a
duplicate of fd 1 for the protocol and points fd 1 itself at stderr, before anything loads.
Logs go to stderr. The SDK's `stdio_server` frames the messages; `faces/sdk.py` serves them.

Hosts give a server about 15 s to answer `initialize`, less than loading takes, so the face
starts at once: the SDK answers `initialize` and `tools/list`, and tool calls wait for the
app (or say that it failed to load).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any, cast

import anyio
from mcp.server.stdio import stdio_server

from ..app import AppSource
from ..errors import StartupError
from .sdk import build_server

log = logging.getLogger("MCP Protocol")


def claim_stdout() -> int:
    """Point fd 1 at stderr and return a duplicate of the original stdout for the protocol.

    Call it before any model or index loads and before the first log line.
    """
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    return protocol_fd


class _Lines:
    """stdin as the async iterable of lines `stdio_server` reads, from a non-blocking pipe:
    no worker thread sits in a `read()` that shutdown would have to wait for."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        while True:
            try:
                line = await self.reader.readline()
            except ValueError:  # longer than --max-message-bytes: dropped, say so on stderr
                log.warning("dropped a stdin line longer than --max-message-bytes")
                continue
            if not line:
                raise StopAsyncIteration
            return line.decode("utf-8", errors="replace")


class _Out:
    """The protocol fd as the async file `stdio_server` writes to."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    async def write(self, text: str) -> None:
        try:
            self.writer.write(text.encode())
        except (BrokenPipeError, ConnectionResetError):
            raise anyio.ClosedResourceError from None  # the host is gone

    async def flush(self) -> None:
        try:
            await self.writer.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise anyio.ClosedResourceError from None


async def _pipes(protocol_fd: int, max_line: int) -> tuple[_Lines, _Out]:
    """stdin and the protocol fd as non-blocking asyncio pipes.

    Raises:
        StartupError: stdin or stdout is a regular file, not a pipe (as hosts give) or a
            terminal.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=max_line, loop=loop)
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(protocol_fd, "wb", buffering=0)
        )
    except ValueError:
        raise StartupError(
            "--stdio needs stdin and stdout to be pipes, as MCP hosts start servers, or a "
            "terminal; not files"
        ) from None
    writer = asyncio.StreamWriter(transport, cast(Any, protocol), None, loop)
    return _Lines(reader), _Out(writer)


async def serve(source: AppSource, protocol_fd: int, max_line: int) -> None:
    """Speak MCP on stdin and `protocol_fd` until the host closes stdin."""
    stdin, stdout = await _pipes(protocol_fd, max_line)
    server = build_server(source)
    log.info("MCP over stdio: waiting for the host's initialize")
    async with stdio_server(stdin, stdout) as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())
    log.info("stdin closed: the host has gone")


__all__ = ["claim_stdout", "serve"]
