"""Everything the two command-line tools show and ask, and the steps they share.

A terminal gets colour and a live-redrawn stream with a status line; a pipe, a log file or
`NO_COLOR` gets plain text with the tokens appended as they come, so a transcript reads the
same as the screen did. Prompts are read from stdin by the event loop itself (not by a
thread blocked in `input()`), so the connection keeps answering the server's keep-alive pings
while the user thinks, and Ctrl-C can cancel exactly what is running: a generation returns
to the prompt, a prompt ends the program.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from .client import UNKNOWN_PATIENT, Client, ClientError, FrameHook, RPCError
from .scores import format_score

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130  # the shell's convention for "ended by Ctrl-C"
SUMMARIES_FILE = "patient_summaries.csv"
RULE_WIDTH = 80
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


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


class Screen:
    """The one place that writes to the user and reads their answers."""

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

    def connected(self, client: Client) -> None:
        info = client.server_info
        name = info.get("name", "server")
        version = info.get("version", "?")
        tools = ", ".join(t["name"] for t in client.tools)
        self.print(
            f"[WebSocket] Connected to {client.url}: {name} {version}, "
            f"MCP {client.protocol_version or '?'}, tools: {tools}",
            style="dim",
            markup=False,
            soft_wrap=True,
        )

    # -- records -----------------------------------------------------------------------------

    def corrected(self, query: str, corrected: str | None) -> None:
        """Say which query was searched when the server respelled the one typed."""
        if corrected is not None:
            self.print(
                f"Showing results for [bold]{escape(corrected)}[/] (you typed {escape(query)!r})"
            )

    def search_results(
        self, query: str, hits: list[dict[str, Any]], corrected: str | None = None
    ) -> None:
        self.corrected(query, corrected)
        shown = corrected if corrected is not None else query
        self.print(f"Found {_count(len(hits), 'patient')} matching [bold]{escape(shown)!r}[/]:")
        table = Table(show_edge=False, header_style="bold")
        for column in ("#", "ID", "Name", "Age", "Gender", "Score", "Matched"):
            table.add_column(column, justify="right" if column in {"#", "ID", "Age"} else "left")
        for n, hit in enumerate(hits, 1):
            table.add_row(
                str(n),
                str(hit["patient_id"]),
                hit["name"],
                str(hit["age"]),
                hit["gender"],
                f"{hit['score']:.3f}",
                _first(hit["matched"], 2),
            )
        self.print(table)

    def patient(self, record: dict[str, Any]) -> None:
        self.print(
            f"[bold]Patient {record['patient_id']}: {escape(record['name'])}[/], "
            f"{record['age']}, {escape(record['gender'])}"
        )
        # Older servers send no scale: their scores are on 0-1.
        scale = record.get("score_scale", 1.0)
        facts = Table.grid(padding=(0, 2))
        facts.add_column(style="bold")
        facts.add_column()
        for label, value in (
            ("Symptoms", record["current_symptoms"]),
            ("Blood pressure", f"{record['current_bp']} mmHg"),
            ("Blood sugar", f"{record['current_sugar']} mg/dL"),
            (
                "Risk score",
                f"{format_score(record['risk_score'], scale)} "
                f"(base {format_score(record['base_score'], scale)})",
            ),
            ("History", record["medical_history"]),
            ("Medications", record["current_medications"]),
        ):
            facts.add_row(label, str(value))
        self.print(facts)
        visits = record["visit_history"]
        if not visits:
            self.print("[dim]No earlier visits.[/]")
            return
        table = Table(title="Visit history", show_edge=False, header_style="bold")
        # A file's own per-visit fields (the original tool's symptom_score, bp_risk, ...)
        # get a column each, after ours, so that nothing the record holds is hidden.
        extra = [k for k in dict.fromkeys(k for v in visits for k in v) if k not in _VISIT_SHOWN]
        for column in ("Date", "Symptoms", "BP", "Sugar", "Risk", *extra, "Outcome", "Notes"):
            table.add_column(column)
        for v in visits:
            table.add_row(
                v["date"],
                v["symptoms"],
                v["bp"],
                str(v["sugar"]),
                format_score(v["risk_score"], scale),
                *(_cell(v.get(k)) for k in extra),
                v["outcome"],
                v["notes"],
            )
        self.print(table)

    def grounding(self, grounding: dict[str, Any]) -> None:
        """The check under the streamed text; claims that block saving in red."""
        blocking = [c for c in grounding["unsupported"] if c["blocking"]]
        coverage = f"coverage {grounding['coverage']:.2f}"
        if grounding["ok"]:
            self.print(f"[green]✓ All facts supported by the record ({coverage})[/]")
        else:
            self.print(
                f"[bold red]✗ {len(blocking)} claim(s) not supported by the record ({coverage}):[/]"
            )
        for claim in grounding["unsupported"]:
            colour = "red" if claim["blocking"] else "yellow"
            note = "" if claim["blocking"] else " (does not block saving)"
            self.print(
                f"[{colour}]  - {escape(claim['kind'])} {escape(claim['text'])!r}: "
                f"{escape(claim['reason'])}{note}[/]"
            )
        if grounding["missing"]:
            self.print(f"[dim]  Not mentioned: {escape('; '.join(grounding['missing']))}[/]")

    def digest(self, digest: dict[str, Any]) -> None:
        """The chart at a glance: flags, trends, medication changes, the latest visit."""
        lines = []
        for v in digest["vitals"]:
            colour = "red" if v["flagged"] else "yellow" if v["mild"] else "green"
            lines.append(
                f"[{colour}]{escape(v['measure'])} {escape(v['value'])} {escape(v['unit'])}: "
                f"{escape(v['category'])}[/]"
            )
        for t in digest["trends"]:
            if t["meaningful"]:
                path = " → ".join(f"{p['value']:g}" for p in t["points"])
                lines.append(
                    f"{escape(t['measure'])} {t['direction']} since {t['points'][0]['date']}: "
                    f"{path} {escape(t['unit'])} (latest step {t['latest_step']})"
                )
        for m in digest["med_changes"]:
            detail = f" ({m['before']} → {m['after']})" if m["change"] == "dose changed" else ""
            lines.append(
                f"{escape(m['drug'])} {m['change']}{escape(detail)} since the latest visit"
            )
        if digest["new_conditions"]:
            lines.append(
                "added since the first visit: " + escape(", ".join(digest["new_conditions"]))
            )
        latest = digest["latest_visit"]
        if latest:
            lines.append(
                f"{digest['visits']} visit(s) over {digest['span_days']} days; latest "
                f"{latest['date']}: {escape(latest['outcome'])}. {escape(latest['key_point'])}"
            )
        self.print("[bold]Digest[/]")
        for line in lines:
            self.print(f"  {line}")

    def draft(self, text: str) -> None:
        self.print("[bold]Edited summary:[/]")
        self.print(escape(text), soft_wrap=True)

    def saved_row(self, row: dict[str, str], path: str) -> None:
        """The row exactly as `grep "^ID," file` prints it, which is how people check."""
        line = io.StringIO()
        csv.writer(line, lineterminator="").writerow(row.values())
        self.print(f'$ grep "^{row["patient_id"]}," {Path(path).name}', style="dim", markup=False)
        self.print(line.getvalue(), markup=False, soft_wrap=True)

    def summaries(self, rows: list[dict[str, str]]) -> None:
        if not rows:
            self.info("No summaries saved yet.")
            return
        table = Table(show_edge=False, header_style="bold")
        for column in ("ID", "Name", "Grounded", "Model", "Generated", "Summary"):
            table.add_column(column, overflow="fold" if column == "Summary" else "ellipsis")
        for row in rows:
            table.add_row(
                row["patient_id"],
                row["name"],
                row.get("grounded", ""),
                row.get("model", ""),
                row.get("generated_at", ""),
                row["summary"],
            )
        self.print(f"{_count(len(rows), 'saved summary', 'saved summaries')}:")
        self.print(table)

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


# Visit keys shown in the fixed columns, or deliberately left out (history, medications and
# base score are in the record above the table).
_VISIT_SHOWN = frozenset(
    {"date", "symptoms", "bp", "sugar", "risk_score", "outcome", "notes"}
    | {"history", "medications", "base_score"}
)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def _first(items: list[str], n: int) -> str:
    """The first `n` items; "; " between them, since an item may hold commas itself
    ('Chronic neck pain (history, similar to "neck ache" 0.81)')."""
    more = f"; +{len(items) - n} more" if len(items) > n else ""
    return "; ".join(items[:n]) + more


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
                f"Tokens complete: {_count(r['tokens'], 'token')} in "
                f"{r['duration_ms'] / 1000:.1f} s, "
                f"{r['tokens_per_s']:.1f} tok/s, first token after {r['ttft_ms'] / 1000:.2f} s"
            )
            return " | ".join(parts)
        now = time.monotonic()
        if self.stopped:
            parts.append("Stopped")
        elif self.first is None and self.position is not None:
            parts.append(f"waiting for the model: position {self.position} in the queue")
        parts.append(_count(self.tokens, "token"))
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


# -- the steps both tools walk through -----------------------------------------------------


async def connect(
    screen: Screen,
    url: str,
    token: str | None,
    timeout: float,
    name: str,
    on_frame: FrameHook | None = None,
) -> Client:
    """Connect, do the MCP handshake and say in one line whom we are talking to."""
    client = await Client.connect(url, token, on_frame, timeout=timeout)
    try:
        await client.initialize(name)
    except BaseException:
        await client.close()
        raise
    screen.connected(client)
    return client


async def ask_search(screen: Screen, client: Client, top_k: int = 5) -> list[dict[str, Any]]:
    """Ask for a search term until one finds patients."""
    while True:
        query = await screen.ask("Enter disease/symptom to search for: ")
        if not query:
            screen.warn("Please type a disease or symptom to search for, e.g. diabetes.")
            continue
        try:
            found = await client.find(query, top_k)
        except RPCError as exc:
            screen.error(exc.message)
            continue
        hits, corrected = found["results"], found.get("corrected")
        if not hits:
            screen.corrected(query, corrected)
            screen.warn(f"No patients match {query!r}; try another disease or symptom.")
            continue
        screen.search_results(query, hits, corrected)
        return hits


async def ask_patient(
    screen: Screen, client: Client, prompt: str = "Enter patient ID: "
) -> dict[str, Any]:
    """Ask for a patient id until the server knows it; returns the patient's record."""
    while True:
        answer = await screen.ask(prompt)
        if not answer.isdigit() or int(answer) < 1:
            screen.warn(
                f"{answer!r} is not a patient ID: type a whole number, e.g. one from the list."
                if answer
                else "Please type a patient ID, e.g. one from the list above."
            )
            continue
        try:
            return await client.fetch(int(answer))
        except RPCError as exc:
            if exc.code == UNKNOWN_PATIENT:
                screen.warn(f"There is no patient with ID {answer}; pick one from the list.")
            else:
                screen.error(exc.message)


async def generate(
    screen: Screen, client: Client, record: dict[str, Any], max_tokens: int | None
) -> dict[str, Any] | None:
    """Stream one summary; None if it was cancelled (Ctrl-C) or the server refused it."""
    llm = client.llm_label
    screen.info(f"Generating a clinical summary of {record['name']}...")
    screen.print(
        f"[dim]Tokens will appear below as {escape(llm or 'the model')} generates them; "
        "Ctrl-C cancels.[/]"
    )
    try:
        with screen.streaming(llm) as view:
            result = await screen.interrupts.guard(
                client.summarize(
                    record["patient_id"], view.token, view.queued, max_tokens=max_tokens
                )
            )
            view.finish(result)
    except Interrupted:
        screen.warn("Generation cancelled; nothing was saved.")
        return None
    except RPCError as exc:
        screen.error(exc.message)
        return None
    screen.grounding(result["grounding"])
    screen.digest(result["digest"])
    return result


async def save(
    screen: Screen,
    client: Client,
    result: dict[str, Any],
    *,
    force: bool = False,
    text: str | None = None,
) -> bool:
    """Save by summary id (so nothing partial can be saved), with the clinician's `text` if
    edited, and show the row."""
    try:
        saved = await client.save(result["summary_id"], force=force, text=text)
    except RPCError as exc:
        screen.error(exc.message)
        return False
    screen.success(f"Summary saved to {saved['path']}")
    try:
        rows = await client.list_summaries()
    except RPCError as exc:
        screen.warn(f"Saved, but the file could not be read back: {exc.message}")
        return True
    row = next((r for r in rows if r["patient_id"] == str(saved["patient_id"])), None)
    if row is not None:
        screen.saved_row(row, saved["path"])
    return True


SAVE_CHOICES = {"y": "y", "yes": "y", "n": "n", "no": "n", "e": "e", "edit": "e"}
EDIT_HELP = (
    "# Edit the summary above. Lines starting with '#' are ignored;\n"
    "# an empty text keeps the draft as it was.\n"
)


async def offer_save(screen: Screen, client: Client, result: dict[str, Any]) -> bool:
    """Ask before saving; `e` edits the draft (re-checked, verdict shown, then asked again);
    ask again, explicitly, before saving unsupported claims."""
    text, grounding = result["summary"], result["grounding"]
    while True:
        answer = await screen.ask_choice(
            f"Save this summary to {SUMMARIES_FILE}? (y/n/e = edit): ",
            SAVE_CHOICES,
            "y, n or e (edit)",
        )
        if answer == "n":
            screen.info("Not saved.")
            return False
        if answer == "y":
            break
        edited = await edit_text(screen, text)
        if edited is None or edited == text:
            screen.info("Summary unchanged.")
            continue
        try:
            grounding = await client.check_summary(result["summary_id"], edited)
        except RPCError as exc:
            screen.error(exc.message)
            continue
        text = edited
        screen.draft(text)
        screen.grounding(grounding)
    force = not grounding["ok"]
    if force:
        count = sum(c["blocking"] for c in grounding["unsupported"])
        screen.warn(
            f"This summary makes {count} claim(s) the record does not support (in red above)."
        )
        if not await screen.ask_yes_no("Save it anyway, unsupported claims included? (y/n): "):
            screen.info("Not saved.")
            return False
    changed = text if text != result["summary"] else None
    return await save(screen, client, result, force=force, text=changed)


async def edit_text(screen: Screen, draft: str) -> str | None:
    """The draft as the user edited it, or None if they left it empty.

    Like `git commit`: $VISUAL, else $EDITOR, opened on a temporary file; without either (or
    if it cannot run), one line typed at the prompt replaces the draft.
    """
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if editor:
        with tempfile.TemporaryDirectory(prefix="clinsum-") as folder:
            path = Path(folder) / "SUMMARY_EDITMSG"
            path.write_text(f"{draft}\n{EDIT_HELP}", encoding="utf-8")
            try:
                proc = await asyncio.create_subprocess_exec(*shlex.split(editor), str(path))
                code = await proc.wait()
            except (OSError, ValueError) as exc:
                screen.warn(f"Cannot run the editor {editor!r} ({exc}); type the text instead.")
            else:
                if code != 0:
                    screen.warn(f"The editor {editor!r} exited with status {code}; draft kept.")
                    return None
                lines = path.read_text(encoding="utf-8").splitlines()
                text = "\n".join(ln for ln in lines if not ln.startswith("#")).strip()
                return text or None
    screen.info(f"Draft:\n{draft}")
    text = await screen.ask("Type the new summary on one line (empty keeps the draft): ")
    return text or None
