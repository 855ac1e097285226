"""Visits and patients without a blood pressure, a glucose or a score (issue #23).

Real records omit them all the time: FHIR exports, clinic notes, the original tool's
hand-edited rows. Each file below loads with some of them left out; the digest, the summary's
prefill, the grounding check, the charts' readings and the search filters all say "not
recorded" and never invent a value (a gap, not a zero).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from clinsum.digest import NOW, digest
from clinsum.grounding import check
from clinsum.prompt import build_messages, prefill
from clinsum.records import NOT_RECORDED, Patient, Records, formats
from clinsum.search import PatientIndex

from .conftest import DATA

REPO = Path(__file__).resolve().parent.parent
ORIGINAL = REPO / "tests" / "data" / "original"
NO_VITALS = REPO / "tests" / "data" / "no_vitals.csv"


def _blank_patient_rows(src: Path, dst: Path) -> None:
    """A one-row-per-patient CSV: every third patient without current BP and sugar; every
    other visit without BP, the rest without sugar."""
    with src.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    for i, row in enumerate(rows):
        if i % 3 == 0:
            row["current_bp"] = row["current_sugar"] = ""
        visits = json.loads(row["visit_history"])
        for j, visit in enumerate(visits):
            visit.pop("bp" if j % 2 == 0 else "sugar")
        row["visit_history"] = json.dumps(visits)
    with dst.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _blank_visit_rows(src: Path, dst: Path) -> None:
    """The original's one-row-per-visit CSV: every other row without BP, every third without
    sugar, as a clinic's hand-kept sheet has them."""
    with src.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    for i, row in enumerate(rows):
        if i % 2 == 0:
            row["bp"] = ""
        if i % 3 == 0:
            row["sugar"] = ""
    with dst.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _blank_json(src: Path, dst: Path) -> None:
    """The original's JSON list: nulls, as JSON writes what is missing."""
    patients = json.loads(src.read_text(encoding="utf-8"))
    for i, p in enumerate(patients):
        if i % 3 == 0:
            p["current_bp"] = p["current_sugar"] = None
        for j, visit in enumerate(p["visit_history"]):
            visit["bp" if j % 2 == 0 else "sugar"] = None
    dst.write_text(json.dumps(patients, indent=2), encoding="utf-8")


def _as_is(src: Path, dst: Path) -> None:
    shutil.copy(src, dst)


FILES: dict[str, tuple[Path, Callable[[Path, Path], None]]] = {
    "patients_data.csv": (ORIGINAL / "patients_data.csv", _blank_patient_rows),
    "patients_data.json": (ORIGINAL / "patients_data.json", _blank_json),
    "patients_detailed.csv": (ORIGINAL / "patients_detailed.csv", _blank_visit_rows),
    "patient_data.csv": (DATA, _blank_patient_rows),
    "no_vitals.csv": (NO_VITALS, _as_is),
}


@pytest.fixture(scope="module", params=sorted(FILES))
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    src, blank = FILES[request.param]
    path = tmp_path_factory.mktemp("vitals") / request.param
    blank(src, path)
    return formats.load(path).patients


def _unmeasured(patients) -> list[Patient]:
    return [p for p in patients.values() if p.current_bp is None or p.current_sugar is None]


def test_the_file_loads_and_what_is_missing_is_none(loaded) -> None:
    missing = _unmeasured(loaded)
    assert missing, "the variant must leave some vitals out"
    visits = [v for p in loaded.values() for v in p.visit_history]
    assert any(v.bp is None for v in visits) or not visits
    for p in missing:
        data = p.to_dict()
        if p.current_bp is None:
            assert data["current_bp"] is None
        if p.current_sugar is None:
            assert data["current_sugar"] is None
        assert json.loads(json.dumps(data)) == data


def test_digest_says_not_recorded_and_trends_skip_the_gaps(loaded) -> None:
    for p in loaded.values():
        d = digest(p)
        bp, sugar = d.vital("blood pressure"), d.vital("blood sugar")
        assert bp is not None and sugar is not None
        assert bp.recorded == (p.current_bp is not None)
        assert sugar.recorded == (p.current_sugar is not None)
        if not bp.recorded:
            assert (bp.value, bp.category, bp.flagged) == (NOT_RECORDED, NOT_RECORDED, False)
        # One reading per visit and now; a missing value is null there, never 0.
        readings = [r.to_dict() for r in d.readings]
        assert len(readings) == len(p.visit_history) + 1 and readings[-1]["date"] == NOW
        recorded_sugars = [r["sugar"] for r in readings if r["sugar"] is not None]
        assert all(s > 0 for s in recorded_sugars)
        assert sum(r["systolic"] is None for r in readings) == sum(
            x is None for x in [*(v.bp for v in p.visit_history), p.current_bp]
        )
        trend = d.trend("sugar")
        if trend is not None:
            assert [pt.value for pt in trend.points] == [
                r.sugar for r in d.readings if r.sugar is not None
            ]
        systolic = d.trend("systolic")
        if systolic is not None:
            assert len(systolic.points) == sum(r["systolic"] is not None for r in readings)


def test_the_summary_says_not_recorded_and_passes_its_own_check(loaded) -> None:
    names = [p.name for p in loaded.values()]
    for p in _unmeasured(loaded)[:15]:
        head = prefill(p)
        if p.current_bp is None:
            assert "Blood pressure not recorded." in head
        if p.current_sugar is None:
            assert "Blood sugar not recorded." in head
        assert "None" not in head
        result = check(head, p, names)
        assert result.unsupported == [], result.to_dict()
        facts = build_messages(p, "narrative")[1]["content"]
        assert "None" not in facts and NOT_RECORDED in facts


def test_a_value_for_an_unmeasured_vital_is_an_unsupported_claim(loaded) -> None:
    p = next(p for p in _unmeasured(loaded) if p.current_bp is None)
    assert all(str(v.bp) != "237/163" for v in p.visit_history)
    result = check(f"{p.name} has a blood pressure of 237/163 mmHg.", p)
    assert [c.kind for c in result.unsupported] == ["bp"]
    assert "not recorded" in result.unsupported[0].reason


def test_records_keep_missing_risk_as_nan_and_min_risk_never_matches_it() -> None:
    patients = formats.load(NO_VITALS).patients
    records = Records.of(patients)
    unscored = [i for i, p in enumerate(patients.values()) if p.risk_score is None]
    assert unscored and all(math.isnan(records.risks[i]) for i in unscored)
    assert records[records.ids[unscored[0]]] == patients[records.ids[unscored[0]]]


def test_search_filters_on_a_file_without_vitals_or_scores(tmp_path: Path) -> None:
    from clinsum.embeddings import load_embedder

    path = tmp_path / NO_VITALS.name
    shutil.copy(NO_VITALS, path)
    patients = formats.load(path).patients
    index = PatientIndex.open(patients, path, embedder=load_embedder(), show_progress=False)
    unscored = {pid for pid, p in patients.items() if p.risk_score is None}
    query = "high cholesterol"  # patient 206 (scored) and 208 (not scored) have it
    everyone = {h.patient_id for h in index.search(query, top_k=20)}
    with_risk = {h.patient_id for h in index.search(query, top_k=20, filters={"min_risk": 0.0})}
    assert everyone & unscored, "the unscored patients are found without a risk filter"
    assert with_risk and not with_risk & unscored  # absent is not zero: no minimum is met


@pytest.mark.parametrize("pid", [205, 207, 208])
def test_the_terminal_shows_not_recorded_never_none(pid: int) -> None:
    import io

    from rich.console import Console

    from clinsum.terminal.screen import Screen

    screen = Screen()
    out = io.StringIO()
    screen.console = Console(file=out, width=300, color_system=None)
    patient = formats.load(NO_VITALS).patients[pid]
    screen.patient(patient.to_dict())
    text = out.getvalue()
    assert "None" not in text and "not recorded" in text
    if patient.risk_score is None:
        assert "base" not in text  # no "(base not recorded)" either
