"""The Ollama backend: a local or remote `ollama serve`, through the official client.

Ollama queues and batches requests itself, so this backend adds no queue of its own. What it
adds is clear failures: every error names the host and the model and says what to do, and a
server that stops sending mid-answer is given up on after `timeout` seconds instead of
holding the caller forever.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import ollama

from .base import (
    DEFAULT_SETTINGS,
    BackendOptions,
    GenerationSettings,
    LLMError,
    close_fully,
    root_cause,
)

DEFAULT_HOST = "http://127.0.0.1:11434"
DEFAULT_MODEL = "phi"
PROBE_TIMEOUT = 1.5  # seconds `available()` waits: start-up must not hang on a dead host


def resolve_host(host: str | None) -> str:
    """The URL the client will use: explicit host, else OLLAMA_HOST, else the local default.

    Written out in full (scheme and port) so that log lines and errors show where we really
    connect, as Ollama's own client reads a bare "host" or "host:port" the same way.
    """
    host = (host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST).strip().rstrip("/")
    if "://" not in host:
        host = f"http://{host}"
        if urlsplit(host).port is None:
            host = f"{host}:11434"
    return host


class OllamaBackend:
    """Streams chat completions from Ollama, continuing the assistant's prefilled answer."""

    name = "ollama"

    def __init__(
        self,
        host: str | None = None,
        model: str = DEFAULT_MODEL,
        timeout: float = 60.0,
        settings: GenerationSettings = DEFAULT_SETTINGS,
    ) -> None:
        self.host = resolve_host(host)
        self.model = model
        self.timeout = timeout
        self.settings = settings
        self.tokens_generated = 0  # every token Ollama reported generating, for throughput
        self._client = ollama.AsyncClient(host=self.host)

    @classmethod
    async def open(cls, options: BackendOptions) -> tuple[OllamaBackend, bool, str]:
        """Usable when the host answers and has the model; the reason says which failed."""
        backend = cls(options.ollama_host, options.model or DEFAULT_MODEL, options.timeout)
        ok, reason = await backend.available()
        return backend, ok, reason

    async def available(self) -> tuple[bool, str]:
        """Whether the host answers within PROBE_TIMEOUT and has the model pulled."""
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await self._client.show(self.model)
        except TimeoutError:
            return False, f"Ollama at {self.host} did not answer within {PROBE_TIMEOUT:g} s"
        except ConnectionError:  # the client's own wrapping of httpx.ConnectError
            return False, f"Ollama unreachable at {self.host}"
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                return False, (
                    f"Ollama at {self.host} does not have {self.model} "
                    f"(run `ollama pull {self.model}`)"
                )
            return False, f"Ollama at {self.host} answered {exc.status_code}: {exc.error}"
        except (httpx.HTTPError, ValueError) as exc:
            return False, f"Ollama at {self.host} is not usable: {exc}"
        return True, f"Ollama at {self.host} has {self.model}"

    async def stream(
        self,
        messages: list[dict],
        prefill: str,
        *,
        max_tokens: int,
        on_queued: Callable[[int], None] | None = None,  # Ollama keeps its queue to itself
    ) -> AsyncIterator[str]:
        s = self.settings
        # A last assistant message is continued by Ollama rather than answered.
        chunks = await self._client.chat(
            model=self.model,
            messages=[*messages, {"role": "assistant", "content": prefill}],
            stream=True,
            options={
                "temperature": s.temperature,
                "top_p": s.top_p,
                "top_k": s.top_k,
                "repeat_penalty": s.repeat_penalty,
                "num_predict": max_tokens,
                "stop": list(s.stop),
                "seed": s.seed,
            },
        )
        try:
            while True:
                chunk = await self._next(chunks)
                if chunk is None:
                    return
                if chunk.message.content:
                    yield chunk.message.content
                if chunk.done:
                    self.tokens_generated += chunk.eval_count or 0
                    return
        finally:
            # Ends the HTTP response, which is what tells Ollama to stop generating.
            await close_fully(chunks.aclose)

    async def _next(self, chunks: AsyncIterator[ollama.ChatResponse]) -> ollama.ChatResponse | None:
        """The next chunk, or None at the end; every failure becomes an LLMError."""
        where = f"Ollama at {self.host} (model {self.model})"
        try:
            async with asyncio.timeout(self.timeout):
                return await anext(chunks)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise LLMError(
                f"{where} sent nothing for {self.timeout:g} s; giving up on this answer"
            ) from None
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                raise LLMError(
                    f"model {self.model} is not pulled on {self.host}; "
                    f"run `ollama pull {self.model}`"
                ) from None
            if exc.status_code == -1:  # an {"error": ...} object inside the stream
                raise LLMError(f"{where} failed mid-answer: {exc.error}") from None
            raise LLMError(f"{where} answered {exc.status_code}: {exc.error}") from None
        except httpx.ConnectError as exc:
            raise LLMError(
                f"cannot reach Ollama at {self.host} (model {self.model}): {root_cause(exc)} — "
                "is `ollama serve` running?"
            ) from None
        except httpx.HTTPError as exc:
            raise LLMError(f"{where}: connection lost: {exc or type(exc).__name__}") from None
        except ValueError as exc:  # JSON or schema errors in what the server sent
            raise LLMError(f"{where} sent an unreadable reply: {exc}") from None

    def health(self) -> dict[str, Any]:
        """Ollama is asked at each request; here only where it is."""
        return {"state": "remote", "url": self.host}

    async def aclose(self) -> None:
        await self._client.close()
