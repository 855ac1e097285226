"""What every LLM backend offers, so the tools never care which one is running.

A backend streams text chunks (one model token each) after a prefill the caller already
has; closing the stream stops the generation, because a summary nobody reads any more should
not keep the model busy for the next caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol


class LLMError(RuntimeError):
    """The backend cannot produce text; the message names the backend, host and model."""


@dataclass(frozen=True, slots=True)
class GenerationSettings:
    """Sampling tuned for grounded output with SmolLM2-135M (on 20 records of
    patient_data.csv): near-greedy (0.2 beat both 0 and 0.4), and a repetition penalty
    strong enough to stop the model looping on a phrase but too weak to push it off the
    record's own words, which it has to repeat (1.3 made it change names and blood
    pressures: 12 grounded summaries of 20, against 18 at 1.15)."""

    temperature: float = 0.2
    top_p: float = 0.9
    top_k: int = 40
    repeat_penalty: float = 1.15
    # The summary is one paragraph: a line break means the model has moved on to something
    # else (a second, repeating paragraph, a list). The ChatML markers end the turn when a
    # template leaks them as text.
    stop: tuple[str, ...] = ("\n", "<|im_end|>", "<|im_start|>")
    # The same record gives the same summary, whatever was generated before it.
    seed: int = 42
    # The prefill already states every number the record has (age, BP, sugar); a digit the
    # model writes after it can only be a number the record does not have (an invented dose,
    # a wrong age). Where the backend can bias tokens, digits are forbidden.
    allow_digits: bool = False
    # Word stems the model may not start a word with, where the backend can bias tokens. The
    # 135M model recommended admission or emergency care for 14 of 100 patients with no
    # crisis-level value (issue #10); the strict prefill states crisis values itself.
    avoid_stems: tuple[str, ...] = (
        "admit",
        "admis",
        "hospit",
        "emergen",
        "urgen",
        "icu",
        "intensiv",
    )


DEFAULT_SETTINGS = GenerationSettings()


@dataclass(frozen=True, slots=True)
class BackendOptions:
    """The start-up options every backend's `open` receives; each uses the ones it needs."""

    model: str | None = None
    model_path: str | None = None
    ollama_host: str | None = None
    timeout: float = 60.0
    workers: int = 1  # embedded: model processes serving the queue (--model-workers)
    # embedded: the prompt every summary starts with (messages, prefill), evaluated by each
    # model process before it says it is ready, so the first summary waits no longer than later
    warm_up: tuple[list[dict], str] | None = None
    llm_url: str | None = None  # openai: the server's base URL, ending in /v1
    api_key: str | None = None  # openai: never logged, never in an error message


class Backend(Protocol):
    name: str
    model: str

    def stream(
        self,
        messages: list[dict],
        prefill: str,
        *,
        max_tokens: int,
        on_queued: Callable[[int], None] | None = None,
    ) -> AsyncIterator[str]:
        """Text chunks that follow `prefill`; `on_queued(position)` runs on the event loop
        while the request waits for the model (1 = next)."""
        ...

    def health(self) -> dict[str, Any]:
        """The model's state for /healthz: at least {"state": ...}."""
        ...

    async def aclose(self) -> None: ...


def root_cause(exc: BaseException) -> str:
    """The root cause of a connection failure: httpx's own message is a generic one."""
    while (inner := exc.__cause__ or exc.__context__) is not None:
        exc = inner
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__


async def close_fully(close: Callable[[], Awaitable[Any]]) -> None:
    """Close the response stream to the end, even if our task is cancelled meanwhile.

    A client that vanishes cancels its request twice, a tick apart: its failed send raises
    CancelledError, then the connection's clean-up cancels the task. The second one used to
    land inside httpx's close (at a lock's checkpoint), which left the HTTP connection open
    and the model generating for nobody: 4 to 50 streams in 100 (issue 15). The close therefore
    runs in a task of its own, and a cancellation is passed on only once it is done.
    """
    closing = asyncio.ensure_future(close())
    cancelled = False
    while not closing.done():
        try:
            await asyncio.shield(closing)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
