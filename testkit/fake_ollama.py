"""A loopback stand-in for `ollama serve`, good enough for the official client.

It speaks HTTP/1.1 with keep-alive and streams `/api/chat` as chunked NDJSON the way Ollama
does, so the real `ollama.AsyncClient` (and hence our backend) runs unchanged against it.
Each failure the backend must survive is a knob: a refused model, a stream that stalls, an
error object mid-stream; counters show whether the client really closed its streams, and
the sampling options of every chat request are kept. `GET /fake/stats` reports both, for
tests whose fake runs in another process.

In a test:   async with FakeOllama(tokens=["Hi", "!"]) as srv: ... srv.url ...
Standalone:  python -m testkit.fake_ollama --port 11500 --tps 50   (--tps 0: as fast as possible)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import time
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime

DEFAULT_TOKENS = tuple(
    re.findall(
        r" ?\S+",
        " presents with chest pain and fatigue. Her blood pressure is 152/94 mmHg and her"
        " blood sugar is 182 mg/dL. Recommend a cardiology review and closer glucose control.",
    )
)

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


def _full_name(model: str) -> str:
    return model if ":" in model else f"{model}:latest"


class FakeOllama:
    """An Ollama look-alike on 127.0.0.1. The knobs are plain attributes, read afresh by
    every request, so a test may change them between calls.

    tokens      the content pieces of one answer
    n_tokens    the answer's length: `tokens` repeated cyclically, for benchmarks of any
                length (default: len(tokens)); the request's `num_predict` cuts it short
    tps         tokens per second; 0 or None pushes them as fast as the socket takes them
    stall_after stop sending after this many tokens but keep the connection open
    error_after send `{"error": ...}` after this many tokens and end the response
    models      the names `/api/tags` lists and `/api/show` and `/api/chat` accept
    """

    def __init__(
        self,
        tokens: Sequence[str] = DEFAULT_TOKENS,
        *,
        n_tokens: int | None = None,
        tps: float | None = None,
        stall_after: int | None = None,
        error_after: int | None = None,
        models: Sequence[str] = ("phi",),
        port: int = 0,
    ) -> None:
        self.tokens = list(tokens)
        self.n_tokens = n_tokens
        self.tps = tps
        self.stall_after = stall_after
        self.error_after = error_after
        self.models = list(models)
        self.port = port
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, JSON body)
        self.chat_options: list[dict] = []  # the `options` of every chat request, in order
        self.open_streams = 0  # chat responses being sent right now
        self.streams_started = 0
        self.streams_completed = 0  # sent to the end, final chunk included
        self.streams_closed_by_client = 0  # the client hung up before the end
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task, asyncio.StreamWriter] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeOllama:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        # Hang up rather than cancel: each handler then ends on its own (Python 3.11's
        # start_server logs a traceback for every cancelled handler task).
        for writer in self._connections.values():
            writer.close()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    async def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until no chat response is being sent (the server sees a hang-up a bit late)."""
        async with asyncio.timeout(timeout):
            while self.open_streams:
                await asyncio.sleep(0.01)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            while True:  # keep-alive: one request after another on the same connection
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = dict(
                    (k.strip().lower(), v.strip())
                    for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)
                )
                raw = await reader.readexactly(int(headers.get("content-length", 0)))
                body = json.loads(raw) if raw else {}
                self.requests.append((method, path, body))
                await self._route(method, path, body, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            del self._connections[task]
            writer.close()

    async def _route(
        self,
        method: str,
        path: str,
        body: dict,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        if (method, path) == ("GET", "/api/tags"):
            names = [_full_name(m) for m in self.models]
            models = [{"name": m, "model": m, "size": 1, "digest": "0" * 64} for m in names]
            await self._json(writer, 200, {"models": models})
        elif (method, path) == ("POST", "/api/show"):
            if self._has(body.get("model", "")):
                await self._json(writer, 200, {"modelfile": "", "model_info": {}, "details": {}})
            else:
                await self._json(writer, 404, {"error": f"model '{body.get('model')}' not found"})
        elif (method, path) == ("GET", "/fake/stats"):
            await self._json(writer, 200, self.stats())
        elif (method, path) == ("POST", "/api/chat"):
            self.chat_options.append(body.get("options") or {})
            if not self._has(body.get("model", "")):
                await self._json(writer, 404, {"error": f"model '{body.get('model')}' not found"})
            else:
                await self._chat(body, reader, writer)
        else:
            await self._json(writer, 404, {"error": f"unknown endpoint {method} {path}"})

    def stats(self) -> dict:
        """The counters and the last chat request's options (None before any)."""
        return {
            "open_streams": self.open_streams,
            "streams_started": self.streams_started,
            "streams_completed": self.streams_completed,
            "streams_closed_by_client": self.streams_closed_by_client,
            "last_options": self.chat_options[-1] if self.chat_options else None,
        }

    def _has(self, model: str) -> bool:
        return _full_name(model) in {_full_name(m) for m in self.models}

    async def _json(self, writer: asyncio.StreamWriter, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        writer.write(
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()

    async def _chat(
        self, body: dict, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        model = body["model"]
        length = self.n_tokens or len(self.tokens)
        limit = (body.get("options") or {}).get("num_predict") or -1
        count = length if limit < 0 else min(limit, length)

        def line(obj: dict) -> bytes:
            data = json.dumps(obj).encode() + b"\n"
            return b"%x\r\n%s\r\n" % (len(data), data)

        def chunk(content: str, **extra) -> dict:
            return {
                "model": model,
                "created_at": datetime.now(UTC).isoformat(),
                "message": {"role": "assistant", "content": content},
                **extra,
            }

        self.open_streams += 1
        self.streams_started += 1
        start = time.perf_counter()
        try:
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            for i in range(count):
                if i == self.stall_after:
                    while not reader.at_eof():  # hold the line until the client gives up
                        await asyncio.sleep(0.02)
                    raise ConnectionResetError
                if i == self.error_after:
                    writer.write(line({"error": "fake failure mid-stream"}) + b"0\r\n\r\n")
                    await writer.drain()
                    self.streams_completed += 1
                    return
                if self.tps:
                    await asyncio.sleep(max(0.0, start + i / self.tps - time.perf_counter()))
                writer.write(line(chunk(self.tokens[i % len(self.tokens)], done=False)))
                await writer.drain()
                if reader.at_eof() or writer.is_closing():
                    raise ConnectionResetError
            elapsed = int((time.perf_counter() - start) * 1e9)
            final = chunk(
                "",
                done=True,
                done_reason="length" if count < length else "stop",
                total_duration=elapsed,
                load_duration=0,
                prompt_eval_count=len(json.dumps(body.get("messages", []))) // 4,
                prompt_eval_duration=0,
                eval_count=count,
                eval_duration=elapsed,
            )
            writer.write(line(final) + b"0\r\n\r\n")
            await writer.drain()
            self.streams_completed += 1
        except ConnectionError:
            self.streams_closed_by_client += 1
            raise
        finally:
            self.open_streams -= 1


def fetch_stats(url: str) -> dict:
    """`FakeOllama.stats()` of the fake at `url`, wherever it runs (blocking)."""
    with urllib.request.urlopen(f"{url}/fake/stats", timeout=5) as response:
        return json.load(response)


async def _serve(args: argparse.Namespace) -> None:
    server = FakeOllama(
        n_tokens=args.tokens, tps=args.tps or None, models=args.model, port=args.port
    )
    async with server:
        print(f"fake Ollama listening on {server.url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.lifetime or None):
                await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--tps", type=float, default=0, help="tokens per second; 0 = no limit")
    parser.add_argument("--tokens", type=int, default=0, help="answer length; 0 = the default text")
    parser.add_argument("--model", action="append", help="model to offer (repeatable)")
    parser.add_argument("--lifetime", type=float, default=0, help="exit after N s; 0 = never")
    args = parser.parse_args()
    args.model = args.model or ["phi"]
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
