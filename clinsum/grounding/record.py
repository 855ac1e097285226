"""The record, reduced to what a summary is compared with."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from .words import (
    _AMBIGUOUS_NAMES,
    _COMMON_FIRST_NAMES,
    _DOSE,
    _EMPTY_HISTORY,
    _GENDERS,
    _NOT_NAMES,
    _RECORD_NUMBER,
    _dose_unit,
    _keys,
    _parse_bp,
)

if TYPE_CHECKING:
    from ..records import Patient


@dataclass(slots=True)
class _Record:
    gender: str | None
    bp: tuple[int, int] | None
    bps: dict[tuple[int, int], str]
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
    bps: dict[tuple[int, int], str] = {}
    sugars: dict[int, str] = {patient.current_sugar: "record"}
    scores = [
        (patient.risk_score, "risk score", "record"),
        (patient.base_score, "base score", "record"),
    ]
    conditions: dict[str, str] = {}
    history = []
    for entry in patient.conditions():
        if entry.lower() not in _EMPTY_HISTORY:
            keys = _keys(entry, "condition")
            history.append((entry, keys))
            conditions.update(dict.fromkeys(keys, "record"))
    medications = [(entry, "record") for entry in patient.medications()]
    symptoms = dict.fromkeys(_keys(patient.current_symptoms, "symptom"), "record")
    current_bp = _parse_bp(patient.current_bp)
    if current_bp:
        bps[current_bp] = "record"
    for source, v in visits:
        visit_bp = _parse_bp(v.bp)
        if visit_bp:
            bps.setdefault(visit_bp, source)
        sugars.setdefault(v.sugar, source)
        scores += [(v.risk_score, "risk score", source), (v.base_score, "base score", source)]
        for key in _keys(v.history, "condition"):
            conditions.setdefault(key, source)
        medications += [(entry.strip(), source) for entry in re.split(r"[,;]", v.medications)]
        for key in _keys(v.symptoms, "symptom"):
            symptoms.setdefault(key, source)
    doses: dict[tuple[float, str], tuple[str, str]] = {}
    for entry, source in medications:
        for m in _DOSE.finditer(entry):
            doses.setdefault((float(m[1]), _dose_unit(m[2])), (entry, source))
    texts = [
        str(patient.patient_id),
        str(patient.age),
        patient.current_symptoms,
        patient.current_bp,
        str(patient.current_sugar),
        patient.medical_history,
        patient.current_medications,
    ]
    for _, v in visits:
        texts += [v.date, v.symptoms, v.bp, str(v.sugar), v.history, v.medications, v.notes]
        texts += [v.outcome]
    numbers = {float(n) for t in texts for n in _RECORD_NUMBER.findall(t)}
    return _Record(
        gender=_GENDERS.get(patient.gender.strip().lower()),
        bp=current_bp,
        bps=bps,
        sugars=sugars,
        scores=scores,
        conditions=conditions,
        history=history,
        medications=medications,
        doses=doses,
        symptoms=symptoms,
        dates=frozenset(v.date for v in patient.visit_history),
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
