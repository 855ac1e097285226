"""The clinical digest: what a clinician reads off a chart before writing a summary.

Computed from the record alone, with rules, so that every statement built on it can be
checked: the vitals now with their screening category, the trends from the earliest visit to
now, the medication changes since the latest visit, the conditions added since the first
visit, and the latest visit itself. `prompt` renders it, `grounding` checks summaries against
it and the `digest` tool hands it to every face; none of them works the history out again.

Rule 1: this module owns the chronological order of a record. Visits are ordered by date; the
record's current values are the newest reading ("now"), taken after the latest visit. Visits on
the same date are ordered by their contents, since the record cannot say which came first and
the digest must not depend on the file's order.
Rule 2: pure. No I/O, no model, no clock, no logging: the same record gives the same digest.

The thresholds are screening thresholds, not diagnoses.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .records import NOT_RECORDED, BloodPressure

if TYPE_CHECKING:
    from .records import Patient, Visit

# Blood pressure categories of the 2017 ACC/AHA guideline (Whelton et al., Hypertension 2018;
# 71:e13-e115, table 6), in mmHg; "crisis" is its hypertensive crisis (> 180 and/or > 120),
# taken here at >= 180 / >= 120 as issue #10 states it.
BP_ELEVATED_SYSTOLIC = 120  # 120-129 and diastolic < 80
BP_STAGE1_SYSTOLIC, BP_STAGE1_DIASTOLIC = 130, 80
BP_STAGE2_SYSTOLIC, BP_STAGE2_DIASTOLIC = 140, 90
BP_CRISIS_SYSTOLIC, BP_CRISIS_DIASTOLIC = 180, 120

# Blood sugar in mg/dL. Low: ADA level 1 hypoglycaemia (< 70; ADA Standards of Care 2024,
# section 6). High: a random glucose >= 200 mg/dL, the ADA's diagnostic threshold for
# hyperglycaemia with symptoms (section 2). Crisis: >= 400 mg/dL, where hyperglycaemic
# emergencies (DKA, HHS) become likely enough to check for them (ADA consensus report on
# hyperglycaemic crises, Diabetes Care 2024). 140-199 lies above the ADA's inpatient target
# (140-180) but below "high": a summary may call it elevated, never high.
SUGAR_LOW = 70
SUGAR_ABOVE_TARGET = 140
SUGAR_HIGH = 200
SUGAR_CRISIS = 400

# A change from the earliest visit to now that is worth a clinician's attention (issue #10):
# 30 mg/dL of glucose, 15 mmHg systolic (above the ~10 mmHg visit-to-visit variability
# reported in ambulatory studies), and 0.10 of risk on the 0-1 scale.
SUGAR_TREND_MG_DL = 30
SYSTOLIC_TREND_MMHG = 15
RISK_TREND = 0.10  # times Patient.score_scale

NOW = "now"  # the date label of the record's current values
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_CHANGE_WORDS = re.compile(
    r"\b(?:start\w*|stop\w*|switch\w*|chang\w*|increas\w*|reduc\w*|decreas\w*|added|"
    r"discontinu\w*|replac\w*|titrat\w*|new)\b",
    re.I,
)


@dataclass(frozen=True, slots=True)
class Vital:
    """One current value with its screening category.

    `flagged`: abnormal, so a summary must say so (BP stage 2 or crisis; sugar low, high or
    crisis). `mild`: above the normal band but not flagged (BP elevated or stage 1, sugar
    140-199), where "elevated" or "above target" is true and "high" is not.
    """

    measure: str  # "blood pressure" | "blood sugar"
    value: str  # "168/101" | "274" | "not recorded"
    unit: str
    category: str  # NOT_RECORDED when the record has no current value
    flagged: bool
    mild: bool
    crisis: bool

    @property
    def recorded(self) -> bool:
        return self.category != NOT_RECORDED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Point:
    date: str  # YYYY-MM-DD, or NOW for the record's current values
    value: float

    def to_dict(self) -> dict[str, Any]:
        return {"date": self.date, "value": self.value}


@dataclass(frozen=True, slots=True)
class Reading:
    """The vitals of one visit, or of now, with their categories: what the page charts."""

    date: str  # YYYY-MM-DD, or NOW
    bp: BloodPressure | None
    sugar: int | None
    risk: float | None
    risk_moved: bool = False  # a meaningful change from the first recorded risk

    def to_dict(self) -> dict[str, Any]:
        bp_cat = None if self.bp is None else bp_category(self.bp)
        sugar_cat = None if self.sugar is None else sugar_category(self.sugar)
        return {
            "date": self.date,
            "systolic": None if self.bp is None else self.bp.systolic,
            "diastolic": None if self.bp is None else self.bp.diastolic,
            "bp_category": bp_cat,
            "bp_flagged": bp_cat in BP_FLAGGED,
            "sugar": self.sugar,
            "sugar_category": sugar_cat,
            "sugar_flagged": sugar_cat in SUGAR_FLAGGED,
            "risk": self.risk,
            "risk_moved": self.risk_moved,
        }


@dataclass(frozen=True, slots=True)
class Trend:
    """One measure from the earliest visit to now, in time order."""

    measure: str  # "blood sugar" | "systolic blood pressure" | "risk score"
    key: str  # "sugar" | "systolic" | "risk"
    unit: str
    points: tuple[Point, ...]
    threshold: float
    change: float  # last minus first
    direction: str  # "rose" | "fell" | "unchanged"
    meaningful: bool  # abs(change) >= threshold
    latest_step: str  # "continues" | "reverses" | "flat": the last step against `direction`

    @property
    def first(self) -> Point:
        return self.points[0]

    @property
    def last(self) -> Point:
        return self.points[-1]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["points"] = [p.to_dict() for p in self.points]
        return out


@dataclass(frozen=True, slots=True)
class MedChange:
    """A drug started, stopped or re-dosed between the latest visit and now."""

    drug: str  # the name without its dose, as written in the record
    change: str  # "started" | "stopped" | "dose changed"
    before: str | None  # the record's entry at the latest visit
    after: str | None  # the current entry

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class LatestVisit:
    date: str
    outcome: str
    key_point: str  # the note's sentence about a change, else its first sentence

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Digest:
    patient_id: int
    vitals: tuple[Vital, ...]  # blood pressure, then blood sugar; each may be not recorded
    trends: tuple[Trend, ...]  # every measure with two readings or more, meaningful or not
    readings: tuple[Reading, ...]  # every visit, then now, oldest first
    med_changes: tuple[MedChange, ...]
    new_conditions: tuple[str, ...]  # in the current history, not at the first visit
    latest: LatestVisit | None
    visits: int
    first_date: str | None
    span_days: int  # from the first visit to the latest

    @property
    def flags(self) -> tuple[Vital, ...]:
        return tuple(v for v in self.vitals if v.flagged)

    @property
    def crisis(self) -> bool:
        return any(v.crisis for v in self.vitals)

    @property
    def meaningful_trends(self) -> tuple[Trend, ...]:
        return tuple(t for t in self.trends if t.meaningful)

    def vital(self, measure: str) -> Vital | None:
        return next((v for v in self.vitals if v.measure == measure), None)

    def trend(self, key: str) -> Trend | None:
        return next((t for t in self.trends if t.key == key), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the derived lists spelled out for clients that only read."""
        return {
            "patient_id": self.patient_id,
            "vitals": [v.to_dict() for v in self.vitals],
            "flags": [v.measure for v in self.flags],
            "crisis": self.crisis,
            "trends": [t.to_dict() for t in self.trends],
            "readings": [r.to_dict() for r in self.readings],
            "med_changes": [m.to_dict() for m in self.med_changes],
            "new_conditions": list(self.new_conditions),
            "latest_visit": self.latest.to_dict() if self.latest else None,
            "visits": self.visits,
            "first_date": self.first_date,
            "span_days": self.span_days,
        }


# --- categories ------------------------------------------------------------------------------


BP_FLAGGED = frozenset({"stage 2", "crisis"})
SUGAR_FLAGGED = frozenset({"low", "high", "crisis"})
FLAGGED = BP_FLAGGED | SUGAR_FLAGGED
MILD = frozenset({"elevated", "stage 1", "above target"})  # above normal, not flagged


def bp_category(bp: BloodPressure) -> str:
    """normal, elevated, stage 1, stage 2 or crisis (2017 ACC/AHA)."""
    systolic, diastolic = bp.systolic, bp.diastolic
    if systolic >= BP_CRISIS_SYSTOLIC or diastolic >= BP_CRISIS_DIASTOLIC:
        return "crisis"
    if systolic >= BP_STAGE2_SYSTOLIC or diastolic >= BP_STAGE2_DIASTOLIC:
        return "stage 2"
    if systolic >= BP_STAGE1_SYSTOLIC or diastolic >= BP_STAGE1_DIASTOLIC:
        return "stage 1"
    if systolic >= BP_ELEVATED_SYSTOLIC:
        return "elevated"
    return "normal"


def sugar_category(mg_dl: int) -> str:
    """low, normal, above target (140-199), high or crisis."""
    if mg_dl >= SUGAR_CRISIS:
        return "crisis"
    if mg_dl >= SUGAR_HIGH:
        return "high"
    if mg_dl >= SUGAR_ABOVE_TARGET:
        return "above target"
    if mg_dl < SUGAR_LOW:
        return "low"
    return "normal"


def _vital(measure: str, value: object, unit: str, category: str | None) -> Vital:
    if value is None or category is None:
        return Vital(measure, NOT_RECORDED, "", NOT_RECORDED, False, False, False)
    return Vital(
        measure,
        str(value),
        unit,
        category,
        flagged=category in FLAGGED,
        mild=category in MILD,
        crisis=category == "crisis",
    )


def _vitals(patient: Patient) -> tuple[Vital, ...]:
    bp, sugar = patient.current_bp, patient.current_sugar
    return (
        _vital("blood pressure", bp, "mmHg", None if bp is None else bp_category(bp)),
        _vital("blood sugar", sugar, "mg/dL", None if sugar is None else sugar_category(sugar)),
    )


# --- time order and trends -------------------------------------------------------------------


def chronological(visits: tuple[Visit, ...] | list[Visit]) -> list[Visit]:
    """Visits oldest first; same-date visits by their contents, never by file order."""
    return sorted(visits, key=lambda v: (v.date, tuple(str(x) for x in v.to_dict().values())))


def _trend(
    measure: str, key: str, unit: str, points: list[Point], threshold: float
) -> Trend | None:
    if len(points) < 2:
        return None
    change = points[-1].value - points[0].value
    # Scores are written to three decimals: compare rounded, so 0.1 counts as 0.10.
    change = round(change, 6)
    direction = "rose" if change > 0 else "fell" if change < 0 else "unchanged"
    step = points[-1].value - points[-2].value
    if step == 0 or change == 0:
        latest = "flat"
    else:
        latest = "continues" if (step > 0) == (change > 0) else "reverses"
    return Trend(
        measure,
        key,
        unit,
        tuple(points),
        threshold,
        change,
        direction,
        meaningful=abs(change) >= threshold - 1e-9,
        latest_step=latest,
    )


def _readings(patient: Patient, visits: list[Visit]) -> tuple[Reading, ...]:
    rows = [(v.date, v.bp, v.sugar, v.risk_score) for v in visits]
    rows.append((NOW, patient.current_bp, patient.current_sugar, patient.risk_score))
    first = next((risk for *_, risk in rows if risk is not None), None)
    step = RISK_TREND * patient.score_scale - 1e-9
    return tuple(
        Reading(date, bp, sugar, risk, risk is not None and abs(risk - first) >= step)
        for date, bp, sugar, risk in rows
    )


def _trends(patient: Patient, readings: tuple[Reading, ...]) -> tuple[Trend, ...]:
    """Each measure over the readings that recorded it: a missing value is a gap."""
    sugar = [Point(r.date, r.sugar) for r in readings if r.sugar is not None]
    systolic = [Point(r.date, r.bp.systolic) for r in readings if r.bp is not None]
    risk = [Point(r.date, r.risk) for r in readings if r.risk is not None]
    found = (
        _trend("blood sugar", "sugar", "mg/dL", sugar, SUGAR_TREND_MG_DL),
        _trend("systolic blood pressure", "systolic", "mmHg", systolic, SYSTOLIC_TREND_MMHG),
        _trend("risk score", "risk", "", risk, RISK_TREND * patient.score_scale),
    )
    return tuple(t for t in found if t is not None)


# --- medications, conditions, the latest visit -----------------------------------------------


def drug_name(entry: str) -> str:
    """ "Metformin 500mg" -> "Metformin": the words up to the first one holding a digit."""
    words = entry.split()
    cut = next((i for i, w in enumerate(words) if any(c.isdigit() for c in w)), len(words))
    return " ".join(words[:cut]) or entry


def _by_drug(entries: tuple[str, ...]) -> dict[str, str]:
    return {drug_name(e).lower(): e for e in entries}


def _med_changes(patient: Patient, latest: Visit | None) -> tuple[MedChange, ...]:
    if latest is None:
        return ()
    before = _by_drug(latest.medications)
    after = _by_drug(patient.current_medications)
    changes = []
    for key, entry in before.items():
        if key not in after:
            changes.append(MedChange(drug_name(entry), "stopped", entry, None))
        elif _norm(after[key]) != _norm(entry):
            changes.append(MedChange(drug_name(after[key]), "dose changed", entry, after[key]))
    for key, entry in after.items():
        if key not in before:
            changes.append(MedChange(drug_name(entry), "started", None, entry))
    return tuple(changes)


def _norm(entry: str) -> str:
    return " ".join(entry.lower().split())


def _new_conditions(patient: Patient, first: Visit | None) -> tuple[str, ...]:
    if first is None:
        return ()
    had = {_norm(c) for c in first.history}
    return tuple(c for c in patient.medical_history if _norm(c) not in had)


def key_point(note: str) -> str:
    """The note's first sentence about a change of treatment, else its first sentence."""
    sentences = [s.strip() for s in _SENTENCE.split(note.strip()) if s.strip()]
    if not sentences:
        return ""
    return next((s for s in sentences if _CHANGE_WORDS.search(s)), sentences[0])


def _days(first: str, last: str) -> int:
    # Pure date arithmetic on ISO strings (the records package has validated them).
    return (dt.date.fromisoformat(last) - dt.date.fromisoformat(first)).days


def digest(patient: Patient) -> Digest:
    """The digest of one record; see the module docstring for the rules."""
    visits = chronological(patient.visit_history)
    first = visits[0] if visits else None
    latest = visits[-1] if visits else None
    readings = _readings(patient, visits)
    return Digest(
        patient_id=patient.patient_id,
        vitals=_vitals(patient),
        trends=_trends(patient, readings),
        readings=readings,
        med_changes=_med_changes(patient, latest),
        new_conditions=_new_conditions(patient, first),
        latest=LatestVisit(latest.date, latest.outcome, key_point(latest.notes))
        if latest
        else None,
        visits=len(visits),
        first_date=first.date if first else None,
        span_days=_days(first.date, latest.date) if first and latest else 0,
    )
