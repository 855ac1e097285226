"""Canonical rows to typed patients: the one validator every loader ends in.

The validator checks the whole file before returning anything, because a summary written from
a half-loaded or silently coerced record (a blood pressure of "12/ab", an age of "N/A" turned
into NaN) is worse than no summary. Every error names the file, the line the record starts on,
the field and the offending value, so whoever maintains the file can fix it directly.

What may be missing is missing, not invented: a blood pressure, a glucose or a score that was
not recorded (an empty cell, a JSON null, an absent visit key, "none", "N/A") is `None`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .model import (
    AGE_RANGE,
    SUGAR_RANGE,
    BloodPressure,
    Patient,
    RecordError,
    Visit,
    entries,
    is_no_entry,
)

SCALES = (1.0, 10.0)  # the score scales a file may use (scores.format_score)
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
# Keys a visit may leave out: what was not measured at it.
OPTIONAL_VISIT_KEYS = frozenset({"bp", "sugar", "base_score", "risk_score"})
MAX_ERRORS_SHOWN = 10
MG_DL = "a whole number of mg/dL"

_INT = re.compile(r"[+-]?\d+")


class _Invalid(Exception):
    """One bad value; the validator adds where it was found."""

    def __init__(self, field: str, problem: str, value: object) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem
        self.value = value


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record before validation, and where it came from.

    `row` holds the canonical columns as text, except `visit_history`, which a loader may hand
    over already decoded (a list of visit objects) so that it is not encoded and parsed again.
    `where` names its place in the file ("line 7"); `visit_where`, when the visits come from
    rows of their own (one row per visit), names each visit's place, so an error in a visit
    points at that visit's line. `problem` is set when the record could not even be split
    into fields (a short row): it is reported as it is.
    """

    where: str
    row: Mapping[str, Any]
    visit_where: tuple[str, ...] = ()
    problem: str = ""


def file_hash(path: str | Path) -> str:
    """sha256 of the file's bytes: the caches use it to tell whether they are stale."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _missing(raw: object) -> bool:
    """Not recorded: absent, null, blank or a no-entry word."""
    return raw is None or (isinstance(raw, str) and is_no_entry(raw))


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


def _parse_sugar(field: str, raw: object) -> int | None:
    return None if _missing(raw) else _parse_int(field, raw, *SUGAR_RANGE, what=MG_DL)


def _parse_score(field: str, raw: object, scale: float) -> float | None:
    """A number in [0, scale]: CSV text like "0.42", or a number from visit JSON."""
    if _missing(raw):
        return None
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


def _parse_bp(field: str, raw: object) -> BloodPressure | None:
    """Blood pressure "systolic/diastolic" mmHg, or None when not recorded."""
    if _missing(raw):
        return None
    if not isinstance(raw, str):
        raise _Invalid(field, 'must be "systolic/diastolic" in mmHg, e.g. "128/82"', raw)
    try:
        return BloodPressure.parse(raw)
    except ValueError as exc:
        raise _Invalid(field, str(exc), raw) from None


def _parse_visit(index: int, raw: object, scale: float) -> Visit:
    field = f"visit_history[{index}]"
    if not isinstance(raw, dict):
        raise _Invalid(field, f"must be a JSON object, not {type(raw).__name__}", raw)
    missing = [k for k in VISIT_KEYS if k not in raw and k not in OPTIONAL_VISIT_KEYS]
    if missing:
        raise _Invalid(field, f"is missing key(s) {', '.join(missing)}", raw)
    extra = tuple((k, v) for k, v in raw.items() if k not in VISIT_KEYS)
    for key, value in extra:
        if isinstance(value, dict | list):
            raise _Invalid(f"{field}.{key}", "must be a number or a string", value)
    for key in ("date", "symptoms", "history", "medications", "outcome", "notes"):
        if not isinstance(raw[key], str):
            raise _Invalid(f"{field}.{key}", "must be a string", raw[key])
    for key in ("sugar", "base_score", "risk_score"):
        value = raw.get(key)
        if isinstance(value, str) and not _missing(value):
            raise _Invalid(f"{field}.{key}", "must be a JSON number, not a string", value)
    try:
        dt.date.fromisoformat(raw["date"])
    except ValueError:
        raise _Invalid(f"{field}.date", "must be a date YYYY-MM-DD", raw["date"]) from None
    return Visit(
        date=raw["date"],
        symptoms=entries(raw["symptoms"]),
        bp=_parse_bp(f"{field}.bp", raw.get("bp")),
        sugar=_parse_sugar(f"{field}.sugar", raw.get("sugar")),
        history=entries(raw["history"]),
        medications=entries(raw["medications"]),
        base_score=_parse_score(f"{field}.base_score", raw.get("base_score"), scale),
        risk_score=_parse_score(f"{field}.risk_score", raw.get("risk_score"), scale),
        outcome=raw["outcome"],
        notes=raw["notes"],
        extra=extra,
    )


def _parse_visits(raw: str | list[Any], scale: float) -> tuple[Visit, ...]:
    visits: object = raw
    if isinstance(raw, str):
        if not raw.strip():
            return ()
        try:
            visits = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _Invalid(
                "visit_history", f"is not valid JSON ({exc.msg} at char {exc.pos})", raw
            ) from None
    if not isinstance(visits, list):
        raise _Invalid("visit_history", "must be a JSON list of visits", raw)
    return tuple(_parse_visit(i, v, scale) for i, v in enumerate(visits))


def _parse_row(row: Mapping[str, Any], scale: float) -> Patient:
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
        current_symptoms=entries(row["current_symptoms"]),
        current_bp=_parse_bp("current_bp", row["current_bp"]),
        current_sugar=_parse_sugar("current_sugar", row["current_sugar"]),
        base_score=_parse_score("base_score", row["base_score"], scale),
        risk_score=_parse_score("risk_score", row["risk_score"], scale),
        medical_history=entries(row["medical_history"]),
        current_medications=entries(row["current_medications"]),
        visit_history=_parse_visits(row["visit_history"], scale),
        score_scale=scale,
    )


def validate(
    path: str | Path, records: Iterable[RawRecord], scale: float = 1.0
) -> dict[int, Patient]:
    """Typed patients from canonical rows, or a RecordError listing what is wrong and where.

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
