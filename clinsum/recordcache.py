"""A validated patients file, kept beside it under its content hash, and read one patient
at a time.

Reading, translating and validating 100,000 patients (400,000 visits) takes about 10 s, most of
it parsing each visit's JSON and checking every value; the records themselves never change
while the file does not. So the validated records are written once to
`<data file name>.records.jsonl` (readable by its owner only: it is patient data): a header
line, then one JSON row per patient. A large file is validated in a child process, so the
memory validating takes is returned when it exits (`_validate_in_child`).

On the next start the rows are not decoded: `Records` keeps them as bytes (84 MB at 100,000
patients) and decodes a patient when a request asks for it (~20 µs). As Python objects the
same patients took 3.9 s to build and ~400 MiB at every start-up. What search needs of every
patient (name, age, gender, risk) is in the header as columns.

The cache is used only while both of these match what it was written for:
- the file's bytes (sha256), so an edited file is validated again;
- the code that reads, validates and stores records (`records.py`, `legacy/data.py`, this
  file), so a change of the rules (a new accepted spelling, a stricter range) is applied to
  every file at once.
Anything else about it (missing, unreadable, truncated, another version) means: load the file
the slow way and write the cache anew. A cache is never the only copy of anything.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .legacy import data as patient_files
from .records import Patient, RecordError, Visit, file_hash

log = logging.getLogger("Server")

FILE_MODE = 0o600
# Files larger than this (about 6,000 patients) are validated in a child process.
CHILD_ABOVE_BYTES = 8 << 20
INVALID_EXIT = 2
_VISIT = [f.name for f in fields(Visit)]
_PATIENT = [f.name for f in fields(Patient) if f.name != "visit_history"]
_LOADER = (
    Path(__file__).parent / "records.py",
    Path(patient_files.__file__),
    Path(__file__),
)


class Records(Mapping[int, Patient]):
    """Patients by id, in file order, each decoded from its JSON row when asked for.

    Columns every search reads (`names`, `ages`, `genders`, `risks`, by position) are kept
    decoded; `at(position)` is the patient at a position of the file.
    """

    def __init__(
        self,
        rows: bytes | memoryview,
        columns: Mapping[str, Any],
        scale: float,
        source_sha256: str | None = None,
    ) -> None:
        self._rows = memoryview(rows)
        # The sha256 of the file these records were validated from, when known: the search
        # index is keyed by it, and need not read and hash the file a second time.
        self.source_sha256 = source_sha256
        self._ends = np.asarray(columns["ends"], dtype=np.int64)
        self.ids: list[int] = list(columns["ids"])
        self.names: list[str] = list(columns["names"])
        self.ages = np.asarray(columns["ages"], dtype=np.int16)
        self.genders: list[str] = list(columns["genders"])
        self.risks = np.asarray(columns["risks"], dtype=np.float32)
        self.scale = scale
        self._position = {pid: i for i, pid in enumerate(self.ids)}
        columns_of = (self.ids, self.names, self.ages, self.genders, self.risks, self._ends)
        if len({len(column) for column in columns_of}) != 1:
            raise ValueError("the columns do not have one entry per patient")
        if len(self._ends) and self._ends[-1] != len(self._rows):
            raise ValueError(f"the rows end at byte {len(self._rows)}, not {self._ends[-1]}")

    @classmethod
    def of(cls, patients: Mapping[int, Patient], scale: float | None = None) -> Records:
        """`patients` as Records (already Records: themselves)."""
        if isinstance(patients, Records):
            return patients
        rows, ends = bytearray(), []
        for p in patients.values():
            rows += orjson.dumps(_row(p))
            rows += b"\n"
            ends.append(len(rows))
        values = list(patients.values())
        columns = {
            "ends": ends,
            "ids": [p.patient_id for p in values],
            "names": [p.name for p in values],
            "ages": [p.age for p in values],
            "genders": [p.gender for p in values],
            "risks": [p.risk_score for p in values],
        }
        if scale is None:
            scale = max((p.score_scale for p in values), default=1.0)
        return cls(bytes(rows), columns, scale)

    def columns(self) -> dict[str, Any]:
        """The cache header's columns as JSON-ready lists: what `__init__` reads back."""
        return {
            "ends": self._ends.tolist(),
            "ids": self.ids,
            "names": self.names,
            "ages": self.ages.tolist(),
            "genders": self.genders,
            "risks": self.risks.tolist(),
        }

    def rows(self) -> memoryview:
        """Every patient's JSON row, each ending in a newline, in file order."""
        return self._rows

    def at(self, position: int) -> Patient:
        """The patient at `position` of the file (0-based), decoded now."""
        start = int(self._ends[position - 1]) if position else 0
        *values, visits = orjson.loads(self._rows[start : int(self._ends[position])])
        visit_history = tuple(Visit(*v[:-1], tuple(map(tuple, v[-1]))) for v in visits)
        return Patient(**dict(zip(_PATIENT, values, strict=True)), visit_history=visit_history)

    def __getitem__(self, patient_id: int) -> Patient:
        return self.at(self._position[patient_id])

    def __contains__(self, patient_id: object) -> bool:
        return patient_id in self._position

    def __iter__(self) -> Iterator[int]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __eq__(self, other: object) -> bool:
        # Mapping's own __eq__ compares with dicts only.
        if not isinstance(other, Mapping):
            return NotImplemented
        return len(self) == len(other) and all(
            pid in other and other[pid] == p for pid, p in self.items()
        )

    __hash__ = None  # type: ignore[assignment]


def _row(p: Patient) -> list[Any]:
    return [
        *(getattr(p, name) for name in _PATIENT),
        [[*(getattr(v, name) for name in _VISIT[:-1]), list(v.extra)] for v in p.visit_history],
    ]


def cache_path(data_path: Path) -> Path:
    """Beside the data file, named after all of its name: the original tool's
    patients_data.csv and patients_data.json share a folder and a stem."""
    return data_path.parent / f"{data_path.name}.records.jsonl"


def _fingerprint() -> str:
    """The loader's own code: records validated by other rules are not these records."""
    digest = hashlib.sha256()
    for source in _LOADER:
        digest.update(source.read_bytes())
    return digest.hexdigest()


def load(path: str | Path) -> patient_files.Loaded:
    """What `legacy.data.load(path)` returns, from the cache when it is current; its
    `patients` are `Records` either way.

    Raises:
        RecordError: the file itself cannot be read or is invalid (never the cache).
    """
    path = Path(path)
    try:
        key = _key(path)
        size = path.stat().st_size
    except OSError:  # missing, a folder, unreadable: the loader says which, as a RecordError
        return patient_files.load(path)
    cache = cache_path(path)
    try:
        return _decode(cache.read_bytes(), key)
    except FileNotFoundError:
        pass
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        log.info("Ignoring the records cache %s (%s); validating %s again", cache, exc, path)
    data = _validate_in_child(path) if size > CHILD_ABOVE_BYTES else _validate(path, key)
    _write(cache, data)
    return _decode(data, None)


def _key(path: Path) -> dict[str, str]:
    return {"data_sha256": file_hash(path), "loader": _fingerprint()}


def _validate(path: Path, key: dict[str, str]) -> bytes:
    """The cache's bytes for `path`: validated here, in this process."""
    loaded = patient_files.load(path)
    records = Records.of(loaded.patients, loaded.scale)
    head = {
        "key": key,
        "kind": loaded.kind,
        "scale": loaded.scale,
        "notes": loaded.notes,
        "columns": records.columns(),
    }
    return orjson.dumps(head) + b"\n" + records.rows()


def _validate_in_child(path: Path) -> bytes:
    """The cache's bytes for `path`, validated by `python -m clinsum.recordcache` (`main`).

    Validating 100,000 patients takes ~600 MiB that Python's allocator keeps after the objects
    are freed: a server that validated in-process ran at 1.1 GiB for as long as it lived. A
    child returns all of it when it exits, for the ~0.5 s of its own imports.
    """
    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    child = subprocess.run(
        [sys.executable, "-m", "clinsum.recordcache", str(path.resolve())],
        capture_output=True,
        env=env,
        check=False,
    )
    if child.returncode == 0:
        return child.stdout
    if child.returncode == INVALID_EXIT:
        raise RecordError(child.stdout.decode())
    said = child.stderr.decode(errors="replace").strip()
    raise RecordError(
        f"validating {path} failed (exit status {child.returncode}): {said[-300:] or 'no message'}"
    )


def _decode(data: bytes, key: dict[str, str] | None) -> patient_files.Loaded:
    """The cache's bytes as `Loaded`, if they were written for `key` (None: any)."""
    split = data.find(b"\n")
    if split < 0:
        raise ValueError("no header line")
    head = orjson.loads(data[:split])
    if key is not None and head["key"] != key:
        raise KeyError("written for another file or loader")
    records = Records(
        memoryview(data)[split + 1 :], head["columns"], head["scale"], head["key"]["data_sha256"]
    )
    return patient_files.Loaded(records, head["kind"], head["scale"], head["notes"])


def _write(cache: Path, data: bytes) -> None:
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        tmp.replace(cache)
        # The cache's earlier format (one JSON document) is patient data nobody reads now.
        cache.with_suffix(".json").unlink(missing_ok=True)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        log.warning(
            "could not save the records cache %s (%s): start-up validates again", cache, exc
        )


def main(argv: list[str] | None = None) -> int:
    """The child `_validate_in_child` starts: the cache's bytes for one file on stdout, or
    the RecordError's message there and exit status INVALID_EXIT (stderr is for warnings)."""
    parser = argparse.ArgumentParser(
        prog="python -m clinsum.recordcache",
        description="Validate a patients file and write its records cache to stdout "
        "(what the server runs for a file over 8 MB).",
    )
    parser.add_argument("file", type=Path)
    path = parser.parse_args(argv).file
    try:
        data = _validate(path, _key(path))
    except RecordError as exc:
        sys.stdout.write(str(exc))
        return INVALID_EXIT
    except OSError as exc:  # gone or unreadable since the server looked
        sys.stdout.write(f"cannot read the patient data file {path}: {exc.strerror}")
        return INVALID_EXIT
    sys.stdout.buffer.write(data)
    return 0


__all__ = ["Records", "cache_path", "load"]

if __name__ == "__main__":
    sys.exit(main())
