"""The text rules of search, without a model: cosines are given, as the model would give them
(the figures in comments are all-MiniLM-L6-v2's for these pairs)."""

from __future__ import annotations

import numpy as np
import pytest

from clinsum import phrases
from clinsum.phrases import PhraseTable, list_items, note_clauses, whole_query
from clinsum.records import entries


def match(texts: list[str], query: str, cos: dict[str, float]) -> dict[str, str]:
    """Record phrase -> how it answers `query`, with `cos` giving each phrase's cosine to
    every reading of the query (the same for all readings, unless keyed "reading|phrase")."""
    table = PhraseTable(texts, len(texts))
    forms = whole_query(query)
    cosines = [
        np.array([cos.get(f"{f.text}|{t}", cos.get(t, 0.0)) for t in texts], dtype=np.float32)
        for f in forms
    ]
    return {texts[i]: m.how for i, m in table.match(forms, lambda: cosines).items()}


def test_a_prefix_that_changes_the_meaning_is_not_similar() -> None:
    texts = ["Diabetes", "Hypertension"]
    assert match(texts, "pre-diabetic", {"Diabetes": 0.75}) == {}
    assert match(
        ["Hypertriglyceridemia"], "high triglycerides", {"Hypertriglyceridemia": 0.67}
    ) == {"Hypertriglyceridemia": 'similar to "high triglycerides" 0.67'}


def test_a_broader_phrase_is_not_similar() -> None:
    # "Diabetes" is 0.71 to "borderline diabetes", closer than "Prediabetes" (0.56).
    texts = ["Diabetes", "Type 1 diabetes clinic"]
    assert match(texts, "borderline diabetic foot", {"Diabetes": 0.71}) == {}


def test_only_phrases_near_the_best_match_are_similar() -> None:
    texts = ["Chronic neck pain", "Whiplash injury to neck", "Fibromyalgia"]
    cos = {"Chronic neck pain": 0.81, "Whiplash injury to neck": 0.62, "Fibromyalgia": 0.48}
    assert match(texts, "neck ache", cos) == {"Chronic neck pain": 'similar to "neck ache" 0.81'}
    # With an exact or synonym answer, a merely similar phrase is no answer at all.
    texts = ["Cardiac Arrest", "Heart failure"]
    found = match(texts, "heart stopped", {"Heart failure": 0.67, "Cardiac Arrest": 0.55})
    assert found == {"Cardiac Arrest": 'synonym of "heart stopped"'}


def test_a_word_inside_a_phrase_needs_the_meaning_too() -> None:
    texts = ["Chronic low back pain", "Chronic intractable migraine without aura"]
    assert match(texts, "low", {"Chronic low back pain": 0.34}) == {}
    assert match(texts, "migraine", {"Chronic intractable migraine without aura": 0.73}) == {
        "Chronic intractable migraine without aura": 'narrower than "migraine"'
    }


def test_vocabulary_synonyms_keep_their_level() -> None:
    texts = ["Osteoarthritis of knee", "Rheumatoid arthritis", "HTN", "Hyperglycemia"]
    assert match(texts, "arthritis", {}) == {
        "Osteoarthritis of knee": 'narrower than "arthritis"',
        "Rheumatoid arthritis": 'narrower than "arthritis"',
    }
    assert match(texts, "RA", {}) == {"Rheumatoid arthritis": 'synonym of "RA"'}
    assert match(texts, "hypertension", {}) == {"HTN": 'synonym of "hypertension"'}
    assert match(texts, "diabetes", {"Hyperglycemia": 0.59}) == {}  # a finding, not diabetes


@pytest.mark.parametrize("query", ["diabetic foot", "diabetic foot ulcer"])
def test_a_query_with_words_beyond_a_condition_is_not_that_condition(query) -> None:
    """A query naming diabetes and a word or two more ("diabetic foot") is not covered by
    the vocabulary: a bare diabetes entry is no answer, and the phrases close in meaning are
    (0.80 is an ulcer phrase's cosine, 0.55 a diabetes entry's). Mutation caught: a query
    reading counted as covered by the vocabulary with words left over (`covered` without
    `own <= used`, or with one word left over allowed)."""
    texts = ["Type 2 diabetes mellitus", "Neuropathic foot ulcer", "Hypertension"]
    cos = {"Neuropathic foot ulcer": 0.80, "Type 2 diabetes mellitus": 0.55}
    assert match(texts, query, cos) == {"Neuropathic foot ulcer": f'similar to "{query}" 0.80'}
    # The condition alone is covered: answered from the vocabulary, nothing guessed.
    assert match(texts, "diabetic", cos) == {"Type 2 diabetes mellitus": 'synonym of "diabetic"'}


def test_british_spelling_and_filler_words_are_exact() -> None:
    texts = ["Anemia", "History of appendectomy"]
    assert match(texts, "anaemia", {}) == {"Anemia": "exact"}
    assert match(texts, "history of appendectomy", {}) == {"History of appendectomy": "exact"}
    assert match(texts, "appendix removed", {}) == {
        "History of appendectomy": 'synonym of "appendix removed"'
    }


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("No history of asthma.", []),
        ("Denies chest pain; reports wheezing", ["reports wheezing"]),
        ("Family history of diabetes in mother.", []),
        ("Concussion with no loss of consciousness", ["Concussion with no loss of consciousness"]),
        ("BP 144/91, above target.", ["BP #/#", "above target"]),
        ("none", []),
    ],
)
def test_negated_and_empty_clauses_are_dropped(text, kept) -> None:
    assert note_clauses(text) == kept


def test_list_entries() -> None:
    assert list_items(entries("HTN; no asthma, none, CKD stage 3")) == ["HTN", "CKD stage 3"]
    assert list_items(entries("none")) == list_items(entries("N/A")) == list_items(()) == []


def test_searchable_words() -> None:
    assert not phrases.has_searchable_words("the of and")
    assert not phrases.has_searchable_words("?! -- ...")
    assert not phrases.has_searchable_words("x")
    assert phrases.has_searchable_words("éé") and phrases.has_searchable_words("HTN")


def test_a_respelled_query_says_what_was_typed() -> None:
    """`matched` says 'spelling of "..."' with the words the user typed, alone for an
    exact match, after the how otherwise; readings of a query nobody respelled say nothing."""
    texts = ["Hypertension", "Chronic kidney disease"]
    table = PhraseTable(texts, len(texts))

    def how(query: str, fixes: dict[str, str]) -> dict[str, str]:
        forms = whole_query(query, fixes)
        cosines = [np.zeros(len(texts), dtype=np.float32) for _ in forms]
        return {texts[i]: m.how for i, m in table.match(forms, lambda: cosines).items()}

    assert how("hypertension", {"hypertention": "hypertension"}) == {
        "Hypertension": 'spelling of "hypertention"'
    }
    assert how("kidney disease", {"diesase": "disease"}) == {
        "Chronic kidney disease": 'synonym of "kidney disease", spelling of "kidney diesase"'
    }
    assert how("hypertension", {}) == {"Hypertension": "exact"}
    parts = phrases.query_parts("diabetes and hypertension", {"hypertention": "hypertension"})
    assert [p[0].typed for p in parts] == [None, "hypertention"]
