"""Records for tests, written as people write them: "128/82", "Diabetes, HTN", "none".

The records package parses a file once into typed values; a test that builds a `Patient` by
hand spells its values the same way and gets them parsed by the same functions.
"""

from __future__ import annotations

from dataclasses import fields as fields_of
from dataclasses import replace
from typing import Any, TypeVar

from clinsum.records import BloodPressure, Patient, Visit, entries

BP_FIELDS = frozenset({"bp", "current_bp"})
LIST_FIELDS = frozenset(
    {
        "symptoms",
        "history",
        "medications",
        "current_symptoms",
        "medical_history",
        "current_medications",
        "past_history",
    }
)
T = TypeVar("T", Patient, Visit)


def typed(fields: dict[str, Any]) -> dict[str, Any]:
    """Spelled values parsed: a BP string, a list cell; "" or "none" for a BP is None."""
    out = dict(fields)
    for key, value in fields.items():
        if key in BP_FIELDS and isinstance(value, str):
            out[key] = BloodPressure.parse(value) if value.strip() else None
        elif key in LIST_FIELDS and isinstance(value, str):
            out[key] = entries(value)
    return out


def make_visit(*values: Any, **fields: Any) -> Visit:
    fields.update(zip((f.name for f in fields_of(Visit)), values, strict=False))
    return Visit(**typed(fields))


def make_patient(*values: Any, **fields: Any) -> Patient:
    fields.update(zip((f.name for f in fields_of(Patient)), values, strict=False))
    return Patient(**typed(fields))


def changed(record: T, **changes: Any) -> T:
    """`dataclasses.replace` with spelled values."""
    return replace(record, **typed(changes))
