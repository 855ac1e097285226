"""Search precision beside its baselines, in the same run (`bench/search_quality.py` does the
measuring; this section only reports its figures as rows), misspelled queries included."""

from __future__ import annotations

import asyncio

from bench import search_quality
from bench.harness import Context, Row, single

TARGET = {"exact": "1.0", "paraphrase": "≥ 0.95", "label": "1.0", "synonym": "1.0"}


async def run(ctx: Context) -> list[Row]:
    """One row per file and query kind: ours, then pure vector and BM25, side by side."""
    results = await asyncio.to_thread(search_quality.quality)
    typo = results.pop("misspelled", None)
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
    return rows + (misspelled_rows(typo) if typo else [])


def misspelled_rows(data: dict) -> list[Row]:
    """Issue 25: misspelled, transposed and lay queries over both files, beside the baselines;
    correct words respelled; what a respelled query costs."""
    rankers = data["rankers"]
    ours = rankers["ours"]
    n = sum(ours["queries"].values())
    others = ", ".join(
        f"{name} {row['mean']:.3f} ({len(row['empty'])} empty)"
        for name, row in rankers.items()
        if name != "ours"
    )
    respelled = sum(
        len(got["clinical_respelled"]) + len(got["word_list_respelled"])
        for got in data["respelled_correct_words"].values()
    )
    extra = max(cost["extra_ms_median"] for cost in data["cost"].values())
    return [
        single(
            "search_quality_misspelled_precision",
            f"search precision@min(5, true), {n} misspelled, transposed and lay queries",
            f"{ours['mean']:.3f} (beside it: {others})",
            "≥ 0.95",
            ours["mean"] >= 0.95,
        ),
        single(
            "search_quality_misspelled_empty",
            f"misspelled queries answered with nobody, of {n}",
            str(len(ours["empty"])),
            "≤ 1 in 60",
            len(ours["empty"]) <= n / 60,
        ),
        single(
            "search_quality_misspelled_wrong",
            "misspelled queries answered with another condition's patients",
            str(len(ours["wrong"])),
            "0",
            not ours["wrong"],
        ),
        single(
            "search_quality_respelled_correct_words",
            "correctly spelled words respelled (clinical words and the word lists)",
            str(respelled),
            "0",
            respelled == 0,
        ),
        single(
            "search_quality_misspelled_extra_ms",
            "a misspelled query's extra search time over its correct spelling, median ms",
            f"{extra:.2f}",
            "≤ 2",
            extra <= 2,
        ),
    ]
