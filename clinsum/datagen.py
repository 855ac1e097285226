"""Seeded generator of synthetic patients, so demos, tests and benchmarks share one data set.

Every random choice goes through seeded `random.Random` streams and nothing iterates over a
set, so the same seed gives a byte-identical CSV on any machine.

Two streams. The main one draws each patient and a draft of the visits exactly as the first
version of this generator drew them, so every patient keeps the id, name, age, gender and
conditions that tests and ground-truth lists refer to. A second stream per patient turns the
draft into a chart that reads like one (`_chart`): medications carry over from visit to visit
and change rarely, each change for a reason the visit's note gives; blood sugar and blood
pressure move from the first visit towards today's values only where the patient's conditions
make them move (diabetes, hypertension), and the outcome follows what happened. Conditions come from
`vocab.CONDITIONS` and each patient's symptoms, drugs and visit notes are drawn only from the
conditions that patient has: a search for "asthma" must not be fooled by a note that mentions
asthma for a patient who does not have it.

    python -m clinsum.datagen --out patient_data.csv --n 100 --seed 42
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from clinsum.records import COLUMNS, BloodPressure, joined
from clinsum.vocab import CONDITIONS

LABEL_TO_KEY = {c.label: key for key, c in CONDITIONS.items()}

# A fixed "today", so that visit dates do not depend on when the generator runs.
REFERENCE_DATE = dt.date(2025, 6, 30)
VISIT_WINDOW_DAYS = 3 * 365

# Relative prevalence, and whether the condition becomes likelier with age.
PREVALENCE: dict[str, tuple[float, bool]] = {
    "hypertension": (30, True),
    "diabetes": (22, True),
    "high_cholesterol": (18, True),
    "obesity": (14, False),
    "arthritis": (12, True),
    "asthma": (10, False),
    "copd": (8, True),
    "heart_failure": (7, True),
    "kidney_disease": (7, True),
    "coronary_artery_disease": (6, True),
    "depression": (7, False),
    "atrial_fibrillation": (5, True),
    "hypothyroidism": (5, False),
    "gerd": (6, False),
    "osteoporosis": (4, True),
    "stroke": (3, True),
}
assert set(PREVALENCE) <= set(CONDITIONS), "PREVALENCE names a condition vocab does not know"

DOSES: dict[str, tuple[str, ...]] = {
    "Metformin": ("500mg", "850mg", "1000mg"),
    "Insulin glargine": ("10 units", "20 units", "30 units"),
    "Glipizide": ("5mg", "10mg"),
    "Sitagliptin": ("50mg", "100mg"),
    "Empagliflozin": ("10mg", "25mg"),
    "Lisinopril": ("10mg", "20mg", "40mg"),
    "Amlodipine": ("5mg", "10mg"),
    "Losartan": ("50mg", "100mg"),
    "Hydrochlorothiazide": ("12.5mg", "25mg"),
    "Albuterol inhaler": ("90mcg as needed",),
    "Fluticasone inhaler": ("110mcg", "220mcg"),
    "Montelukast": ("10mg",),
    "Tiotropium": ("18mcg",),
    "Salmeterol": ("50mcg",),
    "Furosemide": ("20mg", "40mg"),
    "Carvedilol": ("6.25mg", "12.5mg", "25mg"),
    "Spironolactone": ("25mg",),
    "Sacubitril/valsartan": ("49/51mg",),
    "Ibuprofen": ("400mg", "600mg"),
    "Naproxen": ("250mg", "500mg"),
    "Methotrexate": ("15mg weekly",),
    "Acetaminophen": ("500mg", "650mg"),
    "Atorvastatin": ("20mg", "40mg", "80mg"),
    "Simvastatin": ("20mg", "40mg"),
    "Rosuvastatin": ("10mg", "20mg"),
    "Ezetimibe": ("10mg",),
    "Semaglutide": ("0.5mg weekly", "1mg weekly"),
    "Orlistat": ("120mg",),
    "Calcitriol": ("0.25mcg",),
    "Sodium bicarbonate": ("650mg",),
    "Aspirin": ("81mg",),
    "Nitroglycerin": ("0.4mg as needed",),
    "Metoprolol": ("25mg", "50mg"),
    "Apixaban": ("5mg",),
    "Warfarin": ("5mg",),
    "Diltiazem": ("120mg",),
    "Sertraline": ("50mg", "100mg"),
    "Fluoxetine": ("20mg",),
    "Escitalopram": ("10mg",),
    "Levothyroxine": ("50mcg", "75mcg", "100mcg"),
    "Omeprazole": ("20mg", "40mg"),
    "Pantoprazole": ("40mg",),
    "Famotidine": ("20mg",),
    "Alendronate": ("70mg weekly",),
    "Calcium with vitamin D": ("600mg",),
    "Clopidogrel": ("75mg",),
}

OUTCOMES = (
    "Stable",
    "Improved",
    "Worsened",
    "Medication adjusted",
    "Referred to specialist",
    "Admitted for observation",
)

# Note fragments mention nothing clinical on their own; the clinical words are filled in from
# the patient's own conditions, symptoms and drugs.
PLANS = (
    "Labs ordered.",
    "Advised diet and exercise.",
    "Return in 3 months.",
    "Return in 6 months.",
    "Dose reviewed.",
    "Adherence discussed.",
    "Home monitoring encouraged.",
    "Lifestyle counselling given.",
)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


MALE_FIRST = _words(
    "James John Robert Michael William David Richard Joseph Thomas Charles Christopher Daniel "
    "Matthew Anthony Mark Donald Steven Paul Andrew Joshua Kenneth Kevin Brian George Timothy "
    "Ronald Edward Jason Jeffrey Ryan Jacob Gary Nicholas Eric Jonathan Stephen Larry Justin "
    "Scott Brandon Benjamin Samuel Gregory Alexander Frank Patrick Raymond Jack Dennis Jerry "
    "Tyler Aaron Jose Adam Nathan Henry Douglas Zachary Peter Kyle Ethan Walter Noah Jeremy "
    "Christian Keith Roger Terry Gerald Harold Sean Austin Carl Arthur Lawrence Dylan Jesse "
    "Jordan Bryan Billy Joe Bruce Gabriel Logan Albert Willie Alan Juan Wayne Elijah Randy Roy "
    "Vincent Ralph Eugene Russell Bobby Mason Philip Louis Hassan Omar Rahul Wei Hiroshi Mateo "
    "Luis Carlos Diego Ahmed Kwame Ivan Dmitri Lars Sven Marco Giovanni Pierre Liam Oliver Lucas"
)

FEMALE_FIRST = _words(
    "Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Lisa Nancy Betty "
    "Margaret Sandra Ashley Kimberly Emily Donna Michelle Carol Amanda Dorothy Melissa Deborah "
    "Stephanie Rebecca Sharon Laura Cynthia Kathleen Amy Angela Shirley Anna Brenda Pamela Emma "
    "Nicole Helen Samantha Katherine Christine Debra Rachel Carolyn Janet Catherine Maria "
    "Heather Diane Ruth Julie Olivia Joyce Virginia Victoria Kelly Lauren Christina Joan "
    "Evelyn Judith Megan Andrea Cheryl Hannah Jacqueline Martha Gloria Teresa Ann Sara "
    "Madison Frances Kathryn Janice Jean Abigail Alice Judy Sophia Grace Denise Amber Doris "
    "Marilyn Danielle Beverly Isabella Theresa Diana Natalie Brittany Charlotte Marie Kayla "
    "Alexis Lori Fatima Aisha Priya Mei Yuki Sofia Lucia Carmen Ingrid Astrid Chiara Amelie "
    "Zara Leila Nadia Elena Irina Chloe Ava Mia"
)

LAST_NAMES = _words(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
    "Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White "
    "Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres "
    "Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts "
    "Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart Morris Morales "
    "Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly Howard Ramos "
    "Kim Cox Ward Richardson Watson Brooks Chavez Wood James Bennett Gray Mendoza Ruiz Hughes "
    "Price Alvarez Castillo Sanders Patel Myers Long Ross Foster Jimenez Powell Jenkins Perry "
    "Russell Sullivan Bell Coleman Butler Henderson Barnes Gonzales Fisher Vasquez Simmons "
    "Romero Jordan Patterson Alexander Hamilton Graham Reynolds Griffin Wallace Moreno West "
    "Cole Hayes Bryant Herrera Gibson Ellis Tran Medina Aguilar Stevens Murray Ford Castro "
    "Marshall Owens Harrison Fernandez McDonald Woods Washington Kennedy Wells Vargas Henry "
    "Chen Freeman Webb Tucker Guzman Burns Crawford Olson Simpson Porter Hunter Gordon Mendez "
    "Silva Shaw Snyder Mason Dixon Munoz Hunt Hicks Holmes Palmer Wagner Black Robertson Boyd "
    "Rose Stone Salazar Fox Warren Mills Meyer Rice Schmidt Garza Daniels Ferguson Nichols "
    "Stephens Soto Weaver Ryan Gardner Payne Grant Dunn Kelley Spencer Hawkins Arnold Pierce "
    "Hansen Peters Santos Hart Bradley Knight Elliott Cunningham Duncan Armstrong Hudson "
    "Carroll Lane Riley Andrews Ray Berry Perkins Hoffman Johnston Matthews Pena Richards "
    "Willis Carpenter Lawrence Sandoval Okafor Mensah Nakamura Tanaka Yamamoto Singh Sharma "
    "Gupta Khan Ali Haddad Novak Kowalski Nowak Petrov Ivanova Larsen Nielsen Johansson "
    "Rossi Russo Bianchi Romano Dubois Moreau Laurent Muller Schneider Fischer Weber Becker "
    "Wang Zhang Liu Huang Zhao Park Choi Jung Kang Yilmaz Demir Kaya Costa Oliveira Pereira"
)


def _age(rng: random.Random) -> int:
    return int(rng.triangular(18, 91, 64))


def _pick_conditions(rng: random.Random, age: int) -> list[str]:
    """1-3 distinct conditions, age-related ones likelier in older patients."""
    keys = list(PREVALENCE)
    weights = [w * (age / 55 if aged else 1.0) for w, aged in PREVALENCE.values()]
    count = rng.choices((1, 2, 3), weights=(35, 40, 25))[0]
    chosen: list[str] = []
    while len(chosen) < count:
        key = rng.choices(keys, weights=weights)[0]
        if key not in chosen:
            chosen.append(key)
    return chosen


def _symptoms(rng: random.Random, conditions: Sequence[str], k_max: int) -> list[str]:
    pool = list(dict.fromkeys(s for c in conditions for s in CONDITIONS[c].symptoms))
    return rng.sample(pool, min(len(pool), rng.randint(1, k_max)))


def _medications(rng: random.Random, conditions: Sequence[str]) -> dict[str, str]:
    """Drug name -> "drug dose"; a drug two conditions share (e.g. Atorvastatin) appears once."""
    drugs: dict[str, str] = {}
    for c in conditions:
        options = CONDITIONS[c].medications
        for drug in rng.sample(options, 1 if len(options) < 3 or rng.random() < 0.75 else 2):
            drugs.setdefault(drug, f"{drug} {rng.choice(DOSES[drug])}")
    return drugs


def _bp(rng: random.Random, hypertensive: bool) -> BloodPressure:
    if hypertensive:
        systolic = rng.randint(135, 178)
        diastolic = rng.randint(85, 108)
    else:
        systolic = rng.randint(105, 134)
        diastolic = rng.randint(65, 86)
    return BloodPressure(systolic, min(diastolic, systolic - 25))


def _sugar(rng: random.Random, diabetic: bool) -> int:
    return rng.randint(130, 280) if diabetic else rng.randint(72, 118)


def _scores(
    rng: random.Random, age: int, n_conditions: int, bp: BloodPressure, sugar: int
) -> tuple[float, float]:
    base = 0.05 + 0.006 * (age - 18) + 0.08 * n_conditions + rng.uniform(-0.05, 0.05)
    risk = base + (0.12 if bp.systolic >= 140 else 0) + (0.1 if sugar >= 126 else 0)
    risk += rng.uniform(-0.04, 0.06)
    return round(min(max(base, 0.01), 0.99), 3), round(min(max(risk, 0.01), 0.99), 3)


def _labels(conditions: Sequence[str]) -> list[str]:
    return [CONDITIONS[c].label for c in conditions]


def _note(
    rng: random.Random,
    conditions: Sequence[str],
    symptoms: Sequence[str],
    drugs: Sequence[str],
    bp: BloodPressure,
    sugar: int,
) -> str:
    """A short clinician-style note naming only this patient's own conditions and drugs."""
    named = " and ".join(
        label if label.isupper() else label.lower() for label in _labels(conditions[:2])
    )
    parts = [
        rng.choice(
            (
                f"Follow-up for {named}.",
                f"Routine review of {named}.",
                f"Seen for {named} management.",
            )
        )
    ]
    if symptoms:
        parts.append(f"Reports {rng.choice(symptoms)}.")
    if "hypertension" in conditions:
        above = bp.systolic >= 140
        parts.append(f"Blood pressure {bp}, {'above' if above else 'at'} target.")
    if "diabetes" in conditions:
        parts.append(f"Glucose {sugar} mg/dL.")
    if drugs and rng.random() < 0.5:
        parts.append(f"{rng.choice(drugs)} continued.")
    parts.append(rng.choice(PLANS))
    return " ".join(parts)


def _visits(rng: random.Random, age: int, conditions: list[str]) -> list[dict]:
    """The draft history (see the module docstring): its dates, symptoms, conditions known at
    each visit, first readings and candidate drugs are kept; the rest is redrawn by `_chart`."""
    count = rng.randint(1, 4)
    offsets = sorted(rng.sample(range(14, VISIT_WINDOW_DAYS), count), reverse=True)
    visits = []
    for i, offset in enumerate(offsets):
        # Conditions accumulate over time: the last visit knows all of them.
        known = conditions[: max(1, round(len(conditions) * (i + 1) / count))]
        symptoms = _symptoms(rng, known, 2)
        meds = _medications(rng, known)
        bp = _bp(rng, "hypertension" in known)
        sugar = _sugar(rng, "diabetes" in known)
        base, risk = _scores(rng, age, len(known), bp, sugar)
        visits.append(
            {
                "date": (REFERENCE_DATE - dt.timedelta(days=offset)).isoformat(),
                "symptoms": tuple(symptoms),
                "bp": bp,
                "sugar": sugar,
                "history": tuple(_labels(known)),
                "medications": tuple(meds.values()),
                "base_score": base,
                "risk_score": risk,
                "outcome": rng.choice(OUTCOMES),
                "notes": _note(rng, known, symptoms, list(meds), bp, sugar),
            }
        )
    return visits


def _unique_name(rng: random.Random, first_names: Sequence[str], used: set[str]) -> str:
    """First + last; a middle initial only once plain names for this gender run short."""
    for _ in range(20):
        name = f"{rng.choice(first_names)} {rng.choice(LAST_NAMES)}"
        if name not in used:
            return name
    while True:
        initial = chr(ord("A") + rng.randrange(26))
        name = f"{rng.choice(first_names)} {initial}. {rng.choice(LAST_NAMES)}"
        if name not in used:
            return name


# How often a visit changes the treatment when nothing forces it, and how often the latest
# visit's plan changes it before today (the "changes since the latest visit" of the digest).
CHANGE_AT_VISIT = 0.15
CHANGE_AFTER_LATEST = 0.3
# Why a drug changes, by what changes; the note states it. No condition is named here, so a
# note never mentions a condition the patient lacks.
REASONS = {
    "dose up": ("as readings remain above target", "for better control"),
    "dose down": ("because of side effects", "as readings are on target"),
    "switch": ("because of side effects", "at the patient's request", "for better control"),
}


def _drug(entry: str) -> str:
    return next(d for d in sorted(DOSES, key=len, reverse=True) if entry.startswith(d + " "))


def _change(
    h: random.Random, regimen: dict[str, str], conditions: Sequence[str]
) -> tuple[dict[str, str], str] | None:
    """One change of treatment and the note's sentence for it, or None if none is possible."""
    options = []
    for drug, entry in regimen.items():
        doses = DOSES[drug]
        now = entry[len(drug) + 1 :]
        i = doses.index(now) if now in doses else 0
        if i + 1 < len(doses):
            options.append(("dose up", drug, f"{drug} {doses[i + 1]}"))
        if i > 0:
            options.append(("dose down", drug, f"{drug} {doses[i - 1]}"))
        treating = [c for c in conditions if drug in CONDITIONS[c].medications]
        alternatives = [d for c in treating for d in CONDITIONS[c].medications if d not in regimen]
        if alternatives:
            options.append(("switch", drug, alternatives[0]))
    if not options:
        return None
    kind, drug, new = h.choice(options)
    reason = h.choice(REASONS[kind])
    changed = dict(regimen)
    if kind == "switch":
        del changed[drug]
        changed[new] = f"{new} {h.choice(DOSES[new])}"
        return changed, f"{drug} switched to {new} {reason}."
    changed[drug] = new
    verb = "increased" if kind == "dose up" else "reduced"
    return changed, f"{drug} {verb} to {new[len(drug) + 1 :]} {reason}."


def _path(h: random.Random, start: float, end: float, fraction: float, wobble: float) -> float:
    return start + (end - start) * fraction + h.uniform(-wobble, wobble)


def _chart(h: random.Random, draft: list[dict], row: dict) -> tuple[list[dict], str]:
    """The draft made into a chart (module docstring); returns it and today's medications."""
    now_sys, now_dia = row["current_bp"].systolic, row["current_bp"].diastolic
    now_sugar, now_risk = row["current_sugar"], float(row["risk_score"])
    first = draft[0]
    diabetic = "Diabetes" in row["medical_history"]
    hypertensive = "Hypertension" in row["medical_history"]
    # Only the conditions that drive a measure make it travel; otherwise it stays near today's.
    start_sugar = first["sugar"] if diabetic else now_sugar + h.randint(-8, 8)
    start_sys = first["bp"].systolic if hypertensive else now_sys + h.randint(-6, 6)
    start_risk = first["risk_score"]
    days = [dt.date.fromisoformat(v["date"]).toordinal() for v in draft]
    span = REFERENCE_DATE.toordinal() - days[0] or 1
    regimen: dict[str, str] = {}
    chart = []
    previous: dict | None = None
    for i, v in enumerate(draft):
        known_keys = [LABEL_TO_KEY[label] for label in v["history"]]
        notes: list[str] = []
        if i == 0:
            regimen = {_drug(e): e for e in v["medications"]}
        else:
            for entry in v["medications"]:
                drug = _drug(entry)
                treats = [c for c in known_keys if drug in CONDITIONS[c].medications]
                new_condition = treats and not any(
                    d in CONDITIONS[c].medications for c in treats for d in regimen
                )
                if new_condition and drug not in regimen:
                    regimen[drug] = entry
                    label = CONDITIONS[treats[0]].label
                    notes.append(f"{drug} started for newly diagnosed {_lower(label)}.")
            if not notes and h.random() < CHANGE_AT_VISIT:
                changed = _change(h, regimen, known_keys)
                if changed:
                    regimen, sentence = changed
                    notes.append(sentence)
        fraction = (days[i] - days[0]) / span
        sugar = round(_path(h, start_sugar, now_sugar, fraction, 6))
        sugar = max(130, sugar) if "diabetes" in known_keys else min(max(72, sugar), 118)
        systolic = round(_path(h, start_sys, now_sys, fraction, 3))
        diastolic = min(now_dia + h.randint(-4, 4), systolic - 25)
        risk = round(min(max(_path(h, start_risk, now_risk, fraction, 0.01), 0.01), 0.99), 3)
        bp = BloodPressure(systolic, diastolic)
        if notes:
            outcome = "Medication adjusted"
        elif previous and (
            (diabetic and sugar - previous["sugar"] >= 20)
            or (hypertensive and systolic - previous["bp"].systolic >= 10)
        ):
            outcome = "Worsened"
        elif previous and risk < previous["risk_score"] - 0.03:
            outcome = "Improved"
        else:
            outcome = h.choice(("Stable", "Stable", "Referred to specialist"))
        visit = dict(v, bp=bp, sugar=sugar, risk_score=risk, outcome=outcome)
        visit["medications"] = tuple(regimen.values())
        visit["notes"] = _chart_note(h, v, known_keys, bp, sugar, notes)
        chart.append(visit)
        previous = visit
    today = dict(regimen)
    if h.random() < CHANGE_AFTER_LATEST:
        changed = _change(h, regimen, [LABEL_TO_KEY[c] for c in row["medical_history"]])
        if changed:
            today, sentence = changed
            chart[-1]["notes"] += f" Plan: {sentence[0].lower()}{sentence[1:]}"
            chart[-1]["outcome"] = "Medication adjusted"
    return chart, tuple(today.values())


def _lower(label: str) -> str:
    return label if label.isupper() else label.lower()


def _chart_note(
    h: random.Random,
    v: dict,
    known: Sequence[str],
    bp: BloodPressure,
    sugar: int,
    changes: list[str],
) -> str:
    """Like `_note`, with this visit's readings and its changes of treatment and their reasons."""
    named = " and ".join(_lower(label) for label in _labels(known[:2]))
    parts = [h.choice((f"Follow-up for {named}.", f"Routine review of {named}."))]
    if v["symptoms"]:
        parts.append(f"Reports {v['symptoms'][0]}.")
    if "hypertension" in known:
        above = bp.systolic >= 140
        parts.append(f"Blood pressure {bp}, {'above' if above else 'at'} target.")
    if "diabetes" in known:
        parts.append(f"Glucose {sugar} mg/dL.")
    parts += changes or ["Medications continued."]
    parts.append(h.choice(PLANS))
    return " ".join(parts)


def generate(n: int, seed: int) -> list[dict]:
    """`n` patients as CSV-ready rows (strings and ints), ids 1..n, deterministic in `seed`."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = random.Random(seed)
    used: set[str] = set()
    rows = []
    for pid in range(1, n + 1):
        gender = rng.choice(("Male", "Female"))
        name = _unique_name(rng, MALE_FIRST if gender == "Male" else FEMALE_FIRST, used)
        used.add(name)
        age = _age(rng)
        conditions = _pick_conditions(rng, age)
        symptoms = _symptoms(rng, conditions, 3)
        bp = _bp(rng, "hypertension" in conditions)
        sugar = _sugar(rng, "diabetes" in conditions)
        base, risk = _scores(rng, age, len(conditions), bp, sugar)
        row = {
            "patient_id": pid,
            "name": name,
            "age": age,
            "gender": gender,
            "current_symptoms": tuple(symptoms),
            "current_bp": bp,
            "current_sugar": sugar,
            "base_score": f"{base:.3f}",
            "risk_score": f"{risk:.3f}",
            "medical_history": tuple(_labels(conditions)),
            # Drawn to keep the main stream as it was; today's drugs come from the chart.
            "current_medications": tuple(_medications(rng, conditions).values()),
        }
        draft = _visits(rng, age, conditions)
        chart, row["current_medications"] = _chart(random.Random(f"{seed}/{pid}"), draft, row)
        row["visit_history"] = chart
        rows.append(_written(row))
    return rows


def _written(value: object) -> object:
    """A generated value as the file writes it: "128/82", entries joined by ", ", visits as
    one JSON cell."""
    if isinstance(value, BloodPressure):
        return str(value)
    if isinstance(value, tuple):
        return joined(value)
    if isinstance(value, list):
        return json.dumps([_written(v) for v in value], ensure_ascii=False)
    if isinstance(value, dict):
        return {k: _written(v) for k, v in value.items()}
    return value


def write_csv(rows: Sequence[dict], path: str | Path) -> None:
    """Write with "\\n" line ends so the committed file is the same bytes on every platform."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clinsum.datagen", description="Generate synthetic patients as CSV."
    )
    parser.add_argument("--out", default="patient_data.csv", help="output CSV path")
    parser.add_argument("--n", type=int, default=100, help="number of patients (>= 1)")
    parser.add_argument("--seed", type=int, default=42, help="random seed")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    write_csv(generate(args.n, args.seed), args.out)
    print(f"wrote {args.n} patients to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
