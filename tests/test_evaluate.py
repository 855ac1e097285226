"""`make eval` end to end on a few real patients with the real embedded model."""

from __future__ import annotations

import json
from pathlib import Path

from clinsum import evaluate
from clinsum.prompt import prefill
from clinsum.records import load_patients

from .conftest import DATA


async def test_generated_text_adds_no_numbers_and_report_has_every_figure() -> None:
    patients = list(load_patients(DATA).values())[:4]
    graded = await evaluate.summarize_all(patients, max_tokens=40, model_path=None)
    for g in graded:
        head = prefill(g.patient)
        assert g.summary.startswith(head)
        # Every number comes from the record-written part; the model adds none.
        assert not any(c.isdigit() for c in g.model_part), g.summary
    report = evaluate.report(graded)
    assert report["patients"] == 4 and report["wrong_names"] == 0
    assert report["unsupported_numbers"] == 0 and report["escalations_without_crisis"] == 0
    assert report["contradictions"] == 0 and report["false_flags"] == 0
    for _, key, *_ in evaluate.ROWS:
        assert key in report


def test_cli_writes_markdown_and_json_with_a_column_per_file(tmp_path: Path) -> None:
    out = tmp_path / "eval.md"
    argv = ["--data", str(DATA), "--data", str(DATA.parent / "tests/data/synthea_patients.csv")]
    assert evaluate.main([*argv, "--limit", "2", "--max-tokens", "16", "--out", str(out)]) == 0
    table = out.read_text()
    assert "| trend recall, blood sugar |" in table and "synthea_patients.csv (2)" in table
    data = json.loads(out.with_suffix(".json").read_text())
    assert set(data["reports"]) == {"patient_data.csv", "synthea_patients.csv"}
    assert len(data["summaries"]["patient_data.csv"]) == 2
