"""The record, reduced to what a summary is compared with."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from .words import (
    _AMBIGUOUS_NAMES,
    _COMMON_FIRST_NAMES,
    _DOSE,
    _GENDERS,
    _NOT_NAMES,
    _RECORD_NUMBER,
    _dose_unit,
    _keys,
)

if TYPE_CHECKING:
    from ..records import BloodPressure, Patient


@dataclass(slots=True)
class _Record:
    gender: str | None
    bp: BloodPressure | None
    bps: dict[BloodPressure, str]
    sugars: dict[int, str]
    scores: list[tuple[float, str, str]]  # value, which score, source
    conditions: dict[str, str]  # condition key -> source
    history: list[tuple[str, list[str]]]  # medical_history entry, its condition keys
    medications: list[tuple[str, str]]  # one drug with its dose, source
    doses: dict[tuple[float, str], tuple[str, str]]  # (value, unit) -> (entry, source)
    symptoms: dict[str, str]  # symptom key -> source
    dates: frozenset[str]
    numbers: tuple[float, ...]


def _record(patient: Patient) -> _Record:
    visits = [(f"visit {v.date}", v) for v in patient.visit_history]
    bps: dict[BloodPressure, str] = {}
    sugars: dict[int, str] = {}
    if patient.current_bp is not None:
        bps[patient.current_bp] = "record"
    if patient.current_sugar is not None:
        sugars[patient.current_sugar] = "record"
    scores = [
        (value, which, "record")
        for value, which in ((patient.risk_score, "risk score"), (patient.base_score, "base score"))
        if value is not None
    ]
    conditions: dict[str, str] = {}
    history = []
    for entry in patient.medical_history:
        keys = _keys(entry, "condition")
        history.append((entry, keys))
        conditions.update(dict.fromkeys(keys, "record"))
    for entry in patient.past_history:
        conditions.update(dict.fromkeys(_keys(entry, "condition"), "past history"))
    medications = [(entry, "record") for entry in patient.current_medications]
    symptoms = {k: "record" for entry in patient.current_symptoms for k in _keys(entry, "symptom")}
    for source, v in visits:
        if v.bp is not None:
            bps.setdefault(v.bp, source)
        if v.sugar is not None:
            sugars.setdefault(v.sugar, source)
        for value, which in ((v.risk_score, "risk score"), (v.base_score, "base score")):
            if value is not None:
                scores.append((value, which, source))
        for entry in v.history:
            for key in _keys(entry, "condition"):
                conditions.setdefault(key, source)
        medications += [(entry, source) for entry in v.medications]
        for entry in v.symptoms:
            for key in _keys(entry, "symptom"):
                symptoms.setdefault(key, source)
    doses: dict[tuple[float, str], tuple[str, str]] = {}
    for entry, source in medications:
        for m in _DOSE.finditer(entry):
            doses.setdefault((float(m[1]), _dose_unit(m[2])), (entry, source))
    texts = [str(patient.patient_id), str(patient.age), str(len(visits)), *patient.texts()]
    texts += [str(x) for x in (patient.current_bp, patient.current_sugar) if x is not None]
    for _, v in visits:
        texts.append(v.date)
        texts += [str(x) for x in (v.bp, v.sugar) if x is not None]
    numbers = {float(n) for t in texts for n in _RECORD_NUMBER.findall(t)}
    return _Record(
        gender=_GENDERS.get(patient.gender.strip().lower()),
        bp=patient.current_bp,
        bps=bps,
        sugars=sugars,
        scores=scores,
        conditions=conditions,
        history=history,
        medications=medications,
        doses=doses,
        symptoms=symptoms,
        dates=frozenset([*(v.date for v in patient.visit_history), patient.deceased or ""]) - {""},
        numbers=tuple(sorted(numbers)),
    )


@lru_cache(maxsize=8)
def _name_lists(known_names: tuple[str, ...]) -> tuple[frozenset[str], frozenset[str]]:
    """First and last names of the data set; cached because the server passes the same tuple."""
    firsts, lasts = set(_COMMON_FIRST_NAMES), set()
    for name in known_names:
        parts = name.lower().split()
        if len(parts) >= 2:
            firsts.add(parts[0])
            lasts.add(parts[-1])
    return (
        frozenset(firsts - _AMBIGUOUS_NAMES - _NOT_NAMES),
        frozenset(lasts - _AMBIGUOUS_NAMES - _NOT_NAMES),
    )
