"""Spelling: a query word no dictionary knows, read as the closest word the index can answer.

Clinicians type fast and medical words are long: "hypertention", "astma", "blood preassure".
A query word is respelled only when all of these hold:

- it is not a word: not in the records, not in the clinical vocabulary (`clinsum.vocab`), not a
  stop-word, and not in the word lists (`WORD_LISTS`: an English list and an English medical
  list, about 240,000 words; see SOURCES.md). So a correctly spelled word is never changed:
  "hypotension" stays "hypotension" even when no record has it, and "ileum", "ilium",
  "prostate", "prostrate", "hyperthyroidism", "hypothyroidism" stay what they are;
- it has at least `ONE_TYPO` letters, and a target word is within its bound of edits: 1 for
  words of 5 to 8 letters, 2 from `TWO_TYPOS` (9) letters (Meilisearch's and Typesense's
  defaults). Edits are Damerau-Levenshtein (rapidfuzz): a transposition is one edit;
- targets are the words the records and the vocabulary use (and the stop-words, so "patinets
  with astma" reads "patients with asthma"). The closest target wins; among equally close ones,
  the one more phrases use, then the first in alphabetical order.

Without the word lists nothing is respelled (a word list is what tells a rare correct word
from a typo): `Speller.active` says which.

`Speller` is pure; `load_dictionary` is the one function here that reads files.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein

from clinsum.vocab import ALIASES, CONDITIONS, MEDICATIONS, SYMPTOMS, american

log = logging.getLogger("Search")

ONE_TYPO = 5  # a word of this many letters may have one typo (Meilisearch's minWordSizeForTypos)
TWO_TYPOS = 9  # and from this many, two
# Installed by `make setup` from Debian's packages (SOURCES.md says where they come from):
# SCOWL's American English "large" list, and the Hunspell English medical dictionary.
WORD_LISTS = (
    Path("/usr/share/dict/american-english-large"),
    Path("/usr/share/hunspell/en_med_glut.dic"),
)
LETTERS = re.compile(r"[^\W\d_]+")  # the words of a query, for spelling: letters only


def max_edits(word: str) -> int:
    """How many typos a word of this length may have: 0, 1 or 2."""
    return 0 if len(word) < ONE_TYPO else 1 if len(word) < TWO_TYPOS else 2


def read_word_list(text: str) -> set[str]:
    """The lower-cased words of a word list: one word a line, a Hunspell `.dic` (a count on
    the first line, `word/FLAGS`, indented comment lines) or a plain list; a possessive
    ("brunner's") also gives its word."""
    lines = text.lower().splitlines()
    words = {ln.partition("/")[0].strip() for ln in lines if ln and not ln[0].isspace()}
    words = {w for w in words if w and not w.isdigit()}
    return words | {w[:-2] for w in words if w.endswith("'s")}


@lru_cache(maxsize=1)
def load_dictionary(paths: tuple[Path, ...] = WORD_LISTS) -> frozenset[str]:
    """Every word of the word lists that are installed; empty if none is."""
    words: set[str] = set()
    missing = []
    for path in paths:
        try:
            words |= read_word_list(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            missing.append(str(path))
    if missing:
        log.warning(
            "word list(s) %s missing (make setup installs them): %s",
            ", ".join(missing),
            "misspelled words are not corrected" if not words else "fewer words known",
        )
    return frozenset(words)


def vocabulary_words() -> set[str]:
    """Every word the clinical vocabulary writes (conditions, symptoms, drugs, aliases)."""
    texts: list[str] = []
    for c in CONDITIONS.values():
        texts += [c.label, *c.synonyms, *c.symptoms, *c.medications]
    for phrasings in SYMPTOMS.values():
        texts += phrasings
    texts += list(MEDICATIONS)
    for alias, meanings in ALIASES.items():
        texts += [alias, *meanings]
    return {w for t in texts for w in LETTERS.findall(t.lower())}


@dataclass(frozen=True, slots=True)
class Respelled:
    """A query with its misspelled words replaced: `text`, and typed word -> read as."""

    text: str
    fixes: dict[str, str]

    @property
    def changed(self) -> bool:
        return bool(self.fixes)


class Speller:
    """Respells query words against `targets` (the words an index can answer), leaving every
    word of `dictionary`, of the targets and of `stopwords` as it is."""

    def __init__(
        self,
        targets: Mapping[str, int] | Iterable[str],
        dictionary: frozenset[str] | set[str],
        stopwords: Iterable[str] = (),
    ) -> None:
        counts = Counter(targets)  # a mapping's counts, or an iterable counted
        stop = {w.lower() for w in stopwords}
        for w in stop:
            counts.setdefault(w, 0)
        self.active = bool(dictionary)
        self._known = frozenset(dictionary) | frozenset(counts)
        self._weight = dict(counts)
        self._by_length: dict[int, list[str]] = {}
        for w in sorted(counts):
            self._by_length.setdefault(len(w), []).append(w)
        self._cache: dict[str, str | None] = {}

    def known(self, word: str) -> bool:
        """A word as it is written: in the records, the vocabulary or the word lists (also
        after British spelling, a plural "s" or "es", or a possessive)."""
        w = word.lower()
        candidates = {w, american(w), w.removesuffix("'s")}
        if len(w) > 3 and w.endswith("s"):
            candidates |= {w[:-1], w[:-2] if w.endswith("es") else w[:-1]}
        return any(c in self._known for c in candidates)

    def correct(self, word: str) -> str | None:
        """The target `word` is a typo of, or None (a known word, too short, nothing close)."""
        w = word.lower()
        if w in self._cache:
            return self._cache[w]
        found = None
        bound = max_edits(w)
        if self.active and bound and not self.known(w):
            near = [
                (d, -self._weight[target], target)
                for length in range(len(w) - bound, len(w) + bound + 1)
                for target, d, _ in process.extract(
                    w,
                    self._by_length.get(length, ()),
                    scorer=DamerauLevenshtein.distance,
                    score_cutoff=bound,
                    limit=None,
                )
            ]
            found = min(near)[2] if near else None
        if len(self._cache) < 4096:
            self._cache[w] = found
        return found

    def respell(self, query: str) -> Respelled:
        """`query` with each misspelled word replaced by the word it reads as."""
        fixes: dict[str, str] = {}

        def sub(m: re.Match[str]) -> str:
            fixed = self.correct(m.group())
            if fixed is None:
                return m.group()
            fixes[m.group().lower()] = fixed
            return fixed

        text = LETTERS.sub(sub, query)
        return Respelled(text, fixes)
