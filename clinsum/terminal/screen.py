"""The terminal itself: where the two command-line tools write and what they read.

A terminal gets colour and a live-redrawn stream with a status line; a pipe, a log file or
`NO_COLOR` gets plain text with the tokens appended as they come, so a transcript reads the
same as the screen did. Prompts are read from stdin by the event loop itself (not by a
thread blocked in `input()`), so the connection keeps answering the server's keep-alive pings
while the user thinks, and Ctrl-C can cancel exactly what is running: a generation returns
to the prompt, a prompt ends the program.

How a record, a digest or search results are drawn is in `views.py` (`Screen` inherits it);
the live displays of one generation and of a batch run are in `live.py`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from ..client import ClientError
from .live import BatchProgress, StreamView
from .views import Views

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130  # the shell's convention for "ended by Ctrl-C"
RULE_WIDTH = 80


class Interrupted(Exception):
    """Ctrl-C cancelled the operation the user was waiting for."""


class Interrupts:
    """Turns Ctrl-C into cancelling whatever the user is waiting on.

    Inside `guard(...)` Ctrl-C cancels only that operation (the caller gets `Interrupted`
    and carries on); anywhere else it cancels the whole program, which still runs its
    `finally` blocks, so a server the demo started is stopped and the terminal restored.
    """

    def __init__(self) -> None:
        self.exit_code: int | None = None
        self._main: asyncio.Task[Any] | None = None
        self._guarded: asyncio.Task[Any] | None = None
        self._interrupted: set[asyncio.Task[Any]] = set()

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self._stop, 128 + sig)

    def uninstall(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def _on_sigint(self) -> None:
        task = self._guarded
        if task is not None and not task.done():
            self._interrupted.add(task)
            task.cancel()
        else:
            self._stop(EXIT_INTERRUPTED)

    def _stop(self, code: int) -> None:
        self.exit_code = code
        if self._main is not None:
            self._main.cancel()

    async def guard(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable`; Ctrl-C meanwhile cancels it and raises `Interrupted`."""
        task = asyncio.ensure_future(awaitable)
        outer, self._guarded = self._guarded, task
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task in self._interrupted and current is not None and not current.cancelling():
                raise Interrupted from None
            raise
        finally:
            self._guarded = outer
            self._interrupted.discard(task)


class LineReader:
    """Reads stdin lines on the event loop, for pipes and files as well as terminals."""

    def __init__(self, fd: int = 0) -> None:
        self._fd = fd
        self._buffer = b""
        self._eof = False

    async def readline(self) -> str:
        while b"\n" not in self._buffer and not self._eof:
            await self._fill()
        line, newline, rest = self._buffer.partition(b"\n")
        if not newline and not line:
            raise EOFError
        self._buffer = rest
        return line.decode(errors="replace").rstrip("\r")

    async def _fill(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        try:
            loop.add_reader(self._fd, lambda: ready.done() or ready.set_result(None))
        except (OSError, ValueError):
            pass  # a regular file or /dev/null: always readable, epoll refuses it
        else:
            try:
                await ready
            finally:
                loop.remove_reader(self._fd)
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self._eof = not data
        self._buffer += data


def plain_output(file: Any) -> bool:
    """No colour and no redraw for pipes, files, dumb terminals and NO_COLOR users."""
    probe = Console(file=file)
    return not probe.is_terminal or probe.is_dumb_terminal or bool(os.environ.get("NO_COLOR"))


class Screen(Views):
    """The one place that writes to the user and reads their answers.

    The views (a patient, a digest, search results, ...) come from `Views`.
    """

    def __init__(self, *, stderr: bool = False) -> None:
        file = sys.stderr if stderr else sys.stdout
        self.plain = plain_output(file)
        self.console = Console(
            file=file,
            highlight=False,
            emoji=False,
            color_system=None if self.plain else "auto",
            soft_wrap=self.plain,  # a log or a pipe keeps long lines whole
        )
        self.interrupts = Interrupts()
        self._reader = LineReader()
        self._midline = False  # a plain stream has written text without its newline yet

    # -- plain lines -------------------------------------------------------------------------

    def print(self, *objects: Any, **kwargs: Any) -> None:
        self._end_line()
        self.console.print(*objects, **kwargs)

    def _end_line(self) -> None:
        if self._midline:
            self.console.out("")
            self._midline = False

    def banner(self, title: str) -> None:
        self.print()
        self.print(f"[bold]{escape(title)}[/]")
        self.print("=" * RULE_WIDTH, style="dim")

    def step(self, number: int, title: str) -> None:
        self.print()
        self.print(f"[bold cyan]\\[STEP {number}] {escape(title.upper())}[/]")

    def info(self, text: str) -> None:
        self.print(escape(text))

    def success(self, text: str) -> None:
        self.print(f"[green]✓ {escape(text)}[/]")

    def warn(self, text: str) -> None:
        self.print(f"[yellow]! {escape(text)}[/]")

    def error(self, text: str) -> None:
        """One line, whatever went wrong: the message is written for the user already."""
        self.print(f"[bold red]✗ {escape(text)}[/]")

    def frame(self, direction: str, text: str) -> None:
        arrow = "→" if direction == "send" else "←"
        self.print(f"{arrow} {text}", style="dim", markup=False, soft_wrap=True)

    # -- streaming ---------------------------------------------------------------------------

    @contextmanager
    def streaming(self, llm: str | None) -> Iterator[StreamView]:
        """The live token view: redrawn in place on a terminal, appended text otherwise."""
        self.print()
        self.print("=" * RULE_WIDTH, style="dim")
        self.print("[bold]LIVE STREAMING TOKENS[/] - watch as the summary is generated:")
        self.print("=" * RULE_WIDTH, style="dim")
        view = StreamView(self, llm)
        if self.plain:
            self.info("[Streaming] Starting token stream:")
            try:
                yield view
            except BaseException:
                view.stopped = True
                raise
            finally:
                view.flush()
                self._end_line()
                self.info(f"[Streaming] {view.status()}")
            return
        with Live(view, console=self.console, refresh_per_second=10, vertical_overflow="visible"):
            try:
                yield view
            except BaseException:
                view.stopped = True
                raise

    @contextmanager
    def waiting(self, text: str) -> Iterator[None]:
        """A spinner on a terminal, one line elsewhere."""
        if self.plain:
            self.info(text)
            yield
            return
        self._end_line()
        with self.console.status(escape(text)):
            yield

    @contextmanager
    def batch(self, total: int) -> Iterator[BatchProgress]:
        """A progress bar over several patients (one line per patient when plain)."""
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[tokens]} tokens"),
            TimeElapsedColumn(),
            console=self.console,
            disable=self.plain,
        )
        with progress:
            task = progress.add_task("Summarizing", total=total, tokens=0)
            yield BatchProgress(self, progress, task)

    def write_stream(self, text: str) -> None:
        self.console.out(text, end="", highlight=False)
        self._midline = not text.endswith("\n")

    # -- input -------------------------------------------------------------------------------

    async def ask(self, prompt: str) -> str:
        """A line from the user; EOFError on end of input."""
        self.print(f"[bold]{escape(prompt)}[/]", end="")
        try:
            return (await self._reader.readline()).strip()
        except EOFError:
            self.console.out("")
            raise

    async def ask_choice(self, prompt: str, choices: dict[str, str], hint: str) -> str:
        """One of `choices` (a typed word -> its meaning), asked until the answer is one."""
        while True:
            answer = (await self.ask(prompt)).lower()
            if answer in choices:
                return choices[answer]
            self.warn(f"Please answer {hint} (got {answer!r}).")

    async def ask_yes_no(self, prompt: str) -> bool:
        while True:
            answer = (await self.ask(prompt)).lower()
            if answer in {"y", "yes"}:
                return True
            if answer in {"n", "no"}:
                return False
            self.warn(f"Please answer y or n (got {answer!r}).")

    def run(self, main: Callable[[], Awaitable[int]]) -> int:
        """Run a tool's coroutine and map every way it ends to one line and an exit code.

        Ctrl-C at a prompt exits with 130, end of input (Ctrl-D) with 0; a connection or
        server failure prints its one-line message and exits with 1 (2 if no connection
        could be made at all).
        """

        async def top() -> int:
            self.interrupts.install()
            try:
                return await main()
            except asyncio.CancelledError:
                if self.interrupts.exit_code is None:
                    raise
                self.print()
                self.info("Interrupted; bye.")
                return self.interrupts.exit_code
            except EOFError:
                self.info("End of input; bye.")
                return EXIT_OK
            except ClientError as exc:
                self.error(str(exc))
                return exc.exit_code
            finally:
                self.interrupts.uninstall()

        try:
            return asyncio.run(top())
        except KeyboardInterrupt:  # a second Ctrl-C while shutting down
            return EXIT_INTERRUPTED
