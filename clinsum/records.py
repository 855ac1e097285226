"""Patient records: the typed form of one CSV row, and a loader that refuses bad data.

The loader validates the whole file before returning anything, because a summary written
from a half-loaded or silently coerced record (a blood pressure of "12/ab", an age of "N/A"
turned into NaN) is worse than no summary. Every error names the file, the CSV line the record
starts on (quoted cells may span several lines, so this is not the record number plus one),
the field and the offending value, so whoever maintains the file can fix it directly.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import json
import math
import re
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from .scores import SCALES

COLUMNS = (
    "patient_id",
    "name",
    "age",
    "gender",
    "current_symptoms",
    "current_bp",
    "current_sugar",
    "base_score",
    "risk_score",
    "medical_history",
    "current_medications",
    "visit_history",
)
VISIT_KEYS = (
    "date",
    "symptoms",
    "bp",
    "sugar",
    "history",
    "medications",
    "base_score",
    "risk_score",
    "outcome",
    "notes",
)

AGE_RANGE = (0, 130)
SYSTOLIC_RANGE = (50, 300)
DIASTOLIC_RANGE = (20, 200)
SUGAR_RANGE = (10, 2000)  # mg/dL
MAX_ERRORS_SHOWN = 10
MG_DL = "a whole number of mg/dL"

_INT = re.compile(r"[+-]?\d+")
_BP = re.compile(r"(\d{2,3})\s*/\s*(\d{2,3})")
_LIST_SPLIT = re.compile(r"[;,]")


class RecordError(ValueError):
    """The patient file cannot be used; the message names the file, line, field and value."""


@dataclass(frozen=True, slots=True)
class Visit:
    date: str
    symptoms: str
    bp: str
    sugar: int
    history: str
    medications: str
    base_score: float
    risk_score: float
    outcome: str
    notes: str
    # Further keys a file's visits carry (the original tool's symptom_score, bp_risk, ...):
    # kept, in file order, so that nothing the file says is lost; shown with the visit.
    extra: tuple[tuple[str, str | int | float | bool | None], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The visit's keys, then its extra keys, in one flat object."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out


@dataclass(frozen=True, slots=True)
class Patient:
    patient_id: int
    name: str
    age: int
    gender: str
    current_symptoms: str
    current_bp: str
    current_sugar: int
    base_score: float
    risk_score: float
    medical_history: str
    current_medications: str
    visit_history: tuple[Visit, ...]
    score_scale: float = 1.0  # 1.0 or 10.0: the scale the file's scores are written on

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: plain str/int/float values and the visits as a list of dicts."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["visit_history"] = [v.to_dict() for v in self.visit_history]
        return out

    def conditions(self) -> list[str]:
        return _split_list(self.medical_history)

    def medications(self) -> list[str]:
        return _split_list(self.current_medications)

    def symptoms(self) -> list[str]:
        return _split_list(self.current_symptoms)


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in _LIST_SPLIT.split(text) if part.strip()]


def file_hash(path: str | Path) -> str:
    """sha256 of the file's bytes: the search index uses it to tell whether it is stale."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Invalid(Exception):
    """One bad value; the loader adds where it was found."""

    def __init__(self, field: str, problem: str, value: object) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem
        self.value = value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _parse_int(field: str, raw: object, lo: int, hi: int, what: str) -> int:
    """A whole number in [lo, hi]: CSV text like "42", or an int from visit JSON (not "42")."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and _INT.fullmatch(raw.strip()):
        value = int(raw)
    else:
        raise _Invalid(field, f"must be {what}", raw)
    if not lo <= value <= hi:
        raise _Invalid(field, f"must be between {lo} and {hi}", raw)
    return value


def _parse_score(field: str, raw: object, scale: float) -> float:
    """A number in [0, scale]: CSV text like "0.42", or a number from visit JSON."""
    value = math.nan
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        with contextlib.suppress(ValueError):
            value = float(raw)
    if not (math.isfinite(value) and 0.0 <= value <= scale):
        raise _Invalid(field, f"must be a number between 0 and {scale:g}", raw)
    return value


def _parse_id(raw: str) -> int:
    text = raw.strip()
    if not _INT.fullmatch(text) or int(text) < 1:
        raise _Invalid("patient_id", "must be a positive whole number", raw)
    return int(text)


def _parse_bp(field: str, raw: object) -> str:
    """Blood pressure as "systolic/diastolic" mmHg, normalised to no spaces."""
    match = _BP.fullmatch(raw.strip()) if isinstance(raw, str) else None
    if not match:
        raise _Invalid(field, 'must be "systolic/diastolic" in mmHg, e.g. "128/82"', raw)
    systolic, diastolic = int(match[1]), int(match[2])
    if not SYSTOLIC_RANGE[0] <= systolic <= SYSTOLIC_RANGE[1]:
        raise _Invalid(
            field, f"systolic must be between {SYSTOLIC_RANGE[0]} and {SYSTOLIC_RANGE[1]} mmHg", raw
        )
    if not DIASTOLIC_RANGE[0] <= diastolic <= DIASTOLIC_RANGE[1]:
        raise _Invalid(
            field,
            f"diastolic must be between {DIASTOLIC_RANGE[0]} and {DIASTOLIC_RANGE[1]} mmHg",
            raw,
        )
    if diastolic >= systolic:
        raise _Invalid(field, "systolic must be higher than diastolic", raw)
    return f"{systolic}/{diastolic}"


def _parse_visit(index: int, raw: object, scale: float) -> Visit:
    field = f"visit_history[{index}]"
    if not isinstance(raw, dict):
        raise _Invalid(field, f"must be a JSON object, not {type(raw).__name__}", raw)
    missing = [k for k in VISIT_KEYS if k not in raw]
    if missing:
        raise _Invalid(field, f"is missing key(s) {', '.join(missing)}", raw)
    extra = tuple((k, v) for k, v in raw.items() if k not in VISIT_KEYS)
    for key, value in extra:
        if isinstance(value, dict | list):
            raise _Invalid(f"{field}.{key}", "must be a number or a string", value)
    for key in ("date", "symptoms", "history", "medications", "outcome", "notes", "bp"):
        if not isinstance(raw[key], str):
            raise _Invalid(f"{field}.{key}", "must be a string", raw[key])
    for key in ("sugar", "base_score", "risk_score"):
        if isinstance(raw[key], str):
            raise _Invalid(f"{field}.{key}", "must be a JSON number, not a string", raw[key])
    try:
        dt.date.fromisoformat(raw["date"])
    except ValueError:
        raise _Invalid(f"{field}.date", "must be a date YYYY-MM-DD", raw["date"]) from None
    return Visit(
        date=raw["date"],
        symptoms=raw["symptoms"],
        bp=_parse_bp(f"{field}.bp", raw["bp"]),
        sugar=_parse_int(f"{field}.sugar", raw["sugar"], *SUGAR_RANGE, what=MG_DL),
        history=raw["history"],
        medications=raw["medications"],
        base_score=_parse_score(f"{field}.base_score", raw["base_score"], scale),
        risk_score=_parse_score(f"{field}.risk_score", raw["risk_score"], scale),
        outcome=raw["outcome"],
        notes=raw["notes"],
        extra=extra,
    )


def _parse_visits(raw: str, scale: float) -> tuple[Visit, ...]:
    if not raw.strip():
        return ()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _Invalid(
            "visit_history", f"is not valid JSON ({exc.msg} at char {exc.pos})", raw
        ) from None
    if not isinstance(data, list):
        raise _Invalid("visit_history", "must be a JSON list of visits", raw)
    return tuple(_parse_visit(i, v, scale) for i, v in enumerate(data))


def _parse_row(row: dict[str, str], scale: float) -> Patient:
    name = row["name"].strip()
    if not name:
        raise _Invalid("name", "must not be empty", row["name"])
    gender = row["gender"].strip()
    if not gender:
        raise _Invalid("gender", "must not be empty", row["gender"])
    return Patient(
        patient_id=_parse_id(row["patient_id"]),
        name=name,
        age=_parse_int("age", row["age"], *AGE_RANGE, what="a whole number of years"),
        gender=gender,
        current_symptoms=row["current_symptoms"].strip(),
        current_bp=_parse_bp("current_bp", row["current_bp"]),
        current_sugar=_parse_int("current_sugar", row["current_sugar"], *SUGAR_RANGE, what=MG_DL),
        base_score=_parse_score("base_score", row["base_score"], scale),
        risk_score=_parse_score("risk_score", row["risk_score"], scale),
        medical_history=row["medical_history"].strip(),
        current_medications=row["current_medications"].strip(),
        visit_history=_parse_visits(row["visit_history"], scale),
        score_scale=scale,
    )


def _record_shapes(path: Path) -> list[tuple[int, int]]:
    """(first CSV line, field count) of each data record, skipping blank lines as pandas does.

    pandas knows neither where a record starts nor that a short row was padded with "", so
    the csv module supplies both.
    """
    shapes: list[tuple[int, int]] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        next(reader, None)
        previous_end = reader.line_num
        for row in reader:
            if row:
                shapes.append((previous_end + 1, len(row)))
            previous_end = reader.line_num
    return shapes


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as text, before validation, and where it came from.

    `where` names its place in the file ("line 7"); `visit_where`, when the visits come from
    rows of their own (one row per visit), names each visit's place, so an error in a visit
    points at that visit's line. `problem` is set when the record could not even be split
    into fields (a short row): it is reported as it is.
    """

    where: str
    row: dict[str, str]
    visit_where: tuple[str, ...] = ()
    problem: str = ""


def read_csv(path: str | Path) -> tuple[list[str], list[RawRecord]]:
    """The header and every record of a CSV file, as text with its first line number.

    Raises:
        RecordError: the file is missing, empty, not UTF-8 or not CSV.
    """
    path = Path(path)
    if not path.exists():
        raise RecordError(f"patient data file not found: {path}")
    if not path.is_file():
        raise RecordError(f"patient data path is not a file: {path}")
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark. A row with too
        # many or too few fields is reported below with its line, as a RecordError; pandas'
        # own warning about it would only print a second, vaguer line on the server's stderr.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            frame = pd.read_csv(
                path, dtype=str, keep_default_na=False, index_col=False, encoding="utf-8-sig"
            )
        shapes = _record_shapes(path)
    except pd.errors.EmptyDataError:
        raise RecordError(f"{path}: the file is empty (expected a CSV header)") from None
    except (pd.errors.ParserError, csv.Error) as exc:
        raise RecordError(f"{path}: not a readable CSV file: {exc}") from None
    except UnicodeDecodeError as exc:
        raise RecordError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    columns = [str(c) for c in frame.columns]
    # If the two parsers ever disagree, fall back to record numbers rather than wrong lines.
    lines_known = len(shapes) == len(frame)
    records = []
    for i, values in enumerate(zip(*(frame[c].tolist() for c in frame.columns), strict=True)):
        where = f"line {shapes[i][0]}" if lines_known else f"record {i + 1} (line unknown)"
        problem = ""
        if lines_known and shapes[i][1] != len(columns):
            problem = f"expected {len(columns)} fields, found {shapes[i][1]}"
        records.append(RawRecord(where, dict(zip(columns, values, strict=True)), problem=problem))
    return columns, records


def validate(path: str | Path, records: list[RawRecord], scale: float = 1.0) -> dict[int, Patient]:
    """Typed patients from canonical rows, or a RecordError listing what is wrong and where.

    Every loader ends here: the original tool's files are first translated to canonical rows
    (`clinsum.legacy.data`), then checked by these same rules.

    Raises:
        RecordError: one line per invalid record (file, line, field, value), at most
            MAX_ERRORS_SHOWN of them; nothing is returned half-loaded.
    """
    if scale not in SCALES:
        raise ValueError(f"score scale must be one of {SCALES}, not {scale!r}")
    errors: list[str] = []
    patients: dict[int, Patient] = {}
    first_line: dict[int, str] = {}
    for record in records:
        where = record.where
        if record.problem:
            errors.append(f"{path}, {where}: {record.problem}")
            continue
        try:
            patient = _parse_row(record.row, scale)
        except _Invalid as bad:
            where = _visit_where(record, bad.field)
            errors.append(
                f"{path}, {where}, field {bad.field}: {bad.problem} (got {_show(bad.value)})"
            )
            continue
        if patient.patient_id in patients:
            errors.append(
                f"{path}, {where}, field patient_id: duplicate id {patient.patient_id} "
                f"(first used on {first_line[patient.patient_id]})"
            )
            continue
        patients[patient.patient_id] = patient
        first_line[patient.patient_id] = where
    if errors:
        shown = errors[:MAX_ERRORS_SHOWN]
        if len(errors) > len(shown):
            shown.append(f"... and {len(errors) - len(shown)} more invalid record(s)")
        raise RecordError("\n".join(shown))
    if not patients:
        raise RecordError(f"{path}: no patient records (only a header)")
    return patients


_VISIT_FIELD = re.compile(r"visit_history\[(\d+)\]")


def _visit_where(record: RawRecord, field: str) -> str:
    match = _VISIT_FIELD.match(field)
    if match and int(match[1]) < len(record.visit_where):
        return record.visit_where[int(match[1])]
    return record.where


def load_patients(path: str | Path) -> dict[int, Patient]:
    """All patients of a canonical CSV by id, in file order, scores on 0-1.

    Raises:
        RecordError: the file is missing, unreadable or has invalid records; the message
            lists each problem with its file, line, field and value.
    """
    columns, records = read_csv(path)
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise RecordError(f"{path}: missing column(s): {', '.join(missing)}")
    return validate(path, records)
