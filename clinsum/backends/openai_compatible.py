"""The OpenAI-compatible backend: llama.cpp's llama-server, vLLM, LM Studio, Ollama's /v1.

Through the official `openai` client, on `/v1/completions`: both summary styles continue a
prefilled answer (the strict style needs the record's words verbatim before the model's), and
the chat endpoint cannot continue a prefill on every server. The prompt is therefore rendered
here, in ChatML (`<|im_start|>role ... <|im_end|>`), the template of SmolLM2, Qwen and most
small instruct models; a server whose model expects another template writes worse summaries,
and README says so.

Closing the stream closes the HTTP response, which is how these servers learn to stop. Every
failure is an LLMError naming the URL and the model, never the API key.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import openai

from .base import (
    DEFAULT_SETTINGS,
    BackendOptions,
    GenerationSettings,
    LLMError,
    close_fully,
    root_cause,
)

PROBE_TIMEOUT = 2.0  # seconds `available()` waits: start-up must not hang on a dead server
MAX_STOPS = 4  # OpenAI's own limit on `stop`; servers that follow it refuse more


def chatml(messages: list[dict], prefill: str) -> str:
    """The messages in ChatML, with the assistant's answer begun by `prefill`."""
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return f"{turns}<|im_start|>assistant\n{prefill}"


class OpenAIBackend:
    """Streams completions from an OpenAI-compatible server, continuing the prefill."""

    name = "openai"

    def __init__(
        self,
        url: str,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        settings: GenerationSettings = DEFAULT_SETTINGS,
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model or "default"
        self.timeout = timeout
        self.settings = settings
        self.tokens_generated = 0  # every chunk the server streamed, for throughput figures
        self._client = openai.AsyncOpenAI(
            base_url=self.url,
            # Servers without auth still want the header; the key is never logged.
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none",
            timeout=timeout,
            max_retries=0,  # a retry would restart the answer the caller is already reading
        )

    @classmethod
    async def open(cls, options: BackendOptions) -> tuple[OpenAIBackend, bool, str]:
        """Usable when the server lists its models (and has `--model`, if given)."""
        if not options.llm_url:
            raise LLMError("openai backend: no --llm-url given (http://HOST:PORT/v1)")
        backend = cls(options.llm_url, options.model, options.api_key, options.timeout)
        ok, reason = await backend.available()
        return backend, ok, reason

    @property
    def _where(self) -> str:
        return f"OpenAI-compatible server at {self.url} (model {self.model})"

    async def available(self) -> tuple[bool, str]:
        """Whether the server answers within PROBE_TIMEOUT; picks its model if none was given."""
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                models = [m.id async for m in self._client.models.list()]
        except TimeoutError:
            return False, f"{self._where} did not answer within {PROBE_TIMEOUT:g} s"
        except openai.APIStatusError as exc:
            return False, f"{self._where} answered {exc.status_code}: {_message(exc)}"
        except openai.APIError as exc:
            return False, f"{self._where} is unreachable: {root_cause(exc)}"
        if self.model == "default" and models:
            self.model = models[0]
        elif models and self.model not in models:
            return False, f"{self._where}: no such model; it serves {', '.join(models)}"
        return True, f"{self._where} is up"

    async def stream(
        self,
        messages: list[dict],
        prefill: str,
        *,
        max_tokens: int,
        on_queued: Callable[[int], None] | None = None,  # the server keeps its queue to itself
    ) -> AsyncIterator[str]:
        s = self.settings
        try:
            chunks = await self._client.completions.create(
                model=self.model,
                prompt=chatml(messages, prefill),
                stream=True,
                max_tokens=max_tokens,
                temperature=s.temperature,
                top_p=s.top_p,
                stop=list(s.stop[:MAX_STOPS]),
                seed=s.seed,
                # Not in OpenAI's API, understood by llama.cpp and vLLM, ignored elsewhere.
                extra_body={"top_k": s.top_k, "repeat_penalty": s.repeat_penalty},
            )
        except BaseException as exc:
            raise self._error(exc) from None
        iterator = aiter(chunks)
        try:
            while True:
                try:
                    async with asyncio.timeout(self.timeout):
                        chunk = await anext(iterator)
                except StopAsyncIteration:
                    return
                except BaseException as exc:
                    raise self._error(exc) from None
                self.tokens_generated += 1
                text = chunk.choices[0].text if chunk.choices else ""
                if text:
                    yield text
        finally:
            # Ends the HTTP response, which is what tells the server to stop generating.
            await close_fully(chunks.close)

    def _error(self, exc: BaseException) -> BaseException:
        """What the caller hears; cancellation passes through untouched."""
        if isinstance(exc, TimeoutError | openai.APITimeoutError):
            return LLMError(f"{self._where} sent nothing for {self.timeout:g} s; giving up")
        if isinstance(exc, openai.APIStatusError):
            return LLMError(f"{self._where} answered {exc.status_code}: {_message(exc)}")
        if isinstance(exc, openai.APIConnectionError):
            return LLMError(f"cannot reach {self._where}: {root_cause(exc)}")
        if isinstance(exc, openai.APIError):
            return LLMError(f"{self._where} failed mid-answer: {_message(exc)}")
        if isinstance(exc, ValueError):  # JSON or schema errors in what the server sent
            return LLMError(f"{self._where} sent an unreadable reply: {exc}")
        return exc

    def health(self) -> dict[str, Any]:
        return {"state": "remote", "url": self.url}

    async def aclose(self) -> None:
        await self._client.close()


def _message(exc: openai.APIError) -> str:
    body = exc.body
    if isinstance(body, dict):
        body = body.get("message") or body.get("detail") or body
    return str(body or exc.message)[:300]
