"""A validated patients file, kept beside it under its content hash, so start-up is fast.

Reading, translating and validating 100,000 patients (400,000 visits) takes about 10 s, most of
it parsing each visit's JSON and checking every value; the records themselves never change
while the file does not. So the validated records are written once as plain JSON rows to
`<data file name>.records.json` (readable by its owner only: it is patient data), and read back on
the next start in about 3 s (bench: `clinsum/recordcache.py` section of README's Performance).

The cache is used only while both of these match what it was written for:
- the file's bytes (sha256), so an edited file is validated again;
- the code that reads and validates records (`records.py`, `legacy/data.py`), so a change of
  the rules (a new accepted spelling, a stricter range) is applied to every file at once.
Anything else about it (missing, unreadable, truncated, another version) means: load the file
the slow way and write the cache anew. A cache is never the only copy of anything.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson

from .legacy import data as patient_files
from .records import Patient, Visit, file_hash

log = logging.getLogger("Server")

FILE_MODE = 0o600
_VISIT = [f.name for f in fields(Visit)]
_PATIENT = [f.name for f in fields(Patient) if f.name != "visit_history"]
_LOADER = (Path(__file__).parent / "records.py", Path(patient_files.__file__))


def cache_path(data_path: Path) -> Path:
    """Beside the data file, named after all of its name: the original tool's
    patients_data.csv and patients_data.json share a folder and a stem."""
    return data_path.parent / f"{data_path.name}.records.json"


def _fingerprint() -> str:
    """The loader's own code: records validated by other rules are not these records."""
    digest = hashlib.sha256()
    for source in _LOADER:
        digest.update(source.read_bytes())
    return digest.hexdigest()


def load(path: str | Path) -> patient_files.Loaded:
    """What `legacy.data.load(path)` returns, from the cache when it is current.

    Raises:
        RecordError: the file itself cannot be read or is invalid (never the cache).
    """
    path = Path(path)
    try:
        key = {"data_sha256": file_hash(path), "loader": _fingerprint()}
    except OSError:  # missing, a folder, unreadable: the loader says which, as a RecordError
        return patient_files.load(path)
    cache = cache_path(path)
    try:
        doc = orjson.loads(cache.read_bytes())
        if doc["key"] == key:
            return _decode(doc)
    except FileNotFoundError:
        pass
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        log.info("Ignoring the records cache %s (%s); validating %s again", cache, exc, path)
    loaded = patient_files.load(path)
    _write(cache, key, loaded)
    return loaded


def _decode(doc: dict[str, Any]) -> patient_files.Loaded:
    # One str object per distinct value: generated and exported records repeat the same
    # symptoms, drugs and outcomes thousands of times, and each repeat would be a new object.
    same: dict[Any, Any] = {}
    one = same.setdefault
    patients: dict[int, Patient] = {}
    for row in doc["patients"]:
        *values, visits = row
        visit_history = tuple(
            Visit(
                *(one(v, v) if isinstance(v, str) else v for v in visit[:-1]),
                tuple((k, one(x, x) if isinstance(x, str) else x) for k, x in visit[-1]),
            )
            for visit in visits
        )
        kwargs = dict(zip(_PATIENT, values, strict=True))
        patient = Patient(**kwargs, visit_history=visit_history)
        patients[patient.patient_id] = patient
    return patient_files.Loaded(patients, doc["kind"], doc["scale"], doc["notes"])


def _write(cache: Path, key: dict[str, str], loaded: patient_files.Loaded) -> None:
    rows = [
        [
            *(getattr(p, name) for name in _PATIENT),
            [[*(getattr(v, name) for name in _VISIT[:-1]), list(v.extra)] for v in p.visit_history],
        ]
        for p in loaded.patients.values()
    ]
    doc = {
        "key": key,
        "kind": loaded.kind,
        "scale": loaded.scale,
        "notes": loaded.notes,
        "patients": rows,
    }
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(doc))
        tmp.replace(cache)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        log.warning(
            "could not save the records cache %s (%s): start-up validates again", cache, exc
        )


__all__ = ["cache_path", "load"]
