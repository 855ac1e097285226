"""The clinical digest: categories and trends from a table, order-independence as a property."""

from __future__ import annotations

import datetime as dt
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clinsum.digest import NOW, bp_category, digest, key_point, sugar_category
from clinsum.records import BloodPressure, Patient, Visit, load_patients
from tests.records_helpers import changed, make_patient, make_visit

from .conftest import DATA


def visit(date: str, bp: str = "120/80", sugar: int = 100, risk: float = 0.3, **kw: str) -> Visit:
    return make_visit(
        date=date,
        symptoms=kw.get("symptoms", "fatigue"),
        bp=bp,
        sugar=sugar,
        history=kw.get("history", "Diabetes"),
        medications=kw.get("medications", "Metformin 500mg"),
        base_score=0.3,
        risk_score=risk,
        outcome=kw.get("outcome", "Stable"),
        notes=kw.get("notes", "Follow-up for diabetes. Metformin continued."),
    )


def patient(*visits: Visit, **changes: object) -> Patient:
    base = make_patient(
        patient_id=6,
        name="Kathleen Murray",
        age=54,
        gender="Female",
        current_symptoms="increased thirst",
        current_bp="119/84",
        current_sugar=274,
        base_score=0.47,
        risk_score=0.54,
        medical_history="Diabetes, High cholesterol",
        current_medications="Glipizide 5mg, Atorvastatin 40mg",
        visit_history=visits,
    )
    return changed(base, **changes)


@pytest.mark.parametrize(
    ("bp", "category"),
    [
        ((119, 79), "normal"),
        ((120, 79), "elevated"),
        ((129, 79), "elevated"),
        ((130, 70), "stage 1"),
        ((119, 80), "stage 1"),
        ((139, 89), "stage 1"),
        ((140, 70), "stage 2"),
        ((120, 90), "stage 2"),
        ((179, 119), "stage 2"),
        ((180, 100), "crisis"),
        ((150, 120), "crisis"),
    ],
)
def test_bp_categories_follow_acc_aha_2017(bp: tuple[int, int], category: str) -> None:
    assert bp_category(BloodPressure(*bp)) == category


@pytest.mark.parametrize(
    ("sugar", "category"),
    [
        (69, "low"),
        (70, "normal"),
        (139, "normal"),
        (140, "above target"),
        (199, "above target"),
        (200, "high"),
        (399, "high"),
        (400, "crisis"),
    ],
)
def test_sugar_categories(sugar: int, category: str) -> None:
    assert sugar_category(sugar) == category


def test_patient_6_of_the_issue_rising_risk_changed_drugs_high_sugar() -> None:
    d = digest(
        patient(
            visit("2023-10-06", "110/79", 271, 0.563, history="Diabetes, High cholesterol",
                  medications="Glipizide 5mg, Simvastatin 40mg"),
            visit("2023-01-01", "133/68", 271, 0.40,
                  medications="Metformin 850mg, Insulin glargine 10 units"),
        )
    )  # fmt: skip
    assert [(v.measure, v.category, v.flagged) for v in d.vitals] == [
        ("blood pressure", "stage 1", False),
        ("blood sugar", "high", True),
    ]
    risk = d.trend("risk")
    assert risk is not None and risk.meaningful and risk.direction == "rose"
    assert [p.date for p in risk.points] == ["2023-01-01", "2023-10-06", NOW]
    assert risk.latest_step == "reverses"  # 0.563 -> 0.54
    sugar = d.trend("sugar")
    assert sugar is not None and not sugar.meaningful and sugar.change == 3
    assert [(c.drug, c.change) for c in d.med_changes] == [
        ("Simvastatin", "stopped"),
        ("Atorvastatin", "started"),
    ]
    assert d.new_conditions == ("High cholesterol",)
    assert d.latest is not None and d.latest.date == "2023-10-06"
    assert (d.visits, d.first_date, d.span_days) == (2, "2023-01-01", 278)


@pytest.mark.parametrize(
    ("sugars", "meaningful", "direction", "step"),
    [
        ((180, 200), False, "rose", "continues"),  # 180 -> 200 -> 209: +29, below 30
        ((150, 240), True, "rose", "reverses"),  # 150 -> 240 -> 209
        ((300, 250), True, "fell", "continues"),  # 300 -> 250 -> 209
        ((209, 209), False, "unchanged", "flat"),
    ],
)
def test_sugar_trend_threshold_direction_and_latest_step(
    sugars: tuple[int, int], meaningful: bool, direction: str, step: str
) -> None:
    p = patient(
        visit("2024-01-01", sugar=sugars[0]),
        visit("2024-06-01", sugar=sugars[1]),
        current_sugar=209,
    )
    t = digest(p).trend("sugar")
    assert t is not None
    assert (t.meaningful, t.direction, t.latest_step) == (meaningful, direction, step)
    assert [p.value for p in t.points] == [*sugars, 209]


def test_thresholds_are_inclusive_and_risk_scales_with_the_file() -> None:
    p = patient(visit("2024-01-01", bp="125/80", sugar=244, risk=0.44), current_bp="140/80")
    d = digest(p)
    assert d.trend("systolic").meaningful  # +15 mmHg exactly
    assert d.trend("sugar").meaningful  # 244 -> 274: +30 exactly
    assert d.trend("risk").meaningful  # 0.44 -> 0.54: +0.10 exactly
    on_ten = changed(
        p, risk_score=5.4, visit_history=(changed(p.visit_history[0], risk_score=4.5),)
    )
    assert not digest(changed(on_ten, score_scale=10.0)).trend("risk").meaningful  # 0.9 < 1.0
    assert digest(on_ten).trend("risk").meaningful  # read as 0-1, 0.9 would be huge


def test_no_visits_no_trend_no_changes() -> None:
    d = digest(patient())
    assert d.trends == () and d.med_changes == () and d.new_conditions == ()
    assert d.latest is None and d.visits == 0 and d.span_days == 0
    assert [v.measure for v in d.flags] == ["blood sugar"]
    json.dumps(d.to_dict())


def test_one_visit_trends_run_from_it_to_now() -> None:
    t = digest(patient(visit("2024-01-01", sugar=200))).trend("sugar")
    assert t is not None and [p.date for p in t.points] == ["2024-01-01", NOW]


def test_empty_medication_lists_and_dose_changes() -> None:
    none_then_some = patient(visit("2024-01-01", medications=""), current_medications="")
    assert digest(none_then_some).med_changes == ()
    started = digest(patient(visit("2024-01-01", medications=""))).med_changes
    assert {(c.drug, c.change) for c in started} == {
        ("Glipizide", "started"),
        ("Atorvastatin", "started"),
    }
    redosed = digest(
        patient(visit("2024-01-01", medications="glipizide 10mg, Atorvastatin 40mg"))
    ).med_changes
    assert [(c.drug, c.change, c.before, c.after) for c in redosed] == [
        ("Glipizide", "dose changed", "glipizide 10mg", "Glipizide 5mg")
    ]


def test_none_is_no_entry_as_synthea_writes_it() -> None:
    d = digest(
        patient(visit("2024-01-01", medications="none", history="none"), medical_history="none")
    )
    assert [(c.drug, c.change) for c in d.med_changes] == [
        ("Glipizide", "started"),
        ("Atorvastatin", "started"),
    ]
    assert d.new_conditions == ()
    stopped = digest(patient(visit("2024-01-01"), current_medications="none")).med_changes
    assert [(c.drug, c.change) for c in stopped] == [("Metformin", "stopped")]


def test_equal_dates_do_not_depend_on_file_order() -> None:
    a = visit("2024-01-01", sugar=150, outcome="Stable")
    b = visit("2024-01-01", sugar=260, outcome="Worsened")
    assert digest(patient(a, b)) == digest(patient(b, a))


def test_key_point_prefers_a_change_of_treatment() -> None:
    note = (
        "Follow-up for diabetes. Reports fatigue. Metformin stopped for nausea; glipizide started."
    )
    assert key_point(note) == "Metformin stopped for nausea; glipizide started."
    assert key_point("Routine review. Labs ordered.") == "Routine review."
    assert key_point("") == ""


_VISITS = st.lists(
    st.builds(
        visit,
        st.dates(min_value=dt.date(2015, 1, 1), max_value=dt.date(2025, 1, 1)).map(str),
        st.tuples(st.integers(90, 200), st.integers(50, 85)).map(lambda t: f"{t[0]}/{t[1]}"),
        st.integers(40, 500),
        st.floats(0, 1).map(lambda x: round(x, 3)),
        medications=st.sampled_from(["", "Metformin 500mg", "Metformin 850mg, Glipizide 5mg"]),
        outcome=st.sampled_from(["Stable", "Worsened", "Improved"]),
    ),
    max_size=5,
)


@settings(max_examples=200, deadline=None)
@given(visits=_VISITS, order=st.randoms(use_true_random=False))
def test_reordering_visits_does_not_change_the_digest(
    visits: list[Visit], order: random.Random
) -> None:
    shuffled = list(visits)
    order.shuffle(shuffled)
    assert digest(patient(*visits)) == digest(patient(*shuffled))


@settings(max_examples=200, deadline=None)
@given(visits=_VISITS)
def test_trend_points_are_in_time_order_and_end_now(visits: list[Visit]) -> None:
    d = digest(patient(*visits))
    for t in d.trends:
        dates = [p.date for p in t.points]
        assert dates[-1] == NOW and dates[:-1] == sorted(dates[:-1])
        assert t.meaningful == (abs(t.change) >= t.threshold - 1e-9)
    assert d.visits == len(visits)


def test_every_digest_of_the_shipped_file_is_json() -> None:
    for p in load_patients(DATA).values():
        d = digest(p).to_dict()
        assert json.loads(json.dumps(d)) == d
