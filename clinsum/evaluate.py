"""`make eval`: summarize every patient with the embedded model and grade the summaries.

The grounding check decides, per summary, whether it has a wrong name, an unsupported number,
or an unsupported condition or drug; this script runs it over the whole data set so that a
change to the prompt or the sampling settings is judged by figures, not by one good example.
It calls the backend directly, the way the server does, without a WebSocket in between.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .backends import create_backend
from .grounding import Grounding, check
from .legacy import data as patient_files
from .prompt import build_messages, prefill
from .records import Patient

NUMBER_KINDS = frozenset({"age", "bp", "sugar", "number"})
CONCEPT_KINDS = frozenset({"condition", "medication"})
TARGETS = {"wrong_name": 0.0, "unsupported_any": 0.05, "coverage": 0.8}


@dataclass(slots=True)
class Graded:
    patient: Patient
    summary: str
    grounding: Grounding
    tokens: int
    seconds: float  # generation time after the first token

    def kinds(self) -> set[str]:
        return {c.kind for c in self.grounding.unsupported if c.blocking}


async def summarize_all(
    patients: Sequence[Patient], max_tokens: int, model_path: str | None
) -> list[Graded]:
    backend, _ = await create_backend("embedded", model_path=model_path)
    names = tuple(p.name for p in patients)
    graded: list[Graded] = []
    try:
        for i, patient in enumerate(patients, 1):
            head = prefill(patient)
            pieces, first, count = [head], None, 0
            async for chunk in backend.stream(build_messages(patient), head, max_tokens=max_tokens):
                first = first or time.perf_counter()
                pieces.append(chunk)
                count += 1
            text = "".join(pieces)
            seconds = time.perf_counter() - first if first else 0.0
            graded.append(Graded(patient, text, check(text, patient, names), count, seconds))
            bad = ", ".join(sorted(graded[-1].kinds())) or "ok"
            print(
                f"[{i}/{len(patients)}] {patient.patient_id} {patient.name}: {bad}", file=sys.stderr
            )
    finally:
        await backend.aclose()
    return graded


def report(graded: Sequence[Graded], model: str) -> dict[str, Any]:
    n = len(graded)

    def share(pred: Any) -> float:
        return round(sum(1 for g in graded if pred(g)) / n, 4) if n else 0.0

    rates = [(g.tokens - 1) / g.seconds for g in graded if g.tokens > 1 and g.seconds > 0]
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": model,
        "patients": n,
        "wrong_name": share(lambda g: "name" in g.kinds()),
        "unsupported_number": share(lambda g: g.kinds() & NUMBER_KINDS),
        "unsupported_condition_or_drug": share(lambda g: g.kinds() & CONCEPT_KINDS),
        "unsupported_any": share(lambda g: not g.grounding.ok),
        "mean_coverage": round(statistics.fmean(g.grounding.coverage for g in graded), 4)
        if n
        else 0.0,
        "median_tokens_per_s": round(statistics.median(rates), 1) if rates else 0.0,
        "mean_tokens": round(statistics.fmean(g.tokens for g in graded), 1) if n else 0.0,
        "failures": [
            {
                "patient_id": g.patient.patient_id,
                "claims": [
                    f"{c.kind}: {c.text!r} ({c.reason})"
                    for c in g.grounding.unsupported
                    if c.blocking
                ],
                "summary": g.summary,
            }
            for g in graded
            if not g.grounding.ok
        ],
    }


def to_markdown(r: dict[str, Any]) -> str:
    def pct(x: float) -> str:
        return f"{x * 100:.1f}%"

    ok = {
        "wrong_name": r["wrong_name"] <= TARGETS["wrong_name"],
        "unsupported_any": r["unsupported_any"] <= TARGETS["unsupported_any"],
        "coverage": r["mean_coverage"] >= TARGETS["coverage"],
    }
    mark = {True: "met", False: "missed"}
    lines = [
        f"# Grounding evaluation ({r['generated_at']})",
        "",
        f"{r['patients']} patients, embedded model `{r['model']}`, every summary checked "
        "against its record by `clinsum.grounding`.",
        "",
        "| figure | value | target |",
        "| --- | --- | --- |",
        f"| summaries with a wrong name | {pct(r['wrong_name'])} | 0% ({mark[ok['wrong_name']]}) |",
        f"| summaries with an unsupported number | {pct(r['unsupported_number'])} | |",
        f"| summaries with an unsupported condition or drug | "
        f"{pct(r['unsupported_condition_or_drug'])} | |",
        f"| summaries with any unsupported claim | {pct(r['unsupported_any'])} | "
        f"at most 5% ({mark[ok['unsupported_any']]}) |",
        f"| mean coverage of key facts | {r['mean_coverage']:.3f} | "
        f"at least 0.8 ({mark[ok['coverage']]}) |",
        f"| median tokens/s | {r['median_tokens_per_s']} | |",
        f"| mean generated tokens | {r['mean_tokens']} | |",
        "",
    ]
    if r["failures"]:
        lines += ["## Summaries with unsupported claims", ""]
        for f in r["failures"]:
            lines.append(f"- patient {f['patient_id']}: " + "; ".join(f["claims"]))
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m clinsum.evaluate",
        description="Summarize every patient with the embedded model and report grounding.",
        epilog="example: python -m clinsum.evaluate --data patient_data.csv --limit 20",
    )
    p.add_argument("--data", type=Path, default=Path("patient_data.csv"))
    p.add_argument("--max-tokens", type=int, default=200)
    p.add_argument("--limit", type=int, help="only the first N patients")
    p.add_argument("--model-path", help="another GGUF file")
    p.add_argument("--out", type=Path, default=Path("bench/eval.md"), help="markdown report")
    a = p.parse_args(argv)
    patients = list(patient_files.load(a.data).patients.values())[: a.limit]
    graded = asyncio.run(summarize_all(patients, a.max_tokens, a.model_path))
    model = Path(a.model_path).stem if a.model_path else "SmolLM2-135M-Instruct.Q4_1"
    r = report(graded, model)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(to_markdown(r))
    a.out.with_suffix(".json").write_text(json.dumps(r, indent=2) + "\n")
    print(to_markdown(r).split("## ")[0])
    print(f"report: {a.out} and {a.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
