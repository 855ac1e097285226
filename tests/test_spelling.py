"""Respelling query words, without a model or an index: the word lists as installed, the
targets given."""

from __future__ import annotations

import pytest

from clinsum.phrases import STOPWORDS
from clinsum.spelling import (
    WORD_LISTS,
    Speller,
    load_dictionary,
    max_edits,
    read_word_list,
    vocabulary_words,
)

# The clinical words a record or the vocabulary uses, as an index would offer them.
TARGETS = [
    "hypertension",
    "hypothyroidism",
    "asthma",
    "blood",
    "pressure",
    "prostate",
    "ileum",
    "disease",
    "kidney",
    "diabetes",
    "chest",
    "pain",
]


@pytest.fixture(scope="module")
def speller() -> Speller:
    return Speller(TARGETS, load_dictionary(), STOPWORDS)


def test_the_word_lists_are_installed_and_large() -> None:
    """`make setup` installs them; without them nothing is respelled at all."""
    missing = [str(p) for p in WORD_LISTS if not p.is_file()]
    assert not missing, "run `make setup` (apt-get install hunspell-en-med wamerican-large)"
    words = load_dictionary()
    assert len(words) > 200_000
    for word in ("hypotension", "hyperthyroidism", "ilium", "prostrate", "pian", "metformin"):
        assert word in words, word


def test_a_word_list_is_read_as_hunspell_writes_it() -> None:
    dic = "3\n    This is a comment line\nAarskog/M\nileum\nBrunner's\n"
    assert read_word_list(dic) == {"aarskog", "ileum", "brunner's", "brunner"}


@pytest.mark.parametrize(
    ("word", "edits"),
    [("pain", 0), ("astma", 1), ("diabetis", 1), ("preassure", 2), ("hypertention", 2)],
)
def test_typos_allowed_grow_with_the_word(word, edits) -> None:
    assert max_edits(word) == edits


@pytest.mark.parametrize(
    ("typed", "read"),
    [
        ("hypertention", "hypertension"),
        ("hipertension", "hypertension"),
        ("hipertensoin", "hypertension"),  # two edits in a word of 9+ letters
        ("astma", "asthma"),
        ("ashtma", "asthma"),  # a transposition is one edit (Levenshtein would say two)
        ("preassure", "pressure"),
        ("diesase", "disease"),
        ("Hypertention", "hypertension"),
        ("patinets", "patients"),  # a stop-word is a target too
    ],
)
def test_a_misspelled_word_is_read_as_the_closest_target(speller, typed, read) -> None:
    assert speller.correct(typed) == read


@pytest.mark.parametrize(
    "word",
    [
        "hypotension",  # hypertension is 2 edits away, and records have it: still not changed
        "hyperthyroidism",
        "ilium",
        "prostrate",
        "pian",  # yaws; "chest pian" is not read as chest pain
        "kidneys",
        "anaemia",
        "asthmatic",
    ],
)
def test_a_correctly_spelled_word_is_never_respelled(speller, word) -> None:
    assert speller.correct(word) is None
    assert speller.respell(f"history of {word}").text == f"history of {word}"


@pytest.mark.parametrize(
    "typed",
    [
        "astm",  # 4 letters: no typo allowed
        "diabetsi",  # two edits in an 8-letter word: one allowed
        "xqzvbnmlk",  # nothing close
    ],
)
def test_beyond_the_bound_nothing_is_respelled(speller, typed) -> None:
    assert speller.correct(typed) is None


def test_the_whole_query_is_respelled_word_by_word(speller) -> None:
    got = speller.respell("Patients with high blood preassure, and astma")
    assert got.text == "Patients with high blood pressure, and asthma"
    assert got.fixes == {"preassure": "pressure", "astma": "asthma"}
    assert not speller.respell("chest pain").changed


def test_equally_close_targets_go_to_the_one_more_phrases_use() -> None:
    words = load_dictionary()
    assert Speller({"coughs": 1, "cough": 1}, words).correct("coughx") == "cough"
    assert Speller({"coughed": 9, "cougher": 1}, words).correct("coughex") == "coughed"
    assert Speller({"coughed": 1, "cougher": 9}, words).correct("coughex") == "cougher"


def test_without_the_word_lists_nothing_is_respelled() -> None:
    """A word list is what tells a rare correct word from a typo: without one, "hypotension"
    would become "hypertension", so nothing is respelled."""
    bare = Speller(TARGETS, frozenset(), STOPWORDS)
    assert not bare.active
    assert bare.correct("hypertention") is None
    assert bare.correct("hypotension") is None


def test_the_vocabulary_is_known() -> None:
    words = vocabulary_words()
    assert {"hypertension", "dyspnoea", "semaglutide", "lumbago"} <= words
