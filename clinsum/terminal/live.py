"""The live displays: one generation as it streams (`StreamView`), a batch run's progress
(`BatchProgress`). `Screen.streaming` and `Screen.batch` create them."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.progress import Progress, TaskID
from rich.text import Text

from .views import count

if TYPE_CHECKING:
    from .screen import Screen

_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class StreamView:
    """What the user sees of one generation: the text so far and a status line."""

    def __init__(self, screen: Screen, llm: str | None) -> None:
        self.screen = screen
        self.llm = llm
        self.parts: list[str] = []
        self.tokens = 0
        self.position: int | None = None
        self.started = time.monotonic()
        self.first: float | None = None
        self.result: dict[str, Any] | None = None
        self.stopped = False
        self._held = ""  # plain mode: the prefill waits for the model, so queue lines go first

    def token(self, index: int, text: str) -> None:
        self.parts.append(text)
        if index > 0:
            self.tokens += 1
            if self.first is None:
                self.first = time.monotonic()
        if not self.screen.plain:
            return
        if self.first is None:
            self._held += text
            return
        self.screen.write_stream(self._held + text)
        self._held = ""

    def queued(self, position: int) -> None:
        if position == self.position:
            return
        self.position = position
        if self.screen.plain and self.first is None:
            self.screen.info(f"[Queue] Waiting for the model: position {position} in the queue")

    def flush(self) -> None:
        if self._held:
            self.screen.write_stream(self._held)
            self._held = ""

    def finish(self, result: dict[str, Any]) -> None:
        self.result = result
        self.llm = f"{result['backend']} · {result['model']}"

    def status(self) -> str:
        parts = [self.llm] if self.llm else []
        if self.result is not None:
            r = self.result
            parts.append(
                f"Tokens complete: {count(r['tokens'], 'token')} in "
                f"{r['duration_ms'] / 1000:.1f} s, "
                f"{r['tokens_per_s']:.1f} tok/s, first token after {r['ttft_ms'] / 1000:.2f} s"
            )
            return " | ".join(parts)
        now = time.monotonic()
        if self.stopped:
            parts.append("Stopped")
        elif self.first is None and self.position is not None:
            parts.append(f"waiting for the model: position {self.position} in the queue")
        parts.append(count(self.tokens, "token"))
        if self.first is not None:
            span = now - self.first
            rate = (self.tokens - 1) / span if self.tokens > 1 and span > 0 else 0.0
            parts.append(f"{rate:.1f} tok/s")
        parts.append(f"{now - self.started:.1f} s elapsed")
        if self.first is not None:
            parts.append(f"first token after {self.first - self.started:.2f} s")
        return " | ".join(parts)

    def __rich__(self) -> Group:
        text = Text("".join(self.parts))
        if self.result is not None:
            for claim in self.result["grounding"]["unsupported"]:
                style = "bold red underline" if claim["blocking"] else "yellow underline"
                text.stylize(style, claim["start"], claim["end"])
            status = Text(f"✓ {self.status()}", style="dim")
        elif self.stopped:
            status = Text(f"✗ {self.status()}", style="yellow")
        else:
            spinner = _SPINNER[int(time.monotonic() * 10) % len(_SPINNER)]
            status = Text(f"{spinner} {self.status()}", style="cyan")
        return Group(text, Text(""), status)


class BatchProgress:
    """Where a batch run stands: which patient, how many tokens of it so far."""

    def __init__(self, screen: Screen, progress: Progress, task: TaskID) -> None:
        self._screen, self._progress, self._task = screen, progress, task
        self._tokens = 0

    def start(self, patient_id: int) -> None:
        self._tokens = 0
        self._progress.update(self._task, description=f"Patient {patient_id}", tokens=0)
        if self._screen.plain:
            self._screen.info(f"Summarizing patient {patient_id}...")

    def token(self, index: int, text: str) -> None:
        if index > 0:
            self._tokens += 1
            self._progress.update(self._task, tokens=self._tokens)

    def done(self) -> None:
        self._progress.advance(self._task)
