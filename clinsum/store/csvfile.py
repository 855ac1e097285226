"""The CSV store: `patient_summaries.csv`, one current row per patient, and beside it
`patient_summaries.history.csv`, every version ever saved, appended to and never rewritten.

A save, under one inter-process lock:
1. appends the new version to the history file and fsyncs it;
2. rewrites the current file into a temporary file in the same folder, fsyncs it and renames
   it over the old one, then fsyncs the folder.
A `kill -9` at any instant leaves the old current file or the new one, never a torn one. It
can leave a torn last record in the history file (a write cut short): the next writer, under
the lock, cuts it off before appending, and a reader ignores it. A save killed between the
two steps left its version in the history but not in the current file: `ensure_exists` (at
start-up) makes each patient's current row the last version of their history again.

The history holds the versions from the first save with this code on; rows of a current
file written before (by the original tool, say) enter the history as version 1, with an
empty `saved_at`, the first time they are about to be replaced (or at start-up).

The parsed current rows are cached against the file's identity (inode, size, mtime), and the
history against its inode and size (only what another process appended is read), so a save
re-reads nothing that has not changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import os
import tempfile
import threading
from dataclasses import astuple
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .base import Draft, Event, StoreError, Version

log = logging.getLogger("CSV")

COLUMNS = ("patient_id", "name", "summary", "model", "generated_at", "grounded", "edited")
HISTORY_COLUMNS = ("version", *COLUMNS[:5], "saved_at", "grounded", "edited", "summary_id")
# Columns a file written by the original tool (or before edits were saved: "edited") may
# lack; filled with "" when read.
OPTIONAL_COLUMNS = frozenset({"model", "generated_at", "grounded", "edited"})
LOCK_TIMEOUT_S = 10.0
# Summaries are patient data: a file this module creates is readable by its owner only. A file
# that already exists keeps the mode its owner gave it, through every rewrite.
FILE_MODE = 0o600
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: str) -> str:
    """Stop spreadsheets from running a cell as a formula (CSV injection)."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _line(row: dict[str, str], columns: tuple[str, ...] = COLUMNS) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([row[c] for c in columns])
    return buf.getvalue()


def history_path(path: Path) -> Path:
    """`patient_summaries.csv` -> `patient_summaries.history.csv`, in the same folder."""
    return path.with_name(f"{path.stem}.history{path.suffix or '.csv'}")


def complete_records(data: bytes, columns: int) -> tuple[list[list[str]], int]:
    """The whole CSV records at the start of `data`, and how many bytes they take.

    A record is whole when it ends with a newline outside quotes and has `columns` fields;
    what follows the last whole record (a write cut short) is not returned.
    """
    if data.endswith(b"\n"):  # the usual case, all whole: parsed in one go (~0.3 s per 100k)
        try:
            parsed = list(csv.reader(io.StringIO(data.decode(), newline=""), strict=True))
        except (csv.Error, UnicodeDecodeError):
            pass
        else:
            if all(len(r) == columns for r in parsed):
                return parsed, len(data)
    rows: list[list[str]] = []
    end = 0
    pending = b""
    lines = data.split(b"\n")
    for chunk in lines[:-1]:  # every chunk but the last was followed by a newline
        pending += chunk + b"\n"
        try:
            parsed = list(csv.reader(io.StringIO(pending.decode(), newline=""), strict=True))
        except csv.Error:
            continue  # inside a quoted field: the record goes on
        except UnicodeDecodeError:
            break
        if len(parsed) != 1 or len(parsed[0]) != columns:
            break
        rows.append(parsed[0])
        end += len(pending)
        pending = b""
    return rows, end


class SummaryStore:
    """The two files, synchronous: the server calls it through `CsvStore` in a thread."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.history_path = history_path(self.path)
        self._lock = FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT_S, mode=FILE_MODE)
        self._thread_lock = threading.Lock()
        self._cache_key: tuple[int, int, int] | None = None
        self._lines: dict[str, str] = {}  # patient_id -> its CSV line, in file order
        # The history read so far: (inode, bytes read), every record, each patient's last.
        self._hist_key: tuple[int, int] | None = None
        self._hist_rows: list[dict[str, str]] = []
        self._hist_last: dict[str, dict[str, str]] = {}

    def ensure_exists(self) -> None:
        """Create the file with its header, so users see where summaries will go.

        Also removes the temporary files of writers killed mid-save: each is a full copy of
        the summaries. Temporary files exist only while their writer holds the lock, so
        under the lock every one left is an orphan.
        """
        with self._locked():
            prefix = f".{self.path.name}."
            if self.path.parent.is_dir():
                for entry in self.path.parent.iterdir():
                    if entry.name.startswith(prefix) and entry.name.endswith(".tmp"):
                        entry.unlink(missing_ok=True)
            if not self.path.exists():
                self._write({})
            else:
                # Parsed now, not by the first save: 100,000 rows take ~0.75 s (bench/).
                with contextlib.suppress(StoreError, OSError):  # the save reports those
                    self._reconcile()

    def _reconcile(self) -> None:
        """Every current row in the history; every current row the last of its history.

        Rows written before the history existed enter it as version 1. A save killed after
        its version was appended but before the current file was replaced is completed.
        """
        lines = dict(self._read_lines())
        self._read_history()
        # One write and one fsync for them all: a file of 100,000 rows is imported at once.
        self._append(
            *(self._imported(p, ln) for p, ln in lines.items() if p not in self._hist_last)
        )
        changed = False
        for pid, last in self._hist_last.items():
            line = _line(last)
            if lines.get(pid) != line:
                lines[pid] = line
                changed = True
        if changed:
            log.warning("%s: completing a save interrupted before it was replaced", self.path)
            self._write(lines)

    def _imported(self, pid: str, line: str) -> dict[str, str]:
        row = dict(zip(COLUMNS, next(csv.reader([line])), strict=True))
        return {**row, "version": "1", "saved_at": "", "summary_id": ""}

    def save(
        self,
        patient_id: int,
        name: str,
        summary: str,
        model: str,
        generated_at: str,
        grounded: bool,
        edited: bool = False,
        summary_id: str | None = None,
    ) -> int:
        """Add a version for this patient, make it their current row, keep every other row.

        `edited`: the clinician changed the generated text before saving it; `summary_id`:
        the draft it came from (None: a clinician's own summary). Returns the version number.

        Raises:
            StoreError: a file cannot be read, locked or written; it names the file.
        """
        row = {
            "patient_id": str(patient_id),
            "name": escape_cell(name),
            "summary": escape_cell(summary),
            "model": escape_cell(model),
            "generated_at": generated_at,
            "grounded": "true" if grounded else "false",
            "edited": "true" if edited else "false",
        }
        pid = row["patient_id"]
        with self._locked():
            lines = dict(self._read_lines())
            self._read_history()
            try:
                if pid in lines and pid not in self._hist_last:
                    self._append(self._imported(pid, lines[pid]))  # never lose the original
                version = int(self._hist_last[pid]["version"]) + 1 if pid in self._hist_last else 1
                saved_at = datetime.now(UTC).isoformat(timespec="microseconds")
                self._append(
                    {
                        **row,
                        "version": str(version),
                        "saved_at": saved_at,
                        "summary_id": summary_id or "",
                    }
                )
                lines[pid] = _line(row)
                self._write(lines)
            except OSError as exc:
                raise StoreError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        return version

    def rows(self) -> list[dict[str, str]]:
        """The current row of every patient, in the order they were first saved."""
        with self._locked():
            lines = self._read_lines()
        return [dict(zip(COLUMNS, next(csv.reader([ln])), strict=True)) for ln in lines.values()]

    def history(self, patient_id: int) -> list[dict[str, Any]]:
        """Every version saved for this patient, oldest first, as `Version.to_dict` spells it."""
        with self._locked():
            self._read_history()
            rows = [r for r in self._hist_rows if r["patient_id"] == str(patient_id)]
        return [_history_dict(r) for r in rows]

    def _read_history(self) -> None:
        """Bring the cached history up to date, reading only what was appended since.

        A torn last record (a writer killed mid-append) is cut off: we hold the lock, so no
        writer is appending now.
        """
        try:
            st = os.stat(self.history_path)
        except FileNotFoundError:
            self._hist_key, self._hist_rows, self._hist_last = None, [], {}
            return
        read = 0
        if self._hist_key is not None and self._hist_key[0] == st.st_ino:
            read = self._hist_key[1]
        if read > st.st_size:  # replaced by a shorter file: read it all again
            read = 0
        if read == 0:
            self._hist_rows, self._hist_last = [], {}
        if read == st.st_size and self._hist_key is not None:
            return
        try:
            with self.history_path.open("rb") as f:
                f.seek(read)
                data = f.read()
        except OSError as exc:
            raise StoreError(f"cannot read {self.history_path}: {exc.strerror or exc}") from None
        records, used = complete_records(data, len(HISTORY_COLUMNS))
        if read == 0:
            if not records or tuple(records[0]) != HISTORY_COLUMNS:
                if data.strip():
                    raise StoreError(
                        f"{self.history_path} is not a summaries history file (expected "
                        f"header {','.join(HISTORY_COLUMNS)}); move it aside and try again"
                    )
                records, used = [], 0  # empty, or a header cut short
            else:
                records = records[1:]
        for rec in records:
            row = dict(zip(HISTORY_COLUMNS, rec, strict=True))
            self._hist_rows.append(row)
            self._hist_last[row["patient_id"]] = row
        end = read + used
        if end < st.st_size:
            log.warning(
                "%s: cutting off %d bytes of a record left unfinished by a killed writer",
                self.history_path,
                st.st_size - end,
            )
            os.truncate(self.history_path, end)
        self._hist_key = (st.st_ino, end)

    def _append(self, *rows: dict[str, str]) -> None:
        """Append versions to the history file (its header first if new), then fsync."""
        if not rows:
            return
        data = "".join(_line(row, HISTORY_COLUMNS) for row in rows).encode()
        fd = os.open(self.history_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        try:
            if os.fstat(fd).st_size == 0:  # a new file: its header first
                data = (",".join(HISTORY_COLUMNS) + "\n").encode() + data
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self._hist_key = (st.st_ino, st.st_size)
        for row in rows:
            self._hist_rows.append(row)
            self._hist_last[row["patient_id"]] = row

    def _locked(self) -> _Locked:
        return _Locked(self._thread_lock, self._lock, self.path)

    def _identity(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _read_lines(self) -> dict[str, str]:
        key = self._identity()
        if key is None:
            return {}
        if key == self._cache_key:
            return self._lines
        try:
            with self.path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                header = reader.fieldnames or []
                missing = [c for c in COLUMNS if c not in header and c not in OPTIONAL_COLUMNS]
                if missing:
                    raise StoreError(
                        f"{self.path} is not a summaries file: missing column(s) "
                        f"{', '.join(missing)} (expected header {','.join(COLUMNS)}); "
                        "move it aside and try again"
                    )
                lines: dict[str, str] = {}
                for rec in reader:
                    full = {c: rec.get(c) or "" for c in COLUMNS}
                    lines[full["patient_id"]] = _line(full)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise StoreError(f"{self.path} cannot be read as CSV: {exc}") from None
        self._cache_key, self._lines = key, lines
        return lines

    def _write(self, lines: dict[str, str]) -> None:
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        # mkstemp creates the file 0600, so the copy is never readable by others, not even
        # for the instant before its mode is set.
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=folder)
        try:
            try:
                mode = self.path.stat().st_mode & 0o7777
            except FileNotFoundError:
                mode = FILE_MODE
            if mode != FILE_MODE:
                os.fchmod(fd, mode)
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                f.write(",".join(COLUMNS) + "\n")
                f.writelines(lines.values())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
        self._cache_key, self._lines = self._identity(), lines


def _history_dict(row: dict[str, str]) -> dict[str, Any]:
    return Version(
        patient_id=int(row["patient_id"]),
        name=row["name"],
        text=row["summary"],
        model=row["model"],
        generated_at=row["generated_at"],
        grounded=row["grounded"] == "true",
        edited=row["edited"] == "true",
        summary_id=row["summary_id"] or None,
    ).to_dict(version=int(row["version"]), saved_at=row["saved_at"] or None)


class _Locked:
    """Thread lock, then the inter-process file lock, with a readable error on time-out."""

    def __init__(self, thread_lock: threading.Lock, file_lock: FileLock, path: Path) -> None:
        self._thread_lock, self._file_lock, self._path = thread_lock, file_lock, path

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        try:
            self._file_lock.acquire()
        except Timeout:
            self._thread_lock.release()
            raise StoreError(
                f"{self._path} is locked by another process for more than "
                f"{LOCK_TIMEOUT_S:.0f} s; try again"
            ) from None
        except OSError as exc:
            self._thread_lock.release()
            raise StoreError(f"cannot lock {self._path}: {exc.strerror}") from None

    def __exit__(self, *exc: object) -> None:
        self._file_lock.release()
        self._thread_lock.release()


class CsvStore:
    """The `Store` over `SummaryStore`: each call in a worker thread.

    Drafts stay in the memory of the server that generated them (`shares_drafts` is False),
    and there is no audit trail: both need the PostgreSQL store.
    """

    kind = "csv"
    shares_drafts = False

    def __init__(self, file: SummaryStore | str | os.PathLike[str]) -> None:
        self.file = file if isinstance(file, SummaryStore) else SummaryStore(file)
        self.path = self.file.path
        self.label = str(self.path)

    async def open(self) -> None:
        try:
            await asyncio.to_thread(self.file.ensure_exists)
        except OSError as exc:
            raise StoreError(f"cannot use {self.path}: {exc.strerror or exc}") from None

    async def close(self) -> None:
        return None

    async def put_draft(self, draft: Draft) -> None:
        return None

    async def get_draft(self, summary_id: str) -> Draft | None:
        return None

    async def save(self, version: Version, event: Event | None = None) -> int:
        # SummaryStore.save takes a Version's fields in their order.
        return await asyncio.to_thread(self.file.save, *astuple(version))

    async def current(self) -> list[dict[str, str]]:
        return await asyncio.to_thread(self.file.rows)

    async def history(self, patient_id: int) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.file.history, patient_id)

    async def audit(self, event: Event) -> None:
        return None


def write_current(path: str | os.PathLike[str], rows: list[dict[str, str]]) -> None:
    """Write `rows` (the CSV's columns, as `Store.current` returns them) as a whole current
    file, atomically and under its lock; formula cells escaped as a save does."""
    file = SummaryStore(path)
    lines = {}
    for row in rows:
        escaped = {c: row[c] for c in COLUMNS}
        for c in ("name", "summary", "model"):
            escaped[c] = escape_cell(escaped[c])
        lines[escaped["patient_id"]] = _line(escaped)
    with file._locked():
        try:
            file._write(lines)
        except OSError as exc:
            raise StoreError(f"cannot write {file.path}: {exc.strerror or exc}") from None
