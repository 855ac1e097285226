"""Picks the LLM backend at start-up.

Each backend class offers `async open(options) -> (backend, usable, reason)`; `_BACKENDS`
lists them in the order `auto` tries them, so a new backend is one file plus one line here.
"""

from __future__ import annotations

from typing import Any

from .base import Backend, BackendOptions, LLMError
from .embedded import EmbeddedBackend
from .ollama import OllamaBackend
from .openai_compatible import OpenAIBackend

# A server the user named (--llm-url) comes first; a running Ollama serves a bigger model than
# the embedded one, so `auto` prefers it next. `auto` tries openai only when --llm-url is set.
_BACKENDS = {"openai": OpenAIBackend, "ollama": OllamaBackend, "embedded": EmbeddedBackend}

KINDS = ("auto", *_BACKENDS)


async def create_backend(kind: str = "auto", **options: Any) -> tuple[Backend, str]:
    """The backend to serve with, and a reason for the start-up log.

    An explicitly chosen backend is returned even if it is not usable yet (Ollama may come
    up later; its requests fail with a clear LLMError meanwhile), the reason saying so;
    `auto` moves on to the next kind instead. A backend that cannot even be built (no model
    file) raises LLMError.
    """
    opened = BackendOptions(**options)
    if kind != "auto":
        if kind not in _BACKENDS:
            raise LLMError(f"unknown backend {kind!r}; choose one of {', '.join(KINDS)}")
        backend, usable, reason = await _BACKENDS[kind].open(opened)
        return backend, reason if usable else f"{reason}; its requests fail until that is fixed"
    passed_over: list[str] = []
    for name, cls in _BACKENDS.items():
        if name == "openai" and not opened.llm_url:
            continue
        try:
            backend, usable, reason = await cls.open(opened)
        except LLMError as exc:
            passed_over.append(str(exc))
            continue
        if usable:
            return backend, ": ".join([*passed_over, reason])
        await backend.aclose()
        passed_over.append(reason)
    raise LLMError("no LLM backend is usable: " + "; ".join(passed_over))


__all__ = ["KINDS", "Backend", "BackendOptions", "LLMError", "create_backend"]
