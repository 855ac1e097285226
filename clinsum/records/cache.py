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
- the file's bytes (sha256), so an edited file is validated again; for a FHIR export, each
  of its files' names, sizes and bytes, and its patient id map (`fhir.source_key`), so a
  renumbered map is never served with the records of the old one;
- the code that reads, validates and stores records (every module of this package), so a
  change of the rules (a new accepted spelling, a stricter range) is applied to
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
from pathlib import Path

import orjson

from . import fhir, formats
from .model import Loaded, RecordError
from .parse import file_hash
from .table import Records

log = logging.getLogger("Server")

FILE_MODE = 0o600
# Files larger than this (about 6,000 patients) are validated in a child process.
CHILD_ABOVE_BYTES = 8 << 20
INVALID_EXIT = 2
# The code that reads, validates and stores records: the whole package.
_LOADER = tuple(sorted(Path(__file__).parent.glob("*.py")))


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


def load(path: str | Path) -> Loaded:
    """What `formats.load(path)` returns, from the cache when it is current; its
    `patients` are `Records` either way.

    Raises:
        RecordError: the file itself cannot be read or is invalid (never the cache).
    """
    path = Path(path)
    try:
        key = _key(path)
        size = fhir.export_size(path) if path.is_dir() else path.stat().st_size
    except OSError:  # missing, a folder, unreadable: the loader says which, as a RecordError
        return formats.load(path)
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
    """The data's sha256 (for a FHIR export: all of its files, and its id map's) and the
    loader's."""
    source = fhir.source_key(path) if _is_fhir(path) else {"data_sha256": source_hash(path)}
    return {**source, "loader": _fingerprint()}


def source_hash(path: str | Path) -> str:
    """The sha256 the records (and the search index) of `path` are keyed by: the file's bytes,
    or every file of a FHIR export."""
    path = Path(path)
    return fhir.source_key(path)["data_sha256"] if _is_fhir(path) else file_hash(path)


def _is_fhir(path: Path) -> bool:
    return fhir.looks_like_fhir(path)


def _validate(path: Path, key: dict[str, str]) -> bytes:
    """The cache's bytes for `path`: validated here, in this process."""
    loaded = formats.load(path)
    if "ids_sha256" in key:
        # Loading a FHIR export may have given new patients their ids: the cache is for the
        # id map as it is now.
        key = {**key, **fhir.ids_key(path)}
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
    """The cache's bytes for `path`, validated by `python -m clinsum.records.cache` (`main`).

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
        [sys.executable, "-m", "clinsum.records.cache", str(path.resolve())],
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


def _decode(data: bytes, key: dict[str, str] | None) -> Loaded:
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
    return Loaded(records, head["kind"], head["scale"], head["notes"])


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
        prog="python -m clinsum.records.cache",
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


if __name__ == "__main__":
    sys.exit(main())
