"""FHIR R4 exports as patients: the I/O shell around `fhirmap` (which holds every rule).

Three shapes are read, told apart by the path itself:
- a folder: a Bulk Data export (`Patient.000.ndjson`, `Observation.001.ndjson.gz`, ...),
  a folder of Bundles (`*.json`), or both; files of other names are listed in the log;
- one `.ndjson` or `.ndjson.gz` file (resources of any types, one per line);
- one `.json` file holding a Bundle (or a single resource).

NDJSON is streamed a line at a time (gzip too): a file is never held whole, only the small
records `fhirmap.Collector` keeps of what it uses. A Bundle is one JSON document and is read
whole, one file at a time. A file whose first resource is not FHIR is refused with one
RecordError naming it; anything wrong after that (a line cut short, an invalid resource, a
reference to a Patient the export lacks) is skipped and said in the log with file, line,
type, id and field, never dropped silently.

Our tools name a patient by an int; FHIR ids are strings. So the ints are kept in a map
beside the export, `<export>.ids.json` (0600, like the records cache: it is about patients):
append-only, so a FHIR Patient keeps its int for as long as the file exists, new Patients get
the next ints (in FHIR id order), and an int is never given to another patient, not even
after its patient leaves the export. A saved summary can then never attach to another
person when the export is refreshed. String ids would have changed every tool's contract,
the summary store's keys and both clients. If the map cannot be written, loading fails with
a RecordError naming it, rather than numbering patients differently from the last time.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .model import Loaded, RecordError

if TYPE_CHECKING:
    from .fhirmap import Collector, Export

IDS_SUFFIX = ".ids.json"
IDS_MODE = 0o600
IDS_VERSION = 1
# Files beside the resources that are not resources: SMART's bulk-data-client writes its export
# log as log.ndjson; an id map of a file in the folder is ours.
COMPANIONS = frozenset({"log.ndjson"})


def is_ndjson(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".ndjson", ".ndjson.gz"))


def looks_like_fhir(path: Path) -> bool:
    """A folder, an NDJSON file, or a file whose first character opens a JSON object (our
    own JSON format is a list): the loaders to try, before reading anything else."""
    if path.is_dir() or is_ndjson(path):
        return True
    try:
        with path.open("rb") as f:
            head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return False
    return head[:1] == b"{"


def export_files(path: Path) -> tuple[list[Path], list[str]]:
    """The files of an export (sorted by name), and the names in its folder that are not."""
    if not path.is_dir():
        return [path], []
    files, others = [], []
    for p in sorted(path.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        if p.name.endswith(IDS_SUFFIX) or p.name in COMPANIONS:
            others.append(p.name)
        elif is_ndjson(p) or p.suffix.lower() == ".json":
            files.append(p)
        else:
            others.append(p.name)
    return files, others


def ids_path(path: Path) -> Path:
    """Beside the export: `bulk/` -> `bulk.ids.json`, `bundle.json` -> `bundle.json.ids.json`."""
    path = path.resolve()
    return path.parent / f"{path.name}{IDS_SUFFIX}"


def source_key(path: Path) -> dict[str, str]:
    """What the records cache is valid for: the export's bytes (every file's name, size and
    sha256, in name order) and the id map's."""
    digest = hashlib.sha256()
    for f in export_files(path)[0]:
        digest.update(f"{f.name}\0{f.stat().st_size}\0".encode())
        with f.open("rb") as data:
            digest.update(hashlib.file_digest(data, "sha256").digest())
    return {"data_sha256": digest.hexdigest(), **ids_key(path)}


def ids_key(path: Path) -> dict[str, str]:
    try:
        return {"ids_sha256": hashlib.sha256(ids_path(path).read_bytes()).hexdigest()}
    except FileNotFoundError:
        return {"ids_sha256": "none"}


def export_size(path: Path) -> int:
    return sum(f.stat().st_size for f in export_files(path)[0])


def load(path: str | Path) -> Loaded:
    """The patients of a FHIR export, by our int ids, and what the log says about it.

    Raises:
        RecordError: the path is missing, a file is not FHIR (the message names it), or
            the id map cannot be read or written (the message names it and what to do).
    """
    path = Path(path)
    if not path.exists():
        raise RecordError(f"patient data not found: {path}")
    files, others = export_files(path)
    if not files:
        raise RecordError(
            f"{path}: no FHIR files in this folder (expected Bulk Data .ndjson or "
            ".ndjson.gz files, or Bundles as .json)"
        )
    # Here, not at the top: the validating classes take ~150 ms to import, which a CSV
    # start-up, the clients and the records cache's child do not need.
    from .fhirmap import Collector

    collector = Collector()
    for f in files:
        for where, resource in _resources(f):
            if isinstance(resource, str):  # a line that is not a resource: why
                collector.skip(where, "(unreadable)", "", "", resource)
            else:
                collector.add(resource, where)
    export = _finish(collector, path)
    notes = export.notes(len(files))
    if others:
        notes.append(f"ignored {len(others)} file(s) that are not FHIR: {', '.join(others)}")
    return Loaded(export.patients, _kind(path, files), 1.0, notes)


def _kind(path: Path, files: list[Path]) -> str:
    ndjson = sum(map(is_ndjson, files))
    if not path.is_dir():
        return "FHIR R4 NDJSON" if ndjson else "a FHIR R4 Bundle"
    if ndjson == len(files):
        return "a FHIR R4 Bulk Data export (NDJSON)"
    if ndjson == 0:
        return "a folder of FHIR R4 Bundles"
    return "a folder of FHIR R4 NDJSON files and Bundles"


def _finish(collector: Collector, path: Path) -> Export:
    """Patients numbered through the id map, the map saved first if it grew."""
    where = ids_path(path)
    known = _read_ids(where)
    from .fhirmap import assign_ids

    ids = assign_ids(known, collector.fhir_ids())
    if ids != known:
        _write_ids(where, ids)
    return collector.finish(ids)


def _read_ids(where: Path) -> dict[str, int]:
    try:
        data = orjson.loads(where.read_bytes())
        ids = data["ids"]
        if data.get("version") != IDS_VERSION or not all(
            isinstance(k, str) and type(v) is int and v > 0 for k, v in ids.items()
        ):
            raise ValueError("unexpected contents")
        return ids
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RecordError(
            f"cannot use the patient id map {where} ({exc}): it keeps each FHIR Patient's "
            "patient_id the same from one load to the next. Restore it from a backup; "
            "deleting it numbers the patients anew, and summaries saved under the old numbers "
            "would belong to other patients"
        ) from None


def _write_ids(where: Path, ids: dict[str, int]) -> None:
    tmp = where.with_name(f".{where.name}.{os.getpid()}.tmp")
    body = {"version": IDS_VERSION, "note": "FHIR Patient id -> clinsum patient_id; "
            "append-only: never edit or delete an entry", "ids": ids}  # fmt: skip
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, IDS_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(body, option=orjson.OPT_INDENT_2))
        tmp.replace(where)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RecordError(
            f"cannot write the patient id map {where} ({exc.strerror}): it keeps each FHIR "
            f"Patient's patient_id the same from one load to the next, so patients are not "
            f"loaded without it. Make {where.parent} writable, or copy the export to a "
            "writable folder and pass that to --data"
        ) from None


# What the readers yield: a resource with its position, or for an unreadable line, why.
Item = tuple[str, dict[str, Any] | str]


def _resources(path: Path) -> Iterator[Item]:
    return _ndjson(path) if is_ndjson(path) else _bundle(path)


def _not_fhir(path: Path, why: str) -> RecordError:
    return RecordError(
        f"{path}: not a FHIR R4 file ({why}); expected Bulk Data NDJSON (one resource with a "
        "resourceType per line) or a Bundle as JSON"
    )


def _ndjson(path: Path) -> Iterator[Item]:
    """Each line's resource with its position, read a line at a time; the first resource
    must be FHIR, a bad line after it is reported and skipped."""
    name = path.name
    opener = gzip.open if name.lower().endswith(".gz") else open
    first = True
    number = 0
    try:
        with opener(path, "rb") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    resource = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    if first:
                        raise _not_fhir(path, f"line {number} is not JSON: {exc}") from None
                    yield f"{name}, line {number}", f"not JSON (cut short?): {exc}"
                    continue
                if first and not (isinstance(resource, dict) and "resourceType" in resource):
                    raise _not_fhir(path, f"line {number} has no resourceType")
                first = False
                if isinstance(resource, dict):
                    yield f"{name}, line {number}", resource
                else:
                    yield f"{name}, line {number}", "not a JSON object"
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        if first:
            raise _not_fhir(path, f"not gzip data: {exc}") from None
        yield f"{name}, after line {number}", f"the gzip stream ends early or is damaged: {exc}"
    except OSError as exc:
        raise RecordError(f"cannot read {path}: {exc.strerror or exc}") from None
    if first:
        raise _not_fhir(path, "no resources in it")


def _bundle(path: Path) -> Iterator[Item]:
    """A Bundle's entries (or a single resource), each with its position."""
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise _not_fhir(path, f"not JSON: {exc}") from None
    except OSError as exc:
        raise RecordError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not isinstance(data, dict) or "resourceType" not in data:
        raise _not_fhir(path, "no resourceType")
    if data["resourceType"] != "Bundle":
        yield path.name, data
        return
    for number, entry in enumerate(data.get("entry") or [], 1):
        where = f"{path.name}, entry {number}"
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            yield where, "an entry without a resource"
            continue
        full_url = entry.get("fullUrl")
        if "id" not in resource and isinstance(full_url, str) and full_url.startswith("urn:"):
            # A transaction entry to be created: its references use the fullUrl.
            resource = {**resource, "id": full_url.rsplit(":", 1)[-1]}
        yield where, resource
