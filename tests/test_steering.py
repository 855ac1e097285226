"""Issue 22: the prefill and the check read the record the same way; the recommendation is
about the digest's most important item; the model may not start a word the record lacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from clinsum.digest import digest
from clinsum.grounding import check
from clinsum.prompt import prefill
from clinsum.records import Patient, formats
from clinsum.steering import FEMALE_PRONOUNS, MALE_PRONOUNS, focus, heading, steer
from tests.records_helpers import changed

from .conftest import REPO
from .test_backends import JANET

FILES = [REPO / "patient_data.csv", REPO / "tests" / "data" / "synthea_patients.csv"]


def blocking(text: str, patient: Patient, names: tuple[str, ...] = ()) -> list[str]:
    d = digest(patient)
    g = check(text, patient, names or (patient.name,), d)
    return [f"{c.kind}: {c.text!r} ({c.reason})" for c in g.unsupported if c.blocking]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_prefill_passes_the_check_with_an_empty_model_part(path: Path) -> None:
    """What the prefill writes from the record, the check supports, for every patient of
    both files."""
    patients = list(formats.load(path).patients.values())
    names = tuple(p.name for p in patients)
    flagged = {
        p.patient_id: found
        for p in patients
        if (found := blocking(prefill(p, "strict") + ".", p, names))
    }
    assert flagged == {}


@pytest.mark.parametrize(
    "symptoms",
    [
        "Body mass index 30+ - obesity",  # a finding that names a condition (Synthea)
        "diabetes",  # a diagnosis
        "metformin 500mg",  # a drug, with a dose
        "pain 7/10 for 3 days",  # numbers
        'chest "tightness", patient\'s words',  # quote characters
    ],
)
def test_a_symptoms_field_holding_other_things_is_quoted_not_flagged(symptoms: str) -> None:
    """Mutation caught: the check's `quotes` step removed (the record's own words in the
    symptoms field read as claims again: "obesity" not in the history)."""
    patient = changed(
        JANET,
        current_symptoms=symptoms,
        medical_history="Hypertension",
        current_medications="Lisinopril 10mg",
    )
    text = prefill(patient, "strict")
    assert all(entry.strip().lower() in text.lower() for entry in symptoms.split(","))
    assert blocking(text + " to monitor blood pressure.", patient) == []
    # What the model adds is still read: a condition the record does not have is a claim.
    assert any("asthma" in c for c in blocking(text + " to manage asthma.", patient))


def test_a_name_that_is_also_a_condition_is_the_name() -> None:
    grace = changed(JANET, name="Grace Angina", medical_history="Hypertension")
    text = prefill(grace, "strict") + " to monitor Grace Angina's blood pressure."
    assert blocking(text, grace) == []
    assert "angina" not in steer(grace).avoid  # the model must be free to write her name
    # Written by the model as a condition, it is a claim.
    assert any("angina" in c.lower() for c in blocking(text + " Treat the angina.", grace))


@pytest.mark.parametrize("gender", ["", "Other", "unknown"])
def test_a_gender_that_is_neither_avoids_pronouns_and_uses_the_name(gender: str) -> None:
    patient = changed(JANET, gender=gender)
    text = prefill(patient, "strict")
    assert text.startswith("Janet Torres is a 67-year-old patient")
    assert "  " not in text
    assert set(FEMALE_PRONOUNS + MALE_PRONOUNS) <= set(steer(patient).avoid)
    assert blocking(text + " to monitor.", patient) == []


@pytest.mark.parametrize(
    ("gender", "banned", "free"),
    [("Male", FEMALE_PRONOUNS, MALE_PRONOUNS), ("F", MALE_PRONOUNS, FEMALE_PRONOUNS)],
)
def test_pronouns_that_contradict_the_gender_are_avoided(
    gender: str, banned: tuple[str, ...], free: tuple[str, ...]
) -> None:
    avoid = set(steer(changed(JANET, gender=gender)).avoid)
    assert set(banned) <= avoid and not set(free) & avoid


def test_conditions_and_drugs_the_record_lacks_are_avoided_and_its_own_are_not() -> None:
    """Patient 1 of the issue: hypertension only, told to monitor "diabetes"."""
    patient = changed(
        JANET,
        medical_history="Hypertension",
        current_medications="Lisinopril 10mg",
        current_symptoms="headache",
        visit_history=tuple(
            changed(v, history="Hypertension", medications="Lisinopril 10mg", symptoms="headache")
            for v in JANET.visit_history
        ),
    )
    s = steer(patient)
    assert {"diabetes", "diabetic", "metformin", "insulin", "statin", "asthma"} <= set(s.avoid)
    assert not {"hypertension", "hypertensive", "lisinopril"} & set(s.avoid)
    assert {"hypertension", "lisinopril", "janet", "torres"} <= set(s.keep)
    # Prediabetes is not diabetes: its own word is kept, diabetes is avoided.
    pre = steer(changed(patient, medical_history="Prediabetes, Hypertension"))
    assert "prediabetes" not in pre.avoid and "diabetes" in pre.avoid
    # A drug class the record's own drug names is kept: atorvastatin contains "statin".
    statin = steer(changed(patient, current_medications="Atorvastatin 20mg"))
    assert "statin" not in statin.avoid and "diuretic" in statin.avoid


def test_the_heading_names_the_worst_flag_then_a_trend_then_a_change() -> None:
    d = digest(JANET)  # BP 152/94 stage 2, sugar 182 above target: BP is the flag
    assert [v.measure for v in d.flags] == ["blood pressure"]
    assert heading(d) == "Recommendation: for the blood pressure, continue"
    crisis = digest(changed(JANET, current_sugar=420, current_bp="152/94"))
    assert focus(crisis) == "for the blood sugar"  # a crisis comes before any other flag
    calm = changed(JANET, current_bp="118/76", current_sugar=95)
    calm = changed(
        calm,
        visit_history=tuple(changed(v, bp="118/76", sugar=95) for v in JANET.visit_history),
    )
    d = digest(calm)
    assert not d.flags and not d.meaningful_trends
    if d.med_changes:
        assert focus(d).startswith("with ")
    else:
        assert heading(d) == "Recommendation: no change is needed; continue"
    rising = digest(
        changed(
            calm,
            current_sugar=135,
            visit_history=(
                changed(calm.visit_history[0], sugar=90),
                changed(calm.visit_history[1], sugar=110),
            ),
        )
    )
    assert focus(rising) == "for the blood sugar"


def test_the_prefill_ends_on_the_heading() -> None:
    assert prefill(JANET, "strict").endswith(" " + heading(digest(JANET)))


def test_directions_no_trend_took_are_avoided() -> None:
    """`make eval` once found "continue to monitor the blood sugar level increase" for a sugar
    that fell. Narrative: with no rising trend, the words of a rise are avoided, and the
    other way; strict: both, since the prefill states every trend."""
    falling = changed(
        JANET,
        current_sugar=96,
        current_bp="120/80",
        risk_score=0.5,
        visit_history=(
            changed(JANET.visit_history[0], sugar=107, bp="130/85", risk_score=0.6),
            changed(JANET.visit_history[1], sugar=101, bp="125/82", risk_score=0.55),
        ),
    )
    d = digest(falling)
    assert {t.direction for t in d.trends} == {"fell"}
    avoid = set(steer(falling, d, "narrative").avoid)
    assert {"increase", "rising", "rose"} <= avoid and not {"decrease", "fell"} & avoid
    # Strict: the record's sentences state the trends; the recommendation restates none.
    assert {"increase", "rose", "decrease", "fell"} <= set(steer(falling, d, "strict").avoid)
    assert "low" in avoid  # nothing is low
    hypo = changed(falling, current_sugar=55)
    assert "low" not in steer(hypo).avoid
