"""The original tool's plain-text answers, character for character.

Its clients parse these strings (the search result's "1. ID: 11  | ..." lines above all), so
each renderer reproduces the original's `mcp_server.py` exactly: the same header, the same
padding (`:3s` for the id, `:20s` for the name, `:2s` for the age), the same sentences.
Pure functions of plain values, tested against strings written out from that file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# The original asked Chroma for 5 patients; its client also reads a "10." line as "1.".
MAX_SEARCH_LINES = 5
SYMPTOM_CHARS = 40
NO_SUMMARY = "Status: No summary yet. Use generate_summary to create one."


def search(keyword: str, patients: Sequence[Mapping[str, Any]]) -> str:
    """`search_patients_by_disease`: a header, one blank line, then one line per patient."""
    shown = list(patients)[:MAX_SEARCH_LINES]
    if not shown:
        return (
            f"No patients found matching '{keyword}'. "
            "Try searching for common symptoms or diseases."
        )
    lines = [f"Found {len(shown)} patients matching '{keyword}':\n\n"]
    for i, p in enumerate(shown, 1):
        lines.append(
            f"{i}. ID: {p['patient_id']!s:3s} | Name: {p['name']:20s} | "
            f"Age: {p['age']!s:2s} | Symptoms: {p['current_symptoms'][:SYMPTOM_CHARS]}\n"
        )
    return "".join(lines)


def patient_summary(patient_id: int, name: str, summary: str) -> str:
    """`get_patient_summary`: id and name, then the saved summary or the "No summary" status."""
    head = f"Patient ID: {patient_id}\nName: {name}\n"
    if summary.strip():
        return f"{head}\nSummary:\n{summary}"
    return f"{head}\n{NO_SUMMARY}"


def generated(name: str, patient_id: int, summary: str) -> str:
    """`generate_summary`: the title line, one blank line, the summary."""
    return f"Generated Summary for {name} (ID: {patient_id}):\n\n{summary.strip()}"


def saved(patient_id: int, name: str, summary: str) -> str:
    """`update_patient_summary`: the confirmation its clients look for ("✓"), then the text."""
    return (
        f"✓ Summary for Patient ID {patient_id} ({name}) has been saved.\n\n"
        f"Summary ({len(summary)} characters):\n{summary}"
    )
