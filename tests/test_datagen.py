"""The generator: reproducible bytes, a realistic spread, and records that are internally
consistent (nothing in a record names a condition the patient does not have)."""

from __future__ import annotations

import csv
import itertools
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from clinsum import datagen
from clinsum.records import load_patients
from clinsum.vocab import CONDITIONS, find_concepts

REPO = Path(__file__).resolve().parent.parent
LABEL_TO_KEY = {c.label: c.key for c in CONDITIONS.values()}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return datagen.generate(100, 42)


def test_same_seed_same_bytes_and_cli_matches_library(tmp_path: Path) -> None:
    first, second, other = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    datagen.write_csv(datagen.generate(100, 42), first)
    subprocess.run(
        [sys.executable, "-m", "clinsum.datagen", "--out", str(second), "--n", "100"],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=120,
    )
    datagen.write_csv(datagen.generate(100, 43), other)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()


def test_committed_file_is_the_seed_42_output(tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    datagen.write_csv(datagen.generate(100, 42), out)
    assert out.read_bytes() == (REPO / "patient_data.csv").read_bytes()


def test_columns_exactly_and_the_loader_accepts_the_file(tmp_path: Path, rows) -> None:
    out = tmp_path / "p.csv"
    datagen.write_csv(rows, out)
    with open(out, newline="") as f:
        assert next(csv.reader(f)) == [
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
        ]
    assert list(load_patients(out)) == list(range(1, 101))


def test_demographics(rows) -> None:
    names = [r["name"] for r in rows]
    assert len(set(names)) == len(names)
    assert all(len(n.split()) == 2 for n in names)
    assert {r["gender"] for r in rows} == {"Male", "Female"}
    assert all(18 <= r["age"] <= 90 for r in rows)
    assert max(r["age"] for r in rows) - min(r["age"] for r in rows) > 40


def test_at_least_eight_conditions_with_five_patients_each(rows) -> None:
    counts = Counter(c for r in rows for c in r["medical_history"].split(", "))
    assert set(counts) <= set(LABEL_TO_KEY)
    assert sum(1 for n in counts.values() if n >= 5) >= 8
    assert all(1 <= len(r["medical_history"].split(", ")) <= 3 for r in rows)


def test_symptoms_and_drugs_fit_the_conditions(rows) -> None:
    for r in rows:
        conditions = [CONDITIONS[LABEL_TO_KEY[c]] for c in r["medical_history"].split(", ")]
        symptoms = {s for c in conditions for s in c.symptoms}
        drugs = {m for c in conditions for m in c.medications}
        assert set(r["current_symptoms"].split(", ")) <= symptoms
        for med in r["current_medications"].split(", "):
            assert any(med.startswith(f"{d} ") for d in drugs), med


def test_no_text_names_a_condition_the_patient_lacks(rows) -> None:
    for r in rows:
        own = set(find_concepts(r["medical_history"]))
        texts = [r["current_symptoms"], r["current_medications"]]
        for v in json.loads(r["visit_history"]):
            texts += [v["symptoms"], v["medications"], v["history"], v["notes"]]
        named = {k for k in find_concepts(" | ".join(texts)) if k.startswith("condition:")}
        assert named <= own, (r["patient_id"], named - own)


def test_vitals_follow_the_conditions(rows) -> None:
    def systolic(r: dict) -> int:
        return int(r["current_bp"].split("/")[0])

    htn = [systolic(r) for r in rows if "Hypertension" in r["medical_history"]]
    other = [systolic(r) for r in rows if "Hypertension" not in r["medical_history"]]
    assert statistics.mean(htn) > statistics.mean(other) + 15
    dm = [r["current_sugar"] for r in rows if "Diabetes" in r["medical_history"]]
    non_dm = [r["current_sugar"] for r in rows if "Diabetes" not in r["medical_history"]]
    assert min(dm) > max(non_dm)


def test_scores_and_visits(rows) -> None:
    for r in rows:
        for score in (r["base_score"], r["risk_score"]):
            assert 0 < float(score) < 1 and len(score.split(".")[1]) == 3
        visits = json.loads(r["visit_history"])
        assert 1 <= len(visits) <= 4
        assert [v["date"] for v in visits] == sorted(v["date"] for v in visits)
        for v in visits:
            assert set(v) == {
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
            }
            assert v["outcome"] in datagen.OUTCOMES and v["notes"]


def test_large_n_is_fast_and_names_stay_unique() -> None:
    started = time.perf_counter()
    rows = datagen.generate(20_000, 7)
    assert time.perf_counter() - started < 20
    assert len({r["name"] for r in rows}) == 20_000


def test_bad_n() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        datagen.generate(0, 1)
    result = subprocess.run(
        [sys.executable, "-m", "clinsum.datagen", "--n", "0", "--out", "/dev/null"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "--n must be at least 1" in result.stderr


def test_patients_keep_the_identity_of_the_first_generator(rows) -> None:
    """Other files (ground-truth ids per condition) name these patients; the chart rewrite
    must not move them. Spot values from the file as first committed."""
    by_id = {r["patient_id"]: r for r in rows}
    assert [by_id[i][k] for i in (1, 6) for k in ("name", "age", "gender")] == [
        *("Michael Harrison", 46, "Male", "Kathleen Murray", 54, "Female")
    ]
    assert by_id[6]["medical_history"] == "Diabetes, High cholesterol"
    assert by_id[2]["medical_history"] == "COPD, Heart failure"


def test_medications_carry_over_and_each_change_has_its_reason(rows) -> None:
    transitions = changes = 0
    for r in rows:
        visits = json.loads(r["visit_history"])
        for before, after in itertools.pairwise(visits):
            transitions += 1
            if before["medications"] != after["medications"]:
                changes += 1
                gone = set(before["medications"].split(", ")) - set(
                    after["medications"].split(", ")
                )
                new = set(after["medications"].split(", ")) - set(before["medications"].split(", "))
                for entry in gone | new:
                    drug = datagen._drug(entry)
                    assert drug in after["notes"], (r["patient_id"], entry, after["notes"])
        latest = visits[-1]
        if set(latest["medications"].split(", ")) != set(r["current_medications"].split(", ")):
            assert "Plan: " in latest["notes"], (r["patient_id"], latest["notes"])
    assert changes < transitions / 2


def test_trends_follow_the_conditions(rows) -> None:
    for r in rows:
        visits = json.loads(r["visit_history"])
        if "Diabetes" not in r["medical_history"]:
            assert abs(r["current_sugar"] - visits[0]["sugar"]) < 30
        if "Hypertension" not in r["medical_history"]:
            systolic = int(r["current_bp"].split("/")[0])
            assert abs(systolic - int(visits[0]["bp"].split("/")[0])) < 15
