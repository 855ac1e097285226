"""`make eval`: summarize every patient with the embedded model and grade the summaries.

Each summary is read sentence by sentence as issue #10's "How the figures are judged" says,
by the same reader the grounding check uses (`grounding.course`): trends (recall per measure,
contradictions), flags (recall, false flags), escalations without a crisis-level value; then
medication changes named, the latest visit named, wrong names and unsupported numbers (the
grounding check), whether the model wrote part of it, its length, and how long it took. It
calls the backend directly, the way the server does, without a WebSocket in between, over one
or more data files, each in a column of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .backends import create_backend
from .digest import Digest, digest
from .grounding import Grounding, check, course
from .prompt import build_messages, model_part_done, prefill
from .records import Patient, formats
from .steering import focus, steer

NUMBER_KINDS = frozenset({"age", "bp", "sugar", "number"})
TREND_KEYS = ("sugar", "systolic", "risk")
# Today's figures (bench/results.md, run 2026-11-24): time to the first generated token through
# the server, median 740 ms; tokens per second 127; and the mean model part, 11.5 tokens
# (bench/eval.json of the same day). Whole summary = first token + the rest at that rate.
BASELINE_FIRST_TOKEN_MS = 740.0
BASELINE_WHOLE_MS = 740.0 + 10.5 / 127 * 1000
TIME_RATIO_TARGET = 1.5
CONCISE_WORDS = 120  # at most, for a patient with 4 visits


@dataclass(slots=True)
class Graded:
    patient: Patient
    digest: Digest
    summary: str
    model_part: str
    grounding: Grounding
    reading: course.Reading
    tokens: int
    first_token_s: float
    whole_s: float

    def kinds(self) -> set[str]:
        return {c.kind for c in self.grounding.unsupported if c.blocking}


def named(drug: str, text: str) -> bool:
    """The drug's name (its first word is enough: "insulin" for "Insulin glargine")."""
    word = drug.split()[0] if drug.split() else drug
    return bool(re.search(rf"(?<![a-z]){re.escape(word)}(?![a-z])", text, re.I))


def latest_named(d: Digest, text: str) -> bool:
    if d.latest is None:
        return True
    outcome = d.latest.outcome.strip().rstrip(".")
    return d.latest.date in text or bool(outcome and outcome.lower() in text.lower())


def grade(patient: Patient, summary: str, head: str, names: Sequence[str], **timing: Any) -> Graded:
    d = digest(patient)
    return Graded(
        patient,
        d,
        summary,
        summary[len(head) :],
        check(summary, patient, names, d),
        course.read(summary, d),
        **timing,
    )


async def summarize_all(
    patients: Sequence[Patient],
    max_tokens: int,
    model_path: str | None,
    names: Sequence[str] = (),
    style: str = "strict",
) -> list[Graded]:
    first = patients[0]
    backend, _ = await create_backend(
        "embedded",
        model_path=model_path,
        # As the server does: the model process loads and evaluates the first prompt before
        # any summary is timed.
        warm_up=(build_messages(first, style), prefill(first, style), steer(first, style=style)),
    )
    names = tuple(names) or tuple(p.name for p in patients)
    graded: list[Graded] = []
    try:
        warm = backend.stream(build_messages(first, style), prefill(first, style), max_tokens=1)
        async for _ in warm:
            break
        await warm.aclose()
        for i, patient in enumerate(patients, 1):
            d = digest(patient)
            head = prefill(patient, style, d)
            pieces: list[str] = []
            start = time.perf_counter()
            first = None
            stream = backend.stream(
                build_messages(patient, style, d),
                head,
                max_tokens=max_tokens,
                steer=steer(patient, d, style),
            )
            try:
                async for chunk in stream:
                    first = first or time.perf_counter()
                    pieces.append(chunk)
                    if model_part_done(style, "".join(pieces)):
                        break
            finally:
                await stream.aclose()
            end = time.perf_counter()
            g = grade(
                patient,
                head + "".join(pieces),
                head,
                names,
                tokens=len(pieces),
                first_token_s=(first or end) - start,
                whole_s=end - start,
            )
            graded.append(g)
            bad = ", ".join(sorted(g.kinds())) or "ok"
            print(
                f"[{i}/{len(patients)}] {patient.patient_id} {patient.name}: {bad}", file=sys.stderr
            )
    finally:
        await backend.aclose()
    return graded


def _ratio(hit: int, total: int) -> float | None:
    return round(hit / total, 4) if total else None


def report(graded: Sequence[Graded]) -> dict[str, Any]:
    """Every figure of issue #10 for one data file."""
    n = len(graded)
    out: dict[str, Any] = {"patients": n}
    for key in TREND_KEYS:
        due = [g for g in graded if (t := g.digest.trend(key)) is not None and t.meaningful]
        stated = sum(key in g.reading.trends_stated for g in due)
        out[f"trend_recall_{key}"] = _ratio(stated, len(due))
        out[f"trends_{key}"] = len(due)
    out["contradictions"] = sum(len(g.reading.contradictions) for g in graded)
    flags = [(g, v) for g in graded for v in g.digest.flags]
    out["flags"] = len(flags)
    out["flag_recall"] = _ratio(
        sum(v.measure in g.reading.flags_stated for g, v in flags), len(flags)
    )
    out["false_flags"] = sum(len(g.reading.false_flags) for g in graded)
    changes = [(g, c) for g in graded for c in g.digest.med_changes]
    out["med_changes"] = len(changes)
    out["med_change_recall"] = _ratio(
        sum(named(c.drug, g.summary) for g, c in changes), len(changes)
    )
    out["latest_visit_named"] = _ratio(sum(latest_named(g.digest, g.summary) for g in graded), n)
    out["escalations_without_crisis"] = sum(bool(g.reading.escalations) for g in graded)
    out["wrong_names"] = sum("name" in g.kinds() for g in graded)
    out["unsupported_numbers"] = sum(bool(g.kinds() & NUMBER_KINDS) for g in graded)
    # The server's own verdict on each summary, as a clinician meets it at save: by kind.
    out["unsupported_any"] = sum(not g.grounding.ok for g in graded)
    kinds: dict[str, int] = {}
    for g in graded:
        for kind in g.kinds():
            kinds[kind] = kinds.get(kind, 0) + 1
    out["flagged_by_kind"] = dict(sorted(kinds.items()))
    due = [g for g in graded if focus(g.digest)]
    out["recommendation_items"] = len(due)
    out["recommendation_on_item"] = _ratio(sum(on_item(g) for g in due), len(due))
    out["distinct_recommendations"] = len({g.model_part.strip().lower() for g in graded})
    out["model_part_present"] = _ratio(
        sum(bool(re.search(r"[^\W\d_]", g.model_part)) for g in graded), n
    )
    four = [len(g.summary.split()) for g in graded if g.digest.visits == 4]
    out["words_4_visits_median"] = statistics.median(four) if four else None
    out["words_4_visits_max"] = max(four) if four else None
    out["first_token_ms_median"] = round(statistics.median(g.first_token_s for g in graded) * 1000)
    out["whole_ms_median"] = round(statistics.median(g.whole_s for g in graded) * 1000)
    out["failures"] = [
        {
            "patient_id": g.patient.patient_id,
            "claims": [
                f"{c.kind}: {c.text!r} ({c.reason})" for c in g.grounding.unsupported if c.blocking
            ],
            "missed": _missed(g),
            "summary": g.summary,
        }
        for g in graded
        if not g.grounding.ok or _missed(g)
    ]
    return out


def on_item(g: Graded) -> bool:
    """Whether the recommendation (the heading and the model's sentence) names the measure
    of the digest's most important item, or the drug of its medication change."""
    start = g.summary.rfind("Recommendation:")
    recommendation = g.summary[start:].lower() if start >= 0 else g.model_part.lower()
    d = g.digest
    if d.flags or d.meaningful_trends:
        measure = (d.flags or d.meaningful_trends)[0].measure
        words = {"systolic blood pressure": "blood pressure", "risk score": "risk"}
        return words.get(measure, measure) in recommendation
    return named(d.med_changes[0].drug, recommendation)


def _missed(g: Graded) -> list[str]:
    missed = [
        f"trend {t.key}" for t in g.digest.meaningful_trends if t.key not in g.reading.trends_stated
    ]
    missed += [
        f"flag {v.measure}" for v in g.digest.flags if v.measure not in g.reading.flags_stated
    ]
    missed += [f"drug {c.drug}" for c in g.digest.med_changes if not named(c.drug, g.summary)]
    if not latest_named(g.digest, g.summary):
        missed.append("latest visit")
    return missed


# (label, key, target, is it met?) in the order.
ROWS: tuple[tuple[str, str, str, Any], ...] = (
    ("trend recall, blood sugar", "trend_recall_sugar", "≥ 0.9", lambda v: v is None or v >= 0.9),
    (
        "trend recall, systolic BP",
        "trend_recall_systolic",
        "≥ 0.9",
        lambda v: v is None or v >= 0.9,
    ),
    ("trend recall, risk", "trend_recall_risk", "≥ 0.9", lambda v: v is None or v >= 0.9),
    ("trend contradictions", "contradictions", "0", lambda v: v == 0),
    ("flag recall", "flag_recall", "≥ 0.95", lambda v: v is None or v >= 0.95),
    ("false flags", "false_flags", "0", lambda v: v == 0),
    ("medication-change recall", "med_change_recall", "≥ 0.8", lambda v: v is None or v >= 0.8),
    ("latest visit named", "latest_visit_named", "≥ 90%", lambda v: v >= 0.9),
    ("escalations without a crisis value", "escalations_without_crisis", "0", lambda v: v == 0),
    ("summaries with a wrong name", "wrong_names", "0", lambda v: v == 0),
    ("summaries with an unsupported number", "unsupported_numbers", "0", lambda v: v == 0),
    ("summaries the server's own check flags", "unsupported_any", "0", lambda v: v == 0),
    (
        "recommendation on the digest's item",
        "recommendation_on_item",
        "≥ 0.9",
        lambda v: v is None or v >= 0.9,
    ),
    ("distinct recommendations", "distinct_recommendations", "report", None),
    ("model wrote part of the summary", "model_part_present", "every summary", lambda v: v == 1.0),
    ("words, 4-visit patients (median / max)", "words_4_visits_max", "about 120", None),
    ("first token, median ms", "first_token_ms_median", "≤ 1.5× today", None),
    ("whole summary, median ms", "whole_ms_median", "≤ 1.5× today", None),
)


def _cell(r: dict[str, Any], key: str, met: Any) -> str:
    v = r[key]
    if key == "words_4_visits_max":
        text = f"{r['words_4_visits_median']} / {v}" if v is not None else "–"
        ok = v is None or v <= CONCISE_WORDS
    elif key in ("first_token_ms_median", "whole_ms_median"):
        base = BASELINE_FIRST_TOKEN_MS if key == "first_token_ms_median" else BASELINE_WHOLE_MS
        text = f"{v:,} ({v / base:.2f}× {base:,.0f})"
        ok = v / base <= TIME_RATIO_TARGET
    else:
        if v is None:
            return "– (none due)"
        text = f"{v:.3f}" if isinstance(v, float) else str(v)
        ok = met is None or met(v)
    return text if ok else f"**{text}** (missed)"


def to_markdown(reports: dict[str, dict[str, Any]], model: str, generated_at: str) -> str:
    names = list(reports)
    lines = [
        f"# Summary evaluation ({generated_at})",
        "",
        f"Embedded model `{model}`, strict style. Every summary read sentence by sentence as "
        "issue #10's judging rules say (`clinsum.grounding.course`), and checked against its "
        "record by `clinsum.grounding`. Times: this machine, shared; today's figures from "
        "bench/results.md in brackets.",
        "",
        "| figure | target | "
        + " | ".join(f"{n} ({reports[n]['patients']})" for n in names)
        + " |",
        "| --- | --- |" + " --- |" * len(names),
    ]
    for label, key, target, met in ROWS:
        cells = " | ".join(_cell(reports[n], key, met) for n in names)
        lines.append(f"| {label} | {target} | {cells} |")
    for n in names:
        r = reports[n]
        lines.append("")
        lines.append(
            f"{n}: trends due: sugar {r['trends_sugar']}, systolic {r['trends_systolic']}, "
            f"risk {r['trends_risk']}; flagged values {r['flags']}; medication changes "
            f"{r['med_changes']}; summaries with any unsupported claim {r['unsupported_any']}"
            + (
                " (by kind: " + ", ".join(f"{k} {c}" for k, c in r["flagged_by_kind"].items()) + ")"
                if r["flagged_by_kind"]
                else ""
            )
            + f"; patients with an item to recommend on {r['recommendation_items']}."
        )
    for n in names:
        if reports[n]["failures"]:
            lines += ["", f"## {n}: summaries with a miss or an unsupported claim", ""]
            for f in reports[n]["failures"]:
                what = "; ".join(f["claims"] + [f"missed {m}" for m in f["missed"]])
                lines.append(f"- patient {f['patient_id']}: {what}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m clinsum.evaluate",
        description="Summarize every patient with the embedded model and grade the summaries.",
        epilog="example: python -m clinsum.evaluate --data patient_data.csv --limit 20",
    )
    p.add_argument(
        "--data",
        type=Path,
        action="append",
        help="patients CSV (repeatable; default patient_data.csv)",
    )
    p.add_argument("--max-tokens", type=int, default=60)
    p.add_argument("--limit", type=int, help="only the first N patients of each file")
    p.add_argument("--model-path", help="another GGUF file")
    p.add_argument("--out", type=Path, default=Path("bench/eval.md"), help="markdown report")
    a = p.parse_args(argv)
    model = Path(a.model_path).stem if a.model_path else "SmolLM2-135M-Instruct.Q4_1"
    reports, summaries = {}, {}
    for path in a.data or [Path("patient_data.csv")]:
        patients = list(formats.load(path).patients.values())
        names = [q.name for q in patients]
        graded = asyncio.run(summarize_all(patients[: a.limit], a.max_tokens, a.model_path, names))
        reports[path.name] = report(graded)
        summaries[path.name] = {str(g.patient.patient_id): g.summary for g in graded}
    generated_at = datetime.now(UTC).isoformat(timespec="seconds")
    text = to_markdown(reports, model, generated_at)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    doc = {"generated_at": generated_at, "model": model, "reports": reports, "summaries": summaries}
    a.out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    print(text.split("\n## ")[0])
    print(f"report: {a.out} and {a.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
