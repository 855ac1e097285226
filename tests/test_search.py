"""Patient search against real Chroma and real embeddings.

The yardstick is precision: a query naming a condition, in any of its phrasings, must put
patients who really have it (per their medical history) first, and nobody else. Two files:
our generated `patient_data.csv` (and the handwritten one), and the realistic file converted
from a public Synthea export, with its hand-written queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import json
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.search_quality import FILES, clinical_words, misspelled_queries, truth
from clinsum import datagen
from clinsum.app import App
from clinsum.embeddings import Embedder, load_embedder
from clinsum.records import COLUMNS, Patient, load_patients
from clinsum.search import PatientIndex, SearchError
from clinsum.store import SummaryStore
from clinsum.vocab import CONDITIONS, find_concepts
from testkit.processes import stop_process

from .scripted import Rpc, ScriptedBackend

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "patient_data.csv"
HANDWRITTEN = REPO / "tests" / "data" / "handwritten_patients.csv"
SYNTHEA = REPO / "tests" / "data" / "synthea_patients.csv"
SYNTHEA_QUERIES = json.loads((REPO / "tests" / "data" / "synthea_queries.json").read_text())
CHROMA = Path(sys.executable).parent / "chroma"  # beside the Python that runs the tests
CONDITION_TRUTH = REPO / "tests" / "data" / "condition_truth.json"

# One other way of writing each condition, as a clinician might type it.
SYNONYM = {
    "diabetes": "type 2 diabetes mellitus",
    "hypertension": "high blood pressure",
    "asthma": "reactive airway disease",
    "copd": "chronic obstructive pulmonary disease",
    "heart_failure": "CHF",
    "arthritis": "joint inflammation",  # "osteoarthritis" is narrower: never answered with it
    "high_cholesterol": "hyperlipidemia",
    "obesity": "obese",
    "kidney_disease": "CKD",
    "coronary_artery_disease": "ischemic heart disease",
    "atrial_fibrillation": "afib",
    "depression": "major depressive disorder",
    "hypothyroidism": "underactive thyroid",
    "gerd": "acid reflux",
    "osteoporosis": "low bone density",
    "stroke": "CVA",
}
# The abbreviations the handwritten file uses, which the generator never writes.
HANDWRITTEN_QUERIES = {
    "diabetes": ["T2DM", "diabetics", "DM2"],
    "hypertension": ["HTN", "hypertensive"],
    "heart_failure": ["congestive heart failure"],
    "high_cholesterol": ["hypercholesterolemia"],
    "atrial_fibrillation": ["atrial fibrillation", "AF"],
    "kidney_disease": ["chronic kidney disease"],
    "copd": ["COPD"],
}


def with_symptom(patients: dict[int, Patient], symptom: str) -> set[int]:
    return {
        p.patient_id
        for p in patients.values()
        if any(f"symptom:{symptom}" in find_concepts(s) for s in p.current_symptoms)
    }


# Ground truth independent of the vocabulary search uses (tests/build_condition_truth.py reads
# the medical_history column by exact phrase; its output was checked by eye).
TRUTH = json.loads(CONDITION_TRUTH.read_text())
MAIN_HOLDERS = {key: set(ids) for key, ids in TRUTH["conditions"].items()}
COMMON = sorted(k for k, ids in MAIN_HOLDERS.items() if len(ids) >= 5)
HAND_HOLDERS = {
    "diabetes": {101, 102, 110},
    "hypertension": {101, 103, 104, 106, 108},
    "heart_failure": {101, 112},
    "high_cholesterol": {102, 106, 114},
    "copd": {103},
    "asthma": {105},
    "coronary_artery_disease": {106},
    "atrial_fibrillation": {107, 112},
    "hypothyroidism": {107, 113},
    "kidney_disease": {108, 112},
    "arthritis": {109},
    "depression": {109},
    "obesity": {110},
    "gerd": {111},
}


def ids(hits) -> list[int]:
    return [h.patient_id for h in hits]


def assert_precise(index: PatientIndex, query: str, expected: set[int]) -> list:
    """The first k = min(5, true) hits are k true patients: precision 1.0, nobody else."""
    k = min(5, len(expected))
    hits = index.search(query, top_k=k)
    assert len(hits) == k and set(ids(hits)) <= expected, (
        query,
        sorted(expected),
        [(h.patient_id, h.matched[:2]) for h in hits],
    )
    return hits


class CountingEmbedder:
    """The real embedder, counting the texts it is asked to embed."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.texts: list[str] = []

    def encode(self, texts):
        self.texts += list(texts)
        return self.inner.encode(texts)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder()


def open_copy(folder: Path, source: Path, embedder) -> tuple[PatientIndex, dict[int, Patient]]:
    path = folder / source.name
    shutil.copy(source, path)
    patients = load_patients(path)
    return PatientIndex.open(patients, path, embedder=embedder, show_progress=False), patients


@pytest.fixture(scope="module")
def main(tmp_path_factory, embedder) -> tuple[PatientIndex, dict[int, Patient], Path]:
    folder = tmp_path_factory.mktemp("main")
    index, patients = open_copy(folder, DATA, embedder)
    assert index.rebuilt
    assert (folder / "patient_data.chroma").is_dir()
    assert (folder / "patient_data.terms.npz").is_file()
    return index, patients, folder / DATA.name


@pytest.fixture(scope="module")
def hand(tmp_path_factory, embedder) -> tuple[PatientIndex, dict[int, Patient]]:
    return open_copy(tmp_path_factory.mktemp("hand"), HANDWRITTEN, embedder)


@pytest.fixture(scope="module")
def synthea(tmp_path_factory, embedder) -> tuple[PatientIndex, dict[int, Patient]]:
    return open_copy(tmp_path_factory.mktemp("synthea"), SYNTHEA, embedder)


# ----- precision -----------------------------------------------------------------------------


def test_the_ground_truth_is_for_this_data_file() -> None:
    """If this fails, patient_data.csv was regenerated: run `python -m
    tests.build_condition_truth`, check the JSON's diff against the file by eye, commit."""
    assert hashlib.sha256(DATA.read_bytes()).hexdigest() == TRUTH["data_sha256"]
    assert set(MAIN_HOLDERS) == set(CONDITIONS)  # all 16 conditions, none left out
    assert len(COMMON) >= 8


@pytest.mark.parametrize("key", sorted(CONDITIONS))
@pytest.mark.parametrize("phrasing", ["label", "synonym"])
def test_every_condition_finds_exactly_its_patients_first(main, key, phrasing) -> None:
    """Precision at 5 (k = min(5, holders) hits, all holders) and, at top_k = the number of
    holders, exactly the holders. Mutation caught: search always returning []."""
    query = CONDITIONS[key].label if phrasing == "label" else SYNONYM[key]
    expected = MAIN_HOLDERS[key]
    assert_precise(main[0], query, expected)
    every = main[0].search(query, top_k=len(expected))
    assert set(ids(every)) == expected, (query, sorted(set(ids(every)) ^ expected))


@pytest.mark.parametrize(
    ("key", "query"),
    [(k, CONDITIONS[k].label) for k in sorted(HAND_HOLDERS)]
    + [(k, q) for k, qs in HANDWRITTEN_QUERIES.items() for q in qs],
)
def test_precision_on_the_handwritten_file(hand, key, query) -> None:
    assert_precise(hand[0], query, HAND_HOLDERS[key])


def synthea_truth(conditions: list[str]) -> list[int]:
    """Read with the csv module alone: patients whose history lists one of `conditions`."""
    with open(SYNTHEA, newline="", encoding="utf-8") as f:
        return [
            int(row["patient_id"])
            for row in csv.DictReader(f)
            if {t.strip() for t in row["medical_history"].split(",")} & set(conditions)
        ]


def test_the_synthea_queries_are_many_and_their_truth_is_current() -> None:
    queries = SYNTHEA_QUERIES["queries"]
    assert len(queries) >= 60
    assert {q["kind"] for q in queries} == {"exact", "paraphrase"}
    for q in queries:
        assert q["expected"] == synthea_truth(q["conditions"]), q["query"]


@pytest.mark.parametrize(
    "case", SYNTHEA_QUERIES["queries"], ids=[q["query"] for q in SYNTHEA_QUERIES["queries"]]
)
def test_precision_on_the_synthea_file(synthea, case) -> None:
    assert_precise(synthea[0], case["query"], set(case["expected"]))


# ----- specificity, negation, words inside phrases ------------------------------------------


def test_a_specific_query_is_never_answered_with_the_broader_condition(synthea) -> None:
    index, patients = synthea
    pre = {i for i, p in patients.items() if "Prediabetes" in p.conditions()}
    for query in ("prediabetes", "borderline diabetes", "pre-diabetic"):
        hits = index.search(query, top_k=50)
        assert set(ids(hits)) == pre, query
        assert all(m.startswith("Prediabetes") for h in hits for m in h.matched[:1])
    # The broader query includes the specific conditions, and says they are narrower.
    hits = index.search("diabetes", top_k=50)
    diabetic = {
        i
        for i, p in patients.items()
        if any("iabet" in c and c != "Prediabetes" for c in p.conditions())
    }
    assert diabetic and set(ids(hits)) == diabetic
    assert any("narrower than" in m and "retinopathy" in m for m in hits[0].matched)
    eclampsia = {i for i, p in patients.items() if "Antepartum eclampsia" in p.conditions()}
    preeclampsia = {i for i, p in patients.items() if "Preeclampsia" in p.conditions()}
    assert eclampsia - preeclampsia and preeclampsia
    assert set(ids(index.search("eclampsia", top_k=50))) == eclampsia
    assert set(ids(index.search("pre-eclampsia", top_k=50))) == preeclampsia


# Diabetics without prediabetes beside prediabetics: in the Synthea file the one diabetic
# also has prediabetes, so a query answered with diabetics would still look right there.
PREDIABETES_ROWS = [
    (1, "Ada Moss", "Prediabetes", "", "Reviewed."),
    (2, "Bo Lind", "Type 2 diabetes mellitus", "", "Reviewed."),
    (3, "Cy Ford", "Diabetes", "thirst", "Reviewed."),
    (4, "Di Hale", "Prediabetes, Hypertension", "", "Reviewed."),
    (5, "Ed Voss", "Hypertension", "", "Reviewed."),
]


def test_borderline_diabetes_finds_prediabetics_and_no_diabetic(tmp_path, embedder) -> None:
    """The query "borderline diabetes" (and its other spellings) answers with Prediabetes
    only, never with the broader Diabetes. Mutation caught: the alias "borderline diabetes"
    standing for ("prediabetes", "diabetes")."""
    index = index_of_rows(tmp_path / "pre.csv", PREDIABETES_ROWS, embedder)
    for query in ("borderline diabetes", "prediabetes", "pre-diabetic"):
        hits = index.search(query, top_k=50)
        assert set(ids(hits)) == {1, 4}, (query, [(h.patient_id, h.matched) for h in hits])
        assert all(m.startswith("Prediabetes (") for h in hits for m in h.matched), query
    # The broad query still has its own answer, and the specific one is not in it.
    assert set(ids(index.search("diabetes", top_k=50))) == {2, 3}


def test_a_single_word_does_not_match_inside_other_phrases(synthea) -> None:
    index, _ = synthea
    assert index.search("low", top_k=10) == []
    assert index.search("disease", top_k=10) == []
    hits = index.search("migraine", top_k=10)
    assert hits and all("migraine without aura" in h.matched[0] for h in hits)


NEGATION_ROWS = [
    (1, "Ana Reyes", "Asthma", "wheezing", "Patient has asthma."),
    (2, "Ben Okafor", "none", "", "No history of asthma. Denies wheezing."),
    (3, "Cara Lind", "Hypertension", "", "Family history of asthma in her sister."),
    (4, "Dev Patel", "", "none", "Routine review; no asthma, no COPD."),
]


def index_of_rows(path: Path, rows, embedder) -> PatientIndex:
    """An index over a file of one-visit patients: (id, name, history, symptoms, note) rows."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(list(COLUMNS))
        for pid, name, history, symptoms, note in rows:
            visit = {
                "date": "2024-01-02", "symptoms": symptoms, "bp": "120/80", "sugar": 90,
                "history": history, "medications": "", "base_score": 0.1, "risk_score": 0.1,
                "outcome": "Stable", "notes": note,
            }  # fmt: skip
            w.writerow([pid, name, 40, "Female", symptoms, "120/80", 90, 0.1, 0.1, history, "",
                        json.dumps([visit])])  # fmt: skip
    return PatientIndex.open(load_patients(path), path, embedder=embedder, show_progress=False)


@pytest.fixture(scope="module")
def negation(tmp_path_factory, embedder) -> PatientIndex:
    path = tmp_path_factory.mktemp("negation") / "neg.csv"
    return index_of_rows(path, NEGATION_ROWS, embedder)


def test_negated_and_empty_entries_are_not_evidence(negation) -> None:
    assert ids(negation.search("asthma", top_k=10)) == [1]
    assert ids(negation.search("wheezing", top_k=10)) == [1]
    assert negation.search("COPD", top_k=10) == []
    with pytest.raises(SearchError, match="nothing to search for"):
        negation.search("none", top_k=10)


def test_empty_history_matches_nothing(synthea) -> None:
    index, patients = synthea
    empty = {i for i, p in patients.items() if p.medical_history == ()}
    assert empty
    for case in SYNTHEA_QUERIES["queries"][::4]:
        assert not empty & set(ids(index.search(case["query"], top_k=50))), case["query"]


# ----- what a hit says -----------------------------------------------------------------------


def test_matched_names_the_record_phrase_and_how(main, hand, synthea) -> None:
    hit = synthea[0].search("Hypertension", top_k=1)[0]
    assert hit.matched[0] == "Hypertension (history, exact)"
    hit = hand[0].search("T2DM", top_k=5)[1]
    assert hit.matched[0] in {
        'Type 2 diabetes mellitus (history, synonym of "T2DM")',
        'DM2 with neuropathy (history, synonym of "T2DM")',
    }
    hit = synthea[0].search("asthma", top_k=1)[0]
    assert hit.matched[0] == 'Childhood asthma (history, narrower than "asthma")'
    hit = synthea[0].search("neck ache", top_k=1)[0]
    phrase, _, how = hit.matched[0].partition(" (history, ")
    assert phrase == "Chronic neck pain" and how.startswith('similar to "neck ache" 0.')
    assert 0.6 <= float(how.split()[-1].rstrip(")")) <= 1
    hit = main[0].search("metformin", top_k=1)[0]
    assert hit.matched[0].startswith("Metformin") and "(medications, " in hit.matched[0]


def test_family_history_in_a_note_is_not_diabetes(hand) -> None:
    index, _ = hand
    hits = index.search("diabetes", top_k=10)
    assert set(ids(hits)) == HAND_HOLDERS["diabetes"]
    assert 111 not in ids(hits)


def test_a_named_condition_is_not_padded_with_lookalikes(hand) -> None:
    index, _ = hand
    # 103 (COPD) takes albuterol, which also treats asthma: that is no evidence of asthma.
    assert ids(index.search("asthma", top_k=5)) == [105]
    # 113 takes omeprazole, a drug for reflux only, without GERD in her history: she counts,
    # below the patient whose history says GERD.
    hits = index.search("acid reflux", top_k=5)
    assert ids(hits) == [111, 113]
    assert hits[1].matched == ['Omeprazole 20mg (medications, treats "acid reflux")']


@pytest.mark.parametrize("query", ["shortness of breath", "dyspnea", "SOB", "breathless"])
def test_symptom_queries(main, hand, query) -> None:
    for index, patients in (main[:2], hand):
        expected = with_symptom(patients, "shortness of breath")
        hits = assert_precise(index, query, expected)
        assert any("(symptoms, " in m for m in hits[0].matched)


def test_high_blood_pressure(main) -> None:
    index, _, _ = main
    hits = index.search("patients with high blood pressure", top_k=10)
    assert len(hits) == 10 and set(ids(hits)) <= MAIN_HOLDERS["hypertension"]
    assert all(h.matched[0].startswith("Hypertension (history, synonym of") for h in hits)


def test_a_name_and_a_word_outside_the_vocabulary(main) -> None:
    index, patients, _ = main
    target = patients[37]
    hit = index.search(target.name, top_k=3)[0]
    assert hit.patient_id == 37
    assert f"{target.name.split()[-1].lower()} (name)" in hit.matched
    referred = {
        p.patient_id
        for p in patients.values()
        if any(v.outcome == "Referred to specialist" for v in p.visit_history)
    }
    hits = index.search("specialist", top_k=50)
    assert referred and set(ids(hits)) == referred
    assert hits[0].matched[0].startswith("Referred to specialist (visit notes, ")


def test_two_concepts_rank_patients_with_both_first(main) -> None:
    index, _, _ = main
    both = MAIN_HOLDERS["diabetes"] & MAIN_HOLDERS["hypertension"]
    hits = index.search("diabetes and hypertension", top_k=len(both))
    assert set(ids(hits)) == both


def test_a_paraphrase_outside_the_vocabulary_finds_similar_phrases(main) -> None:
    index, patients, _ = main
    hits = index.search("breathing trouble", top_k=5)
    assert hits and all("similar to" in h.matched[0] for h in hits)
    for h in hits:
        p = patients[h.patient_id]
        said = [p.current_symptoms, *(v.symptoms for v in p.visit_history)]
        assert any("difficulty breathing" in s for s in said)


# ----- filters and bad input -----------------------------------------------------------------


@pytest.mark.parametrize(
    "filters",
    [
        {"min_age": 65},
        {"max_age": 50},
        {"gender": "FEMALE"},
        {"gender": "male", "min_risk": 0.6},
        {"min_age": 40, "max_age": 70, "gender": "Female", "min_risk": 0.3},
        {"min_age": None, "gender": "female"},
    ],
)
def test_filters_apply_to_every_hit(main, filters) -> None:
    index, patients, _ = main
    for query in ("diabetes", "fatigue", "breathing trouble"):
        hits = index.search(query, top_k=50, filters=filters)
        assert all(allowed(patients[h.patient_id], filters) for h in hits)
    # Every eligible diabetic is found.
    eligible = {i for i in MAIN_HOLDERS["diabetes"] if allowed(patients[i], filters)}
    top = index.search("diabetes", top_k=len(eligible), filters=filters)
    assert set(ids(top)) == eligible


def allowed(p: Patient, filters: dict) -> bool:
    return (
        p.age >= (filters.get("min_age") or 0)
        and p.age <= filters.get("max_age", 200)
        and p.gender.lower() == filters.get("gender", p.gender).lower()
        and p.risk_score >= filters.get("min_risk", 0)
    )


def test_filters_that_match_nobody(main) -> None:
    index, _, _ = main
    assert index.search("diabetes", filters={"gender": "other"}) == []
    assert index.search("diabetes", filters={"min_age": 150}) == []


@pytest.mark.parametrize(
    ("query", "top_k", "filters", "message"),
    [
        ("", 5, None, "query must not be empty"),
        ("   ", 5, None, "query must not be empty"),
        ("x" * 501, 5, None, "query is too long (501 characters; the limit is 500)"),
        (42, 5, None, "query must be a string"),
        ("the of and", 5, None, "query 'the of and' has nothing to search for"),
        ("?!... ---", 5, None, "has nothing to search for"),
        ("d", 5, None, "query 'd' has nothing to search for"),
        ("patients with no history", 5, None, "has nothing to search for"),
        ("diabetes", 0, None, "top_k must be a whole number from 1 to 50"),
        ("diabetes", 51, None, "top_k must be a whole number from 1 to 50"),
        ("diabetes", True, None, "top_k must be a whole number from 1 to 50"),
        ("diabetes", "5", None, "top_k must be a whole number from 1 to 50"),
        ("diabetes", 5, ["min_age"], "filters must be an object"),
        ("diabetes", 5, {"age": 3, "sex": "f"}, "unknown filter(s): age, sex (allowed:"),
        ("diabetes", 5, {"min_age": "60"}, "filters.min_age must be a whole number"),
        ("diabetes", 5, {"max_age": 61.5}, "filters.max_age must be a whole number"),
        ("diabetes", 5, {"min_age": True}, "filters.min_age must be a whole number"),
        ("diabetes", 5, {"min_age": 70, "max_age": 60}, "filters.min_age (70) must not exceed"),
        ("diabetes", 5, {"gender": ""}, "filters.gender must be a non-empty string"),
        ("diabetes", 5, {"gender": 1}, "filters.gender must be a non-empty string"),
        ("diabetes", 5, {"min_risk": 1.5}, "filters.min_risk must be a number from 0 to 1"),
        ("diabetes", 5, {"min_risk": "high"}, "filters.min_risk must be a number from 0 to 1"),
        ("diabetes", 5, {"min_risk": float("nan")}, "filters.min_risk must be a number"),
    ],
)
def test_validation_errors_name_the_parameter(main, query, top_k, filters, message) -> None:
    with pytest.raises(SearchError) as err:
        main[0].search(query, top_k, filters)
    assert message in str(err.value)


def test_limits_themselves_are_accepted(main) -> None:
    index, _, _ = main
    assert index.search("q" * 500, top_k=50) == []  # a word nobody's record holds
    longest = index.search(("chest pain " * 50)[:500], top_k=50)
    assert ids(longest) == ids(index.search("chest pain", top_k=50))


def test_hits_serialise(main) -> None:
    hits = main[0].search("chest pain", top_k=3)
    data = json.loads(json.dumps([h.to_dict() for h in hits]))
    assert set(data[0]) == {"patient_id", "name", "age", "gender", "score", "matched"}
    assert all(isinstance(m, str) for m in data[0]["matched"])
    assert data[0]["score"] >= data[1]["score"] >= data[2]["score"]


def test_threads_get_the_same_answers(main) -> None:
    index, _, _ = main
    queries = ["diabetes", "HTN", "wheezing", "Garcia", "chest pain", "CKD", "afib", "obese"] * 4
    expected = [ids(index.search(q, top_k=10)) for q in queries]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda q: ids(index.search(q, top_k=10)), queries))
    assert got == expected


# ----- the index on disk ---------------------------------------------------------------------


def test_warm_start_embeds_nothing(main, embedder) -> None:
    index, patients, path = main
    counting = CountingEmbedder(embedder)
    again = PatientIndex.open(patients, path, embedder=counting, show_progress=False)
    assert not again.rebuilt and again.embedded_count == 0
    assert counting.texts == []
    for query in ("diabetes", "wheezing", "Garcia"):
        assert again.search(query) == index.search(query)


def test_changed_content_embeds_only_new_phrases(tmp_path, embedder) -> None:
    path = tmp_path / "hand.csv"
    shutil.copy(HANDWRITTEN, path)
    counting = CountingEmbedder(embedder)
    first = PatientIndex.open(load_patients(path), path, embedder=counting, show_progress=False)
    assert first.rebuilt and first.embedded_count == len(counting.texts) > 20
    assert 114 not in ids(first.search("diabetes", top_k=5))

    counting.texts.clear()
    text = path.read_text().replace("Hyperlipidemia,Rosuvastatin", "Psoriasis,Methotrexate")
    path.write_text(text)
    patients = load_patients(path)
    second = PatientIndex.open(patients, path, embedder=counting, show_progress=False)
    assert sorted(counting.texts) == ["Methotrexate 10mg", "Psoriasis"]
    assert second.rebuilt and second.embedded_count == 2
    assert ids(second.search("psoriasis", top_k=5)) == [114]


def test_two_files_in_one_folder_get_separate_indexes(tmp_path, embedder) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    shutil.copy(HANDWRITTEN, a)
    datagen.write_csv(datagen.generate(12, seed=5), b)
    index_a = PatientIndex.open(load_patients(a), a, embedder=embedder, show_progress=False)
    index_b = PatientIndex.open(load_patients(b), b, embedder=embedder, show_progress=False)
    assert index_a.where != index_b.where
    assert set(ids(index_a.search("fatigue", top_k=14))) <= set(range(101, 115))
    assert set(ids(index_b.search("fatigue", top_k=12))) <= set(range(1, 13))


def test_empty_patients_and_unreadable_file(tmp_path, embedder) -> None:
    with pytest.raises(SearchError, match="no patients"):
        PatientIndex.open({}, tmp_path / "x.csv", embedder=embedder)
    patients = load_patients(HANDWRITTEN)
    with pytest.raises(SearchError, match="cannot read the data file"):
        PatientIndex.open(patients, tmp_path / "gone.csv", embedder=embedder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def chroma_run(folder: Path) -> Iterator[str]:
    """A real `chroma run` server on a free loopback port, stopped on exit; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(CHROMA), "run", "--path", str(folder), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"chroma server did not start on {url}") from None
                time.sleep(0.2)
        yield url
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory) -> Iterator[str]:
    with chroma_run(tmp_path_factory.mktemp("chroma-server")) as url:
        yield url


async def test_search_outlives_chroma_and_a_failing_index_is_32006(tmp_path, embedder) -> None:
    """Over a `chroma run` server that then stops, search keeps answering (the phrase
    vectors are read once, at start-up); when the index itself fails (the query embedder
    raising), the answer is -32006 naming it, not an internal error. Mutation caught:
    SearchUnavailable not told apart from a bad parameter (answered -32602) or left raw."""
    path = tmp_path / "hand.csv"
    shutil.copy(HANDWRITTEN, path)
    patients = load_patients(path)
    store = SummaryStore(tmp_path / "s.csv")
    with chroma_run(tmp_path / "chroma") as url:
        index = await asyncio.to_thread(
            PatientIndex.open, patients, path, chroma_url=url, embedder=embedder
        )
        rpc = Rpc(App(patients, index, ScriptedBackend([]), store))
        found = await rpc.result("search", {"query": "HTN", "top_k": 5})
        assert {h["patient_id"] for h in found["results"]} == HAND_HOLDERS["hypertension"]
    after = await rpc.result("search", {"query": "high blood pressure", "top_k": 5})
    assert {h["patient_id"] for h in after["results"]} == HAND_HOLDERS["hypertension"]

    class Broken:
        name = embedder.name

        def encode(self, texts):
            raise RuntimeError("CUDA out of memory")

    index._embedder = Broken()
    down = await rpc.call("search", {"query": "a query never embedded before"})
    assert down["error"]["code"] == -32006, down
    assert "query embedder failed: CUDA out of memory" in down["error"]["message"], down


def test_chroma_server_over_http(tmp_path, chroma_server, embedder) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    shutil.copy(HANDWRITTEN, a)
    datagen.write_csv(datagen.generate(12, seed=5), b)
    pa, pb = load_patients(a), load_patients(b)
    index_a = PatientIndex.open(pa, a, chroma_url=chroma_server, embedder=embedder)
    index_b = PatientIndex.open(pb, b, chroma_url=chroma_server, embedder=embedder)
    assert index_a.rebuilt and index_b.rebuilt and index_a.where == chroma_server
    assert not (tmp_path / "a.chroma").exists()
    expected = {i for i in HAND_HOLDERS["hypertension"] if pa[i].age >= 50}
    hits = index_a.search("HTN", top_k=50, filters={"min_age": 50})
    assert set(ids(hits)) == expected
    assert set(ids(index_b.search("fatigue", top_k=12))) <= set(range(1, 13))

    # The phrase vectors live on the server: a re-open (or another copy of the file)
    # embeds nothing.
    counting = CountingEmbedder(embedder)
    again = PatientIndex.open(pa, a, chroma_url=chroma_server + "/", embedder=counting)
    assert not again.rebuilt and counting.texts == []
    assert again.search("HTN", top_k=50, filters={"min_age": 50}) == hits


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("localhost:8000", "is malformed"),
        ("ftp://127.0.0.1:8000", "is malformed"),
        ("http://", "is malformed"),
        ("http://127.0.0.1:99999", "is malformed"),
        ("http://127.0.0.1:8000/api", "is malformed"),
        ("http://127.0.0.1:{free}", "is unreachable"),
    ],
)
def test_bad_chroma_url(tmp_path, embedder, url, message) -> None:
    url = url.format(free=free_port())
    path = tmp_path / "hand.csv"
    shutil.copy(HANDWRITTEN, path)
    with pytest.raises(SearchError) as err:
        PatientIndex.open(load_patients(path), path, chroma_url=url, embedder=embedder)
    assert url in str(err.value) and message in str(err.value)


def test_matched_shows_the_records_own_words_not_masked_numbers(main) -> None:
    """Notes are indexed with their numbers masked ("reduced to #mg"); `matched` must still
    quote the record ("reduced to 500mg"). Mutation caught: the masked phrase shown."""
    index, patients, _ = main
    shown = [m for h in index.search("diabetes", top_k=50) for m in h.matched]
    assert shown and not [m for m in shown if "#" in m]
    notes = [m for m in shown if "(visit notes," in m and any(c.isdigit() for c in m)]
    assert notes, "no note clause with a number matched: the test needs another query"
    every_note = " ".join(v.notes for p in patients.values() for v in p.visit_history)
    assert all(m.split(" (visit notes,")[0] in every_note for m in notes)


# ----- spelling (issue 25) ------------------------------------------------------------------

MISSPELLED = misspelled_queries()
# "pian" is a word (yaws, in the medical word list), so "chest pian" is searched as typed and
# finds nobody: a correctly spelled word is never respelled.
KNOWN_MISSES = {"chest pian"}


def test_the_misspelled_queries_are_many_and_their_truth_is_current() -> None:
    assert len(MISSPELLED) >= 60
    assert {q["file"] for q in MISSPELLED} == {"ours", "synthea"}
    assert {q["kind"] for q in MISSPELLED} == {"misspelled", "transposed", "lay"}
    for q in MISSPELLED:
        assert q["expected"] == truth(FILES[q["file"]], q["field"], q["terms"]), q["query"]


@pytest.mark.parametrize(
    "case",
    [q for q in MISSPELLED if q["query"] not in KNOWN_MISSES],
    ids=[f"{q['file']}:{q['query']}" for q in MISSPELLED if q["query"] not in KNOWN_MISSES],
)
def test_misspelled_and_lay_queries_find_the_right_patients(main, synthea, case) -> None:
    """Precision 1.0 at k = min(5, true) for each query. Mutations caught: no respelling
    (most are empty), Levenshtein instead of Damerau (the transposed ones)."""
    index = main[0] if case["file"] == "ours" else synthea[0]
    assert_precise(index, case["query"], set(case["expected"]))


def test_matched_and_the_answer_say_how_the_query_was_read(main) -> None:
    index = main[0]
    found = index.find("hypertention", top_k=3)
    assert found.corrected == "hypertension"
    assert found.fixes == {"hypertention": "hypertension"}
    assert [h.matched[0] for h in found.hits] == [
        'Hypertension (history, spelling of "hypertention")'
    ] * 3
    assert index.find("hypertension", top_k=3).corrected is None
    assert ids(found.hits) == ids(index.search("hypertension", top_k=3))


SPELLED_RIGHT_ROWS = [
    (1, "Hal Mercer", "Hypertension"),
    (2, "Ida Novak", "Prostate cancer"),
    (3, "Jon Ortiz", "Hyperthyroidism"),
    (4, "Kim Perez", "Fracture of ilium"),
]


@pytest.fixture(scope="module")
def spelled_right(tmp_path_factory, embedder) -> PatientIndex:
    """Records holding one word of each pair, so the other is a short edit from a record."""
    path = tmp_path_factory.mktemp("spelled") / "pairs.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(list(COLUMNS))
        for pid, name, history in SPELLED_RIGHT_ROWS:
            w.writerow([pid, name, 50, "Male", "", "120/80", 90, 0.1, 0.1, history, "", "[]"])
    return PatientIndex.open(load_patients(path), path, embedder=embedder, show_progress=False)


@pytest.mark.parametrize(
    ("query", "neighbour"),
    [
        ("hypotension", "hypertension"),
        ("prostrate", "prostate"),
        ("hypothyroidism", "hyperthyroidism"),
        ("ileum", "ilium"),
    ],
)
def test_a_correctly_spelled_word_is_never_respelled(spelled_right, query, neighbour) -> None:
    """ "hypotension" stays hypotension though a record says hypertension: nobody is found."""
    found = spelled_right.find(query, top_k=10)
    assert found.corrected is None and found.hits == []
    assert spelled_right.find(neighbour, top_k=10).hits  # the neighbour itself is found
    typo = neighbour[:3] + neighbour[4] + neighbour[3] + neighbour[5:]
    assert spelled_right.find(typo, top_k=10).corrected == neighbour


def test_chest_pian_is_searched_as_typed(main) -> None:
    found = main[0].find("chest pian", top_k=5)
    assert found.corrected is None and found.hits == []


def test_random_letters_find_nobody(main) -> None:
    rng = random.Random(25)
    letters = "abcdefghijklmnopqrstuvwxyz"
    for alphabet in (letters, letters + "    "):
        query = "".join(rng.choice(alphabet) for _ in range(500))
        assert main[0].find(query, top_k=50).hits == []


async def test_the_tool_carries_the_corrected_query_and_refuses_a_misspelled_stop_word(
    main, tmp_path
) -> None:
    index, patients, _ = main
    rpc = Rpc(App(patients, index, ScriptedBackend([]), SummaryStore(tmp_path / "s.csv")))
    found = await rpc.result("search", {"query": "astma", "top_k": 50})
    assert found["corrected"] == "asthma"
    assert {h["patient_id"] for h in found["results"]} == MAIN_HOLDERS["asthma"]
    assert "corrected" not in await rpc.result("search", {"query": "asthma"})
    nobody = await rpc.result("search", {"query": "hypotension"})
    assert nobody["results"] == [] and "corrected" not in nobody and nobody["note"]
    for query in ("patinets", "patinets wihtout hsitory"):
        refused = await rpc.call("search", {"query": query})
        assert refused["error"]["code"] == -32602, refused
        assert "has nothing to search for: it reads as" in refused["error"]["message"]


def test_no_clinical_word_of_the_synthea_export_is_respelled(main, synthea) -> None:
    """Words from a source the speller does not read (the Synthea export's descriptions)."""
    words = clinical_words()
    assert len(words) > 300
    for index in (main[0], synthea[0]):
        assert [w for w in sorted(words) if index.speller.correct(w)] == []


def test_a_misspelled_name_finds_the_patient(main) -> None:
    index, patients, _ = main
    surname = next(
        w
        for p in patients.values()
        for w in [p.name.split()[-1].lower()]
        if len(w) >= 6 and w[2] != w[3]
    )
    typo = surname[:2] + surname[3] + surname[2] + surname[4:]
    found = index.find(typo, top_k=5)
    assert found.corrected == surname
    holders = {i for i, p in patients.items() if surname in p.name.lower().split()}
    assert set(ids(found.hits)) == holders
    assert found.hits[0].matched[-1] == f'{surname} (name, spelling of "{typo}")'
