"""The typed record: what every layer above reads, parsed once, here.

A value is parsed where it enters (`records.parse`, `records.fhir`): a blood pressure becomes a
`BloodPressure`, a list of conditions a tuple of entries, a "none" or "N/A" no entry at all, a
vital that was not measured `None`. No module above this package parses a value again.

Pure: no I/O, and nothing of clinsum is imported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

Scalar = str | int | float | bool | None

AGE_RANGE = (0, 130)
SYSTOLIC_RANGE = (50, 300)
DIASTOLIC_RANGE = (20, 200)
SUGAR_RANGE = (10, 2000)  # mg/dL

# A list cell or entry that says "nothing": no entry, not an entry called "none". Compared
# lower-cased and stripped. The original tool writes "None", Synthea "none", clinics "N/A".
NO_ENTRY = frozenset(
    {"", "-", "none", "none known", "n/a", "na", "nil", "no known history", "unknown"}
)
NOT_RECORDED = "not recorded"  # how a missing vital is written for readers

_LIST_SPLIT = re.compile(r"[;,]")
# "128/82", and as real exports write it: "128/82 mmHg", "135.0/87.0".
_BP = re.compile(r"(\d{2,3})(?:\.0*)?\s*/\s*(\d{2,3})(?:\.0*)?\s*(?:mm\s*hg)?", re.I)


class RecordError(ValueError):
    """The patient data cannot be used; the message names the file, line, field and value."""


@dataclass(frozen=True, slots=True, order=True)
class BloodPressure:
    """A blood pressure in mmHg; written "128/82"."""

    systolic: int
    diastolic: int

    def __str__(self) -> str:
        return f"{self.systolic}/{self.diastolic}"

    @classmethod
    def parse(cls, text: str) -> BloodPressure:
        """ "128/82", "128 / 82 mmHg" or "128.0/82.0" -> BloodPressure(128, 82).

        Raises:
            ValueError: the text is not "systolic/diastolic", a value is out of range, or the
                diastolic is not below the systolic; the message says which.
        """
        match = _BP.fullmatch(text.strip())
        if not match:
            raise ValueError('must be "systolic/diastolic" in mmHg, e.g. "128/82"')
        return cls.of(int(match[1]), int(match[2]))

    @classmethod
    def of(cls, systolic: int, diastolic: int) -> BloodPressure:
        """A checked blood pressure from two numbers (ValueError as for `parse`)."""
        lo, hi = SYSTOLIC_RANGE
        if not lo <= systolic <= hi:
            raise ValueError(f"systolic must be between {lo} and {hi} mmHg")
        lo, hi = DIASTOLIC_RANGE
        if not lo <= diastolic <= hi:
            raise ValueError(f"diastolic must be between {lo} and {hi} mmHg")
        if diastolic >= systolic:
            raise ValueError("systolic must be higher than diastolic")
        return cls(systolic, diastolic)


@lru_cache(maxsize=1 << 16)
def entries(text: str) -> tuple[str, ...]:
    """A list cell as its entries: split on , or ;, stripped, "none" and blanks dropped.

    Cached: a file repeats the same cells (a chronic condition, a regimen) thousands of times,
    and the records then share one tuple for each (100,000 patients: 10.6 -> 8.4 s to validate).
    """
    return tuple(
        part for part in (p.strip() for p in _LIST_SPLIT.split(text)) if not is_no_entry(part)
    )


def is_no_entry(text: str) -> bool:
    return text.strip().lower() in NO_ENTRY


def joined(items: tuple[str, ...]) -> str:
    """Entries as one line, the way files and readers write them: ", " between them, or "; "
    when an entry holds a comma of its own (a FHIR condition name may), so that a reader
    still sees where one entry ends."""
    return ("; " if any("," in item for item in items) else ", ").join(items)


def shown(value: object) -> str:
    """A vital as readers see it: "128/82", "142", or "not recorded"."""
    return NOT_RECORDED if value is None else str(value)


@dataclass(frozen=True, slots=True)
class Visit:
    date: str  # YYYY-MM-DD
    symptoms: tuple[str, ...]
    bp: BloodPressure | None  # None: not recorded at this visit
    sugar: int | None  # mg/dL; None: not recorded
    history: tuple[str, ...]
    medications: tuple[str, ...]
    base_score: float | None  # None: the file has no score (a FHIR export)
    risk_score: float | None
    outcome: str
    notes: str
    # Further keys a file's visits carry (the original tool's symptom_score, bp_risk, ...,
    # a FHIR visit's HbA1c): kept, in file order, so that nothing the file says is lost.
    extra: tuple[tuple[str, Scalar], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The visit as the wire shows it: lists as one line, BP as "128/82" or null."""
        out: dict[str, Any] = {
            "date": self.date,
            "symptoms": joined(self.symptoms),
            "bp": None if self.bp is None else str(self.bp),
            "sugar": self.sugar,
            "history": joined(self.history),
            "medications": joined(self.medications),
            "base_score": self.base_score,
            "risk_score": self.risk_score,
            "outcome": self.outcome,
            "notes": self.notes,
        }
        out.update(self.extra)
        return out

    def to_row(self) -> list[Any]:
        """A compact JSON-ready row for the records cache (`from_row` reads it back)."""
        bp = None if self.bp is None else [self.bp.systolic, self.bp.diastolic]
        return [
            self.date,
            list(self.symptoms),
            bp,
            self.sugar,
            list(self.history),
            list(self.medications),
            self.base_score,
            self.risk_score,
            self.outcome,
            self.notes,
            [list(kv) for kv in self.extra],
        ]

    @classmethod
    def from_row(cls, row: list[Any]) -> Visit:
        date, symptoms, bp, sugar, history, meds, base, risk, outcome, notes, extra = row
        return cls(
            date,
            tuple(symptoms),
            None if bp is None else BloodPressure(*bp),
            sugar,
            tuple(history),
            tuple(meds),
            base,
            risk,
            outcome,
            notes,
            tuple((k, v) for k, v in extra),
        )


@dataclass(frozen=True, slots=True)
class Patient:
    patient_id: int
    name: str
    age: int
    gender: str
    current_symptoms: tuple[str, ...]
    current_bp: BloodPressure | None  # None: not recorded
    current_sugar: int | None  # mg/dL; None: not recorded
    base_score: float | None  # None: the file has no scores (FHIR has no risk score)
    risk_score: float | None
    medical_history: tuple[str, ...]  # the current (active) conditions
    current_medications: tuple[str, ...]
    visit_history: tuple[Visit, ...]
    score_scale: float = 1.0  # 1.0 or 10.0: the scale the file's scores are written on
    source_id: str | None = None  # the id in the source system (a FHIR Patient.id)
    deceased: str | None = None  # the date of death (YYYY-MM-DD) when the record says so
    past_history: tuple[str, ...] = ()  # resolved conditions, as "name (onset to abatement)"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, as `fetch` returns it: lists as one line, BP as "128/82" or null."""
        out: dict[str, Any] = {
            "patient_id": self.patient_id,
            "name": self.name,
            "age": self.age,
            "gender": self.gender,
            "current_symptoms": joined(self.current_symptoms),
            "current_bp": None if self.current_bp is None else str(self.current_bp),
            "current_sugar": self.current_sugar,
            "base_score": self.base_score,
            "risk_score": self.risk_score,
            "medical_history": joined(self.medical_history),
            "current_medications": joined(self.current_medications),
            "visit_history": [v.to_dict() for v in self.visit_history],
            "score_scale": self.score_scale,
        }
        if self.source_id is not None:
            out["source_id"] = self.source_id
        if self.deceased is not None:
            out["deceased"] = self.deceased
        if self.past_history:
            out["past_history"] = joined(self.past_history)
        return out

    def to_row(self) -> list[Any]:
        """A compact JSON-ready row for the records cache (`from_row` reads it back)."""
        bp = (
            None
            if self.current_bp is None
            else [self.current_bp.systolic, self.current_bp.diastolic]
        )
        return [
            self.patient_id,
            self.name,
            self.age,
            self.gender,
            list(self.current_symptoms),
            bp,
            self.current_sugar,
            self.base_score,
            self.risk_score,
            list(self.medical_history),
            list(self.current_medications),
            [v.to_row() for v in self.visit_history],
            self.score_scale,
            self.source_id,
            self.deceased,
            list(self.past_history),
        ]

    @classmethod
    def from_row(cls, row: list[Any]) -> Patient:
        (pid, name, age, gender, symptoms, bp, sugar, base, risk, history, meds, visits,
         scale, source_id, deceased, past) = row  # fmt: skip
        return cls(
            pid,
            name,
            age,
            gender,
            tuple(symptoms),
            None if bp is None else BloodPressure(*bp),
            sugar,
            base,
            risk,
            tuple(history),
            tuple(meds),
            tuple(Visit.from_row(v) for v in visits),
            scale,
            source_id,
            deceased,
            tuple(past),
        )

    def texts(self) -> tuple[str, ...]:
        """Every free-text entry of the record, visits included: what it says in words."""
        out = [
            *self.medical_history,
            *self.past_history,
            *self.current_symptoms,
            *self.current_medications,
        ]
        for v in self.visit_history:
            out += [*v.symptoms, *v.history, *v.medications, v.outcome, v.notes]
        return tuple(out)

    # The lists by what they hold (kept as methods: callers read them as such).
    def conditions(self) -> tuple[str, ...]:
        return self.medical_history

    def medications(self) -> tuple[str, ...]:
        return self.current_medications

    def symptoms(self) -> tuple[str, ...]:
        return self.current_symptoms


@dataclass
class Loaded:
    """What a patient file or export held, and what start-up should say about it."""

    patients: Mapping[int, Patient]  # a dict, or `table.Records`
    kind: str  # which shape of file it was
    scale: float  # 1.0 or 10.0
    notes: list[str] = field(default_factory=list)  # said once in the log
