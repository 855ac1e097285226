"""Which record phrases answer a query, and how: the text rules of search, without any I/O.

A record says "Chronic neck pain", "HTN" or "Prediabetes"; a clinician types "cervicalgia",
"hypertension" or "borderline diabetes". Search compares the query with each distinct phrase
of the records (list entries and clauses of notes), never with a whole record, and every
answer says how it matched:

- exact: the same words, after spelling ("anaemia" = "anemia"), plurals and filler words
  ("history of") are set aside;
- synonym: the vocabulary names the same concept ("HTN" = "hypertension");
- narrower: the phrase is a kind of what was asked ("Childhood asthma" for "asthma"): a broad
  query includes the specific conditions, never the other way round;
- similar: the sentence embeddings are close (cosine at least `SIMILAR_MIN`, and near the best
  match), unless the phrase is broader than the query ("Diabetes" for "borderline diabetes")
  or differs by a prefix that changes the meaning ("Prediabetes" for "diabetes"), and only
  for queries the vocabulary does not know ("DJD" has no similar-sounding answers).

A word alone never matches inside a longer phrase on spelling: "low" does not find "Chronic
low back pain". The phrase must also be close in meaning (`CONTAINED_MIN`).

Negated clauses ("no history of asthma", "denies chest pain", "family history of diabetes")
and empty entries ("none") are not evidence and never become phrases.

A query whose misspelled words `clinsum.spelling` respelled is read as respelled; each of its
readings keeps what was typed (`Form.typed`), so `matched` says 'spelling of "hypertention"'.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from clinsum.records import is_no_entry
from clinsum.vocab import ALIASES, LOOSE, MEDICATIONS, NARROWER, american, find_concepts

SIMILAR_MIN = 0.6  # cosine: below this, MiniLM pairs unrelated conditions as often as not
SIMILAR_MARGIN = 0.1  # a similar phrase must be this close to the best match of the query
# A query's words inside a longer phrase count only if the meaning is this close too:
# "migraine" in "Chronic intractable migraine without aura" 0.73, "low" in "Chronic low back
# pain" 0.34.
CONTAINED_MIN = 0.5
EXACT, SYNONYM, NARROWER_MATCH = 1.0, 0.95, 0.9  # strengths; similar is 0.85 * cosine
BY_DRUG, WORD_IN_NOTE = 0.5, 0.5

_STOPWORD_TEXT = """
    a about all an and any anyone are as at be been but by can current currently diagnosed do
    does find for from had has have having her his history hx in is it its known list me my
    nil no none not of on or past patient patients people person pmh previous prior search
    show she someone suffering that the their them they those to under was were what which
    who whom with without
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)?(?:-[^\W_]+)*")  # words in any script
_CLAUSE_SPLIT = re.compile(r"[.!?;:](?=\s|$)|,|\bbut\b|\bhowever\b")
_DIGITS = re.compile(r"\d+(?:\.\d+)?")
# A clause that opens with one of these states an absence, or someone else's condition.
_NEGATED = re.compile(
    r"^(?:(?:the\s+)?patient\s+|pt\s+)?(?:no|not|denies|denied|negative for|without|free of|"
    r"ruled out|rules out|never had|nil|none|n/a|family history|fh of|fhx)\b"
)
# Prefixes that make a different condition of the same stem ("prediabetes", "hypothyroidism").
_PREFIXES = ("pre", "post", "non", "anti", "hypo", "hyper", "pseudo", "para", "peri")
# Words that say what a prefix says: "high triglycerides" is "hypertriglyceridemia".
_PREFIX_WORDS = {
    "hyper": frozenset({"high", "raised", "elevated", "increased", "excess"}),
    "hypo": frozenset({"low", "decreased", "reduced"}),
    "pre": frozenset({"borderline", "early"}),
}
_SPLIT_QUERY = re.compile(r"\s*(?:[,;&+]|\band\b|\bwith\b|\bplus\b)\s*")


def stem(word: str) -> str:
    """A light, consistent stem: enough that "seizures", "seizure"; "diabetic", "diabetes" meet."""
    word = american(word)
    if len(word) > 4 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if len(word) > 5 and word.endswith("ic"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]
    return word


@lru_cache(maxsize=1 << 16)
def words(text: str) -> tuple[str, ...]:
    """The content words of `text`, stemmed, in order, without stop-words."""
    return tuple(stem(t) for t in _TOKEN.findall(text.lower()) if t not in STOPWORDS)


def key(text: str) -> str:
    """What two phrases must share to be the same phrase: their content words, sorted."""
    return " ".join(sorted(set(words(text))))


def list_items(entries: Iterable[str]) -> list[str]:
    """The entries of a list ("HTN", "CKD stage 3", "no known allergies"), without negated ones
    (the records package has split the list and dropped empty entries)."""
    return [e for e in entries if _positive(e)]


def mask_numbers(text: str) -> str:
    return _DIGITS.sub("#", text)


def unmask(masked: str, notes: Iterable[str]) -> str:
    """The clause of `notes` that `masked` stands for, with its numbers back ("Metformin
    reduced to 500mg", not "#mg"): what a person reads in `matched` is the record's words."""
    if "#" not in masked:
        return masked
    for text in notes:
        for part in _CLAUSE_SPLIT.split(text):
            if _DIGITS.sub("#", part.strip()) == masked:
                return part.strip()
    return masked


def note_clauses(text: str) -> list[str]:
    """The clauses of a note, without negated ones; numbers masked as "#" (a blood pressure
    of 144/91 is not something anyone searches for by its digits, and masking keeps the
    number of distinct clauses small at 100,000 patients)."""
    parts = (s.strip() for s in _CLAUSE_SPLIT.split(text))
    return [_DIGITS.sub("#", p) for p in parts if _positive(p)]


def _positive(part: str) -> bool:
    low = part.lower().strip(" .")
    return not is_no_entry(low) and not _NEGATED.match(low)


def _variant(query_words: Iterable[str], phrase_words: Iterable[str]) -> bool:
    """True if a word of one side is a prefixed form of a word of the other side."""
    raw_q = {w.replace("-", "") for w in query_words}
    raw_p = {w.replace("-", "") for w in phrase_words}
    for a in raw_q:
        for b in raw_p:
            for long, short, short_side in ((a, b, raw_p), (b, a, raw_q)):
                for prefix in _PREFIXES:
                    if long.startswith(prefix) and not short.startswith(prefix):
                        rest = long[len(prefix) :]
                        said = _PREFIX_WORDS.get(prefix, frozenset()) & short_side
                        if len(rest) >= 4 and short[:5] == rest[:5] and not said:
                            return True
    return False


@dataclass(frozen=True, slots=True)
class Form:
    """One way of reading a query part: its own words, or a vocabulary alias of them."""

    text: str  # embedded
    said: str  # the user's words this form reads, for `matched`
    words: frozenset[str]
    key: str
    concepts: dict[str, str] = field(hash=False, compare=False)
    covered: bool = False  # the vocabulary phrases use up every content word
    typed: str | None = None  # what the user typed, when `clinsum.spelling` respelled it

    def how(self, how: str) -> str:
        """`how` for `matched`, saying so when the query was respelled: 'spelling of
        "hypertention"' for an exact match, else '<how>, spelling of "..."'."""
        if self.typed is None:
            return how
        if how == "exact":
            return f'spelling of "{self.typed}"'
        return f'{how}, spelling of "{self.typed}"'


def _form(text: str, said: str, typed: str | None = None) -> Form:
    found = _concepts(text)
    used = set(words(" ".join(found.values())))
    own = set(words(text))
    covered = bool(found) and own <= used
    return Form(text, said, frozenset(own), key(text), found, covered, typed)


def _concepts(text: str) -> dict[str, str]:
    """find_concepts on American spelling, keeping only strict synonyms (not `LOOSE` ones)."""
    spelled = " ".join(american(t) for t in _TOKEN.findall(text.lower()))
    return {c: p for c, p in find_concepts(spelled).items() if p not in LOOSE}


def _aliased(text: str) -> list[str]:
    """`text` with each alias phrase it contains replaced by what it stands for."""
    norm = " " + " ".join(american(t) for t in _TOKEN.findall(text.lower())) + " "
    out = [norm]
    for alias in sorted(ALIASES, key=len, reverse=True):
        needle = f" {alias} "
        if needle in norm:
            out = [o.replace(needle, f" {t} ") for o in out for t in ALIASES[alias]]
    return [o.strip() for o in out if o.strip() != norm.strip()]


def query_parts(query: str, fixes: Mapping[str, str] | None = None) -> list[list[Form]]:
    """The query as parts ("diabetes and hypertension" is two), each with its readings.

    A query that reads as one phrase the records hold stays whole ("concussion with no loss
    of consciousness"): the caller tries the whole query first and splits only if that fails.
    `fixes` (typed word -> respelled word) says which words of `query` were respelled.
    """
    parts = [p for p in _SPLIT_QUERY.split(query.lower()) if words(p)]
    return [whole_query(p, fixes) for p in parts]


def whole_query(query: str, fixes: Mapping[str, str] | None = None) -> list[Form]:
    """The query read as it is, and as each alias it contains stands for; `fixes` (typed
    word -> respelled word) marks the readings of a respelled query with what was typed."""
    said = query.strip()
    typed = _typed(said, fixes) if fixes else None
    return [_form(said, said, typed), *(_form(a, said, typed) for a in _aliased(said))]


def _typed(said: str, fixes: Mapping[str, str]) -> str | None:
    """`said` as the user typed it, or None if no word of it was respelled."""
    back = {fixed: typed for typed, fixed in fixes.items()}
    typed = re.sub(r"[^\W\d_]+", lambda m: back.get(m.group().lower(), m.group()), said)
    return typed if typed != said else None


def has_searchable_words(query: str) -> bool:
    """At least one content word of two or more characters."""
    return any(len(w) >= 2 for w in words(query))


@dataclass(frozen=True, slots=True)
class Match:
    strength: float
    how: str  # for `matched`: 'exact', 'synonym of "htn"', 'similar to "x" 0.71', ...


class PhraseTable:
    """The distinct phrases of a corpus with what matching needs: words, keys, concepts.

    The first `embedded` phrases (list entries) have sentence vectors; the rest are clauses
    of notes, matched on their words and the vocabulary only.
    """

    def __init__(self, texts: Sequence[str], embedded: int) -> None:
        self.texts = list(texts)
        self.embedded = embedded
        self.words = [frozenset(words(t)) for t in texts]
        self.keys = [key(t) for t in texts]
        self.by_key: dict[str, list[int]] = {}
        self.by_word: dict[str, list[int]] = {}
        self.by_concept: dict[str, list[tuple[int, str]]] = {}
        for i, t in enumerate(texts):
            self.by_key.setdefault(self.keys[i], []).append(i)
            for w in self.words[i]:
                self.by_word.setdefault(w, []).append(i)
            for concept, phrase in _concepts(t).items():
                self.by_concept.setdefault(concept, []).append((i, phrase))
                treats = MEDICATIONS.get(concept.partition(":")[2], ())
                if concept.startswith("medication:") and len(treats) == 1:
                    # Only a drug for one condition implies it: albuterol does not tell
                    # asthma from COPD, aspirin says nothing of a stroke.
                    self.by_concept.setdefault(f"condition:{treats[0]}", []).append(
                        (i, "drug:" + phrase)
                    )
        self.phrase_words = {w for i in range(embedded) for w in self.words[i]}

    def match(
        self, forms: Sequence[Form], cosines: Callable[[], Sequence[np.ndarray]]
    ) -> dict[int, Match]:
        """Phrase index -> how it answers the query read as `forms`.

        `cosines()` gives one array per form (cosine with every phrase). It is called only
        if needed, since it costs a model call: a query the vocabulary names ("HTN",
        "diabetes") is answered from the words alone.
        """
        found: dict[int, Match] = {}
        got: list[np.ndarray] = []

        def cos_of(j: int) -> np.ndarray:
            if not got:
                got.extend(cosines())
            return got[j]

        def add(i: int, m: Match, form: Form) -> None:
            if i not in found or found[i].strength < m.strength:
                found[i] = Match(m.strength, form.how(m.how))

        strong = False
        for form in forms:
            for i in self.by_key.get(form.key, ()):
                how = "exact" if form is forms[0] else f'synonym of "{form.said}"'
                add(i, Match(EXACT, how), form)
                strong = True
            if form.covered:
                for concept, asked in form.concepts.items():
                    for i, written in self.by_concept.get(concept, ()):
                        how = _concept_match(
                            concept, asked, written, self.words[i], form.words, form.said
                        )
                        if how is not None:
                            add(i, Match(*how), form)
                            strong = True
        for j, form in enumerate(forms):
            if not form.words:
                continue
            holders = set.intersection(*(set(self.by_word.get(w, ())) for w in form.words))
            in_note_only = not form.words & self.phrase_words
            for i in sorted(holders):
                if i >= self.embedded:
                    if in_note_only:  # a word no list entry uses: a note may say it
                        add(i, Match(WORD_IN_NOTE, f'words of "{form.said}"'), form)
                elif i in found and found[i].strength >= NARROWER_MATCH:
                    continue
                elif self.words[i] > form.words and cos_of(j)[i] >= CONTAINED_MIN:
                    add(i, Match(NARROWER_MATCH, f'narrower than "{form.said}"'), form)
                    strong = True
        guessing = [j for j, form in enumerate(forms) if not form.covered]
        if not guessing:
            return found  # the vocabulary knows what this names: no guessing by likeness
        best = 1.0 if strong else max(float(cos_of(j).max(initial=0.0)) for j in range(len(forms)))
        floor = max(SIMILAR_MIN, best - SIMILAR_MARGIN)
        for j in guessing:
            form, cos = forms[j], cos_of(j)
            for i in np.flatnonzero(cos >= floor):
                i = int(i)
                if i in found or self.words[i] < form.words or not self.words[i]:
                    continue  # already matched better, or broader than what was asked
                if _variant(form.words, self.words[i]):
                    continue
                how = f'similar to "{form.said}" {cos[i]:.2f}'
                add(i, Match(0.85 * float(cos[i]), how), form)
        return found


def _concept_match(
    concept: str,
    asked: str,
    written: str,
    phrase_words: frozenset[str],
    form_words: frozenset[str],
    said: str,
) -> tuple[float, str] | None:
    """How a phrase naming `concept` as `written` answers a query naming it as `asked`."""
    narrower = NARROWER.get(concept.partition(":")[2], frozenset())
    if asked in narrower and written != asked:
        return None  # "rheumatoid arthritis" asked: "osteoarthritis", or a drug, is no answer
    if written.startswith("drug:"):
        return BY_DRUG, f'treats "{said}"'
    if written in narrower and asked not in narrower:
        return NARROWER_MATCH, f'narrower than "{said}"'
    if phrase_words > set(words(written)) | form_words:
        return NARROWER_MATCH, f'narrower than "{said}"'  # "Childhood asthma" for "asthma"
    return SYNONYM, f'synonym of "{said}"'
