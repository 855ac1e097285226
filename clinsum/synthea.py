"""Convert a Synthea CSV export into our patient file, so search and summaries meet real wording.

Synthea (https://github.com/synthetichealth/synthea) writes one CSV per table. This reads
`patients.csv`, `conditions.csv`, `medications.csv`, `observations.csv` and `encounters.csv` and
writes one row per patient in the columns of `records.COLUMNS`. Everything is derived from the
export and nothing is random, so the same export always gives a byte-identical file:

- Names lose Synthea's numeric suffixes ("Maude482 Wunsch504" -> "Maude Wunsch"); ids are
  1..N in the order of `patients.csv`.
- The reference date ("today") is the latest encounter start in the export; age is counted to
  it, or to the death date.
- Conditions keep their Synthea wording minus the SNOMED semantic tag ("Anemia (disorder)" ->
  "Anemia"). Social findings (employment, education, housing, stress, ...; `SOCIAL_FINDINGS`)
  are left out: they are not a medical history. Symptom findings (`SYMPTOM_FINDINGS`: fever,
  cough, ...) become a visit's symptoms, not history.
- `medical_history` lists every other condition the patient ever had, in order of onset.
- Visits are the last `MAX_VISITS` encounters that measured blood pressure. A visit's history
  is the conditions active on that day, or "none"; its medications are those active that day.
- Glucose is the latest "Glucose" observation on or before the visit. Synthea measures it for
  few patients; the file format needs a number, so an unmeasured patient gets
  `GLUCOSE_NOT_MEASURED` and the visit notes say that it was not measured.
- `base_score`/`risk_score` are a documented heuristic (`_scores`), not a clinical model:
  they exist because the columns must hold something in 0..1 that moves with the record.

    python -m clinsum.synthea tests/data/synthea tests/data/synthea_patients.csv
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from clinsum.records import COLUMNS

MAX_VISITS = 5
GLUCOSE_NOT_MEASURED = 95  # mg/dL; written only when the export has no glucose for the patient
SYSTOLIC, DIASTOLIC = "8480-6", "8462-4"
GLUCOSE_CODES = ("2339-0", "2345-7")  # LOINC: glucose in blood; in serum or plasma

# Synthea's social-determinant findings: not conditions a clinician searches a history for.
SOCIAL_FINDINGS = frozenset(
    {
        "Full-time employment",
        "Part-time employment",
        "Not in labor force",
        "Unemployed",
        "Received higher education",
        "Received certificate of high school equivalency",
        "Only received primary school education",
        "Limited social contact",
        "Social isolation",
        "Stress",
        "Risk activity involvement",
        "Reports of violence in the environment",
        "Has a criminal record",
        "Housing unsatisfactory",
        "Transport problems",
        "Lack of access to transportation",
        "Refugee",
        "Victim of intimate partner abuse",
    }
)
# Findings that describe how the patient feels on the day: a visit's symptoms.
SYMPTOM_FINDINGS = frozenset(
    {
        "Fever",
        "Cough",
        "Fatigue",
        "Dyspnea",
        "Wheezing",
        "Sputum finding",
        "Loss of taste",
        "Muscle pain",
        "Joint pain",
        "Respiratory distress",
    }
)
OUTCOMES = {
    "wellness": "Routine check-up completed",
    "ambulatory": "Reviewed in clinic",
    "outpatient": "Reviewed in clinic",
    "urgentcare": "Seen in urgent care",
    "emergency": "Treated in the emergency department",
    "inpatient": "Admitted",
}

# "(disorder)", "(finding)", "(situation)", "(person)", "(procedure)", and Synthea's truncated
# "(finding" at the end of a description.
_TAG = re.compile(r"\s*\((?:disorder|finding|situation|person|procedure)\)?\s*$")
_SUFFIX_DIGITS = re.compile(r"\d+$")


@dataclass(frozen=True, slots=True)
class _Span:
    """One condition or medication: what, and the days it was active (stop None = still)."""

    text: str
    start: dt.date
    stop: dt.date | None

    def active_on(self, day: dt.date) -> bool:
        return self.start <= day and (self.stop is None or self.stop >= day)


def clean_term(description: str) -> str:
    """Synthea's description without its SNOMED tag and with single spaces."""
    return " ".join(_TAG.sub("", description).split())


def _name(first: str, last: str) -> str:
    parts = (first.split() or [""]) + last.split()
    return " ".join(_SUFFIX_DIGITS.sub("", p) for p in parts if _SUFFIX_DIGITS.sub("", p))


def _day(stamp: str) -> dt.date:
    return dt.date.fromisoformat(stamp[:10])


def _stop(stamp: str) -> dt.date | None:
    return _day(stamp) if stamp.strip() else None


def _age(birth: dt.date, on: dt.date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _scores(
    age: int, active: int, systolic: int, diastolic: int, glucose: int | None
) -> tuple[float, float]:
    """(base, risk): age and active conditions, then raised for high BP, high glucose."""
    base = min(0.95, 0.02 + 0.005 * age + 0.04 * active)
    risk = base + 0.1 * (systolic >= 140 or diastolic >= 90) + 0.1 * ((glucose or 0) >= 126)
    return round(base, 3), round(min(1.0, risk), 3)


def _joined(items: Iterable[str]) -> str:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return ", ".join(seen) or "none"


def convert(tables: dict[str, list[dict[str, str]]]) -> list[dict[str, str]]:
    """Rows in `records.COLUMNS` order from Synthea tables (table name -> list of CSV rows).

    Args:
        tables: "patients", "conditions", "medications", "observations", "encounters", each a
            list of dicts as `csv.DictReader` gives them.
    """
    encounters = {e["Id"]: e for e in tables["encounters"]}
    today = max(_day(e["START"]) for e in encounters.values())

    history: dict[str, list[_Span]] = defaultdict(list)
    symptoms: dict[str, list[_Span]] = defaultdict(list)
    for c in sorted(tables["conditions"], key=lambda r: r["START"]):
        term = clean_term(c["DESCRIPTION"])
        if term in SOCIAL_FINDINGS:
            continue
        target = symptoms if term in SYMPTOM_FINDINGS else history
        target[c["PATIENT"]].append(_Span(term, _day(c["START"]), _stop(c["STOP"])))
    medications: dict[str, list[_Span]] = defaultdict(list)
    for m in sorted(tables["medications"], key=lambda r: r["START"]):
        text = m["DESCRIPTION"].replace(",", " ").replace(";", " ")
        medications[m["PATIENT"]].append(_Span(text, _day(m["START"]), _stop(m["STOP"])))

    bp: dict[str, dict[str, int]] = defaultdict(dict)  # encounter -> {code: value}
    glucose: dict[str, list[tuple[str, int]]] = defaultdict(list)  # patient -> (stamp, mg/dL)
    for o in tables["observations"]:
        if o["CODE"] in (SYSTOLIC, DIASTOLIC) and o["ENCOUNTER"] in encounters:
            bp[o["ENCOUNTER"]][o["CODE"]] = round(float(o["VALUE"]))
        elif o["CODE"] in GLUCOSE_CODES:
            glucose[o["PATIENT"]].append((o["DATE"], round(float(o["VALUE"]))))
    visits_of: dict[str, list[dict[str, str]]] = defaultdict(list)
    for enc_id, values in bp.items():
        if SYSTOLIC in values and DIASTOLIC in values:
            visits_of[encounters[enc_id]["PATIENT"]].append(encounters[enc_id])

    rows = []
    for number, p in enumerate(tables["patients"], start=1):
        pid = p["Id"]
        birth = _day(p["BIRTHDATE"])
        end = _stop(p["DEATHDATE"]) or today
        age = _age(birth, end)
        readings = sorted(glucose[pid])
        visits = []
        for enc in sorted(visits_of[pid], key=lambda e: e["START"])[-MAX_VISITS:]:
            day = _day(enc["START"])
            sys_, dia = bp[enc["Id"]][SYSTOLIC], bp[enc["Id"]][DIASTOLIC]
            earlier = [v for stamp, v in readings if stamp[:10] <= enc["START"][:10]]
            sugar = earlier[-1] if earlier else None
            active = [s.text for s in history[pid] if s.active_on(day)]
            new = [s.text for s in history[pid] if s.start == day]
            felt = [s.text.lower() for s in symptoms[pid] if s.active_on(day)]
            base, risk = _scores(_age(birth, day), len(set(active)), sys_, dia, sugar)
            notes = [f"{clean_term(enc['DESCRIPTION'])}."]
            if enc["REASONDESCRIPTION"].strip():
                notes.append(f"Reason: {clean_term(enc['REASONDESCRIPTION'])}.")
            if new:
                notes.append(f"New diagnosis: {_joined(new)}.")
            notes.append(f"Blood pressure {sys_}/{dia}.")
            notes.append(
                f"Glucose {sugar} mg/dL." if sugar is not None else "Glucose not measured."
            )
            visits.append(
                {
                    "date": day.isoformat(),
                    "symptoms": _joined(felt),
                    "bp": f"{sys_}/{dia}",
                    "sugar": GLUCOSE_NOT_MEASURED if sugar is None else sugar,
                    "history": _joined(active),
                    "medications": _joined(m.text for m in medications[pid] if m.active_on(day)),
                    "base_score": base,
                    "risk_score": risk,
                    "outcome": OUTCOMES.get(enc["ENCOUNTERCLASS"], "Seen"),
                    "notes": " ".join(notes),
                }
            )
        if not visits:
            continue  # no blood pressure ever measured: the file format cannot hold the patient
        last = visits[-1]
        rows.append(
            {
                "patient_id": str(number),
                "name": _name(p["FIRST"], p["LAST"]),
                "age": str(age),
                "gender": {"M": "Male", "F": "Female"}.get(p["GENDER"], p["GENDER"]),
                "current_symptoms": last["symptoms"],
                "current_bp": last["bp"],
                "current_sugar": str(last["sugar"]),
                "base_score": f"{last['base_score']:.3f}",
                "risk_score": f"{last['risk_score']:.3f}",
                "medical_history": _joined(s.text for s in history[pid]),
                "current_medications": _joined(
                    m.text for m in medications[pid] if m.active_on(end)
                ),
                "visit_history": json.dumps(visits),
            }
        )
    return rows


TABLES = ("patients", "conditions", "medications", "observations", "encounters")


def read_export(folder: Path) -> dict[str, list[dict[str, str]]]:
    """The Synthea tables `convert` needs, read from `folder/<table>.csv`."""
    tables = {}
    for name in TABLES:
        with open(folder / f"{name}.csv", newline="", encoding="utf-8") as f:
            tables[name] = list(csv.DictReader(f))
    return tables


def write_rows(rows: list[dict[str, str]], out: Path) -> None:
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", type=Path, help="folder holding Synthea's CSV tables")
    parser.add_argument("out", type=Path, help="patient CSV to write")
    args = parser.parse_args(argv)
    try:
        rows = convert(read_export(args.export))
    except (OSError, KeyError, ValueError) as exc:
        print(f"cannot convert {args.export}: {exc}", file=sys.stderr)
        return 1
    write_rows(rows, args.out)
    print(f"wrote {len(rows)} patients to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
