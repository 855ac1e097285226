"""Search quality beside its baselines, and search at scale: one run, figures side by side.

Quality (`python bench/search_quality.py`), on two files:
- the realistic file converted from Synthea (`tests/data/synthea_patients.csv`) with its
  hand-written queries (`tests/data/synthea_queries.json`: exact condition names, and
  paraphrases: lay and clinical terms, British spellings, abbreviations, "history of X"),
  and held-out paraphrases written after the tuning (`synthea_heldout_queries.json`);
- our own `patient_data.csv`, queried with every vocabulary label and strict synonym of
  each condition some patient has.
For each query, k = min(5, number of true patients) and precision@k = true patients in the
first k / k. A query is "answered with a different condition" if any of the first k hits
is not a true patient. Four rankers on the same queries:
- `ours`: `PatientIndex.search`;
- `ours, no aliases`: the same with `vocab.ALIASES` empty (what the embeddings and the
  rest of the vocabulary do alone);
- `pure vector`: cosine between the query and one MiniLM vector per whole record;
- `BM25`: Okapi BM25 (k1 1.5, b 0.75) over the words of the whole record.

Scale (`python bench/search_quality.py --scale 100000`): generated patients
(`bench/prep.py`'s data): validating the records (which writes their cache) and reading them
back from it, a cold index build (fresh vector store), a warm re-open, search latency over
distinct queries, and the process's peak RSS. Run it once: the CPU is shared. The server's
own start-up at this scale is `python bench/run.py --only scale`.

Results go to `bench/search_quality.json` and `bench/search_quality.md`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

SYNTHEA = REPO / "tests" / "data" / "synthea_patients.csv"
SYNTHEA_QUERIES = REPO / "tests" / "data" / "synthea_queries.json"
# Written after the tuning and never used for it: how far the tuning carries.
HELD_OUT = REPO / "tests" / "data" / "synthea_heldout_queries.json"
OURS = REPO / "patient_data.csv"
# Issue 25: misspelled, transposed and lay queries over both files.
MISSPELLED = REPO / "tests" / "data" / "misspelled_queries.json"
FILES = {"ours": OURS, "synthea": SYNTHEA}
# Correctly spelled clinical words a short edit apart (issue 25): none may be respelled.
SPELLED_RIGHT = (
    "hypotension",
    "hypertension",
    "hyperthyroidism",
    "hypothyroidism",
    "ileum",
    "ilium",
    "prostate",
    "prostrate",
    "hyperglycemia",
    "hypoglycemia",
    "hyperkalemia",
    "hypokalemia",
    "hypernatremia",
    "hyponatremia",
    "tachycardia",
    "bradycardia",
    "hypertrophy",
    "hypotrophy",
    "dysphagia",
    "dysphasia",
    "aphagia",
    "aphasia",
    "perineal",
    "peroneal",
    "peritoneal",
    "malleus",
    "malleolus",
    "mucus",
    "mucous",
    "palpation",
    "palpitation",
    "humerus",
    "humeral",
    "ureter",
    "urethra",
    "ureteral",
    "urethral",
)
# Misspelled in the Synthea export itself ("Amiodarone hydrocholoride 50 MG/ML"): not a
# correctly spelled word (search reads it as "hydrochloride").
SOURCE_TYPOS = frozenset({"hydrocholoride"})
OUT_JSON = REPO / "bench" / "search_quality.json"
OUT_MD = REPO / "bench" / "search_quality.md"
K_MAX = 5

Ranker = Callable[[str, int], list[int]]


def history_items(text: str) -> set[str]:
    """A medical_history cell as the set of its comma-separated entries: the ground truth
    is read with plain string operations, independently of the search code."""
    return {t.strip() for t in text.split(",") if t.strip()}


def expected_ids(path: Path, conditions: Sequence[str]) -> list[int]:
    """Patients whose medical_history holds one of `conditions` verbatim."""
    import csv

    wanted = set(conditions)
    with open(path, newline="", encoding="utf-8") as f:
        return [
            int(r["patient_id"])
            for r in csv.DictReader(f)
            if history_items(r["medical_history"]) & wanted
        ]


def list_phrases(path: Path) -> set[str]:
    """The distinct entries of a file's history, symptom and medication lists."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return {
            item
            for r in csv.DictReader(f)
            for column in ("medical_history", "current_symptoms", "current_medications")
            for item in history_items(r[column])
        }


def truth(path: Path, field: str, terms: Sequence[str]) -> list[int]:
    """Patients whose record holds one of `terms`, read with csv and json alone: `history`,
    an entry of medical_history; `symptoms`, an entry of the current or a visit's symptom
    list (any case); `medications`, a current or visit medication entry naming the drug."""
    import csv

    wanted = {t.lower() for t in terms}
    drug = re.compile(r"\b(?:" + "|".join(re.escape(t) for t in wanted) + r")\b")
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if field == "history":
                hit = bool(history_items(r["medical_history"]) & set(terms))
            else:
                visits = json.loads(r["visit_history"] or "[]")
                cells = [r[f"current_{field}"], *(v.get(field, "") for v in visits)]
                entries = {e.strip().lower() for c in cells for e in c.split(",") if e.strip()}
                if field == "symptoms":
                    hit = bool(entries & wanted)
                else:
                    hit = any(drug.search(e) for e in entries)
            if hit:
                out.append(int(r["patient_id"]))
    return out


def misspelled_queries() -> list[dict[str, Any]]:
    return json.loads(MISSPELLED.read_text())["queries"]


def write_misspelled_truth() -> None:
    """Recompute every query's `expected` from the files (after a data file changed)."""
    data = json.loads(MISSPELLED.read_text())
    for q in data["queries"]:
        q["expected"] = truth(FILES[q["file"]], q["field"], q["terms"])
    MISSPELLED.write_text(json.dumps(data, indent=1) + "\n")


def synthea_queries(held_out: bool = True) -> list[dict[str, Any]]:
    queries = json.loads(SYNTHEA_QUERIES.read_text())["queries"]
    return queries + (json.loads(HELD_OUT.read_text())["queries"] if held_out else [])


def our_queries(patients: dict[int, Any]) -> list[dict[str, Any]]:
    """Every label and strict synonym of each vocabulary condition some patient has; the
    truth is the patients whose history names the condition (the vocabulary wrote it)."""
    from clinsum.vocab import CONDITIONS, LOOSE, NARROWER, find_concepts

    holders: dict[str, set[int]] = {}
    for p in patients.values():
        for concept in find_concepts(p.medical_history):
            if concept.startswith("condition:"):
                holders.setdefault(concept.partition(":")[2], set()).add(p.patient_id)
    out = []
    for key, ids in sorted(holders.items()):
        c = CONDITIONS[key]
        phrasings = [c.label, *(s for s in c.synonyms if s not in LOOSE)]
        for q in dict.fromkeys(phrasings):
            if q in NARROWER.get(key, ()):
                continue  # a narrower synonym asks for less than the condition
            out.append(
                {
                    "query": q,
                    "kind": "label" if q == c.label else "synonym",
                    "expected": sorted(ids),
                }
            )
    return out


def document(patient: Any) -> str:
    """The whole record as one text, for the two baselines."""
    latest = patient.visit_history[-1].notes if patient.visit_history else ""
    return (
        f"{patient.age}-year-old {patient.gender.lower()}. "
        f"Conditions: {patient.medical_history or 'none recorded'}. "
        f"Symptoms: {patient.current_symptoms or 'none recorded'}. "
        f"Medications: {patient.current_medications or 'none'}. "
        f"Latest visit: {latest}"
    )


def vector_ranker(patients: dict[int, Any], embedder: Any) -> Ranker:
    import numpy as np

    ids = list(patients)
    matrix = np.array(embedder.encode([document(patients[i]) for i in ids]), dtype=np.float32)

    def rank(query: str, k: int) -> list[int]:
        q = np.array(embedder.encode([query])[0], dtype=np.float32)
        return [ids[j] for j in np.argsort(-(matrix @ q), kind="stable")[:k]]

    return rank


_WORD = re.compile(r"[a-z0-9]+")


def bm25_ranker(patients: dict[int, Any], k1: float = 1.5, b: float = 0.75) -> Ranker:
    ids = list(patients)
    docs = [Counter(_WORD.findall(document(patients[i]).lower())) for i in ids]
    lengths = [sum(d.values()) for d in docs]
    avg = sum(lengths) / len(lengths)
    df = Counter(w for d in docs for w in d)
    n = len(docs)

    def rank(query: str, k: int) -> list[int]:
        terms = _WORD.findall(query.lower())
        scores = []
        for d, length in zip(docs, lengths, strict=True):
            s = 0.0
            for t in terms:
                if t in d:
                    idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                    s += idf * d[t] * (k1 + 1) / (d[t] + k1 * (1 - b + b * length / avg))
            scores.append(s)
        order = sorted(range(n), key=lambda j: -scores[j])
        return [ids[j] for j in order[:k] if scores[j] > 0]

    return rank


def index_ranker(index: Any) -> Ranker:
    from clinsum.search import SearchError

    def rank(query: str, k: int) -> list[int]:
        try:
            return [h.patient_id for h in index.search(query, k)]
        except SearchError:
            return []

    return rank


@contextlib.contextmanager
def no_aliases() -> Iterator[None]:
    from clinsum import phrases

    saved = phrases.ALIASES
    phrases.ALIASES = {}
    try:
        yield
    finally:
        phrases.ALIASES = saved


def score(rank: Ranker, queries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean precision@k per kind of query (and over all), the queries answered with someone
    else, and the queries answered with nobody."""
    by_kind: dict[str, list[float]] = {}
    wrong: list[str] = []
    empty: list[str] = []
    scores: list[float] = []
    for q in queries:
        expected = set(q["expected"])
        k = min(K_MAX, len(expected))
        got = rank(q["query"], k)[:k]
        scores.append(len(set(got) & expected) / k)
        by_kind.setdefault(q["kind"], []).append(scores[-1])
        if set(got) - expected:
            wrong.append(q["query"])
        if not got:
            empty.append(q["query"])
    every = [p for v in by_kind.values() for p in v]
    return {
        "precision": {kind: round(statistics.mean(v), 3) for kind, v in by_kind.items()},
        "queries": {kind: len(v) for kind, v in by_kind.items()},
        "mean": round(statistics.mean(every), 3),
        "wrong": wrong,
        "empty": empty,
        "each": [[q["kind"], p] for q, p in zip(queries, scores, strict=True)],
    }


@contextlib.contextmanager
def no_spelling(index: Any) -> Iterator[None]:
    """The index with its speller off: what search did before issue 25."""
    saved = index.speller.active
    index.speller.active = False
    index.speller._cache.clear()
    try:
        yield
    finally:
        index.speller.active = saved
        index.speller._cache.clear()


def clinical_words() -> set[str]:
    """Correctly spelled clinical words from a source the speller does not read: every word
    of the Synthea export's condition, medication, observation and encounter descriptions,
    and the issue's pairs."""
    import csv

    out = set(SPELLED_RIGHT)
    folder = REPO / "tests" / "data" / "synthea"
    for name, columns in (
        ("conditions.csv", ("DESCRIPTION",)),
        ("medications.csv", ("DESCRIPTION", "REASONDESCRIPTION")),
        ("observations.csv", ("DESCRIPTION",)),
        ("encounters.csv", ("DESCRIPTION", "REASONDESCRIPTION")),
    ):
        with open(folder / name, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                for column in columns:
                    out.update(re.findall(r"[a-z]+", row[column].lower()))
    return {w for w in out if len(w) >= 5} - SOURCE_TYPOS


def respelled_right(index: Any) -> dict[str, Any]:
    """Correctly spelled words the index respells (should be none): the Synthea export's
    clinical words and the issue's pairs, and every word of the word lists."""
    from clinsum.spelling import load_dictionary

    clinical = clinical_words()
    listed = load_dictionary()
    return {
        "clinical_checked": len(clinical),
        "clinical_respelled": sorted(w for w in clinical if index.speller.correct(w)),
        "word_list_checked": len(listed),
        "word_list_respelled": sorted(w for w in listed if index.speller.correct(w)),
    }


def spelling_cost(index: Any, queries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Search time of each misspelled query beside its correct spelling (the text it is read
    as), both warm (each run once before timing), median of 5 runs each."""
    deltas, correct_ms, typo_ms = [], [], []
    for q in queries:
        found = index.find(q["query"], K_MAX)
        if found.corrected is None:
            continue
        pair = []
        for text in (q["query"], found.corrected):
            index.search(text, K_MAX)
            runs = []
            for _ in range(5):
                t0 = time.perf_counter()
                index.search(text, K_MAX)
                runs.append((time.perf_counter() - t0) * 1000)
            pair.append(statistics.median(runs))
        typo_ms.append(pair[0])
        correct_ms.append(pair[1])
        deltas.append(pair[0] - pair[1])
    return {
        "pairs": len(deltas),
        "misspelled_ms_median": round(statistics.median(typo_ms), 2),
        "correct_ms_median": round(statistics.median(correct_ms), 2),
        "extra_ms_median": round(statistics.median(deltas), 2),
        "extra_ms_max": round(max(deltas), 2),
    }


def open_index(path: Path, embedder: Any, folder: Path) -> Any:
    from clinsum.records import load_patients
    from clinsum.search import PatientIndex

    copy = folder / path.name
    shutil.copy(path, copy)
    patients = load_patients(copy)
    return patients, PatientIndex.open(patients, copy, embedder=embedder, show_progress=False)


def quality() -> dict[str, Any]:
    from clinsum.embeddings import load_embedder

    embedder = load_embedder()
    out: dict[str, Any] = {}
    indexes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="search-quality-") as tmp:
        for label, path in (("synthea", SYNTHEA), ("ours", OURS)):
            patients, index = open_index(path, embedder, Path(tmp))
            queries = synthea_queries() if label == "synthea" else our_queries(patients)
            rows = {"ours": score(index_ranker(index), queries)}
            with no_aliases():
                rows["ours, no aliases"] = score(index_ranker(index), queries)
            rows["pure vector"] = score(vector_ranker(patients, embedder), queries)
            rows["BM25"] = score(bm25_ranker(patients), queries)
            out[label] = {"patients": len(patients), "rankers": rows}
            indexes[label] = (patients, index)
        # Issue 25: the misspelled, transposed and lay queries of both files, in one table.
        typo = misspelled_queries()
        rows = {}
        for name, ranker in (
            ("ours", lambda i, p: index_ranker(i)),
            ("ours, no spelling", lambda i, p: index_ranker(i)),
            ("pure vector", lambda i, p: vector_ranker(p, embedder)),
            ("BM25", lambda i, p: bm25_ranker(p)),
        ):
            parts = []
            for label, (patients, index) in indexes.items():
                mine = [q for q in typo if q["file"] == label]
                off = name == "ours, no spelling"
                with no_spelling(index) if off else contextlib.nullcontext():
                    parts.append((mine, score(ranker(index, patients), mine)))
            rows[name] = merge(parts)
        checked = {label: respelled_right(index) for label, (_, index) in indexes.items()}
        out["misspelled"] = {
            "patients": sum(len(p) for p, _ in indexes.values()),
            "rankers": rows,
            "respelled_correct_words": checked,
            "cost": {
                label: spelling_cost(index, [q for q in typo if q["file"] == label])
                for label, (_, index) in indexes.items()
            },
        }
    return out


def merge(parts: Sequence[tuple[Sequence[dict[str, Any]], dict[str, Any]]]) -> dict[str, Any]:
    """One `score` over several files' queries, from each file's own."""
    by_kind: dict[str, list[float]] = {}
    for _, result in parts:
        for kind, p in result["each"]:
            by_kind.setdefault(kind, []).append(p)
    every = [p for v in by_kind.values() for p in v]
    return {
        "precision": {kind: round(statistics.mean(v), 3) for kind, v in by_kind.items()},
        "queries": {kind: len(v) for kind, v in by_kind.items()},
        "mean": round(statistics.mean(every), 3),
        "wrong": [w for _, r in parts for w in r["wrong"]],
        "empty": [e for _, r in parts for e in r["empty"]],
        "each": [e for _, r in parts for e in r["each"]],
    }


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scale(n: int) -> dict[str, Any]:
    """Cold build, warm re-open and search latency at `n` generated patients."""
    import prep

    from clinsum import records
    from clinsum.embeddings import load_embedder
    from clinsum.search import PatientIndex

    path = prep.ensure_data(n)
    t0 = time.perf_counter()
    embedder = load_embedder()
    embedder.encode(["warm-up"])
    model_s = time.perf_counter() - t0
    rss_model = peak_rss_mib()
    # What a first build pays per distinct phrase: the generated file has few (122), a real
    # one thousands, so this rate, not the patients, sets a real build's time.
    phrases = sorted({t for p in (SYNTHEA, OURS) for t in list_phrases(p)})
    t0 = time.perf_counter()
    embedder.encode(phrases)
    embed_rate = len(phrases) / (time.perf_counter() - t0)
    with tempfile.TemporaryDirectory(prefix="search-scale-") as tmp:
        # A fresh folder holds the vector store, so the build embeds everything it needs.
        copy = Path(tmp) / path.name
        os.link(path, copy) if path.stat().st_dev == Path(tmp).stat().st_dev else shutil.copy(
            path, copy
        )
        t0 = time.perf_counter()
        records.load(copy)  # validates, and writes the records cache
        validate_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        patients = records.load(copy).patients  # what every later start-up does
        load_s = time.perf_counter() - t0
        rss_loaded = peak_rss_mib()
        t0 = time.perf_counter()
        index = PatientIndex.open(patients, copy, embedder=embedder, show_progress=False)
        build_s = time.perf_counter() - t0
        embedded = index.embedded_count
        del index
        t0 = time.perf_counter()
        index = PatientIndex.open(patients, copy, embedder=embedder, show_progress=False)
        reopen_s = time.perf_counter() - t0
        queries = [q["query"] for q in synthea_queries(held_out=False)] + [
            f"{q} {i}" for i, q in enumerate(["diabetes", "chest pain", "HTN", "wheezing"] * 8)
        ]
        times, cpu = [], []
        for q in queries:
            t0, c0 = time.perf_counter(), time.process_time()
            with contextlib.suppress(Exception):
                index.search(q, 5)
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
        assert not index.rebuilt, "the re-open embedded again"
        # Issue 25: the generated file uses our vocabulary, so "ours"' misspelled queries fit.
        cost = spelling_cost(index, [q for q in misspelled_queries() if q["file"] == "ours"])
    return {
        "patients": n,
        "phrases_embedded": embedded,
        "model_load_s": round(model_s, 2),
        "records_validate_s": round(validate_s, 2),
        "records_cached_s": round(load_s, 2),
        "embed_phrases_per_s": round(embed_rate, 1),
        "embed_phrases_measured": len(phrases),
        "build_s": round(build_s, 2),
        "build_rate_per_s": round(n / build_s, 1),
        "reopen_s": round(reopen_s, 2),
        "search_ms_median": round(statistics.median(times), 2),
        "search_ms_p95": round(sorted(times)[int(0.95 * (len(times) - 1))], 2),
        # CPU time of the searching thread's process: what the search costs on a quiet box.
        "search_cpu_ms_median": round(statistics.median(cpu), 2),
        "misspelled_pairs": cost["pairs"],
        "misspelled_search_ms_median": cost["misspelled_ms_median"],
        "misspelled_correct_ms_median": cost["correct_ms_median"],
        "misspelled_extra_ms_median": cost["extra_ms_median"],
        "misspelled_extra_ms_max": cost["extra_ms_max"],
        "searches": len(times),
        "rss_mib_after_model": round(rss_model, 1),
        "rss_mib_peak_after_records": round(rss_loaded, 1),
        "rss_mib_peak": round(peak_rss_mib(), 1),
        "cores": os.cpu_count(),
        "loadavg": round(os.getloadavg()[0], 2),
    }


def render(results: dict[str, Any]) -> str:
    lines = ["# Search quality and scale", "", "Made by `python bench/search_quality.py`.", ""]
    for label, data in results.get("quality", {}).items():
        rankers = data["rankers"]
        kinds = list(next(iter(rankers.values()))["precision"])
        counts = next(iter(rankers.values()))["queries"]
        typo = label == "misspelled"
        title = (
            f"misspelled, transposed and lay queries over both files ({data['patients']} patients)"
            if typo
            else f"{label}: {data['patients']} patients"
        )
        lines += [
            f"## {title}, precision@min(5, true)",
            "",
            "| ranker | "
            + " | ".join(f"{k} ({counts[k]})" for k in kinds)
            + (f" | mean ({sum(counts.values())}) | empty answers" if typo else "")
            + " | answered with someone else |",
            "| --- | "
            + " | ".join("---" for _ in kinds)
            + (" | --- | ---" if typo else "")
            + " | --- |",
        ]
        for name, row in rankers.items():
            cells = " | ".join(f"{row['precision'][k]:.3f}" for k in kinds)
            if typo:
                cells += f" | {row['mean']:.3f} | {len(row['empty'])}"
            lines.append(f"| {name} | {cells} | {len(row['wrong'])} |")
        wrong = rankers["ours"]["wrong"]
        lines += ["", f"`ours` answered with someone else: {', '.join(wrong) or 'none'}", ""]
        if typo:
            empty = rankers["ours"]["empty"]
            lines += [f"`ours` answered with nobody: {', '.join(empty) or 'none'}", ""]
            for where, got in data["respelled_correct_words"].items():
                lines.append(
                    f"- {where} index: correctly spelled words respelled: "
                    f"{len(got['clinical_respelled'])} of {got['clinical_checked']} clinical "
                    f"words ({', '.join(got['clinical_respelled']) or 'none'}), "
                    f"{len(got['word_list_respelled'])} of {got['word_list_checked']} words of "
                    "the word lists"
                )
            for where, cost in data["cost"].items():
                lines.append(
                    f"- {where} index, {cost['pairs']} respelled queries, warm, median of 5: "
                    f"misspelled {cost['misspelled_ms_median']} ms, correct spelling "
                    f"{cost['correct_ms_median']} ms; extra {cost['extra_ms_median']} ms "
                    f"median, {cost['extra_ms_max']} ms at most"
                )
            lines.append("")
    if "scale" in results:
        lines += ["## Scale", "", "| figure | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in results["scale"].items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, help="also measure at this many patients")
    parser.add_argument("--no-quality", action="store_true", help="only the scale figures")
    parser.add_argument(
        "--misspelled-truth",
        action="store_true",
        help="recompute tests/data/misspelled_queries.json's expected patients, and stop",
    )
    args = parser.parse_args(argv)
    if args.misspelled_truth:
        write_misspelled_truth()
        return 0
    sys.path.insert(0, str(REPO / "bench"))
    results: dict[str, Any] = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {}
    # Scale first: its model-load time and memory must be this process's own, not what the
    # quality baselines (a vector per whole record) left behind.
    if args.scale:
        results["scale"] = scale(args.scale)
    if not args.no_quality:
        results["quality"] = quality()
    OUT_JSON.write_text(json.dumps(results, indent=1) + "\n")
    OUT_MD.write_text(render(results))
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
