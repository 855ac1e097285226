"""Hand-made FHIR R4 edge cases, built with fhir.resources' R4B classes, written as a Bulk Data
export for `tests/test_records_fhir.py` (which writes them into its tmp_path; nothing large is
committed). Every resource is valid R4 unless its comment says otherwise.

    python -m tests.fhir_cases OUT_FOLDER     # to look at them

Three patients and one reference to a patient the export does not have:
- `pat-sumiko`: a Synthea-style name with digits, kept as written; two encounters.
  - `enc-1` (2020-01-10): a BP panel 150/95 (LOINC 85354-9), glucose 6.0 mmol/L (2339-0,
    108 mg/dL), HbA1c 6.1 % (4548-4), a new "Essential hypertension (disorder)", Lisinopril
    (active) and Metformin (stopped) written at it.
  - `enc-2` (2021-03-05): separate systolic 138 and diastolic 88 observations, glucose 99
    mg/dL (2345-7), a BP panel with no diastolic (not used, reported), a BP panel of 250/150
    entered in error (dropped), a glucose whose value is not a number (invalid, reported).
  - a resolved "Acute bronchitis (disorder)" (2019-02-01 to 2019-02-20); "Diabetes mellitus
    type 2 (disorder)" entered in error and "Asthma (disorder)" refuted (both dropped);
    Amoxicillin, completed in 2019, through a referenced Medication; a request entered in
    error (dropped).
- `pat-deceased`: died 2010-06-01 at 80, one encounter in 2009.
- `pat-noenc`: no encounters: no visits, no vitals.
- a Condition of `Patient/ghost` (reported, skipped); a Patient with gender "m" (invalid).
- the last line of Observation.000.ndjson is cut short (reported with its line number).
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path
from typing import Any

from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"


def _loinc(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display}


def _snomed(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": SNOMED, "code": code, "display": display}]}


def _qty(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _obs(oid: str, enc: str | None, when: str, code: dict[str, Any], **more: Any) -> Observation:
    fields: dict[str, Any] = {
        "id": oid,
        "status": more.pop("status", "final"),
        "code": code,
        "subject": {"reference": "Patient/pat-sumiko"},
        "effectiveDateTime": when,
        **more,
    }
    if enc:
        fields["encounter"] = {"reference": f"Encounter/{enc}"}
    return Observation(**fields)


def _bp_panel(oid: str, enc: str, when: str, sys_: float | None, dia: float | None, **more: Any):
    components = []
    if sys_ is not None:
        components.append({"code": _loinc("8480-6", "Systolic Blood Pressure"),
                           "valueQuantity": _qty(sys_, "mm[Hg]")})  # fmt: skip
    if dia is not None:
        components.append({"code": _loinc("8462-4", "Diastolic Blood Pressure"),
                           "valueQuantity": _qty(dia, "mm[Hg]")})  # fmt: skip
    return _obs(oid, enc, when, _loinc("85354-9", "Blood pressure panel"),
                component=components, **more)  # fmt: skip


def _condition(cid: str, text: str, clinical: str | None, verification: str, **more: Any):
    fields: dict[str, Any] = {
        "id": cid,
        "verificationStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
            "code": verification}]},
        "code": _snomed("0", text),
        "subject": {"reference": more.pop("subject", "Patient/pat-sumiko")},
        **more,
    }  # fmt: skip
    if clinical:
        fields["clinicalStatus"] = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
            "code": clinical}]}  # fmt: skip
    return Condition(**fields)


def _request(mid: str, status: str, written: str, enc: str | None, **medication: Any):
    fields: dict[str, Any] = {
        "id": mid,
        "status": status,
        "intent": "order",
        "subject": {"reference": "Patient/pat-sumiko"},
        "authoredOn": written,
        **medication,
    }
    if enc:
        fields["encounter"] = {"reference": f"Encounter/{enc}"}
    return MedicationRequest(**fields)


def resources() -> dict[str, list[Any]]:
    """The resources by the file they go in; a str is a line written as it is."""
    official = {"use": "official", "given": ["Sumiko254"], "family": "Medhurst46"}
    patients = [
        Patient(id="pat-sumiko", gender="female", birthDate="1960-05-01",
                name=[{"use": "nickname", "given": ["Sue"]}, official]),
        Patient(id="pat-deceased", gender="male", birthDate="1930-01-01",
                deceasedDateTime="2010-06-01T10:00:00+00:00",
                name=[{"given": ["Oskar"], "family": "Late"}]),
        Patient(id="pat-noenc", gender="female", birthDate="1990-07-15",
                name=[{"given": ["Nadia"], "family": "Noenc"}]),
    ]  # fmt: skip
    # fhir.resources checks no code bindings: "m" is not a FHIR gender, and the loader says so.
    bad_patient = patients[2].model_dump_json().replace('"pat-noenc"', '"pat-bad"')
    bad_patient = bad_patient.replace('"female"', '"m"')
    encounters = [
        Encounter(id="enc-1", status="finished", subject={"reference": "Patient/pat-sumiko"},
                  **{"class": {"code": "AMB"}},
                  type=[_snomed("185345009", "Encounter for symptom (procedure)")],
                  reasonCode=[_snomed("38341003", "Hypertension (disorder)")],
                  period={"start": "2020-01-10T09:00:00+00:00",
                          "end": "2020-01-10T09:30:00+00:00"}),
        Encounter(id="enc-2", status="finished", subject={"reference": "Patient/pat-sumiko"},
                  **{"class": {"code": "AMB"}},
                  type=[{"text": "Follow-up visit"}],
                  period={"start": "2021-03-05T09:00:00+00:00"}),
        Encounter(id="enc-old", status="finished", subject={"reference": "Patient/pat-deceased"},
                  **{"class": {"code": "AMB"}}, period={"start": "2009-12-01T09:00:00+00:00"}),
    ]  # fmt: skip
    conditions = [
        _condition("cond-htn", "Essential hypertension (disorder)", "active", "confirmed",
                   encounter={"reference": "Encounter/enc-1"},
                   onsetDateTime="2020-01-10T09:00:00+00:00"),
        _condition("cond-bronchitis", "Acute bronchitis (disorder)", "resolved", "confirmed",
                   onsetDateTime="2019-02-01", abatementDateTime="2019-02-20"),
        _condition("cond-error", "Diabetes mellitus type 2 (disorder)", "active",
                   "entered-in-error", onsetDateTime="2020-01-10"),
        _condition("cond-refuted", "Asthma (disorder)", None, "refuted"),
        _condition("cond-ghost", "Hypertension (disorder)", "active", "confirmed",
                   subject="Patient/ghost"),
    ]  # fmt: skip
    day1, day2 = "2020-01-10T09:10:00+00:00", "2021-03-05T09:10:00+00:00"
    observations = [
        _bp_panel("obs-bp-1", "enc-1", day1, 150, 95),
        _obs("obs-glu-1", "enc-1", day1, _loinc("2339-0", "Glucose"),
             valueQuantity=_qty(6.0, "mmol/L")),
        _obs("obs-a1c-1", "enc-1", day1, _loinc("4548-4", "Hemoglobin A1c"),
             valueQuantity=_qty(6.1, "%")),
        _obs("obs-pain", "enc-1", day1, _loinc("72514-3", "Pain severity"),
             valueQuantity=_qty(4, "{score}")),
        _obs("obs-sys-2", "enc-2", day2, _loinc("8480-6", "Systolic Blood Pressure"),
             valueQuantity=_qty(138, "mm[Hg]")),
        _obs("obs-dia-2", "enc-2", day2, _loinc("8462-4", "Diastolic Blood Pressure"),
             valueQuantity=_qty(88, "mm[Hg]")),
        _bp_panel("obs-bp-half", "enc-2", "2021-03-05T09:20:00+00:00", 200, None),
        _bp_panel("obs-bp-error", "enc-2", "2021-03-05T09:30:00+00:00", 250, 150,
                  status="entered-in-error"),
    ]  # fmt: skip
    # Not valid R4: a decimal written as a string (fhir.resources refuses it).
    bad_glucose = _obs("obs-glu-bad", "enc-2", day2, _loinc("2339-0", "Glucose"),
                       valueQuantity=_qty(5.0, "mmol/L")).model_dump_json()  # fmt: skip
    bad_glucose = bad_glucose.replace('"value":5.0', '"value":"abc"')
    gz_observations = [
        _obs("obs-glu-2", "enc-2", day2, _loinc("2345-7", "Glucose [Mass/volume] in Serum"),
             valueQuantity=_qty(99, "mg/dL")),
    ]  # fmt: skip
    medications = [
        Medication(id="med-amox", code={"text": "Amoxicillin 500 MG Oral Capsule"}),
    ]
    requests = [
        _request("mr-lisinopril", "active", "2020-01-10", "enc-1",
                 medicationCodeableConcept={"text": "Lisinopril 10 MG Oral Tablet"}),
        _request("mr-metformin", "stopped", "2020-01-10", "enc-1",
                 medicationCodeableConcept={"text": "Metformin 500 MG Oral Tablet"}),
        _request("mr-amox", "completed", "2019-02-01", None,
                 medicationReference={"reference": "Medication/med-amox"}),
        _request("mr-error", "entered-in-error", "2020-01-10", "enc-1",
                 medicationCodeableConcept={"text": "Warfarin 5 MG Oral Tablet"}),
    ]  # fmt: skip
    cut = observations[-1].model_dump_json()
    return {
        "Patient.000.ndjson": [*patients, bad_patient],
        "Encounter.000.ndjson": encounters,
        "Condition.000.ndjson": conditions,
        "Observation.000.ndjson": [*observations, bad_glucose, cut[: len(cut) // 2]],
        "Observation.001.ndjson.gz": gz_observations,
        "Medication.000.ndjson": medications,
        "MedicationRequest.000.ndjson": requests,
    }


def write(folder: Path) -> Path:
    """The edge cases as a Bulk Data export in `folder` (created); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, items in resources().items():
        text = "".join((i if isinstance(i, str) else i.model_dump_json()) + "\n" for i in items)
        if name.endswith(".gz"):
            (folder / name).write_bytes(gzip.compress(text.encode(), mtime=0))
        else:
            (folder / name).write_text(text.rstrip("\n") if "Observation.000" in name else text)
    return folder


if __name__ == "__main__":
    print(write(Path(sys.argv[1])))
