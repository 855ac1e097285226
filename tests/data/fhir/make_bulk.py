"""Builds tests/data/fhir/bulk/: a FHIR Bulk Data export made from Synthea R4 Bundles.

No public Synthea Bulk export small enough to commit had its Observations available to us
(smart-on-fhir/sample-bulk-fhir-datasets keeps them in files too large for our source), so
the Bulk folder is made from per-patient Synthea transaction Bundles
(smart-on-fhir/generated-sample-data, see SOURCES.md), the way a FHIR server's `$export`
would write them after loading those Bundles:

- one resource per line, compact JSON, one file per resource type (`Patient.000.ndjson`);
- references by `Type/id` (the server resolves the Bundle's `urn:uuid:` references);
- only the clinical types an export with `_type=` would be asked for: Patient, Encounter,
  Condition, Observation, MedicationRequest, plus Immunization and Procedure, which the
  loader does not read (so that it is seen counting them). Claim, ExplanationOfBenefit,
  Organization, Practitioner, CarePlan, DiagnosticReport and Goal are left out;
- the Observations split in two files, the second gzipped (`Observation.001.ndjson.gz`,
  mtime 0, so the bytes are the same at every run), as servers split large types.

Each resource is otherwise unchanged: same id, same fields, same values.

    python tests/data/fhir/make_bulk.py BUNDLE.json ... --out tests/data/fhir/bulk
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path
from typing import Any

KEEP = ("Patient", "Encounter", "Condition", "Observation", "MedicationRequest", "Immunization",
        "Procedure")  # fmt: skip


def _rewrite(value: Any, types: dict[str, str]) -> Any:
    """Every `{"reference": "urn:uuid:X"}` as `{"reference": "Type/X"}`."""
    if isinstance(value, dict):
        out = {k: _rewrite(v, types) for k, v in value.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref.startswith("urn:uuid:") and ref in types:
            out["reference"] = f"{types[ref]}/{ref.removeprefix('urn:uuid:')}"
        return out
    if isinstance(value, list):
        return [_rewrite(v, types) for v in value]
    return value


def convert(bundles: list[Path], out: Path) -> dict[str, int]:
    lines: dict[str, list[str]] = {t: [] for t in KEEP}
    for path in sorted(bundles):
        bundle = json.loads(path.read_text(encoding="utf-8"))
        entries = bundle["entry"]
        types = {e["fullUrl"]: e["resource"]["resourceType"] for e in entries}
        for entry in entries:
            resource = entry["resource"]
            if resource["resourceType"] in lines:
                text = json.dumps(_rewrite(resource, types), ensure_ascii=False,
                                  separators=(",", ":"))  # fmt: skip
                lines[resource["resourceType"]].append(text)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.ndjson*"):
        old.unlink()
    observations = lines.pop("Observation")
    half = len(observations) // 2
    for kind, rows in lines.items():
        (out / f"{kind}.000.ndjson").write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    (out / "Observation.000.ndjson").write_text(
        "".join(r + "\n" for r in observations[:half]), encoding="utf-8"
    )
    data = "".join(r + "\n" for r in observations[half:]).encode()
    with (
        (out / "Observation.001.ndjson.gz").open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f,
    ):
        f.write(data)
    return {k: len(v) for k, v in lines.items()} | {"Observation": len(observations)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    a = parser.parse_args()
    print(convert(a.bundles, a.out))


if __name__ == "__main__":
    main()
