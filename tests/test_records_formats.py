"""The original tool's data files load as they are, and so do real exports' spellings.

The original is navin251285/helloagent, mcp_tutorial/11_mcp_llm_web_socket at 5fcc907; its
three patient files and its summaries file are committed under tests/data/original/.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from clinsum.config import parse_args
from clinsum.params import check_params
from clinsum.prompt import build_messages, prefill
from clinsum.records import BloodPressure, RecordError, formats, load_patients
from clinsum.scores import format_score
from clinsum.search import SearchError, _check_filters
from clinsum.store import SummaryStore
from clinsum.terminal.screen import Screen
from clinsum.tools import TOOLS

REPO = Path(__file__).resolve().parent.parent
ORIGINAL = REPO / "tests" / "data" / "original"
FILES = ("patients_data.csv", "patients_data.json", "patients_detailed.csv")
DETAILED_HEADER = (
    "patient_id,name,age,gender,visit_date,symptoms,bp,sugar,medical_history,"
    "current_medications,symptom_score,bp_risk,sugar_risk,age_factor,base_score,risk_score,"
    "outcome,notes"
)


@pytest.mark.parametrize("name", FILES)
def test_each_original_file_loads_with_patient_11_and_its_four_visits(name: str) -> None:
    loaded = formats.load(ORIGINAL / name)
    assert loaded.scale == 10.0
    assert list(loaded.patients) == list(range(1, 101))
    p = loaded.patients[11]
    assert (p.name, p.age, p.gender, p.current_bp, p.current_sugar) == (
        "Jerry Rivera",
        59,
        "Male",
        BloodPressure(145, 91),
        208,
    )
    assert (p.risk_score, p.base_score, p.score_scale) == (6.6, 6.83, 10.0)
    assert [v.date for v in p.visit_history] == [
        "2025-06-15",
        "2025-08-31",
        "2026-01-10",
        "2026-02-25",
    ]
    first = p.visit_history[0].to_dict()
    # The original's extra visit fields are kept and shown, next to ours.
    assert {k: first[k] for k in ("symptom_score", "bp_risk", "sugar_risk", "age_factor")} == {
        "symptom_score": 6.0,
        "bp_risk": 10,
        "sugar_risk": 0,
        "age_factor": 4,
    }
    assert (first["history"], first["medications"]) == (
        "hypertension",
        "insulin, omeprazole, warfarin",
    )


def test_the_three_files_give_the_same_patients() -> None:
    csv_rows, json_list, per_visit = (formats.load(ORIGINAL / n).patients for n in FILES)
    assert csv_rows == json_list == per_visit


def test_file_shape_is_told_by_content_not_name(tmp_path: Path) -> None:
    """A JSON file saved as .txt and a per-visit CSV under any name are still recognised."""
    shutil.copy(ORIGINAL / "patients_data.json", tmp_path / "export.txt")
    shutil.copy(ORIGINAL / "patients_detailed.csv", tmp_path / "visits.csv")
    assert formats.load(tmp_path / "export.txt").kind == "a JSON list of patients"
    assert formats.load(tmp_path / "visits.csv").kind == "one row per visit"
    canonical = formats.load(REPO / "patient_data.csv")
    assert (canonical.kind, canonical.scale) == ("one row per patient", 1.0)
    assert canonical.patients == load_patients(REPO / "patient_data.csv")


def test_none_means_no_entries_never_a_condition() -> None:
    p = formats.load(ORIGINAL / "patients_data.csv").patients[3]
    assert (p.medical_history, p.current_medications) == ((), ())
    assert p.conditions() == () and p.medications() == ()
    assert p.visit_history[-1].history == () and p.visit_history[-1].medications == ()
    text = prefill(p)
    assert "with none" not in text and "no recorded conditions" in text


def test_scores_read_and_shown_on_the_files_scale() -> None:
    p = formats.load(ORIGINAL / "patients_data.csv").patients[11]
    assert "Risk score 6.6/10." in prefill(p)
    assert "Risk score: 6.6/10" in build_messages(p, "narrative")[1]["content"]
    canonical = load_patients(REPO / "patient_data.csv")[1]
    assert f"{canonical.risk_score:.2f}" in prefill(canonical)


def test_one_score_above_1_puts_the_whole_file_on_0_to_10(tmp_path: Path) -> None:
    rows = (ORIGINAL / "patients_detailed.csv").read_text().splitlines()[:3]
    # Patient 1's two visits, every score rewritten to at most 1, but one.
    low = [rows[0]]
    for line in rows[1:]:
        cells = next(csv.reader([line]))
        cells[10:16] = ["0.5", "0", "0", "1", "0.4", "0.5"]
        low.append(_csv_line(cells))
    path = tmp_path / "low.csv"
    path.write_text("\n".join(low) + "\n")
    assert formats.load(path).scale == 1.0
    cells = next(csv.reader([low[1]]))
    cells[15] = "6"  # the first visit's risk score
    path.write_text("\n".join([low[0], _csv_line(cells), low[2]]) + "\n")
    loaded = formats.load(path)
    assert loaded.scale == 10.0
    # Never mixed: the other scores are 0-10 scores too, shown as such.
    assert loaded.patients[1].risk_score == 0.5 and "0.5/10" in prefill(loaded.patients[1])


def _scored_file(path: Path, above_1: str | None) -> Path:
    """Two one-row-per-patient patients whose every score is at most 1 (patient 2's are 1.0
    exactly), but the one named by `above_1`: patient 1's `base_score` or `risk_score`, or
    `visit.base_score` / `visit.risk_score` of its only visit, which is then 6."""
    rows = []
    for pid, low in ((1, 0.5), (2, 1.0)):
        visit = {
            "date": "2024-01-02", "symptoms": "", "bp": "120/80", "sugar": 90, "history": "",
            "medications": "", "base_score": low, "risk_score": low, "outcome": "Stable",
            "notes": "Reviewed.",
        }  # fmt: skip
        row = {
            "patient_id": pid, "name": f"Pat {pid}", "age": 40, "gender": "Female",
            "current_symptoms": "", "current_bp": "120/80", "current_sugar": 90,
            "base_score": low, "risk_score": low, "medical_history": "",
            "current_medications": "",
        }  # fmt: skip
        if pid == 1 and above_1 is not None:
            where, _, key = above_1.rpartition(".")
            (visit if where == "visit" else row)[key] = 6
        rows.append({**row, "visit_history": json.dumps([visit])})
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize(
    "above_1", ["base_score", "risk_score", "visit.base_score", "visit.risk_score"]
)
def test_the_scale_is_0_to_10_when_any_one_score_is_above_1(tmp_path: Path, above_1) -> None:
    """Any one score above 1, a patient's or a visit's, base or risk, puts the whole file on
    0-10 (a 1.0 then reads "1/10"); scores of exactly 1 and below keep it on 0-1 ("100%").
    Mutations caught: visits' scores left out of the detection (the file read on 0-1, so
    refused); the threshold taken as 1 or above (`>= 1`)."""
    path = _scored_file(tmp_path / "scored.csv", above_1)
    try:
        loaded = formats.load(path)
    except RecordError as exc:
        pytest.fail(f"a score above 1 at {above_1} was not seen: read on 0-1, refused: {exc}")
    assert loaded.scale == 10.0
    assert [p.score_scale for p in loaded.patients.values()] == [10.0, 10.0]
    assert format_score(loaded.patients[2].risk_score, loaded.patients[2].score_scale) == "1/10"
    assert "Risk score 1/10." in prefill(loaded.patients[2])

    at_most_1 = formats.load(_scored_file(tmp_path / "unit.csv", None))
    assert at_most_1.scale == 1.0
    assert [p.score_scale for p in at_most_1.patients.values()] == [1.0, 1.0]
    assert (
        format_score(at_most_1.patients[2].risk_score, at_most_1.patients[2].score_scale) == "100%"
    )


def _csv_line(cells: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(cells)
    return buf.getvalue()


def _per_visit(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "visits.csv"
    path.write_text("\n".join([DETAILED_HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def test_real_export_spellings_are_accepted(tmp_path: Path, caplog) -> None:
    path = _per_visit(
        tmp_path,
        "7,Ana Ruiz,41,F,2021-12-19T10:00:00Z,cough,128/82 mmHg,101.6,None,,3,2,1,2,3.1,3.4,"
        "rest,first visit",
        '7,Ana Ruiz,41,F,2022-03-02 09:30:00,"cough, fever",135.0/87.0,140.4,asthma,'
        "albuterol,4,4,2,2,4.2,4.6,inhaler,second visit",
        "8,Ben Ode,70,M,2022-01-05,none,142/90,99,none,none,1,6,0,8,5.0,5.5,ok,7",
    )
    loaded = formats.load(path)
    ana, ben = loaded.patients[7], loaded.patients[8]
    assert (ana.gender, ben.gender) == ("Female", "Male")
    assert (ana.current_bp, ana.current_sugar, ana.medical_history) == (
        BloodPressure(135, 87),
        140,
        ("asthma",),
    )
    assert [v.date for v in ana.visit_history] == ["2021-12-19", "2022-03-02"]
    assert [str(v.bp) for v in ana.visit_history] == ["128/82", "135/87"]
    assert [v.sugar for v in ana.visit_history] == [102, 140]
    assert ana.visit_history[0].history == () and ana.visit_history[0].medications == ()
    assert (ben.current_symptoms, ben.medical_history, ben.current_medications) == ((), (), ())
    # Text columns stay text even when they look like numbers; number columns become numbers.
    assert ben.visit_history[0].notes == "7"
    assert ben.visit_history[0].to_dict()["bp_risk"] == 6
    # Rounding is said once, with examples, not once per value.
    assert loaded.notes == [
        "rounded 2 decimal glucose value(s) to whole mg/dL (101.6 -> 102, 140.4 -> 140)"
    ]


def test_variants_inside_a_one_row_per_patient_file(tmp_path: Path) -> None:
    src = list(csv.DictReader((ORIGINAL / "patients_data.csv").open(newline="")))[:2]
    visits = json.loads(src[0]["visit_history"])
    visits[0].update(visit_date="2026-01-05T08:15:00+01:00", bp="144/94 mmHg", sugar=135.2)
    src[0].update(
        visit_history=json.dumps(visits), current_bp="179.0/103.0", gender="F", current_sugar="117"
    )
    path = tmp_path / "patients.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(src[0]))
        writer.writeheader()
        writer.writerows(src)
    p = formats.load(path).patients[1]
    assert (p.current_bp, p.gender) == (BloodPressure(179, 103), "Female")
    assert (p.visit_history[0].date, p.visit_history[0].bp, p.visit_history[0].sugar) == (
        "2026-01-05",
        BloodPressure(144, 94),
        135,
    )


@pytest.mark.parametrize(
    ("row", "where"),
    [
        ("9,Cy Dee,50,M,2022-01-05,cough,12/ab,99,,,1,1,1,1,2,3,ok,", "line 2, field current_bp"),
        ("9,Cy Dee,50,M,2022-01-05,cough,80/120,99,,,1,1,1,1,2,3,ok,", "line 2, field current_bp"),
        ("9,Cy Dee,300,M,2022-01-05,cough,120/80,99,,,1,1,1,1,2,3,ok,", "line 2, field age"),
    ],
)
def test_what_is_really_wrong_is_refused_with_file_line_and_field(
    tmp_path: Path, row: str, where: str
) -> None:
    path = _per_visit(tmp_path, row)
    with pytest.raises(RecordError) as err:
        formats.load(path)
    assert f"{path}, {where}" in str(err.value)


def test_a_bad_earlier_visit_names_its_own_line(tmp_path: Path) -> None:
    path = _per_visit(
        tmp_path,
        "9,Cy Dee,50,M,2022-01-05,cough,120/80,99,,,1,1,1,1,2,3,ok,",
        "9,Cy Dee,50,M,2021-01-05,cough,12/ab,99,,,1,1,1,1,2,3,ok,",
        "9,Cy Dee,50,M,2022-02-05,cough,130/85,99,,,1,1,1,1,2,3,ok,",
    )
    with pytest.raises(RecordError, match=r", line 3, field visit_history\[1\]\.bp: "):
        formats.load(path)


def test_bad_json_record_names_its_place_in_the_list(tmp_path: Path) -> None:
    patients = json.loads((ORIGINAL / "patients_data.json").read_text())[:3]
    patients[2]["age"] = 300
    path = tmp_path / "p.json"
    # One patient per line after the "[": the third starts on line 4.
    path.write_text("[\n" + ",\n".join(json.dumps(p) for p in patients) + "\n]\n")
    with pytest.raises(RecordError, match=r"p\.json, line 4, field age: "):
        formats.load(path)


def test_default_file_falls_back_to_the_originals(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_args([]).data == Path("patient_data.csv")
    shutil.copy(ORIGINAL / "patients_data.csv", tmp_path)
    config = parse_args([])
    assert config.data == Path("patients_data.csv")
    assert "using the original tool's patients_data.csv" in config.data_note
    assert parse_args(["--data", "x.csv"]).data == Path("x.csv")
    (tmp_path / "patient_data.csv").write_text("")
    assert parse_args([]).data == Path("patient_data.csv")


def test_min_risk_is_on_the_datas_scale() -> None:
    assert _check_filters({"min_risk": 7}, 10.0) == {"min_risk": 7.0}
    with pytest.raises(SearchError, match="from 0 to 10"):
        _check_filters({"min_risk": 10.5}, 10.0)
    with pytest.raises(SearchError, match="from 0 to 1,"):
        _check_filters({"min_risk": 7}, 1.0)
    # The published bound lets a 0-10 value through to that one check.
    params = check_params(TOOLS["search"].params, {"query": "asthma", "filters": {"min_risk": 7}})
    assert params["filters"] == {"min_risk": 7}


def test_the_originals_summaries_file_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "patient_summaries.csv"
    shutil.copy(ORIGINAL / "patient_summaries.csv", path)
    assert b"\r\n" in path.read_bytes()
    store = SummaryStore(path)
    store.ensure_exists()
    before = {r["patient_id"]: r for r in store.rows()}
    assert len(before) == 100
    assert before["25"]["summary"].startswith("Generated Summary for Janet Lee (ID: 25):\n\n")
    store.save(12, "Sharon Clark", "Stable.", "clinician", "2026-01-01T00:00:00+00:00", True)
    after = {r["patient_id"]: r for r in store.rows()}
    assert len(after) == 100 and after["12"]["summary"] == "Stable."
    assert {k: after[k]["summary"] for k in before if k != "12"} == {
        k: v["summary"] for k, v in before.items() if k != "12"
    }


def test_client_shows_scale_and_extra_visit_fields() -> None:
    screen = Screen()
    out = io.StringIO()
    screen.console = Console(file=out, width=300, color_system=None)
    record = formats.load(ORIGINAL / "patients_data.csv").patients[11].to_dict()
    screen.patient(record)
    text = out.getvalue()
    assert "6.6/10 (base 6.83/10)" in text
    for column in ("symptom_score", "bp_risk", "sugar_risk", "age_factor"):
        assert column in text
    assert "7.2/10" in text  # the second visit's risk


def test_current_fields_come_from_the_latest_visit_not_the_last_row(tmp_path: Path) -> None:
    path = _per_visit(
        tmp_path,
        "9,Cy Dee,50,M,2022-01-05,cough,120/80,99,,,1,1,1,1,2,3,ok,",
        "9,Cy Dee,51,M,2023-06-01T12:00:00Z,fever,150/95,130,asthma,,1,1,1,1,4,5,ok,",
        "9,Cy Dee,50,M,2021-01-05,rash,118/76,90,,,1,1,1,1,1,2,ok,",
    )
    p = formats.load(path).patients[9]
    assert (p.age, p.current_symptoms, p.current_bp, p.risk_score) == (
        51,
        ("fever",),
        BloodPressure(150, 95),
        5.0,
    )
    assert [v.date for v in p.visit_history] == ["2022-01-05", "2023-06-01", "2021-01-05"]


def test_the_record_written_part_is_grounded_for_every_original_patient() -> None:
    """The strict prefill quotes the latest outcome ("blood pressure controlled with
    medication"); a quote of the record is not a flag claim, so no original patient's summary
    starts out blocked. Mutation guarded: quoted outcomes read as claims (6 of 100 blocked)."""
    from clinsum import grounding
    from clinsum.digest import digest

    patients = formats.load(ORIGINAL / "patients_data.csv").patients
    names = tuple(p.name for p in patients.values())
    blocked = [
        pid
        for pid, p in patients.items()
        if not grounding.check(prefill(p), p, names, digest(p)).ok
    ]
    assert blocked == []
