"""Search precision beside its baselines, in the same run (`bench/search_quality.py` does the
measuring; this section only reports its figures as rows)."""

from __future__ import annotations

import asyncio

from bench import search_quality
from bench.harness import Context, Row, single

TARGET = {"exact": "1.0", "paraphrase": "≥ 0.95", "label": "1.0", "synonym": "1.0"}


async def run(ctx: Context) -> list[Row]:
    """One row per file and query kind: ours, then pure vector and BM25, side by side."""
    results = await asyncio.to_thread(search_quality.quality)
    rows = []
    for label, data in results.items():
        rankers = data["rankers"]
        for kind, ours in rankers["ours"]["precision"].items():
            others = ", ".join(
                f"{name} {row['precision'][kind]:.3f}"
                for name, row in rankers.items()
                if name != "ours"
            )
            target = TARGET.get(kind, "report")
            ok = None if target == "report" else ours >= float(target.strip("≥ "))
            rows.append(
                single(
                    f"search_quality_{label}_{kind}",
                    f"search precision@min(5, true), {label} file, {kind} queries",
                    f"{ours:.3f} (beside it: {others})",
                    target,
                    ok,
                )
            )
        wrong = len(rankers["ours"]["wrong"])
        rows.append(
            single(
                f"search_quality_{label}_wrong",
                f"queries answered with another condition's patients, {label} file",
                str(wrong),
                "0",
                wrong == 0,
            )
        )
    return rows
