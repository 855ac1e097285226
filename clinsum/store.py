"""`patient_summaries.csv`: one row per patient, never a torn or partial file.

Every save rewrites the file into a temporary file in the same folder, fsyncs it and renames
it over the old one, under an inter-process lock. A `kill -9` at any instant therefore leaves
either the old file or the new one, and two server processes saving at once both land. The
parsed rows are cached against the file's identity (inode, size, mtime), so a save re-reads
the file only when another process has changed it since.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
import threading
from pathlib import Path

from filelock import FileLock, Timeout

COLUMNS = ("patient_id", "name", "summary", "model", "generated_at", "grounded", "edited")
# Columns a file written by the original tool (or before edits were saved: "edited") may
# lack; filled with "" when read.
OPTIONAL_COLUMNS = frozenset({"model", "generated_at", "grounded", "edited"})
LOCK_TIMEOUT_S = 10.0
# Summaries are patient data: a file this module creates is readable by its owner only. A file
# that already exists keeps the mode its owner gave it, through every rewrite.
FILE_MODE = 0o600
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class StoreError(RuntimeError):
    """The summaries file cannot be read or written; the message says which file and why."""


def escape_cell(value: str) -> str:
    """Stop spreadsheets from running a cell as a formula (CSV injection)."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _line(row: dict[str, str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([row[c] for c in COLUMNS])
    return buf.getvalue()


class SummaryStore:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT_S, mode=FILE_MODE)
        self._thread_lock = threading.Lock()
        self._cache_key: tuple[int, int, int] | None = None
        self._lines: dict[str, str] = {}  # patient_id -> its CSV line, in file order

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
                    self._read_lines()

    def save(
        self,
        patient_id: int,
        name: str,
        summary: str,
        model: str,
        generated_at: str,
        grounded: bool,
        edited: bool = False,
    ) -> None:
        """Replace this patient's row (or add it) and keep every other row.

        `edited`: the clinician changed the generated text before saving it.
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
        with self._locked():
            lines = dict(self._read_lines())
            lines[row["patient_id"]] = _line(row)
            try:
                self._write(lines)
            except OSError as exc:
                raise StoreError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def rows(self) -> list[dict[str, str]]:
        with self._locked():
            lines = self._read_lines()
        return [dict(zip(COLUMNS, next(csv.reader([ln])), strict=True)) for ln in lines.values()]

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
