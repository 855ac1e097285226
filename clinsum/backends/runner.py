"""The embedded model's own process: llama.cpp and a GGUF file, nothing else of ours.

`python -P runner.py` is started (and restarted) by `embedded.EmbeddedBackend`.
A native fault in llama.cpp (a SIGSEGV in a CPU kernel, an abort, the OOM killer) then ends
this process and the summary it was writing, never the server, as Ollama's runner processes
do for Ollama. It imports nothing of clinsum, so its start-up is llama.cpp's alone.

Frames are one JSON object a line, both ways. Rule 1: fd 1 carries frames only (it is
duplicated away at start, and fd 1 is pointed at stderr, where llama.cpp's C code may write).
Rule 2: this process never decides anything about the queue, timeouts or restarts; the
parent does.

    parent -> child   {"op": "init", "model_path", "threads", "settings", "warm": {...} | null}
                      {"op": "generate", "id", "messages", "prefill", "max_tokens", "avoid",
                       "keep"}: words the model may not start, words it must stay free to write
                      {"op": "cancel", "id"}
    child -> parent   {"ev": "ready", "pid", "load_s"} | {"ev": "error", "message"} (exit 3)
                      {"ev": "token", "id", "text"} ... then {"ev": "end", "id", "sampled"}
                      {"ev": "fail", "id", "message", "sampled"}: the answer failed, not the model

The process exits when its stdin closes, which is how it notices that the parent is gone
however the parent ended; on Linux it also asks the kernel for SIGKILL when the parent dies.
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

GGUF_MAGIC = b"GGUF"
CONTEXT_TOKENS = 2048
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Settings:
    """`base.GenerationSettings` as it crosses the pipe (kept free of clinsum imports)."""

    temperature: float
    top_p: float
    top_k: int
    repeat_penalty: float
    stop: tuple[str, ...]
    seed: int
    allow_digits: bool
    avoid_stems: tuple[str, ...]

    @classmethod
    def of(cls, values: dict[str, Any]) -> Settings:
        return cls(
            **{**values, "stop": tuple(values["stop"]), "avoid_stems": tuple(values["avoid_stems"])}
        )


@dataclass(eq=False)
class Request:
    id: int
    messages: list[dict[str, str]]
    prefill: str
    max_tokens: int
    avoid: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    cancelled: threading.Event = field(default_factory=threading.Event)
    sampled: int = 0


class Model:
    """One `Llama` and the biases every answer shares; `generate` is the whole generation.

    Used by this process's main loop, and by the bench directly, in-process, as the reference
    the process boundary is measured against.

    Raises:
        ValueError: the file is not a GGUF model, or llama.cpp cannot load it.
    """

    def __init__(self, model_path: str, threads: int, settings: Settings) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        with open(model_path, "rb") as f:
            magic = f.read(4)
        if magic != GGUF_MAGIC:
            raise ValueError(f"{model_path} is not a GGUF model file (it starts with {magic!r})")
        self.settings = settings
        self._llm = Llama(
            model_path=model_path,
            n_ctx=CONTEXT_TOKENS,
            n_threads=threads,
            n_threads_batch=threads,
            seed=settings.seed,
            verbose=False,
        )
        # SmolLM2 spells numbers digit by digit, so this is a handful of tokens, plus the
        # vulgar fractions and superscripts the model reaches for once digits are gone.
        # The same goes for tokens that start a word in `avoid_stems`.
        self._logit_bias = {
            i: -100.0 for i in range(self._llm.n_vocab()) if self._banned(i)
        } or None
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"model {model_path} has no chat template in its metadata")
        self._first: dict[str, frozenset[int]] = {}  # word -> the tokens that can start it
        self._pieces: dict[int, str] = {}  # token -> its text, stripped and lower-cased
        vocab = self._llm._model
        self._format = Jinja2ChatFormatter(
            template,
            eos_token=vocab.token_get_text(self._llm.token_eos()),
            bos_token=vocab.token_get_text(self._llm.token_bos()),
        )

    def _banned(self, token: int) -> bool:
        text = self._llm.detokenize([token]).decode("utf-8", errors="ignore")
        if not self.settings.allow_digits and any(c.isnumeric() for c in text):
            return True
        word = text.strip().lower()
        return len(word) >= 3 and word.startswith(self.settings.avoid_stems)

    def _starts(self, word: str) -> frozenset[int]:
        """The tokens that start `word` as the model writes it: after a space or not,
        lower-case or capitalised. Cached: the same few hundred words recur."""
        found = self._first.get(word)
        if found is None:
            firsts = set()
            for form in {word, word.capitalize()}:
                for text in (f" {form}", form):
                    tokens = self._llm.tokenize(text.encode(), add_bos=False, special=False)
                    if tokens:
                        firsts.add(tokens[0])
            found = self._first[word] = frozenset(firsts)
        return found

    def bias(self, avoid: tuple[str, ...] = (), keep: tuple[str, ...] = ()) -> dict[int, float]:
        """The shared biases plus -100 on the first tokens of `avoid`'s words, except tokens
        that start a `keep` word, or that are only a fragment (under 3 letters, or not the
        start of the word itself: " d" would ban every word in d)."""
        banned = dict(self._logit_bias or {})
        kept: set[int] = set()
        for word in keep:
            kept |= self._starts(word)
        for word in avoid:
            for token in self._starts(word) - kept:
                piece = self._piece(token)
                if (len(piece) >= 3 and word.lower().startswith(piece)) or piece == word.lower():
                    banned[token] = -100.0
        return banned

    def _piece(self, token: int) -> str:
        """A token's text, stripped and lower-cased (cached)."""
        piece = self._pieces.get(token)
        if piece is None:
            text = self._llm.detokenize([token]).decode("utf-8", "ignore")
            piece = self._pieces[token] = text.strip().lower()
        return piece

    def generate(self, request: Request, send: Any) -> None:
        """Stream `request` through `send(text)`; stops within one token of `cancelled`."""
        from llama_cpp import StoppingCriteriaList

        evaluated = 0

        def stop_requested(input_ids: Any, _logits: Any) -> bool:
            # Called once per sampled token (and once more at the end with the same length,
            # hence the comparison), so it both counts tokens and lets a cancel stop the
            # model within one token.
            nonlocal evaluated
            if len(input_ids) > evaluated:
                evaluated = len(input_ids)
                request.sampled += 1
            return request.cancelled.is_set()

        s = self.settings
        chunks = self._llm.create_completion(
            self._format(messages=request.messages).prompt + request.prefill,
            max_tokens=request.max_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            repeat_penalty=s.repeat_penalty,
            stop=list(s.stop),
            seed=s.seed,
            logit_bias=self.bias(request.avoid, request.keep) or None,
            stream=True,
            stopping_criteria=StoppingCriteriaList([stop_requested]),
        )
        try:
            for chunk in chunks:
                if request.cancelled.is_set():
                    return
                text = chunk["choices"][0]["text"]
                if text:
                    send(text)
        finally:
            chunks.close()

    def close(self) -> None:
        self._llm.close()


class _Wire:
    """Frames out on the fd that was stdout; one writer at a time."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def send(self, **frame: Any) -> None:
        line = json.dumps(frame, ensure_ascii=False).encode() + b"\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()


def _die_with_parent() -> None:
    """SIGKILL from the kernel when the parent dies (Linux); stdin's EOF says it elsewhere."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(0)


def _read_ops(stdin: IO[bytes], jobs: queue.Queue[Request], current: list[Request]) -> None:
    """The reader thread: queues generations, sets cancel flags, exits the process at EOF."""
    for line in stdin:
        op = json.loads(line)
        if op["op"] == "generate":
            jobs.put(
                Request(
                    op["id"],
                    op["messages"],
                    op["prefill"],
                    op["max_tokens"],
                    tuple(op.get("avoid", ())),
                    tuple(op.get("keep", ())),
                )
            )
        elif op["op"] == "cancel":
            for request in [*current, *list(jobs.queue)]:
                if request.id == op["id"]:
                    request.cancelled.set()
    os._exit(0)  # the parent closed our stdin or is gone: nobody will read what we write


def serve(stdin: IO[bytes], wire: _Wire) -> None:
    init = json.loads(stdin.readline() or b'{"op": "eof"}')
    if init.get("op") != "init":
        os._exit(0)
    started = time.monotonic()
    try:
        model = Model(init["model_path"], init["threads"], Settings.of(init["settings"]))
        warm = init.get("warm")
        if warm:  # the prompt every summary starts with, evaluated before anyone waits on it
            avoid, keep = tuple(warm.get("avoid", ())), tuple(warm.get("keep", ()))
            model.generate(Request(0, warm["messages"], warm["prefill"], 1, avoid, keep), str)
    except Exception as exc:  # the parent reports it and decides whether to try again
        wire.send(ev="error", message=str(exc) or type(exc).__name__)
        os._exit(3)
    wire.send(ev="ready", pid=os.getpid(), load_s=round(time.monotonic() - started, 3))
    jobs: queue.Queue[Request] = queue.Queue()
    current: list[Request] = []
    threading.Thread(target=_read_ops, args=(stdin, jobs, current), daemon=True).start()
    while True:
        request = jobs.get()
        current[:] = [request]
        try:
            if not request.cancelled.is_set():
                model.generate(
                    request, lambda text, i=request.id: wire.send(ev="token", id=i, text=text)
                )
        except Exception as exc:  # this answer failed; the model is still good for the next
            wire.send(ev="fail", id=request.id, message=str(exc), sampled=request.sampled)
        else:
            wire.send(ev="end", id=request.id, sampled=request.sampled)
        finally:
            current.clear()


def main() -> None:
    # Frames go to the real stdout; anything C code prints goes to stderr with the logs.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    # A Ctrl-C in the server's terminal reaches this process group too: the server decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    serve(sys.stdin.buffer, _Wire(out))


if __name__ == "__main__":
    main()
