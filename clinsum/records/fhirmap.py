"""FHIR R4 resources to typed patients: the rules of `records.fhir`, with no I/O.

Rule 1: every decision about a resource lives here: whether it is read, validated, used,
dropped or reported, and what it becomes. Rule 2: this file does not know where resources
come from (a Bulk NDJSON line, a Bundle entry); the shell hands each one in as a dict with a
`where` ("Observation.000.ndjson, line 12") and reads the result.

    collector = Collector()
    for where, resource in ...:            # records.fhir streams them
        collector.add(resource, where)
    export = collector.finish(ids)          # ids: FHIR Patient id -> our int (`assign_ids`)

Validation is `fhir.resources`' R4B classes (the package has no R4 one since 7.x; R4B
changes nothing in the six resources read here), plus the required code bindings that package
leaves unchecked (a `status` of "bogus" passes it). What is validated is what is used: each
resource as this module reads it, its id and the elements of `USED_ELEMENTS`, through the
resource's own class (so datatypes, cardinalities and required elements such as `status`,
`intent`, `subject` or `medication[x]` are checked). Elements never read (identifiers,
participants, narrative, extensions), resource types we do not map, and Observations that are
not a blood pressure, a glucose or an HbA1c (about nine in ten) are parsed and counted, not
validated: whole-resource validation ran at 5,000-9,000 resources/s on one core, two to
three times slower, for values nobody reads (bench/fhir_load.md).

Mapping (README "Patient data" has the table):
- Patient: official name as written (given + family, Synthea's digits kept); gender;
  age from birthDate to the date of death, else to the export's latest encounter (the
  export's "today", as `clinsum.synthea` counts it); `deceased` the date of death, or
  "date not recorded" for `deceasedBoolean: true`.
- Condition: `code.text`, else the first coding's display, the SNOMED semantic tag
  ("(disorder)") set aside; clinicalStatus active, recurrence, relapse -> `medical_history`;
  resolved, inactive, remission -> `past_history` as "name (onset to abatement)"; no
  clinicalStatus: past if it has an abatement, else current. verificationStatus
  entered-in-error and refuted are dropped.
- MedicationRequest: the medication's text (CodeableConcept, contained or referenced
  Medication); active ones are `current_medications`. A visit's `medications` are the
  requests active on its date: written on or before it, and either active or (stopped,
  completed) still within their end date (validity or dosage bounds period); without an
  end date a stopped or completed request counts at the visit it was written at only,
  since FHIR does not say when it ended.
- Observation: BP from a panel (LOINC 85354-9, or Synthea 2.x's 55284-4) with components
  8480-6 and 8462-4, or from separate 8480-6 and 8462-4 observations; glucose 2339-0,
  2345-7, 41653-7 in mg/dL, mmol/L times 18.016; HbA1c 4548-4 as the visit's
  ("hba1c_percent", value). status entered-in-error is dropped.
- Encounter: one visit per encounter (entered-in-error, cancelled, planned are not visits),
  dated by `period.start`; its observations, prescriptions and new conditions are those
  that reference it (an observation without one joins the patient's encounter of that
  day); its type and reason are the visit's note, with "diagnosed: ..." for its new
  conditions. The patient's current BP and glucose are the latest recorded; None when
  never recorded. FHIR has no risk score: `base_score` and `risk_score` are None.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient as FhirPatient

from .model import AGE_RANGE, SUGAR_RANGE, BloodPressure, Patient, Visit

# The types read, each validated with its R4B class.
CLASSES: dict[str, type[pydantic.BaseModel]] = {
    "Patient": FhirPatient,
    "Encounter": Encounter,
    "Condition": Condition,
    "Observation": Observation,
    "MedicationRequest": MedicationRequest,
    "Medication": Medication,
}
# The elements read of each type: what is validated (see the module docstring).
USED_ELEMENTS: dict[str, tuple[str, ...]] = {
    "Patient": ("name", "gender", "birthDate", "deceasedBoolean", "deceasedDateTime"),
    "Encounter": ("status", "class", "subject", "period", "type", "reasonCode"),
    "Condition": (
        "clinicalStatus",
        "verificationStatus",
        "code",
        "subject",
        "encounter",
        "onsetDateTime",
        "onsetPeriod",
        "abatementDateTime",
        "abatementPeriod",
    ),
    "Observation": (
        "status",
        "code",
        "subject",
        "encounter",
        "effectiveDateTime",
        "effectivePeriod",
        "effectiveInstant",
        "issued",
        "valueQuantity",
        "component",
    ),
    "MedicationRequest": (
        "status",
        "intent",
        "subject",
        "encounter",
        "medicationCodeableConcept",
        "medicationReference",
        "authoredOn",
        "dispenseRequest",
        "dosageInstruction",
        "contained",
    ),
    "Medication": ("code",),
}
LOINC = "http://loinc.org"
SYSTOLIC, DIASTOLIC = "8480-6", "8462-4"
BP_PANELS = frozenset({"85354-9", "55284-4"})  # 55284-4: the panel Synthea 2.x writes
GLUCOSE = frozenset({"2339-0", "2345-7", "41653-7"})
HBA1C = "4548-4"
USED_CODES = BP_PANELS | GLUCOSE | {SYSTOLIC, DIASTOLIC, HBA1C}
MMOL_TO_MG_DL = 18.016  # glucose, mmol/L -> mg/dL (molar mass 180.16 g/mol)

# Required bindings of the fields read (hl7.org/fhir/R4 value sets), which fhir.resources
# does not check.
GENDERS = {"male": "Male", "female": "Female", "other": "Other", "unknown": "Unknown"}
OBSERVATION_STATUS = frozenset(
    {
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    }
)
ENCOUNTER_STATUS = frozenset(
    {
        "planned",
        "arrived",
        "triaged",
        "in-progress",
        "onleave",
        "finished",
        "cancelled",
        "entered-in-error",
        "unknown",
    }
)
MEDICATION_STATUS = frozenset(
    {
        "active",
        "on-hold",
        "cancelled",
        "completed",
        "entered-in-error",
        "stopped",
        "draft",
        "unknown",
    }
)
CURRENT_CONDITION = frozenset({"active", "recurrence", "relapse"})
PAST_CONDITION = frozenset({"inactive", "remission", "resolved"})
DROPPED_VERIFICATION = frozenset({"entered-in-error", "refuted"})
NOT_A_VISIT = frozenset({"entered-in-error", "cancelled", "planned"})
USED_MEDICATION = frozenset({"active", "stopped", "completed"})

NO_NAME = "(no name recorded)"
DEATH_DATE_NOT_RECORDED = "date not recorded"
MAX_SKIPS_SHOWN = 20

# SNOMED CT semantic tags, as Synthea and most servers append them to a display.
_SEMANTIC_TAG = re.compile(
    r"\s*\((?:disorder|finding|situation|procedure|event|observable entity|"
    r"morphologic abnormality|body structure|qualifier value|regime/therapy|substance|"
    r"person|navigational concept|record artifact|physical object|social concept)\)\s*$"
)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True, slots=True)
class Skip:
    """One resource not used, and why: what the log says about it."""

    where: str  # "Observation.000.ndjson, line 12" or "bundle.json, entry 40"
    rtype: str
    rid: str
    field: str  # the field at fault ("" when the whole resource is)
    why: str

    def __str__(self) -> str:
        at = f" field {self.field}:" if self.field else ""
        return f"{self.where}: {self.rtype} {self.rid or '(no id)'}:{at} {self.why}"


@dataclass(slots=True)
class _Person:
    fid: str
    name: str
    gender: str
    birth: str | None
    deceased: str | None  # a date, DEATH_DATE_NOT_RECORDED, or None


@dataclass(slots=True)
class _Encounter:
    patient: str
    date: str
    start: str  # the whole period.start, for order within a day
    note: str


@dataclass(slots=True)
class _Condition:
    where: str
    rid: str
    patient: str
    encounter: str | None
    name: str
    current: bool
    onset: str | None
    abatement: str | None


@dataclass(slots=True)
class _Prescription:
    where: str
    rid: str
    patient: str
    encounter: str | None
    text: str | None
    medication: str | None  # a Medication id to resolve when `text` is None
    status: str
    written: str | None
    end: str | None


@dataclass(slots=True)
class _Reading:
    where: str
    rid: str
    patient: str
    encounter: str | None
    date: str
    time: str
    kind: str  # "sys", "dia", "sugar", "hba1c"
    value: float


@dataclass
class Export:
    """What `Collector.finish` makes: the patients, and what the log says once."""

    patients: dict[int, Patient]
    read: Counter[str]  # resources read, by type
    not_read: Counter[str]  # resources of types not mapped, by type
    unused: Counter[str]  # read but not used, by reason ("Observation: not BP, ...")
    skips: list[Skip]  # invalid or unattached resources, each with where and why

    def notes(self, files: int) -> list[str]:
        total = sum(self.read.values()) + sum(self.not_read.values())
        out = [
            f"FHIR R4: {total:,} resources in {files} file(s): "
            + ", ".join(f"{t} {n:,}" for t, n in sorted(self.read.items()))
            + f"; {len(self.patients):,} patients loaded"
        ]
        if self.not_read:
            out.append(
                "not read (types this loader does not map): "
                + ", ".join(f"{t} {n:,}" for t, n in sorted(self.not_read.items()))
            )
        out += [f"not used: {why} ({n:,})" for why, n in sorted(self.unused.items())]
        if self.skips:
            out.append(f"skipped {len(self.skips):,} resource(s); each with file, line and why:")
            out += [f"skipped: {s}" for s in self.skips[:MAX_SKIPS_SHOWN]]
            if len(self.skips) > MAX_SKIPS_SHOWN:
                out.append(f"skipped: ... and {len(self.skips) - MAX_SKIPS_SHOWN:,} more")
        return out


def strip_tag(text: str) -> str:
    """ "Hypertension (disorder)" -> "Hypertension"; other parentheses are kept."""
    return _SEMANTIC_TAG.sub("", text).strip()


def _concept_text(concept: Any) -> str | None:
    """A CodeableConcept's words: its text, else its first coding's display, tag set aside."""
    if not isinstance(concept, dict):
        return None
    text = concept.get("text")
    if not text:
        codings = concept.get("coding") or []
        text = codings[0].get("display") if codings else None
    return strip_tag(text) if text else None


def _codes(concept: Any) -> list[str]:
    if not isinstance(concept, dict):
        return []
    return [
        c.get("code", "")
        for c in concept.get("coding") or []
        if isinstance(c, dict) and c.get("system", LOINC) == LOINC
    ]


def _number(value: Any) -> float | None:
    return None if isinstance(value, bool) or not isinstance(value, int | float) else value


def _status(concept: Any) -> str | None:
    """The code of a status CodeableConcept (Condition's clinical and verification status)."""
    codes = [c.get("code") for c in (concept or {}).get("coding") or [] if c.get("code")]
    return codes[0] if codes else None


def _date(value: Any) -> str | None:
    """The YYYY-MM-DD of a FHIR dateTime, as written (local date); None if partial or absent."""
    if isinstance(value, str) and _DATE.match(value):
        return value[:10]
    return None


def ref_id(ref: Any, rtype: str) -> str | None:
    """The id a Reference points to: "Patient/X", "urn:uuid:X", a full URL ending in
    "Patient/X" (its `_history` part dropped); None when it names another type."""
    target = ref.get("reference") if isinstance(ref, dict) else None
    if not isinstance(target, str) or not target:
        return None
    if target.startswith("urn:uuid:"):
        return target.removeprefix("urn:uuid:")
    parts = target.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == rtype:
        return parts[-1]
    return None


def _age(birth: str | None, until: str | None) -> int:
    """Whole years from birthDate ("1970", "1970-04", "1970-04-02") to `until`."""
    if not birth or not until:
        return 0
    parts = [int(p) for p in birth.split("-")]
    born = dt.date(parts[0], parts[1] if len(parts) > 1 else 1, parts[2] if len(parts) > 2 else 1)
    day = dt.date.fromisoformat(until)
    years = day.year - born.year - ((day.month, day.day) < (born.month, born.day))
    lo, hi = AGE_RANGE
    return min(max(years, lo), hi)


def _invalid(exc: pydantic.ValidationError) -> tuple[str, str]:
    """The first error of a validation as (field, message)."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return loc, str(err["msg"]).removeprefix("Value error, ").splitlines()[0]


class Collector:
    """Takes resources one at a time, keeps what it will use as small records, and turns
    them into patients at the end (`finish`): a Bulk export's Conditions may come before
    its Patients, so nothing is attached until everything is read."""

    def __init__(self) -> None:
        self.read: Counter[str] = Counter()
        self.not_read: Counter[str] = Counter()
        self.unused: Counter[str] = Counter()
        self.skips: list[Skip] = []
        self._people: dict[str, _Person] = {}
        self._encounters: dict[str, _Encounter] = {}
        self._conditions: list[_Condition] = []
        self._prescriptions: list[_Prescription] = []
        self._readings: list[_Reading] = []
        self._medications: dict[str, str] = {}
        self._where: dict[tuple[str, str], str] = {}  # (type, id) -> where, for reports

    def skip(self, where: str, rtype: str, rid: str, fld: str, why: str) -> None:
        self.skips.append(Skip(where, rtype, rid, fld, why))

    def add(self, resource: dict[str, Any], where: str) -> None:
        """One resource, from `where`. Never raises for what the resource holds: a bad one
        becomes a `Skip`."""
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str):
            self.skip(where, "(no resourceType)", "", "resourceType", "not a FHIR resource")
            return
        if rtype not in CLASSES:
            self.not_read[rtype] += 1
            return
        self.read[rtype] += 1
        rid = resource.get("id") if isinstance(resource.get("id"), str) else ""
        if rtype == "Observation" and not any(
            c in USED_CODES for c in _codes(resource.get("code"))
        ):
            self.unused["Observation: not a blood pressure, glucose or HbA1c"] += 1
            return
        used = {
            k: resource[k] for k in ("resourceType", "id", *USED_ELEMENTS[rtype]) if k in resource
        }
        try:
            CLASSES[rtype].model_validate(used)
        except pydantic.ValidationError as exc:
            fld, why = _invalid(exc)
            self.skip(where, rtype, rid, fld, f"not valid FHIR R4: {why}")
            return
        except (ValueError, TypeError) as exc:  # fhir.resources' own checks
            self.skip(where, rtype, rid, "", f"not valid FHIR R4: {exc}")
            return
        getattr(self, f"_{rtype.lower()}")(resource, where, rid)

    # One method per type read: checks the bindings fhir.resources leaves, then keeps
    # what is used.

    def _patient(self, r: dict[str, Any], where: str, rid: str) -> None:
        gender = r.get("gender", "unknown")
        if gender not in GENDERS:
            self.skip(where, "Patient", rid, "gender", f"{gender!r} is not a FHIR gender code")
            return
        if not rid:
            self.skip(where, "Patient", rid, "id", "a Patient without an id cannot be referenced")
            return
        if rid in self._people:
            first = self._where[("Patient", rid)]
            self.skip(where, "Patient", rid, "id", f"the same id as the Patient at {first}")
            return
        names = [n for n in r.get("name") or [] if isinstance(n, dict)]
        official = next((n for n in names if n.get("use") == "official"), None)
        chosen = official or (names[0] if names else {})
        name = " ".join([*chosen.get("given", []), chosen.get("family", "")]).strip()
        deceased = _date(r.get("deceasedDateTime")) or (
            DEATH_DATE_NOT_RECORDED
            if r.get("deceasedBoolean") is True or "deceasedDateTime" in r
            else None
        )
        birth = r.get("birthDate")
        self._people[rid] = _Person(
            rid, name or chosen.get("text") or NO_NAME, GENDERS[gender], birth, deceased
        )
        self._where[("Patient", rid)] = where

    def _encounter(self, r: dict[str, Any], where: str, rid: str) -> None:
        status = r.get("status")
        if status not in ENCOUNTER_STATUS:
            self.skip(where, "Encounter", rid, "status", f"{status!r} is not an encounter status")
            return
        if status in NOT_A_VISIT:
            self.unused[f"Encounter: status {status}"] += 1
            return
        patient = ref_id(r.get("subject"), "Patient")
        start = (r.get("period") or {}).get("start")
        date = _date(start)
        if patient is None:
            self.skip(where, "Encounter", rid, "subject", "no reference to a Patient")
        elif date is None:
            self.skip(where, "Encounter", rid, "period.start", "no full date: not a visit")
        else:
            kind = next(filter(None, map(_concept_text, r.get("type") or [])), "Encounter")
            reasons = [t for t in map(_concept_text, r.get("reasonCode") or []) if t]
            note = kind + (f"; reason: {', '.join(reasons)}" if reasons else "")
            self._encounters[rid] = _Encounter(patient, date, start, note)
            self._where[("Encounter", rid)] = where

    def _condition(self, r: dict[str, Any], where: str, rid: str) -> None:
        verification = _status(r.get("verificationStatus"))
        if verification in DROPPED_VERIFICATION:
            self.unused[f"Condition: verificationStatus {verification}"] += 1
            return
        clinical = _status(r.get("clinicalStatus"))
        if clinical is not None and clinical not in CURRENT_CONDITION | PAST_CONDITION:
            self.skip(
                where,
                "Condition",
                rid,
                "clinicalStatus",
                f"{clinical!r} is not a condition clinical status",
            )
            return
        name = _concept_text(r.get("code"))
        patient = ref_id(r.get("subject"), "Patient")
        if not name:
            self.skip(where, "Condition", rid, "code", "no text or display to show")
            return
        if patient is None:
            self.skip(where, "Condition", rid, "subject", "no reference to a Patient")
            return
        onset = _date(r.get("onsetDateTime")) or _date((r.get("onsetPeriod") or {}).get("start"))
        abatement = _date(r.get("abatementDateTime")) or _date(
            (r.get("abatementPeriod") or {}).get("end")
        )
        current = (clinical in CURRENT_CONDITION) if clinical else abatement is None
        encounter = ref_id(r.get("encounter"), "Encounter")
        self._conditions.append(
            _Condition(where, rid, patient, encounter, name, current, onset, abatement)
        )

    def _medicationrequest(self, r: dict[str, Any], where: str, rid: str) -> None:
        status = r.get("status")
        if status not in MEDICATION_STATUS:
            self.skip(
                where,
                "MedicationRequest",
                rid,
                "status",
                f"{status!r} is not a medication request status",
            )
            return
        if status not in USED_MEDICATION:
            self.unused[f"MedicationRequest: status {status}"] += 1
            return
        patient = ref_id(r.get("subject"), "Patient")
        if patient is None:
            self.skip(where, "MedicationRequest", rid, "subject", "no reference to a Patient")
            return
        text = _concept_text(r.get("medicationCodeableConcept"))
        medication = None
        if text is None:
            target = (r.get("medicationReference") or {}).get("reference", "")
            if target.startswith("#"):  # a contained Medication
                inner = [c for c in r.get("contained") or [] if c.get("id") == target[1:]]
                text = _concept_text(inner[0].get("code")) if inner else None
            else:
                medication = ref_id(r.get("medicationReference"), "Medication")
            if text is None and medication is None:
                self.skip(
                    where,
                    "MedicationRequest",
                    rid,
                    "medicationReference",
                    f"{target!r} names no Medication we can read",
                )
                return
        ends = [(r.get("dispenseRequest") or {}).get("validityPeriod", {}).get("end")]
        for dosage in r.get("dosageInstruction") or []:
            bounds = ((dosage.get("timing") or {}).get("repeat") or {}).get("boundsPeriod")
            ends.append((bounds or {}).get("end"))
        end = max(filter(None, map(_date, ends)), default=None)
        self._prescriptions.append(
            _Prescription(
                where,
                rid,
                patient,
                ref_id(r.get("encounter"), "Encounter"),
                text,
                medication,
                status,
                _date(r.get("authoredOn")),
                end,
            )
        )

    def _medication(self, r: dict[str, Any], where: str, rid: str) -> None:
        text = _concept_text(r.get("code"))
        if text and rid:
            self._medications[rid] = text
        else:
            self.skip(where, "Medication", rid, "code", "no text or display to show")

    def _observation(self, r: dict[str, Any], where: str, rid: str) -> None:
        status = r.get("status")
        if status not in OBSERVATION_STATUS:
            self.skip(
                where, "Observation", rid, "status", f"{status!r} is not an observation status"
            )
            return
        if status in ("entered-in-error", "cancelled"):
            self.unused[f"Observation: status {status}"] += 1
            return
        patient = ref_id(r.get("subject"), "Patient")
        time = r.get("effectiveDateTime") or (r.get("effectivePeriod") or {}).get("start")
        time = time or r.get("effectiveInstant") or r.get("issued")
        date = _date(time)
        if patient is None:
            self.skip(where, "Observation", rid, "subject", "no reference to a Patient")
            return
        if date is None:
            self.skip(where, "Observation", rid, "effective[x]", "no full date")
            return
        encounter = ref_id(r.get("encounter"), "Encounter")
        codes = set(_codes(r.get("code")))
        values = []  # (kind, code, quantity, field)
        if codes & BP_PANELS:
            # Both values of one measurement, or none: a systolic from one reading is never
            # paired with a diastolic from another.
            found = {}
            for i, comp in enumerate(r.get("component") or []):
                for code in {SYSTOLIC, DIASTOLIC} & set(_codes(comp.get("code"))):
                    if _number((comp.get("valueQuantity") or {}).get("value")) is not None:
                        found[code] = (comp.get("valueQuantity"), f"component.{i}.valueQuantity")
            missing = [
                w for c, w in ((SYSTOLIC, "systolic"), (DIASTOLIC, "diastolic")) if c not in found
            ]
            if missing:
                self.skip(
                    where,
                    "Observation",
                    rid,
                    "component",
                    f"BP panel without a {' or '.join(missing)} value: not used",
                )
            else:
                values += [("sys", *found[SYSTOLIC]), ("dia", *found[DIASTOLIC])]
        for code, kind in ((SYSTOLIC, "sys"), (DIASTOLIC, "dia"), (HBA1C, "hba1c")):
            if code in codes:
                values.append((kind, r.get("valueQuantity"), "valueQuantity"))
        if codes & GLUCOSE:
            values.append(("sugar", r.get("valueQuantity"), "valueQuantity"))
        for kind, quantity, fld in values:
            value = _number((quantity or {}).get("value"))
            if value is None:
                self.skip(where, "Observation", rid, fld, "no value")
                continue
            if kind == "sugar":
                unit = str(quantity.get("code") or quantity.get("unit") or "").lower()
                if unit == "mmol/l":
                    value = value * MMOL_TO_MG_DL
                elif unit != "mg/dl":
                    self.skip(
                        where,
                        "Observation",
                        rid,
                        f"{fld}.unit",
                        f"glucose in {unit or 'no unit'!r}, not mg/dL or mmol/L",
                    )
                    continue
                lo, hi = SUGAR_RANGE
                if not lo <= round(value) <= hi:
                    self.skip(
                        where,
                        "Observation",
                        rid,
                        fld,
                        f"glucose {round(value)} mg/dL is outside {lo}-{hi}",
                    )
                    continue
            self._readings.append(
                _Reading(where, rid, patient, encounter, date, time, kind, float(value))
            )

    def fhir_ids(self) -> list[str]:
        """The ids of the Patients read (what `assign_ids` numbers)."""
        return list(self._people)

    def finish(self, ids: Mapping[str, int]) -> Export:
        """The patients, by our int id (`ids`: every Patient's FHIR id -> int), in id
        order; resources that name a Patient the export does not have become skips."""
        known = set(self._people)
        by_patient_enc: dict[str, list[tuple[str, _Encounter]]] = defaultdict(list)
        for eid, enc in self._encounters.items():
            if enc.patient in known:
                by_patient_enc[enc.patient].append((eid, enc))
            else:
                self._orphan(self._where[("Encounter", eid)], "Encounter", eid, enc.patient)
        conditions: dict[str, list[_Condition]] = defaultdict(list)
        for c in self._conditions:
            if c.patient in known:
                conditions[c.patient].append(c)
            else:
                self._orphan(c.where, "Condition", c.rid, c.patient)
        prescriptions: dict[str, list[tuple[str, _Prescription]]] = defaultdict(list)
        for p in self._prescriptions:
            text = p.text or self._medications.get(p.medication or "")
            if text is None:
                self.skip(
                    p.where,
                    "MedicationRequest",
                    p.rid,
                    "medicationReference",
                    f"Medication/{p.medication} is not in the export",
                )
            elif p.patient not in known:
                self._orphan(p.where, "MedicationRequest", p.rid, p.patient)
            else:
                prescriptions[p.patient].append((text, p))
        readings: dict[str, list[_Reading]] = defaultdict(list)
        orphans = set()
        for reading in self._readings:
            if reading.patient in known:
                readings[reading.patient].append(reading)
            elif (reading.where, reading.rid) not in orphans:  # a panel is two readings
                orphans.add((reading.where, reading.rid))
                self._orphan(reading.where, "Observation", reading.rid, reading.patient)
        today = max((e.date for e in self._encounters.values()), default=None)
        patients = {}
        for fid in sorted(known, key=lambda f: ids[f]):
            person = self._people[fid]
            patients[ids[fid]] = _patient(
                ids[fid],
                person,
                sorted(by_patient_enc[fid], key=lambda e: e[1].start),
                conditions[fid],
                prescriptions[fid],
                readings[fid],
                today,
            )
        return Export(patients, self.read, self.not_read, self.unused, self.skips)

    def _orphan(self, where: str, rtype: str, rid: str, patient: str) -> None:
        """A resource naming a Patient the export lacks: reported and left out."""
        self.skip(where, rtype, rid, "subject", f"Patient/{patient} is not in the export")


def _visit_bp(readings: Iterable[_Reading]) -> BloodPressure | None:
    """The latest systolic with the latest diastolic of one visit, checked; None if either
    is missing or the pair is not a blood pressure."""
    latest: dict[str, _Reading] = {}
    for r in readings:
        if r.kind in ("sys", "dia") and (r.kind not in latest or r.time >= latest[r.kind].time):
            latest[r.kind] = r
    if "sys" not in latest or "dia" not in latest:
        return None
    try:
        return BloodPressure.of(round(latest["sys"].value), round(latest["dia"].value))
    except ValueError:
        return None


def _latest(readings: Iterable[_Reading], kind: str) -> _Reading | None:
    return max((r for r in readings if r.kind == kind), key=lambda r: r.time, default=None)


def _patient(
    pid: int,
    person: _Person,
    encounters: list[tuple[str, _Encounter]],
    conditions: list[_Condition],
    prescriptions: list[tuple[str, _Prescription]],
    readings: list[_Reading],
    today: str | None,
) -> Patient:
    by_encounter: dict[str, list[_Reading]] = defaultdict(list)
    first_of_day: dict[str, str] = {}
    for eid, enc in encounters:
        first_of_day.setdefault(enc.date, eid)
    mine_ids = {eid for eid, _ in encounters}
    for r in readings:
        eid = r.encounter if r.encounter in mine_ids else first_of_day.get(r.date)
        by_encounter[eid or f"day:{r.date}"].append(r)
    conditions = sorted(conditions, key=lambda c: (c.onset or "", c.name))
    prescriptions = sorted(prescriptions, key=lambda p: (p[1].written or "", p[0]))
    visits = []
    for eid, enc in encounters:
        mine = by_encounter.get(eid, [])
        sugar = _latest(mine, "sugar")
        hba1c = _latest(mine, "hba1c")
        history = _unique(
            c.name
            for c in conditions
            if (c.onset or "") <= enc.date
            and (c.abatement is None or c.abatement > enc.date)
            and (c.current or c.abatement is not None)
        )
        new = _unique(c.name for c in conditions if c.encounter == eid)
        medications = _unique(
            text for text, p in prescriptions if _active_at(p, eid, enc.date, encounters)
        )
        note = enc.note + (f"; diagnosed: {', '.join(new)}" if new else "")
        visits.append(
            Visit(
                enc.date,
                (),
                _visit_bp(mine),
                None if sugar is None else round(sugar.value),
                history,
                medications,
                None,
                None,
                "",
                note,
                () if hba1c is None else (("hba1c_percent", hba1c.value),),
            )
        )
    bp_groups = sorted(by_encounter.values(), key=lambda rs: max(r.time for r in rs))
    current_bp = next((bp for rs in reversed(bp_groups) if (bp := _visit_bp(rs))), None)
    sugar = _latest(readings, "sugar")
    until = person.deceased if person.deceased not in (None, DEATH_DATE_NOT_RECORDED) else None
    last_visit = encounters[-1][1].date if encounters else None
    until = until or (last_visit if person.deceased else today) or last_visit
    past = _unique(
        f"{c.name} ({c.onset or 'onset not recorded'} to {c.abatement or 'end not recorded'})"
        for c in conditions
        if not c.current
    )
    return Patient(
        pid,
        person.name,
        _age(person.birth, until),
        person.gender,
        (),
        current_bp,
        None if sugar is None else round(sugar.value),
        None,
        None,
        _unique(c.name for c in conditions if c.current),
        _unique(text for text, p in prescriptions if p.status == "active"),
        tuple(visits),
        1.0,
        person.fid,
        person.deceased,
        past,
    )


def _active_at(
    p: _Prescription, eid: str, date: str, encounters: list[tuple[str, _Encounter]]
) -> bool:
    """Whether a prescription was taken at the visit `eid` on `date`."""
    if p.encounter == eid:
        return True
    written = p.written or next((e.date for i, e in encounters if i == p.encounter), None)
    if written is None or written > date:
        return False
    if p.status == "active":
        return p.end is None or p.end >= date
    return p.end is not None and p.end >= date


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def assign_ids(existing: Mapping[str, int], fhir_ids: Iterable[str]) -> dict[str, int]:
    """The id map after a load: every earlier entry kept as it is (an int is never moved
    or reused, even for a Patient gone from the export), each new FHIR id given the next
    int after the largest ever given, new ids in sorted order."""
    out = dict(existing)
    top = max(out.values(), default=0)
    for fid in sorted(set(fhir_ids) - set(out)):
        top += 1
        out[fid] = top
    return out
