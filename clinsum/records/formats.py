"""Patient files as users have them, translated to canonical rows for `parse.validate`.

Three shapes are read, told apart by the file itself (its extension, first character and
columns), never by its name:
- the canonical CSV (`parse.COLUMNS`, visits as JSON), which is also the original tool's
  `patients_data.csv` apart from its visit keys (`visit_date`, `medical_history`,
  `current_medications`) and its extra per-visit scores (`symptom_score`, `bp_risk`,
  `sugar_risk`, `age_factor`);
- a JSON list of the same records (the original's `patients_data.json`);
- one row per visit (the original's `patients_detailed.csv`): a patient's current fields are
  those of their latest visit.

Translation only renames and re-spells what real exports write: a decimal glucose is
rounded to whole mg/dL (said once in the log), an ISO timestamp becomes its date, `M`/`F`
become Male/Female. A blood pressure such as "128/82 mmHg" or "135.0/87.0" is read by
`BloodPressure.parse` itself, and `none`/`None`/empty lists by `model.entries`. Anything
else is passed on unchanged, so that `parse.validate` refuses it as it refuses any bad file,
naming file, line and field ("12/ab", a diastolic above the systolic, an age of 300).

The score scale is detected per file: any base or risk score above 1 puts the whole file on
0-10, and every score of that file is read on that scale (never mixed).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import fhir
from .csvfile import read_csv
from .model import Loaded, Patient, RecordError
from .parse import COLUMNS, RawRecord, validate

CANONICAL_DEFAULT = Path("patient_data.csv")
ORIGINAL_DEFAULT = Path("patients_data.csv")  # the original tool's file name

# The original's visit keys -> ours; every other key keeps its name.
VISIT_RENAMES = {
    "visit_date": "date",
    "medical_history": "history",
    "current_medications": "medications",
}
# Per-visit row (patients_detailed.csv) -> the patient's current fields.
CURRENT_FROM_VISIT = {
    "current_symptoms": "symptoms",
    "current_bp": "bp",
    "current_sugar": "sugar",
    "medical_history": "medical_history",
    "current_medications": "current_medications",
    "base_score": "base_score",
    "risk_score": "risk_score",
}
PATIENT_KEYS = ("patient_id", "name", "age", "gender")
# Visit columns of a per-visit file that hold text; the others (sugar, scores, the original's
# extra scores) hold numbers.
VISIT_TEXT_KEYS = frozenset(
    {"visit_date", "symptoms", "bp", "medical_history", "current_medications", "outcome", "notes"}
)
SCORE_KEYS = ("base_score", "risk_score")
GENDERS = {"m": "Male", "f": "Female"}

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
_SUGAR = re.compile(r"(\d+(?:\.\d*)?)\s*(?:mg/dl)?", re.I)


@dataclass
class _Translator:
    """Re-spells values; counts what it changed so the log can say it once."""

    rounded: list[tuple[str, int]] = field(default_factory=list)

    def sugar(self, value: Any, as_text: bool, note: bool = True) -> Any:
        """A decimal glucose rounded to whole mg/dL; text stays text for CSV fields.

        `note=False` for a copy of a value that is counted where it stands (a per-visit
        file's current glucose is its latest visit's)."""
        number: float | None = None
        if isinstance(value, float) and math.isfinite(value):
            number = value
        elif isinstance(value, str) and (match := _SUGAR.fullmatch(value.strip())):
            number = float(match[1])
        if number is None:
            return value
        whole = round(number)
        if whole != number and note:
            self.rounded.append((_plain(value), whole))
        return str(whole) if as_text else whole

    @staticmethod
    def date(value: Any) -> Any:
        """ "2021-12-19T10:00:00Z" -> "2021-12-19"; anything else unchanged."""
        if not isinstance(value, str) or len(value.strip()) <= 10:
            return value
        try:
            return (
                dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00")).date().isoformat()
            )
        except ValueError:
            return value

    @staticmethod
    def gender(value: Any) -> Any:
        return GENDERS.get(value.strip().lower(), value) if isinstance(value, str) else value

    def visit(self, raw: Any) -> Any:
        """One visit object with our keys and re-spelled values."""
        if not isinstance(raw, dict):
            return raw
        out = {VISIT_RENAMES.get(k, k): v for k, v in raw.items()}
        if "sugar" in out:
            out["sugar"] = self.sugar(out["sugar"], as_text=False)
        if "date" in out:
            out["date"] = self.date(out["date"])
        return out

    def row(self, raw: dict[str, Any], visits: list[Any] | str) -> dict[str, Any]:
        """A canonical row (text values; the visits decoded) from a patient and their visits."""
        row: dict[str, Any] = {c: _text(raw.get(c, "")) for c in COLUMNS if c != "visit_history"}
        row["gender"] = self.gender(row["gender"])
        row["current_sugar"] = self.sugar(row["current_sugar"], as_text=True)
        # Decoded once, here: the validator reads the list as it is (text that is not a JSON
        # list is handed on, and the validator says why).
        row["visit_history"] = (
            visits if isinstance(visits, str) else [self.visit(v) for v in visits]
        )
        return row

    def notes(self) -> list[str]:
        if not self.rounded:
            return []
        shown = ", ".join(f"{raw} -> {whole}" for raw, whole in self.rounded[:3])
        more = ", ..." if len(self.rounded) > 3 else ""
        return [
            f"rounded {len(self.rounded)} decimal glucose value(s) to whole mg/dL ({shown}{more})"
        ]


def _plain(value: Any) -> str:
    return value.strip() if isinstance(value, str) else repr(value)


def _text(value: Any) -> str:
    """A JSON value as the CSV cell that would hold it."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value)


def _number(value: Any) -> Any:
    """ "135" -> 135, "5.67" -> 5.67 (a per-visit CSV cell); anything else unchanged."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        text = value.strip()
        return float(text) if "." in text else int(text)
    return value


def _visit_list(raw: Any) -> list[Any] | str:
    """The visits of a canonical CSV cell, or the cell itself when it is not a JSON list."""
    if isinstance(raw, list):
        return raw
    if not isinstance(raw, str) or not raw.strip():
        return []
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    return data if isinstance(data, list) else raw


def _from_patient_rows(records: list[RawRecord], t: _Translator) -> list[RawRecord]:
    return [
        RawRecord(r.where, t.row(r.row, _visit_list(r.row.get("visit_history"))), problem=r.problem)
        for r in records
    ]


def _from_visit_rows(records: list[RawRecord], t: _Translator) -> list[RawRecord]:
    """One record per patient from one row per visit; current fields from the latest visit."""
    groups: dict[str, list[RawRecord]] = {}
    for r in records:
        groups.setdefault(r.row.get("patient_id", "").strip(), []).append(r)
    out: list[RawRecord] = []
    for rows in groups.values():
        short = [r for r in rows if r.problem]
        if short:
            out.extend(short)  # reported as they are, with their own lines
            continue
        # The latest visit by date (ISO dates sort as text), whatever the row order;
        # reversed, because on equal dates max keeps the first it sees: the later row.
        latest = max(reversed(rows), key=lambda r: str(t.date(r.row["visit_date"])))
        current = {k: latest.row[k] for k in PATIENT_KEYS}
        current.update({k: latest.row.get(v, "") for k, v in CURRENT_FROM_VISIT.items()})
        current["current_sugar"] = t.sugar(current["current_sugar"], as_text=True, note=False)
        # CSV cells are all text: the numbers among them become JSON numbers, as in a visit
        # list, and the validator checks them as such.
        visits = [
            {
                k: v if k in VISIT_TEXT_KEYS else _number(v)
                for k, v in r.row.items()
                if k not in PATIENT_KEYS
            }
            for r in rows
        ]
        out.append(
            RawRecord(
                latest.where, t.row(current, visits), visit_where=tuple(r.where for r in rows)
            )
        )
    return out


def _read_json(path: Path) -> list[RawRecord]:
    """The list's items, each with the line it starts on, so errors name a line as for CSV."""
    try:
        text = path.read_text(encoding="utf-8-sig")
        data = json.loads(text)
    except UnicodeDecodeError as exc:
        raise RecordError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise RecordError(
            f"{path}, line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})"
        ) from None
    if not isinstance(data, list):
        raise RecordError(f"{path}: expected a JSON list of patients, not {type(data).__name__}")
    records = []
    for line, item in zip(_item_lines(text), data, strict=True):
        where = f"line {line}"
        if not isinstance(item, dict):
            records.append(RawRecord(where, {}, problem=f"expected an object, not {item!r:.40}"))
            continue
        missing = [c for c in COLUMNS if c not in item]
        problem = f"missing key(s): {', '.join(missing)}" if missing else ""
        records.append(RawRecord(where, item, problem=problem))
    return records


def _item_lines(text: str) -> Iterator[int]:
    """The line each item of a valid top-level JSON list starts on."""
    decoder = json.JSONDecoder()
    skip = re.compile(r"[\s,]*")
    pos = skip.match(text, text.index("[") + 1).end()
    while pos < len(text) and text[pos] != "]":
        yield text.count("\n", 0, pos) + 1
        pos = skip.match(text, decoder.raw_decode(text, pos)[1]).end()


def _scores(record: RawRecord) -> Iterator[Any]:
    yield from (record.row.get(k) for k in SCORE_KEYS)
    visits = record.row.get("visit_history")
    for visit in visits if isinstance(visits, list) else ():
        if isinstance(visit, dict):
            yield from (visit.get(k) for k in SCORE_KEYS)


def _scale(records: list[RawRecord]) -> float:
    """10.0 when any base or risk score, of a patient or a visit, is above 1; else 1.0."""
    for record in records:
        for value in _scores(record):
            number = _number(value)
            if isinstance(number, int | float) and not isinstance(number, bool) and number > 1:
                return 10.0
    return 1.0


def _kind(path: Path) -> str:
    if path.suffix.lower() == ".json":
        return "json"
    try:
        with path.open("rb") as f:
            head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return "csv"  # read_csv says what is wrong with the path
    return "json" if head[:1] in (b"[", b"{") else "csv"


def load(path: str | Path) -> Loaded:
    """Patients from any of the three shapes, validated by `parse.validate`; or from a FHIR
    R4 export (a folder, an NDJSON file, a Bundle), read by `fhir.load`.

    Raises:
        RecordError: the file cannot be read or has invalid records; the message names the
            file, the line (or list position) and the field of each problem.
    """
    path = Path(path)
    if not path.exists():
        # An installed server started from another folder (an MCP host starts it in one of
        # its own) finds no patient_data.csv there: say where it looked.
        where = "" if path.is_absolute() else f" in {Path.cwd()}"
        raise RecordError(
            f"patient data file not found: {path}{where}; pass --data PATH (the patients file)"
        )
    if fhir.looks_like_fhir(path):  # a folder, NDJSON, or a JSON object (ours is a list)
        return fhir.load(path)
    if not path.is_file():
        raise RecordError(f"patient data path is not a file: {path}")
    t = _Translator()
    if _kind(path) == "json":
        kind = "a JSON list of patients"
        records = _from_patient_rows(_read_json(path), t)
    else:
        columns, raw = read_csv(path)
        if "visit_date" in columns and "visit_history" not in columns:
            kind = "one row per visit"
            wanted = [*PATIENT_KEYS, "visit_date", *CURRENT_FROM_VISIT.values(), "outcome", "notes"]
            missing = [c for c in dict.fromkeys(wanted) if c not in columns]
            if missing:
                raise RecordError(f"{path}: missing column(s): {', '.join(missing)}")
            records = _from_visit_rows(raw, t)
        else:
            kind = "one row per patient"
            missing = [c for c in COLUMNS if c not in columns]
            if missing:
                raise RecordError(
                    f"{path}: missing column(s): {', '.join(missing)} (expected one row per "
                    f"patient with {', '.join(COLUMNS)}, or one row per visit with visit_date)"
                )
            records = _from_patient_rows(raw, t)
    scale = _scale(records)
    return Loaded(validate(path, records, scale), kind, scale, t.notes())


def default_data_file(folder: Path = Path()) -> tuple[Path, str]:
    """The file to load when `--data` is not given, and what to say about the choice.

    Our own `patient_data.csv` when it is there; else the original tool's
    `patients_data.csv`, so that its users can start the server in their old folder.
    """
    if not (folder / CANONICAL_DEFAULT).exists() and (folder / ORIGINAL_DEFAULT).exists():
        return ORIGINAL_DEFAULT, (
            f"{CANONICAL_DEFAULT} not found; using the original tool's {ORIGINAL_DEFAULT} "
            "from this folder (pass --data to choose another file)"
        )
    return CANONICAL_DEFAULT, ""


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
