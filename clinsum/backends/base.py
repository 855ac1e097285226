"""What every LLM backend offers, so the tools never care which one is running.

A backend streams text chunks (one model token each) after a prefill the caller already
has; closing the stream stops the generation, because a summary nobody reads any more should
not keep the model busy for the next caller.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol


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

    async def aclose(self) -> None: ...
