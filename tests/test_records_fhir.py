"""FHIR R4 exports (issue 24): the mapping row by row on hand-made cases (`tests/fhir_cases.py`),
the public Synthea exports of `tests/data/fhir/` end to end, the id map, the cache, and what
the log says."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from clinsum.records import RecordError, cache, fhir, formats
from clinsum.records.fhirmap import MMOL_TO_MG_DL, assign_ids, strip_tag
from clinsum.records.model import BloodPressure, Patient

from . import fhir_cases

FHIR_DATA = Path(__file__).resolve().parent / "data" / "fhir"


@pytest.fixture
def edge(tmp_path: Path) -> Path:
    return fhir_cases.write(tmp_path / "edge")


@pytest.fixture
def bulk(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FHIR_DATA / "bulk", tmp_path / "bulk"))


@pytest.fixture
def bundles(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FHIR_DATA / "bundles", tmp_path / "bundles"))


def by_source(patients: Any) -> dict[str, Patient]:
    return {p.source_id: p for p in patients.values()}


def raw_resources(folder: Path) -> list[dict[str, Any]]:
    """Every resource of an export, read with json and gzip alone (not the code under test)."""
    out = []
    for f in sorted(folder.iterdir()):
        if f.name.endswith(".json"):
            out += [e["resource"] for e in json.loads(f.read_text())["entry"]]
        elif f.name.endswith(".ndjson.gz"):
            text = gzip.decompress(f.read_bytes()).decode()
            out += [json.loads(line) for line in text.splitlines() if line.strip()]
        elif f.name.endswith(".ndjson"):
            out += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return out


# --- The mapping, row by row -------------------------------------------------------------


def test_patient_name_is_kept_as_written_and_the_official_one(edge: Path) -> None:
    sumiko = by_source(fhir.load(edge).patients)["pat-sumiko"]
    assert sumiko.name == "Sumiko254 Medhurst46"  # not the nickname, digits kept
    assert sumiko.gender == "Female"


def test_age_is_counted_to_the_latest_encounter_or_to_death(edge: Path) -> None:
    patients = by_source(fhir.load(edge).patients)
    assert patients["pat-sumiko"].age == 60  # born 1960-05-01, export's latest 2021-03-05
    assert patients["pat-noenc"].age == 30  # born 1990-07-15, same reference date
    late = patients["pat-deceased"]
    assert (late.age, late.deceased) == (80, "2010-06-01")
    assert late.to_dict()["deceased"] == "2010-06-01"
    assert patients["pat-sumiko"].deceased is None


def test_conditions_active_resolved_and_dropped(edge: Path) -> None:
    sumiko = by_source(fhir.load(edge).patients)["pat-sumiko"]
    assert sumiko.medical_history == ("Essential hypertension",)  # tag set aside
    assert sumiko.past_history == ("Acute bronchitis (2019-02-01 to 2019-02-20)",)
    everything = json.dumps(sumiko.to_dict())
    assert "Diabetes" not in everything  # entered in error
    assert "Asthma" not in everything  # refuted


def test_semantic_tags_are_set_aside_but_other_parentheses_kept() -> None:
    assert strip_tag("Hypertension (disorder)") == "Hypertension"
    assert strip_tag("Body mass index 30+ - obesity (finding)") == "Body mass index 30+ - obesity"
    assert strip_tag("Diazepam [Valium]") == "Diazepam [Valium]"
    assert strip_tag("Lupus (SLE)") == "Lupus (SLE)"


def test_medications_current_per_visit_and_from_a_referenced_medication(edge: Path) -> None:
    sumiko = by_source(fhir.load(edge).patients)["pat-sumiko"]
    assert sumiko.current_medications == ("Lisinopril 10 MG Oral Tablet",)
    first, second = sumiko.visit_history
    assert first.medications == ("Lisinopril 10 MG Oral Tablet", "Metformin 500 MG Oral Tablet")
    assert second.medications == ("Lisinopril 10 MG Oral Tablet",)  # Metformin stopped
    assert "Warfarin" not in json.dumps(sumiko.to_dict())  # entered in error


def test_a_referenced_medication_is_read_and_a_missing_one_reported(edge: Path) -> None:
    (edge / "Medication.000.ndjson").unlink()
    notes = "\n".join(fhir.load(edge).notes)
    assert "MedicationRequest mr-amox: field medicationReference: Medication/med-amox" in notes


def test_blood_pressure_from_a_panel_and_from_separate_observations(edge: Path) -> None:
    sumiko = by_source(fhir.load(edge).patients)["pat-sumiko"]
    first, second = sumiko.visit_history
    assert first.bp == BloodPressure(150, 95)  # panel 85354-9
    assert second.bp == BloodPressure(138, 88)  # 8480-6 and 8462-4, the half panel unused
    assert sumiko.current_bp == BloodPressure(138, 88)  # not the 250/150 entered in error


def test_glucose_in_mmol_per_litre_is_converted(edge: Path) -> None:
    sumiko = by_source(fhir.load(edge).patients)["pat-sumiko"]
    first, second = sumiko.visit_history
    assert first.sugar == round(6.0 * MMOL_TO_MG_DL) == 108
    assert second.sugar == 99  # mg/dL, from the gzipped file
    assert sumiko.current_sugar == 99


def test_hba1c_is_shown_on_its_visit(edge: Path) -> None:
    first, second = by_source(fhir.load(edge).patients)["pat-sumiko"].visit_history
    assert first.extra == (("hba1c_percent", 6.1),)
    assert first.to_dict()["hba1c_percent"] == 6.1
    assert second.extra == ()


def test_an_encounter_is_a_visit_with_its_type_reason_and_new_conditions(edge: Path) -> None:
    first, second = by_source(fhir.load(edge).patients)["pat-sumiko"].visit_history
    assert (first.date, second.date) == ("2020-01-10", "2021-03-05")
    assert first.notes == (
        "Encounter for symptom; reason: Hypertension; diagnosed: Essential hypertension"
    )
    assert second.notes == "Follow-up visit"
    assert first.history == second.history == ("Essential hypertension",)


def test_no_risk_score_and_no_encounters_mean_none_not_zero(edge: Path) -> None:
    patients = by_source(fhir.load(edge).patients)
    for p in patients.values():
        assert p.risk_score is None and p.base_score is None
        assert all(v.risk_score is None and v.base_score is None for v in p.visit_history)
    nadia = patients["pat-noenc"]
    assert nadia.visit_history == ()
    assert (nadia.current_bp, nadia.current_sugar) == (None, None)
    assert nadia.to_dict()["current_bp"] is None


def test_fetch_shows_the_source_id(edge: Path) -> None:
    patients = fhir.load(edge).patients
    assert {p.to_dict()["source_id"] for p in patients.values()} == {
        "pat-sumiko", "pat-deceased", "pat-noenc"
    }  # fmt: skip


# --- What the log says --------------------------------------------------------------------


def test_the_notes_count_each_type_and_each_skip_with_file_line_type_id_field(edge: Path) -> None:
    notes = fhir.load(edge).notes
    text = "\n".join(notes)
    assert notes[0].startswith("FHIR R4: 27 resources in 7 file(s): Condition 5, Encounter 3,")
    assert "Observation 10, Patient 4; 3 patients loaded" in notes[0]
    for expected in [
        "Observation.000.ndjson, line 7: Observation obs-bp-half: field component: BP panel "
        "without a diastolic value",
        "Observation.000.ndjson, line 9: Observation obs-glu-bad: field valueQuantity.value: "
        "not valid FHIR R4",
        "Observation.000.ndjson, line 10: (unreadable) (no id): not JSON (cut short?)",
        "Patient.000.ndjson, line 4: Patient pat-bad: field gender: 'm' is not a FHIR gender",
        "Condition.000.ndjson, line 5: Condition cond-ghost: field subject: Patient/ghost is not "
        "in the export",
        "not used: Condition: verificationStatus entered-in-error (1)",
        "not used: Condition: verificationStatus refuted (1)",
        "not used: Observation: status entered-in-error (1)",
        "not used: MedicationRequest: status entered-in-error (1)",
        "not used: Observation: not a blood pressure, glucose or HbA1c (1)",
    ]:
        assert expected in text


def test_types_not_mapped_are_counted_not_dropped_silently(bulk: Path) -> None:
    notes = fhir.load(bulk).notes
    assert "not read (types this loader does not map): Immunization 41, Procedure 16" in notes


def test_an_invalid_resource_of_a_used_type_is_reported_with_its_field(edge: Path) -> None:
    line = json.loads((edge / "Encounter.000.ndjson").read_text().splitlines()[1])
    line["period"]["start"] = "5 March 2021"
    with (edge / "Encounter.000.ndjson").open("a") as f:
        f.write(json.dumps({**line, "id": "enc-bad"}) + "\n")
    text = "\n".join(fhir.load(edge).notes)
    assert "Encounter.000.ndjson, line 4: Encounter enc-bad: field period.start: not valid" in text


# --- Files that are not FHIR, and large or cut lines --------------------------------------


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("notes.ndjson", b"hello\n"),
        ("data.ndjson", b'{"a": 1}\n'),
        ("bundle.json", b'{"entry": []}'),
        ("broken.json", b'{"resourceType": "Bundle", '),
        ("data.ndjson.gz", b"not gzip at all"),
    ],
)
def test_a_file_that_is_not_fhir_is_one_clear_error_naming_it(
    tmp_path: Path, name: str, body: bytes
) -> None:
    path = tmp_path / name
    path.write_bytes(body)
    with pytest.raises(RecordError, match=rf"{name}: not a FHIR R4 file"):
        formats.load(path)
    folder = shutil.copytree(FHIR_DATA / "bundles", tmp_path / "folder")
    shutil.copy(path, folder / name)
    with pytest.raises(RecordError, match=rf"{name}: not a FHIR R4 file"):
        formats.load(folder)


def test_a_folder_without_fhir_files_and_other_files_in_one(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecordError, match="no FHIR files in this folder"):
        fhir.load(tmp_path / "empty")
    folder = shutil.copytree(FHIR_DATA / "bundles", tmp_path / "b")
    (folder / "README.txt").write_text("about this export")
    assert "ignored 1 file(s) that are not FHIR: README.txt" in fhir.load(folder).notes


def test_a_5_mb_line_is_read(edge: Path) -> None:
    """A resource on one 5 MB line (a Patient with a large photo) loads like any other."""
    big = json.loads((edge / "Patient.000.ndjson").read_text().splitlines()[2])
    big["photo"] = [{"contentType": "image/png", "data": "QUJD" * (5 * 2**20 // 4)}]
    with (edge / "Patient.000.ndjson").open("a") as f:
        f.write(json.dumps({**big, "id": "pat-big"}) + "\n")
    assert (edge / "Patient.000.ndjson").stat().st_size > 5 * 2**20
    assert "pat-big" in by_source(fhir.load(edge).patients)


def test_a_gzip_file_cut_short_keeps_what_it_held_and_says_so(edge: Path) -> None:
    whole = gzip.compress(
        b"".join(b'{"resourceType":"Procedure","id":"p%d"}\n' % i for i in range(9999))
    )
    (edge / "Procedure.000.ndjson.gz").write_bytes(whole[: len(whole) - 20])
    loaded = fhir.load(edge)
    text = "\n".join(loaded.notes)
    assert "Procedure.000.ndjson.gz, after line" in text and "gzip stream ends early" in text
    assert len(loaded.patients) == 3


# --- The public Synthea exports -----------------------------------------------------------


def test_the_synthea_bulk_export_loads(bulk: Path) -> None:
    loaded = formats.load(bulk)
    assert loaded.kind == "a FHIR R4 Bulk Data export (NDJSON)"
    raw = raw_resources(bulk)
    fhir_patients = {r["id"] for r in raw if r["resourceType"] == "Patient"}
    assert set(by_source(loaded.patients)) == fhir_patients and len(fhir_patients) == 8
    observations = sum(r["resourceType"] == "Observation" for r in raw)
    assert f"Observation {observations}" in loaded.notes[0]  # both files, one gzipped
    assert not any(n.startswith("skipped") for n in loaded.notes)
    for p in loaded.patients.values():
        assert p.visit_history and p.current_bp is not None  # Synthea measures BP each visit


def test_a_folder_of_synthea_bundles_loads(bundles: Path) -> None:
    loaded = formats.load(bundles)
    assert loaded.kind == "a folder of FHIR R4 Bundles"
    patients = by_source(loaded.patients)
    assert len(patients) == 3
    deceased = [p for p in patients.values() if p.deceased]
    assert [p.name for p in deceased] == ["Garrett Thompson"]
    assert any(v.sugar for p in patients.values() for v in p.visit_history)
    assert any(v.extra for p in patients.values() for v in p.visit_history)  # HbA1c
    assert not any(n.startswith("skipped") for n in loaded.notes)


def test_one_bundle_file_loads(bundles: Path) -> None:
    one = next(bundles.glob("Liz_Conn_*.json"))
    loaded = formats.load(one)
    assert loaded.kind == "a FHIR R4 Bundle"
    assert [p.name for p in loaded.patients.values()] == ["Liz Conn"]


@pytest.mark.parametrize("export", ["bulk", "bundles"])
def test_hypertension_patients_are_exactly_those_whose_conditions_say_so(
    export: str, request: pytest.FixtureRequest
) -> None:
    """Truth from the raw JSON: an active, not refuted or erroneous Condition naming
    hypertension. The loader must agree, patient for patient."""
    folder = request.getfixturevalue(export)
    truth = set()
    for r in raw_resources(folder):
        if r["resourceType"] != "Condition":
            continue
        words = json.dumps(r["code"]).lower()
        clinical = r.get("clinicalStatus", {}).get("coding", [{}])[0].get("code")
        verified = r.get("verificationStatus", {}).get("coding", [{}])[0].get("code")
        if "hypertension" in words and clinical == "active" and verified == "confirmed":
            truth.add(r["subject"]["reference"].rsplit("/", 1)[-1].removeprefix("urn:uuid:"))
    loaded = fhir.load(folder).patients.values()
    found = {p.source_id for p in loaded if any("ypertension" in c for c in p.medical_history)}
    assert found == truth and truth


# --- The id map ---------------------------------------------------------------------------


def test_ids_stay_when_the_export_grows_with_a_patient_sorted_first(bulk: Path) -> None:
    first = {p.source_id: pid for pid, p in cache.load(bulk).patients.items()}
    assert sorted(first.values()) == list(range(1, 9))
    assert first == dict(zip(sorted(first), range(1, 9), strict=True))  # FHIR id order
    ids_file = fhir.ids_path(bulk)
    assert stat.S_IMODE(ids_file.stat().st_mode) == 0o600
    newcomer = json.loads((bulk / "Patient.000.ndjson").read_text().splitlines()[0])
    newcomer["id"] = "000-newcomer"  # sorts before every Synthea uuid
    with (bulk / "Patient.000.ndjson").open("a") as f:
        f.write(json.dumps(newcomer) + "\n")
    second = {p.source_id: pid for pid, p in cache.load(bulk).patients.items()}
    assert {k: second[k] for k in first} == first
    assert second["000-newcomer"] == 9
    # The newcomer leaves again: the others keep theirs, and 9 is not given to anyone else.
    lines = (bulk / "Patient.000.ndjson").read_text().splitlines()[:-1]
    (bulk / "Patient.000.ndjson").write_text("\n".join(lines) + "\n")
    third = {p.source_id: pid for pid, p in cache.load(bulk).patients.items()}
    assert third == first
    assert json.loads(ids_file.read_text())["ids"]["000-newcomer"] == 9


def test_assign_ids_never_moves_or_reuses_an_int() -> None:
    assert assign_ids({}, ["b", "a"]) == {"a": 1, "b": 2}
    assert assign_ids({"b": 1, "z": 7}, ["a", "b", "c"]) == {"b": 1, "z": 7, "a": 8, "c": 9}


def test_an_id_map_that_cannot_be_written_fails_the_load_naming_it(
    bulk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fhir.os, "open", refuse)  # as a read-only folder would (we run as root)
    with pytest.raises(RecordError, match=r"cannot write the patient id map .*bulk\.ids\.json"):
        fhir.load(bulk)


def test_a_damaged_id_map_is_an_error_not_a_renumbering(bulk: Path) -> None:
    fhir.load(bulk)
    fhir.ids_path(bulk).write_text('{"version": 1, "ids": {"x": "one"}}')
    with pytest.raises(RecordError, match="Restore it from a backup"):
        fhir.load(bulk)


# --- The records cache --------------------------------------------------------------------


def test_the_cache_serves_an_unchanged_export_and_not_a_changed_one(
    bulk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    real = fhir.load

    def counting(path: Path) -> Any:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(fhir, "load", counting)
    first = cache.load(bulk)
    again = cache.load(bulk)
    assert len(calls) == 1 and again.patients == first.patients and again.notes == first.notes
    assert cache.cache_path(bulk).exists()
    (bulk / "Condition.000.ndjson").write_text(
        (bulk / "Condition.000.ndjson").read_text().replace("Hypertension", "Hypertensio")
    )
    cache.load(bulk)
    assert len(calls) == 2
    os.remove(fhir.ids_path(bulk))  # the map gone: the ints may differ, so no cached rows
    cache.load(bulk)
    assert len(calls) == 3
