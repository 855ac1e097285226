"""The Synthea converter: the committed realistic file is exactly what it makes of the export."""

from __future__ import annotations

import re
from pathlib import Path

from clinsum import synthea
from clinsum.records import load_patients

DATA = Path(__file__).resolve().parent / "data"


def test_the_committed_file_is_the_conversion_of_the_committed_export(tmp_path) -> None:
    out = tmp_path / "converted.csv"
    assert synthea.main([str(DATA / "synthea"), str(out)]) == 0
    assert out.read_bytes() == (DATA / "synthea_patients.csv").read_bytes()


def test_the_converted_file_loads_with_several_visits_per_patient() -> None:
    patients = load_patients(DATA / "synthea_patients.csv")
    assert len(patients) == 59
    assert sum(len(p.visit_history) >= 4 for p in patients.values()) == 59
    first = patients[2]
    assert first.name == "Maude Wunsch"  # Synthea's numeric suffixes are gone
    assert "Chronic sinusitis" in first.conditions()
    # Social findings are not a medical history; SNOMED tags are stripped.
    every = {c for p in patients.values() for c in p.conditions()}
    assert "Full-time employment" not in every and not any("(disorder)" in c for c in every)
    # A glucose reading is the export's; an unmeasured one is the placeholder and says so.
    for v in (v for p in patients.values() for v in p.visit_history):
        said = re.search(r"Glucose (\d+) mg/dL|Glucose not measured", v.notes)
        assert said and v.sugar == (int(said[1]) if said[1] else synthea.GLUCOSE_NOT_MEASURED)


def test_clean_term_and_names() -> None:
    assert synthea.clean_term("Severe anxiety (panic) (finding") == "Severe anxiety (panic)"
    assert synthea.clean_term("Localized  primary osteoarthritis (disorder)") == (
        "Localized primary osteoarthritis"
    )


def test_a_bad_export_is_reported_not_raised(tmp_path, capsys) -> None:
    assert synthea.main([str(tmp_path), str(tmp_path / "out.csv")]) == 1
    assert "cannot convert" in capsys.readouterr().err
