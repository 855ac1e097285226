"""Builds tests/data/condition_truth.json: who has which condition in patient_data.csv.

The search precision tests need ground truth that does not come from the code under test
(`vocab.find_concepts` is what search itself uses, so truth taken from it would agree with
search even when both are wrong). This script reads only the `medical_history` column with
the csv module, splits it on "," and ";" and matches each item, exactly and case-sensitively,
against the one phrase the generator writes for each condition (the table below, typed by
hand from the file). An item that matches no phrase stops the build, so a new condition in a
regenerated file cannot be silently left out.

If patient_data.csv is regenerated (its sha256 changes; a test checks it), rebuild with
`python -m tests.build_condition_truth`, then read the diff of the JSON by eye against a few
rows of the file before committing it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "patient_data.csv"
TRUTH = REPO / "tests" / "data" / "condition_truth.json"

# condition key (as the search tests name it) -> the exact item patient_data.csv writes.
PHRASES = {
    "arthritis": "Arthritis",
    "asthma": "Asthma",
    "atrial_fibrillation": "Atrial fibrillation",
    "copd": "COPD",
    "coronary_artery_disease": "Coronary artery disease",
    "depression": "Depression",
    "diabetes": "Diabetes",
    "gerd": "GERD",
    "heart_failure": "Heart failure",
    "high_cholesterol": "High cholesterol",
    "hypertension": "Hypertension",
    "hypothyroidism": "Hypothyroidism",
    "kidney_disease": "Chronic kidney disease",
    "obesity": "Obesity",
    "osteoporosis": "Osteoporosis",
    "stroke": "History of stroke",
}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(data: Path = DATA) -> dict:
    """{"data_sha256": ..., "conditions": {key: [ids...]}} for `data`."""
    by_phrase = {phrase: key for key, phrase in PHRASES.items()}
    holders: dict[str, list[int]] = {key: [] for key in PHRASES}
    with data.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for item in re.split(r"[,;]", row["medical_history"]):
                item = item.strip()
                if not item:
                    continue
                if item not in by_phrase:
                    raise SystemExit(
                        f"patient {row['patient_id']}: history item {item!r} is not in PHRASES; "
                        "add it by hand"
                    )
                holders[by_phrase[item]].append(int(row["patient_id"]))
    return {
        "data": data.name,
        "data_sha256": file_sha256(data),
        "built_by": "python -m tests.build_condition_truth",
        "conditions": {key: sorted(set(ids)) for key, ids in sorted(holders.items())},
    }


def render(truth: dict) -> str:
    """JSON with one line per condition, so a diff shows which patients changed."""
    head = {k: v for k, v in truth.items() if k != "conditions"}
    lines = [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    rows = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in truth["conditions"].items()]
    return "{\n" + "\n".join(lines) + '\n "conditions": {\n' + ",\n".join(rows) + "\n }\n}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=TRUTH)
    args = parser.parse_args()
    truth = build(args.data)
    args.out.write_text(render(truth))
    for key, ids in truth["conditions"].items():
        print(f"{key:25} {len(ids):3}  {ids}")


if __name__ == "__main__":
    main()
