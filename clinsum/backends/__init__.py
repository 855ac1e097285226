"""Picks the LLM backend at start-up.

Each backend class offers `async open(options) -> (backend, usable, reason)`; `_BACKENDS`
lists them in the order `auto` tries them, so a new backend is one file plus one line here.
"""

from __future__ import annotations

from .base import Backend, BackendOptions, LLMError
from .embedded import EmbeddedBackend
from .ollama import OllamaBackend

# A running Ollama serves a bigger model than the embedded one, so `auto` prefers it.
_BACKENDS = {"ollama": OllamaBackend, "embedded": EmbeddedBackend}

KINDS = ("auto", *_BACKENDS)


async def create_backend(
    kind: str = "auto",
    *,
    model: str | None = None,
    model_path: str | None = None,
    ollama_host: str | None = None,
    timeout: float = 60.0,
) -> tuple[Backend, str]:
    """The backend to serve with, and a reason for the start-up log.

    An explicitly chosen backend is returned even if it is not usable yet (Ollama may come
    up later; its requests fail with a clear LLMError meanwhile), the reason saying so;
    `auto` moves on to the next kind instead. A backend that cannot even be built (no model
    file) raises LLMError.
    """
    options = BackendOptions(
        model=model, model_path=model_path, ollama_host=ollama_host, timeout=timeout
    )
    if kind != "auto":
        if kind not in _BACKENDS:
            raise LLMError(f"unknown backend {kind!r}; choose one of {', '.join(KINDS)}")
        backend, usable, reason = await _BACKENDS[kind].open(options)
        return backend, reason if usable else f"{reason}; its requests fail until that is fixed"
    passed_over: list[str] = []
    for cls in _BACKENDS.values():
        try:
            backend, usable, reason = await cls.open(options)
        except LLMError as exc:
            passed_over.append(str(exc))
            continue
        if usable:
            return backend, ": ".join([*passed_over, reason])
        await backend.aclose()
        passed_over.append(reason)
    raise LLMError("no LLM backend is usable: " + "; ".join(passed_over))


__all__ = ["KINDS", "Backend", "LLMError", "create_backend"]
