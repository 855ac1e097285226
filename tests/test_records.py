"""Loading patients: typed records from good files, and for bad ones an error that names the
file, the CSV line, the field and the value, with nothing half-loaded."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import warnings
from pathlib import Path

import pytest

from clinsum.records import (
    COLUMNS,
    BloodPressure,
    Patient,
    RecordError,
    Visit,
    file_hash,
    load_patients,
)

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "patient_data.csv"
HANDWRITTEN = REPO / "tests" / "data" / "handwritten_patients.csv"


def read_rows(path: Path = DATA) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict[str, str]], columns=COLUMNS) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_loads_the_committed_file() -> None:
    patients = load_patients(DATA)
    assert list(patients) == list(range(1, 101))
    p = patients[1]
    assert isinstance(p, Patient) and isinstance(p.visit_history[0], Visit)
    assert isinstance(p.age, int) and isinstance(p.current_sugar, int)
    assert isinstance(p.risk_score, float) and 0 <= p.risk_score <= 1
    assert isinstance(p.current_bp, BloodPressure)
    assert re.fullmatch(r"\d+/\d+", str(p.current_bp))
    assert isinstance(p.medical_history, tuple) and isinstance(p.visit_history[0].bp, BloodPressure)


def test_to_dict_is_json_ready_and_to_row_round_trips() -> None:
    for patient in load_patients(DATA).values():
        data = patient.to_dict()
        assert isinstance(data["visit_history"], list)
        assert all(isinstance(v, dict) for v in data["visit_history"])
        assert json.loads(json.dumps(data)) == data
        # The wire spells the typed values as files do.
        assert data["current_bp"] == str(patient.current_bp)
        assert data["medical_history"] == ", ".join(patient.medical_history)
        row = json.loads(json.dumps(patient.to_row()))
        assert Patient.from_row(row) == patient


def test_list_helpers_split_on_comma_and_semicolon() -> None:
    patients = load_patients(HANDWRITTEN)
    assert patients[101].conditions() == ("Type 2 diabetes mellitus", "HTN", "CHF (HFrEF)")
    # This cell spans two lines of the file.
    assert patients[102].medications() == ("Metformin 500mg", "Atorvastatin 40mg")
    assert patients[114].symptoms() == ()
    assert patients[109].visit_history == ()


def test_file_hash_is_sha256_of_the_bytes() -> None:
    assert file_hash(DATA) == hashlib.sha256(DATA.read_bytes()).hexdigest()


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(RecordError, match=re.escape(f"patient data file not found: {path}")):
        load_patients(path)


def test_missing_columns_are_all_named(tmp_path: Path) -> None:
    columns = [c for c in COLUMNS if c not in ("age", "current_bp")]
    path = write_rows(tmp_path / "cols.csv", read_rows()[:3], columns)
    with pytest.raises(RecordError) as err:
        load_patients(path)
    assert str(path) in str(err.value)
    assert "missing column(s): age, current_bp" in str(err.value)


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(RecordError, match="empty"):
        load_patients(empty)
    header = write_rows(tmp_path / "header.csv", [])
    with pytest.raises(RecordError, match="no patient records"):
        load_patients(header)


BAD_VALUES = [
    ("current_bp", "12/ab", "current_bp", "systolic/diastolic"),
    ("current_bp", "120", "current_bp", "systolic/diastolic"),
    ("current_bp", "80/120", "current_bp", "systolic must be higher"),
    ("current_bp", "400/90", "current_bp", "systolic must be between"),
    ("age", "sixty", "age", "whole number of years"),
    ("age", "", "age", "whole number of years"),
    ("age", "61.5", "age", "whole number of years"),
    ("age", "140", "age", "between 0 and 130"),
    ("current_sugar", "high", "current_sugar", "whole number of mg/dL"),
    ("base_score", "low", "base_score", "number between 0 and 1"),
    ("risk_score", "1.7", "risk_score", "number between 0 and 1"),
    ("risk_score", "nan", "risk_score", "number between 0 and 1"),
    ("visit_history", '[{"date": "2024-01-01",', "visit_history", "not valid JSON"),
    ("visit_history", '{"date": "2024-01-01"}', "visit_history", "JSON list"),
    ("visit_history", '["a visit"]', "visit_history[0]", "must be a JSON object, not str"),
    ("name", "   ", "name", "must not be empty"),
    ("patient_id", "0", "patient_id", "positive whole number"),
    ("patient_id", "-4", "patient_id", "positive whole number"),
    ("patient_id", "7.5", "patient_id", "positive whole number"),
    ("patient_id", "P-7", "patient_id", "positive whole number"),
]


@pytest.mark.parametrize(("column", "value", "field", "problem"), BAD_VALUES)
def test_bad_value_names_file_line_field_and_value(tmp_path, column, value, field, problem):
    rows = read_rows()[:5]
    # A quoted cell spanning two lines in the first record shifts every later line by one.
    rows[0]["current_symptoms"] = "headache,\nchest pain"
    rows[2][column] = value
    path = write_rows(tmp_path / "bad.csv", rows)
    with pytest.raises(RecordError) as err:
        load_patients(path)
    message = str(err.value)
    assert message.startswith(f"{path}, line 5, field {field}: ")
    assert problem in message
    assert repr(value)[:40] in message or field == "visit_history[0]"
    assert len(message.splitlines()) == 1


def visits_of(row: dict[str, str]) -> list[dict]:
    return json.loads(row["visit_history"])


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        (lambda v: v.update(bp="12/ab"), "visit_history[0].bp", "systolic/diastolic"),
        (lambda v: v.update(sugar="95"), "visit_history[0].sugar", "not a string"),
        (lambda v: v.update(sugar=True), "visit_history[0].sugar", "whole number of mg/dL"),
        (lambda v: v.update(risk_score=3), "visit_history[0].risk_score", "between 0 and 1"),
        (lambda v: v.update(date="last week"), "visit_history[0].date", "YYYY-MM-DD"),
        (lambda v: v.update(notes=None), "visit_history[0].notes", "must be a string"),
        (lambda v: v.pop("outcome"), "visit_history[0]", "missing key(s) outcome"),
    ],
)
def test_bad_visit_entries(tmp_path, change, field, problem) -> None:
    rows = read_rows()[:3]
    visits = visits_of(rows[1])
    change(visits[0])
    rows[1]["visit_history"] = json.dumps(visits)
    path = write_rows(tmp_path / "bad.csv", rows)
    with pytest.raises(RecordError) as err:
        load_patients(path)
    message = str(err.value)
    assert message.startswith(f"{path}, line 3, field {field}: ")
    assert problem in message


def test_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    rows = read_rows()[:4]
    rows[3]["patient_id"] = rows[1]["patient_id"]
    path = write_rows(tmp_path / "dup.csv", rows)
    with pytest.raises(RecordError) as err:
        load_patients(path)
    assert str(err.value) == (
        f"{path}, line 5, field patient_id: duplicate id 2 (first used on line 3)"
    )


def test_short_row_is_not_padded_silently(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "short.csv", read_rows()[:3])
    lines = path.read_text().splitlines()
    # Drop the last field (visit_history) from the third record.
    lines[3] = lines[3][: lines[3].rindex(',"[')]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=r"line 4: expected 12 fields, found 11"):
        load_patients(path)


def test_a_long_row_is_one_clear_error_and_no_library_warning(tmp_path: Path) -> None:
    """The user sees our line-numbered message only, not also pandas' ParserWarning."""
    path = write_rows(tmp_path / "long.csv", read_rows()[:3])
    lines = path.read_text().splitlines()
    lines[1] += ",surplus"  # the first record: pandas warns, and would drop the field
    path.write_text("\n".join(lines) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RecordError, match=r"line 2: expected 12 fields, found 13"):
            load_patients(path)


def test_every_bad_record_is_reported_and_nothing_loads(tmp_path: Path) -> None:
    rows = read_rows()[:30]
    for i in range(2, 30, 2):
        rows[i]["age"] = "old"
    path = write_rows(tmp_path / "many.csv", rows)
    with pytest.raises(RecordError) as err:
        load_patients(path)
    lines = str(err.value).splitlines()
    assert lines[0] == f"{path}, line 4, field age: must be a whole number of years (got 'old')"
    assert len(lines) == 11 and lines[-1] == "... and 4 more invalid record(s)"


def test_not_a_csv(tmp_path: Path) -> None:
    path = tmp_path / "binary.csv"
    path.write_bytes(b"patient_id,name\n\xff\xfe\x00bad")
    with pytest.raises(RecordError, match="not UTF-8"):
        load_patients(path)


def test_windows_line_ends_and_a_byte_order_mark_are_fine(tmp_path: Path) -> None:
    text = DATA.read_text(encoding="utf-8")
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    assert load_patients(path) == load_patients(DATA)


def test_joined_entries_show_where_each_entry_ends() -> None:
    from clinsum.records import joined

    plain = ("Hypertension", "Type 2 diabetes")
    assert joined(plain) == "Hypertension, Type 2 diabetes"
    with_comma = ("Fracture of bone, closed", "Asthma")
    assert joined(with_comma) == "Fracture of bone, closed; Asthma"
    assert joined(()) == ""
