"""`make eval` end to end on a few real patients with the real embedded model."""

from __future__ import annotations

import json
from pathlib import Path

from clinsum import evaluate
from clinsum.prompt import prefill
from clinsum.records import load_patients

from .conftest import DATA


async def test_generated_text_adds_no_numbers_and_report_is_written(tmp_path: Path) -> None:
    patients = list(load_patients(DATA).values())[:4]
    graded = await evaluate.summarize_all(patients, max_tokens=40, model_path=None)
    for g in graded:
        head = prefill(g.patient)
        assert g.summary.startswith(head)
        # Every number comes from the record's own first sentence; the model adds none.
        assert not any(c.isdigit() for c in g.summary[len(head) :]), g.summary
        assert g.grounding.coverage == 1.0
    report = evaluate.report(graded, "SmolLM2")
    assert report["patients"] == 4 and report["wrong_name"] == 0.0
    assert report["unsupported_number"] == 0.0


def test_cli_writes_markdown_and_json(tmp_path: Path) -> None:
    out = tmp_path / "eval.md"
    assert (
        evaluate.main(
            ["--data", str(DATA), "--limit", "2", "--max-tokens", "16", "--out", str(out)]
        )
        == 0
    )
    assert "| summaries with a wrong name |" in out.read_text()
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["patients"] == 2 and 0.0 <= data["mean_coverage"] <= 1.0
