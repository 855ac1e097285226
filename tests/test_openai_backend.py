"""The OpenAI-compatible backend: against a real server running the shipped GGUF
(llama-cpp-python's `python -m llama_cpp.server`), and against a broken one for the faults
(it stalls, answers 500, closes mid-stream, or is not there)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from clinsum.backends import create_backend
from clinsum.backends.base import LLMError
from clinsum.backends.embedded import default_model_path
from clinsum.backends.openai_compatible import OpenAIBackend, chatml
from testkit.processes import stop_process
from testkit.rpc import Peer

from .conftest import REPO, ServerProcess, free_port, server_args
from .test_backends import MESSAGES, PREFILL, STORY

GUARD = 60
SECRET = "sk-test-this-key-must-never-be-shown"


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    """`python -m llama_cpp.server` with SmolLM2 on a loopback port; its /v1 URL."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            *("-m", "llama_cpp.server"),
            *("--model", str(default_model_path())),
            *("--model_alias", "smollm2"),
            *("--host", "127.0.0.1", "--port", str(port)),
            *("--n_threads", "1", "--n_ctx", "2048", "--verbose", "False"),
            # One answer at a time, never cut short by the next request: how a clinic runs it.
            *("--interrupt_requests", "False"),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + GUARD
        while True:
            assert proc.poll() is None, "llama_cpp.server exited at start-up"
            assert time.monotonic() < deadline, "llama_cpp.server not up"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        yield url
    finally:
        stop_process(proc)


async def collect(stream: AsyncIterator[str]) -> list[str]:
    async with asyncio.timeout(GUARD):
        return [chunk async for chunk in stream]


def test_chatml_renders_the_turns_and_opens_the_answer() -> None:
    text = chatml([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}], "P")
    assert text == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nP"
    )


async def test_a_real_server_continues_the_prefill(llama_server: str) -> None:
    backend, reason = await create_backend("openai", llm_url=llama_server, api_key=SECRET)
    try:
        assert (backend.name, backend.model) == ("openai", "smollm2")
        assert reason == f"OpenAI-compatible server at {llama_server} (model smollm2) is up"
        chunks = await collect(backend.stream(MESSAGES, PREFILL, max_tokens=40))
        text = "".join(chunks)
        assert len(chunks) >= 3 and text.strip()
        # The strict heading is completed, one sentence, no newline (the stop strings).
        assert "\n" not in text
        assert backend.health() == {"state": "remote", "url": llama_server}
    finally:
        await backend.aclose()


async def test_auto_uses_the_server_only_when_it_is_configured(llama_server: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    backend, reason = await create_backend("auto", llm_url=llama_server, ollama_host=dead)
    try:
        assert backend.name == "openai"
    finally:
        await backend.aclose()
    backend, reason = await create_backend("auto", ollama_host=dead)
    try:
        assert backend.name == "embedded" and "OpenAI" not in reason
    finally:
        await backend.aclose()


async def test_closing_the_stream_frees_the_server_for_the_next_answer(llama_server: str) -> None:
    """The server runs one answer at a time; a 400-token story that was not stopped when its
    stream closed would hold the next request for seconds. The server notices the closed
    connection at its next token."""
    backend = OpenAIBackend(llama_server, "smollm2")
    try:
        stream = backend.stream(STORY, "Once upon a time", max_tokens=400)
        async with asyncio.timeout(GUARD):
            first = [await anext(stream) for _ in range(3)]
        await stream.aclose()
        assert all(first)
        chunks = await collect(backend.stream(MESSAGES, PREFILL, max_tokens=2))
        assert chunks
    finally:
        await backend.aclose()


# --- a broken server ------------------------------------------------------------------------


class BrokenServer:
    """A loopback HTTP server that lists one model, then fails `/v1/completions` as told:
    "500", "stall" (two chunks, then silence), "close" (two chunks, then the connection
    closes mid-response)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.auth: list[str] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> BrokenServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            self.auth.append(headers.get("Authorization", headers.get("authorization", "")))
            await reader.readexactly(int(headers.get("Content-Length", "0")))
            if lines[0].startswith("GET /v1/models"):
                body = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]})
                writer.write(
                    f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
                )
            elif self.mode == "500":
                body = json.dumps({"error": {"message": "model crashed", "type": "server_error"}})
                writer.write(
                    f"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode()
                )
            else:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
                for i in range(2):
                    event = json.dumps(
                        {
                            "id": "c",
                            "object": "text_completion",
                            "created": 0,
                            "model": "m",
                            "choices": [{"index": 0, "text": f" w{i}", "finish_reason": None}],
                        }
                    )
                    data = f"data: {event}\n\n".encode()
                    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                await writer.drain()
                if self.mode == "stall":
                    await asyncio.sleep(GUARD)
                writer.write(b'ff\r\ndata: {"trunc')  # a chunk cut short, then the end
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("500", r"answered 500: model crashed"),
        ("stall", r"sent nothing for 0\.5 s"),
        ("close", r"cannot reach .*|failed mid-answer"),
    ],
)
async def test_a_broken_server_is_a_clear_llm_error_without_the_key(
    mode: str, message: str
) -> None:
    async with BrokenServer(mode) as srv:
        backend = OpenAIBackend(srv.url, "m", api_key=SECRET, timeout=0.5)
        got: list[str] = []
        try:
            with pytest.raises(LLMError, match=message) as caught:
                async with asyncio.timeout(GUARD):
                    async for chunk in backend.stream(MESSAGES, PREFILL, max_tokens=50):
                        got.append(chunk)
        finally:
            await backend.aclose()
        text = str(caught.value)
        assert srv.url in text and "model m" in text
        assert SECRET not in text
        assert srv.auth and all(a == f"Bearer {SECRET}" for a in srv.auth)  # it was sent
        assert got == ([] if mode == "500" else [" w0", " w1"])


async def test_a_server_that_is_not_there() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    backend, reason = await create_backend("openai", llm_url=url, model="m", api_key=SECRET)
    try:
        assert "is unreachable" in reason and "fail until that is fixed" in reason
        with pytest.raises(LLMError, match=r"cannot reach .*connection refused") as caught:
            await collect(backend.stream(MESSAGES, PREFILL, max_tokens=5))
        assert SECRET not in str(caught.value) and SECRET not in reason
    finally:
        await backend.aclose()


async def test_the_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    async with BrokenServer("500") as srv:
        backend = OpenAIBackend(srv.url, "m")
        try:
            assert (await backend.available())[0]
        finally:
            await backend.aclose()
        assert srv.auth == [f"Bearer {SECRET}"]


async def test_the_server_runs_summaries_end_to_end(
    llama_server: str, data_dir: Path, tmp_path: Path
) -> None:
    """`mcp_server.py --backend openai --llm-url URL`, the key from the environment: a
    summary through the real server, and the key nowhere in the log."""
    args = server_args(data_dir, tmp_path / "s.csv", "--llm-url", llama_server, backend="openai")
    server = ServerProcess(args, env={"OPENAI_API_KEY": SECRET}).wait_ready()
    try:
        peer = await Peer.open(server.url)
        result = await peer.result("summarize", {"patient_id": 1, "max_tokens": 40})
        assert (result["backend"], result["model"], result["style"]) == (
            "openai",
            "smollm2",
            "strict",
        )
        assert result["summary"].startswith(result["name"]) and result["tokens"] >= 1
        await peer.close()
        assert "LLM backend: openai (model smollm2)" in server.log
        assert SECRET not in server.log
    finally:
        server.stop()


async def test_the_steer_becomes_a_logit_bias_on_the_servers_tokens(llama_server: str) -> None:
    """Issue 22: the avoided words' token ids come from the server's own tokenizer
    (llama-cpp-python's /extras/tokenize here), so a word the record lacks is not written.
    Mutation caught: `stream` not passing the bias on."""
    from clinsum.steering import Steer

    from .test_backends import DIABETES, DISEASE

    backend = OpenAIBackend(llama_server, "smollm2")
    try:
        free = "".join(await collect(backend.stream(DISEASE, "The disease is", max_tokens=20)))
        steer = Steer(avoid=DIABETES)
        steered = await collect(
            backend.stream(DISEASE, "The disease is", max_tokens=20, steer=steer)
        )
        assert "diabetes" in free and "diabet" not in "".join(steered).lower()
        assert any(t is not None for t in backend._word_token.values())
        # A word the record has is never banned, even when also avoided.
        assert await backend._bias(Steer(avoid=("diabetes",), keep=("diabetes",))) is None
    finally:
        await backend.aclose()
