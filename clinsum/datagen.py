"""Seeded generator of synthetic patients, so demos, tests and benchmarks share one data set.

Every random choice goes through one `random.Random(seed)` and nothing iterates over a set,
so the same seed gives a byte-identical CSV on any machine. Conditions come from
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

from clinsum.records import COLUMNS
from clinsum.vocab import CONDITIONS

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


def _bp(rng: random.Random, hypertensive: bool) -> str:
    if hypertensive:
        systolic = rng.randint(135, 178)
        diastolic = rng.randint(85, 108)
    else:
        systolic = rng.randint(105, 134)
        diastolic = rng.randint(65, 86)
    return f"{systolic}/{min(diastolic, systolic - 25)}"


def _sugar(rng: random.Random, diabetic: bool) -> int:
    return rng.randint(130, 280) if diabetic else rng.randint(72, 118)


def _scores(
    rng: random.Random, age: int, n_conditions: int, bp: str, sugar: int
) -> tuple[float, float]:
    base = 0.05 + 0.006 * (age - 18) + 0.08 * n_conditions + rng.uniform(-0.05, 0.05)
    systolic = int(bp.split("/")[0])
    risk = base + (0.12 if systolic >= 140 else 0) + (0.1 if sugar >= 126 else 0)
    risk += rng.uniform(-0.04, 0.06)
    return round(min(max(base, 0.01), 0.99), 3), round(min(max(risk, 0.01), 0.99), 3)


def _labels(conditions: Sequence[str]) -> list[str]:
    return [CONDITIONS[c].label for c in conditions]


def _note(
    rng: random.Random,
    conditions: Sequence[str],
    symptoms: Sequence[str],
    drugs: Sequence[str],
    bp: str,
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
        above = int(bp.split("/")[0]) >= 140
        parts.append(f"Blood pressure {bp}, {'above' if above else 'at'} target.")
    if "diabetes" in conditions:
        parts.append(f"Glucose {sugar} mg/dL.")
    if drugs and rng.random() < 0.5:
        parts.append(f"{rng.choice(drugs)} continued.")
    parts.append(rng.choice(PLANS))
    return " ".join(parts)


def _visits(rng: random.Random, age: int, conditions: list[str]) -> list[dict]:
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
                "symptoms": ", ".join(symptoms),
                "bp": bp,
                "sugar": sugar,
                "history": ", ".join(_labels(known)),
                "medications": ", ".join(meds.values()),
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
        rows.append(
            {
                "patient_id": pid,
                "name": name,
                "age": age,
                "gender": gender,
                "current_symptoms": ", ".join(symptoms),
                "current_bp": bp,
                "current_sugar": sugar,
                "base_score": f"{base:.3f}",
                "risk_score": f"{risk:.3f}",
                "medical_history": ", ".join(_labels(conditions)),
                "current_medications": ", ".join(_medications(rng, conditions).values()),
                "visit_history": json.dumps(_visits(rng, age, conditions), ensure_ascii=False),
            }
        )
    return rows


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
