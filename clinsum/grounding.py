"""Checks a generated summary against the patient record it claims to summarise.

A 135M-parameter model writes fluent text that may carry a wrong name, age, number, diagnosis
or drug, and a clinical summary with one of those is worse than none. The check reads the
summary with cheap rules (regular expressions and the shared vocabulary, no model, no I/O) so
it can run after every generation, and it reports each unsupported claim with its character
span so a client can point at the offending words.

Key facts, the ones `coverage` counts: the patient's name, age, gender, current blood
pressure, current blood sugar, and each entry of `medical_history`. Medications, risk scores
and symptoms are checked when the summary states them but are not counted: a two-to-three
sentence summary is not expected to list every drug.

A value or condition found only in the visit history is supported (the summary may describe
the course of care) and its `Fact.source` names the visit, so a reader can tell it is not the
current value.

Symptoms the record never mentions are reported as unsupported with kind "symptom", but they
are not `blocking` and do not make `ok` false. Summaries name symptoms mostly in advice ("seek
care if chest pain occurs") and in wordings the vocabulary does not know, so blocking the
save on them would mostly block good summaries and teach users to pass `force` by habit,
which would defeat the check for names, numbers, diagnoses and drugs.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import lru_cache
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from .vocab import CONDITIONS, MEDICATIONS, SYMPTOMS, find_concepts

if TYPE_CHECKING:
    from .records import Patient


@dataclass(frozen=True, slots=True)
class Fact:
    """A fact of the record that the summary states correctly, and where it does."""

    kind: str  # name/age/gender/bp/sugar/risk/dose/date/condition/medication/symptom
    value: str  # the record's value
    text: str
    start: int
    end: int
    source: str = "record"  # or "visit YYYY-MM-DD" when only the visit history has it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Claim:
    """Something the summary says that the record does not support."""

    kind: str  # name/age/gender/bp/sugar/number/condition/medication/symptom
    text: str
    start: int
    end: int
    reason: str
    blocking: bool = True  # False only for symptoms, see the module docstring

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Grounding:
    supported: list[Fact]
    unsupported: list[Claim]
    missing: list[str]  # key facts not stated, e.g. "blood sugar: 212"
    coverage: float  # share of key facts stated, 0..1

    @property
    def ok(self) -> bool:
        return not any(c.blocking for c in self.unsupported)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "coverage": round(self.coverage, 3),
            "supported": [f.to_dict() for f in self.supported],
            "unsupported": [c.to_dict() for c in self.unsupported],
            "missing": list(self.missing),
        }


# --- words and patterns ---------------------------------------------------------------------


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


_FEMALE_WORDS = frozenset({"she", "her", "hers", "herself", "female", "woman", "lady", "girl"})
_MALE_WORDS = frozenset({"he", "him", "his", "himself", "male", "man", "gentleman", "boy"})
_GENDER_WORD = re.compile(r"\b(?:" + "|".join(sorted(_FEMALE_WORDS | _MALE_WORDS)) + r")\b", re.I)
_GENDERS = {
    "f": "female",
    "female": "female",
    "woman": "female",
    "m": "male",
    "male": "male",
    "man": "male",
}
_TITLE_GENDER = {"Mr": "male", "Mrs": "female", "Ms": "female", "Miss": "female"}
_TITLES = frozenset({"Mr", "Mrs", "Ms", "Miss", "Mx", "Dr", "Doctor"})
# A sentence naming one of these is probably about someone else too, so its pronouns and
# ages are not held against the patient.
_OTHER_PERSON = re.compile(
    r"\b(?:husband|wife|spouse|partner|son|daughter|father|mother|brother|sister|"
    r"grand(?:son|daughter|father|mother)|boyfriend|girlfriend|caregiver)s?\b",
    re.I,
)

# Common first names, for spotting invented people; the data set's own names come in through
# `known_names`. Names that are also ordinary words (May, Grace, Mark, Will...) are left out.
_COMMON_FIRST_NAMES = _wordset(
    """
    james john robert michael william david richard joseph thomas charles christopher daniel
    matthew anthony donald steven paul andrew joshua kenneth kevin brian george timothy ronald
    edward jason jeffrey ryan jacob gary nicholas eric jonathan stephen larry justin scott
    brandon benjamin samuel gregory alexander patrick raymond dennis jerry tyler aaron jose
    adam nathan henry douglas zachary peter kyle ethan walter noah jeremy christian keith
    roger terry gerald harold sean austin carl arthur lawrence dylan jesse bryan billy bruce
    gabriel logan albert willie alan juan wayne elijah randy vincent ralph eugene russell
    bobby mason philip louis tom jim mike bob steve dave joe tony fred harry
    mary patricia jennifer linda elizabeth barbara susan jessica sarah karen lisa nancy betty
    margaret sandra ashley kimberly emily donna michelle carol amanda dorothy melissa deborah
    stephanie rebecca sharon laura cynthia kathleen amy angela shirley anna brenda pamela
    emma nicole helen samantha katherine christine debra rachel carolyn janet catherine maria
    diane ruth julie olivia joyce virginia victoria kelly lauren christina joan evelyn judith
    megan andrea cheryl hannah jacqueline martha gloria teresa ann sara madison frances
    kathryn janice jean abigail alice judy sophia denise doris marilyn danielle beverly
    isabella theresa diana natalie brittany charlotte marie kayla alexis lori susan jane
    ellen eleanor louise anne carmen rosa lucy sophie
    """
)
_AMBIGUOUS_NAMES = _wordset(
    """
    may june april august will mark grace hope faith joy bill rose dawn summer guy art pat sue
    chase hunter max ray rich frank jack miles norman sandy penny ruby amber crystal holly ivy
    iris lily daisy heather violet olive pearl jade autumn river brook glen dale wade lane
    chance price young king long black white green gray grey brown stone wood hill bell
    """
)
# Capitalised words that start sentences or headings and are never taken for a name.
_NOT_NAMES = _wordset(
    """
    the a an this that these those she he her his they their it its in on at with and but or
    for of to as is was has had have be been not no also given based due last overall
    patient patients blood pressure sugar glucose risk score history medical current
    currently medication medications summary plan recommendation recommendations
    recommended recommend assessment diagnosis key concerns concern follow continue monitor
    consider check type level levels mmhg visit visits note notes outcome age gender name
    female male symptoms symptom heart chronic high low acute clinical record stable
    improved worsened admitted referred emergency department hospital clinic care
    january february march april may june july august september october november december
    monday tuesday wednesday thursday friday saturday sunday today please regular lifestyle
    diet exercise labs lab home adherence dose daily weekly mg mcg units inhaler vitamin
    """
) | frozenset(
    w
    for phrase in (
        *(s for c in CONDITIONS.values() for s in (c.label, *c.synonyms)),
        *(s for phrasings in SYMPTOMS.values() for s in phrasings),
        *MEDICATIONS,
    )
    for w in re.findall(r"[a-z]+", phrase.lower())
)

_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_NAME_GAP = re.compile(r"[ \t]+")
_TITLE_GAP = re.compile(r"\.?[ \t]+")  # "Dr. Smith", "Mary A. Smith"

_SENTENCE_END = re.compile(r"(?<!\bMr)(?<!\bMrs)(?<!\bMs)(?<!\bDr)(?<!\b[A-Z])[.!?;:](?=\s|$)|\n")

_NEGATION = re.compile(
    r"\b(?:no|not|never|nor|without|denies|denied|deny|denying|negative for|free of|"
    r"absence of|ruled out|rules out|avoid|avoids|avoiding)\b",
    re.I,
)
# "no change in her hypertension" does not deny the hypertension.
_PSEUDO_NEGATION = re.compile(
    r"\s*(?:change|changes|increase|decrease|worsening|improvement|further|longer|only|"
    r"significant)\b",
    re.I,
)
# Mentions that are not claims about the patient: "risk of stroke", "monitor for chest pain".
_HEDGE = re.compile(
    r"\b(?:risks? (?:of|for)|at risk|prevent\w*|reduce\w* (?:the )?risk|screen(?:ing)? for|"
    r"monitor(?:ing)? for|watch(?:ing)? for|signs? of|symptoms? of|evaluat\w* for|"
    r"assess\w* for|rule out|family history|if|in case of)\b",
    re.I,
)
# Words that end the reach of a negation or hedge: "denies chest pain, has diabetes".
_SCOPE_END = re.compile(
    r"\b(?:but|however|although|though|yet|except|apart from|aside from|whereas|while|"
    r"reports?|presents?|complains?)\b|(?:,|\band)\s+(?:has|have|is|was|with|reports?)\b",
    re.I,
)
_SCOPE_WORDS = 5
_POST_NEGATION = re.compile(
    r"[\s,]*(?:(?:was|were|is|are|has been|have been|been)\s+)?"
    r"(?:ruled out|excluded|denied|absent|not present|negative)\b",
    re.I,
)
_POST_HEDGE = re.compile(r"[\s-]*(?:risk|prevention|prophylaxis|screening)\b", re.I)

_NUM = r"\d+(?:\.\d+)?"
_DATE = re.compile(r"(?<![\w/.-])(\d{4})-(\d{1,2})-(\d{1,2})(?![\w/])")
_AGE = re.compile(
    r"(?<![\w.])(\d{1,3})(?:\s*-?\s*(?:years?|yrs?)\s*-?\s*old\b|\s*(?:yo|y/o|y\.o\.)(?!\w))"
    r"|(?<!\bat )(?<!\bsince )(?<!\bby )\b(?:aged?:?|age\s+of)\s*(\d{1,3})(?![\w.]|\.\d)",
    re.I,
)
_BP = re.compile(
    r"(?<![\w./])(\d{2,3})\s*(?:/|\bover\b)\s*(\d{2,3})(?![\w/]|\.\d)(?:\s*mm\s*hg\b)?", re.I
)
_DURATION = re.compile(
    rf"(?<![\w.]){_NUM}(?:\s*(?:-|–|to)\s*{_NUM})?\s*"
    r"(?:days?|weeks?|wks?|months?|mos?|years?|yrs?|hours?|hrs?|minutes?|mins?)\b",
    re.I,
)
_SUGAR_UNIT = re.compile(rf"(?<![\w.])({_NUM})\s*mg\s*/\s*dl\b", re.I)
_SUGAR_WORDS = frozenset({"sugar", "glucose", "bg", "bgl", "fbg", "fbs"})
_SUGAR_LABEL = re.compile(r"\b(?:" + "|".join(sorted(_SUGAR_WORDS)) + r")\b", re.I)
_RISK_WORDS = frozenset({"risk", "score"})
_RISK_LABEL = re.compile(r"\b(?:risk|score)\b", re.I)
# A number this many words after its label still belongs to it: "glucose level is 212".
_LABEL_REACH = re.compile(
    rf"((?:[\s,:=(-]*[^\W\d_]+){{0,4}}?)[\s,:=(-]*({_NUM})(\s*(?:%|percent\b))?(?![\w/]|\.\d)"
)
_RISK_BEFORE = re.compile(rf"(?<![\w./])({_NUM})(\s*(?:%|percent\b))?\s+(?:\w+\s+)?risk\b", re.I)
_OTHER_LABELS = _wordset(
    """
    risk score bp pressure age aged rate pulse weight bmi temperature temp cholesterol ldl hdl
    triglycerides creatinine egfr oxygen saturation spo2 sugar glucose a1c hba1c
    """
)
_DOSE = re.compile(
    rf"(?<![\w.])({_NUM})\s*(mg|mcg|µg|ug|g|units?|iu|ml|milligrams?|micrograms?)\b", re.I
)
_DOSE_UNITS = {
    "µg": "mcg",
    "ug": "mcg",
    "microgram": "mcg",
    "micrograms": "mcg",
    "milligram": "mg",
    "milligrams": "mg",
    "unit": "units",
    "iu": "units",
}
_STRAY = re.compile(rf"(?<![\w.,/])(?<![^\W\d_]-)({_NUM})(\s*%)?(?![\w/]|[.,]\d)")
_RECORD_NUMBER = re.compile(_NUM)
# "goal below 130/80", "target glucose < 180": a threshold, not a claim about the patient.
_THRESHOLD = re.compile(
    r"(?:\b(?:goal|target|aim)\b(?:\s*(?:(?:bp|blood pressure|glucose|sugar|of|is|to|be|"
    r"below|under|less than)\b|[<≤:]=?))*|\b(?:below|under|less than|lower than|greater than|"
    r"more than|above|exceeding|exceeds|at least|at most)|[<>≤≥]=?)\s*$",
    re.I,
)
_FINDING_PHRASES = {
    "hypertension": frozenset(
        {"high blood pressure", "elevated blood pressure", "raised blood pressure", "high bp"}
    ),
    "diabetes": frozenset({"high blood sugar", "hyperglycemia", "hyperglycaemia"}),
}
_HIGH_SYSTOLIC, _HIGH_DIASTOLIC, _HIGH_SUGAR = 130, 80, 126
_MENTION_RANK = {"asserted": 0, "hedged": 1, "negated": 2}
_SMALL_COUNT = 10  # "2-3 times", "type 2": counts, not clinical values
_EMPTY_HISTORY = frozenset({"", "none", "n/a", "na", "nil", "no known history"})


# --- the record, reduced to what the summary is compared with -------------------------------


def _keys(text: str, kind: str) -> list[str]:
    return [c.partition(":")[2] for c in find_concepts(text) if c.startswith(kind + ":")]


def _parse_bp(text: str) -> tuple[int, int] | None:
    m = re.search(r"(\d{2,3})\s*/\s*(\d{2,3})", text)
    return (int(m[1]), int(m[2])) if m else None


def _close(written: str, target: float) -> bool:
    """Equal to the precision written, on either the 0-1 or the percent scale."""
    decimals = len(written.partition(".")[2])
    tol = 0.5 * 10**-decimals + 1e-9
    value = float(written)
    return abs(value - target) <= tol or abs(value - target * 100) <= tol


def _dose_unit(unit: str) -> str:
    unit = unit.lower()
    return _DOSE_UNITS.get(unit, unit)


@dataclass(slots=True)
class _Record:
    gender: str | None
    bp: tuple[int, int] | None
    bps: dict[tuple[int, int], str]
    sugars: dict[int, str]
    scores: list[tuple[float, str, str]]  # value, which score, source
    conditions: dict[str, str]  # condition key -> source
    history: list[tuple[str, list[str]]]  # medical_history entry, its condition keys
    medications: list[tuple[str, str]]  # one drug with its dose, source
    doses: dict[tuple[float, str], tuple[str, str]]  # (value, unit) -> (entry, source)
    symptoms: dict[str, str]  # symptom key -> source
    dates: frozenset[str]
    numbers: tuple[float, ...]


def _record(patient: Patient) -> _Record:
    visits = [(f"visit {v.date}", v) for v in patient.visit_history]
    bps: dict[tuple[int, int], str] = {}
    sugars: dict[int, str] = {patient.current_sugar: "record"}
    scores = [
        (patient.risk_score, "risk score", "record"),
        (patient.base_score, "base score", "record"),
    ]
    conditions: dict[str, str] = {}
    history = []
    for entry in patient.conditions():
        if entry.lower() not in _EMPTY_HISTORY:
            keys = _keys(entry, "condition")
            history.append((entry, keys))
            conditions.update(dict.fromkeys(keys, "record"))
    medications = [(entry, "record") for entry in patient.medications()]
    symptoms = dict.fromkeys(_keys(patient.current_symptoms, "symptom"), "record")
    current_bp = _parse_bp(patient.current_bp)
    if current_bp:
        bps[current_bp] = "record"
    for source, v in visits:
        visit_bp = _parse_bp(v.bp)
        if visit_bp:
            bps.setdefault(visit_bp, source)
        sugars.setdefault(v.sugar, source)
        scores += [(v.risk_score, "risk score", source), (v.base_score, "base score", source)]
        for key in _keys(v.history, "condition"):
            conditions.setdefault(key, source)
        medications += [(entry.strip(), source) for entry in re.split(r"[,;]", v.medications)]
        for key in _keys(v.symptoms, "symptom"):
            symptoms.setdefault(key, source)
    doses: dict[tuple[float, str], tuple[str, str]] = {}
    for entry, source in medications:
        for m in _DOSE.finditer(entry):
            doses.setdefault((float(m[1]), _dose_unit(m[2])), (entry, source))
    texts = [
        str(patient.patient_id),
        str(patient.age),
        patient.current_symptoms,
        patient.current_bp,
        str(patient.current_sugar),
        patient.medical_history,
        patient.current_medications,
    ]
    for _, v in visits:
        texts += [v.date, v.symptoms, v.bp, str(v.sugar), v.history, v.medications, v.notes]
        texts += [v.outcome]
    numbers = {float(n) for t in texts for n in _RECORD_NUMBER.findall(t)}
    return _Record(
        gender=_GENDERS.get(patient.gender.strip().lower()),
        bp=current_bp,
        bps=bps,
        sugars=sugars,
        scores=scores,
        conditions=conditions,
        history=history,
        medications=medications,
        doses=doses,
        symptoms=symptoms,
        dates=frozenset(v.date for v in patient.visit_history),
        numbers=tuple(sorted(numbers)),
    )


@lru_cache(maxsize=8)
def _name_lists(known_names: tuple[str, ...]) -> tuple[frozenset[str], frozenset[str]]:
    """First and last names of the data set; cached because the server passes the same tuple."""
    firsts, lasts = set(_COMMON_FIRST_NAMES), set()
    for name in known_names:
        parts = name.lower().split()
        if len(parts) >= 2:
            firsts.add(parts[0])
            lasts.add(parts[-1])
    return (
        frozenset(firsts - _AMBIGUOUS_NAMES - _NOT_NAMES),
        frozenset(lasts - _AMBIGUOUS_NAMES - _NOT_NAMES),
    )


@lru_cache(maxsize=1024)
def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    """Finds a vocabulary phrase in raw text the way `find_concepts` matched it normalised."""
    words = r"[^a-z0-9/'+-]+".join(re.escape(w) for w in phrase.split())
    return re.compile(rf"(?<![a-z0-9/'+-]){words}(?![a-z0-9/'+-])", re.I)


@lru_cache(maxsize=1024)
def _word_pattern(word: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![a-z]){re.escape(word)}(?![a-z])", re.I)


def _status(sentence: str, start: int, end: int) -> str:
    """Whether a mention is a claim about the patient: "asserted", "hedged" or "negated"."""
    if _POST_NEGATION.match(sentence, end):
        return "negated"
    prefix = sentence[:start]
    best: tuple[int, str] | None = None
    for pattern, status in ((_NEGATION, "negated"), (_HEDGE, "hedged")):
        for m in pattern.finditer(prefix):
            if status == "negated" and _PSEUDO_NEGATION.match(prefix, m.end()):
                continue
            between = prefix[m.end() :]
            in_scope = len(between.split()) <= _SCOPE_WORDS and not _SCOPE_END.search(between)
            if in_scope and (best is None or m.end() > best[0]):
                best = (m.end(), status)
    if best:
        return best[1]
    return "hedged" if _POST_HEDGE.match(sentence, end) else "asserted"


# --- the check ------------------------------------------------------------------------------


class _Checker:
    def __init__(self, summary: str, patient: Patient, known_names: tuple[str, ...]) -> None:
        self.text = summary
        self.patient = patient
        self.rec = _record(patient)
        self.first_names, self.last_names = _name_lists(known_names)
        self.own_names = frozenset(patient.name.lower().replace(".", "").split())
        self.facts: list[Fact] = []
        self.claims: list[Claim] = []
        self.stated: set[str] = set()
        self.taken: list[tuple[int, int]] = []
        self.sentences = self._sentences()
        self.sentence_starts = [s for s, _ in self.sentences]
        self.other_person = {
            i for i, (s, e) in enumerate(self.sentences) if _OTHER_PERSON.search(summary, s, e)
        }

    # helpers

    def _sentences(self) -> list[tuple[int, int]]:
        spans, start = [], 0
        for m in _SENTENCE_END.finditer(self.text):
            if m.end() > start:
                spans.append((start, m.end()))
            start = m.end()
        if start < len(self.text):
            spans.append((start, len(self.text)))
        return spans

    def _about_someone_else(self, pos: int) -> bool:
        return bisect.bisect_right(self.sentence_starts, pos) - 1 in self.other_person

    def _free(self, start: int, end: int) -> bool:
        return all(end <= s or start >= e for s, e in self.taken)

    def _fact(self, kind: str, value: str, start: int, end: int, source: str = "record") -> None:
        self.facts.append(Fact(kind, value, self.text[start:end], start, end, source))

    def _claim(self, kind: str, start: int, end: int, reason: str, blocking: bool = True) -> None:
        self.claims.append(Claim(kind, self.text[start:end], start, end, reason, blocking))

    def _threshold(self, start: int) -> bool:
        return bool(_THRESHOLD.search(self.text, max(0, start - 40), start))

    # names and gender

    def names(self) -> None:
        text = self.text
        toks = []
        for m in _WORD.finditer(text):
            word, end = m.group(), m.end()
            if word[-2:] in ("'s", "’s"):
                word, end = word[:-2], end - 2
            toks.append((m.start(), end, word))

        def capital(word: str) -> bool:
            return word[0].isupper() and (len(word) == 1 or not word.isupper())

        def namelike(word: str) -> bool:
            low = word.lower()
            return capital(word) and (
                low in self.own_names or (low not in _NOT_NAMES and word not in _TITLES)
            )

        def joined(i: int) -> bool:
            gap = _TITLE_GAP if len(toks[i][2]) == 1 else _NAME_GAP
            return i + 1 < len(toks) and bool(gap.fullmatch(text, toks[i][1], toks[i + 1][0]))

        def run(i: int, most: int) -> int:
            j = i
            while j - i < most and joined(j) and namelike(toks[j + 1][2]):
                j += 1
            return j

        i = 0
        while i < len(toks):
            start, end, word = toks[i]
            low = word.lower()
            if (
                word in _TITLES
                and i + 1 < len(toks)
                and namelike(toks[i + 1][2])
                and _TITLE_GAP.fullmatch(text, end, toks[i + 1][0])
            ):
                j = run(i + 1, 2)
                self._name(start, toks[j][1], [t[2] for t in toks[i + 1 : j + 1]], word)
                i = j + 1
                continue
            if (
                capital(word)
                and len(word) > 1
                and (low in self.own_names or (low in self.first_names and low not in _NOT_NAMES))
            ):
                j = run(i, 2)
                self._name(start, toks[j][1], [t[2] for t in toks[i : j + 1]], None)
                i = j + 1
                continue
            if (
                namelike(word)
                and joined(i)
                and toks[i + 1][2].lower() in self.last_names
                and namelike(toks[i + 1][2])
            ):
                self._name(start, toks[i + 1][1], [word, toks[i + 1][2]], None)
                i += 2
                continue
            i += 1

    def _name(self, start: int, end: int, words: list[str], title: str | None) -> None:
        patient = self.patient
        if not all(w.lower() in self.own_names for w in words):
            self._claim("name", start, end, f"record name is {patient.name}")
            return
        self._fact("name", patient.name, start, end)
        self.stated.add("name")
        title_gender = _TITLE_GENDER.get(title or "")
        if title_gender and self.rec.gender and title_gender != self.rec.gender:
            self._claim("gender", start, start + len(title or ""), f"record says {patient.gender}")

    def gender(self) -> None:
        wanted = self.rec.gender
        if wanted is None:
            # Neither male nor female: no pronoun contradicts it, saying it is stating it.
            raw = self.patient.gender.strip()
            m = re.search(rf"\b{re.escape(raw)}\b", self.text, re.I) if raw else None
            if m:
                self._fact("gender", raw, m.start(), m.end())
                self.stated.add("gender")
            return
        own = _FEMALE_WORDS if wanted == "female" else _MALE_WORDS
        for m in _GENDER_WORD.finditer(self.text):
            if m.group().lower() in own:
                if "gender" not in self.stated:
                    self._fact("gender", wanted, m.start(), m.end())
                    self.stated.add("gender")
            elif not self._about_someone_else(m.start()):
                self._claim("gender", m.start(), m.end(), f"record says {self.patient.gender}")

    # numbers, most specific first; each pass takes its spans so later passes skip them

    def numbers(self) -> None:
        for check in (
            self._dates,
            self._ages,
            self._bps,
            self._durations,
            self._sugars,
            self._risks,
            self._doses,
            self._strays,
        ):
            check()

    def _dates(self) -> None:
        for m in _DATE.finditer(self.text):
            self.taken.append(m.span())
            iso = f"{m[1]}-{int(m[2]):02d}-{int(m[3]):02d}"
            if iso in self.rec.dates:
                self._fact("date", iso, *m.span(), source=f"visit {iso}")
            else:
                self._claim("number", *m.span(), "no visit on that date in the record")

    def _ages(self) -> None:
        age = self.patient.age
        for m in _AGE.finditer(self.text):
            self.taken.append(m.span())
            if int(m[1] or m[2]) == age:
                self._fact("age", str(age), *m.span())
                self.stated.add("age")
            elif not self._about_someone_else(m.start()):
                self._claim("age", *m.span(), f"record says {age}")

    def _bps(self) -> None:
        rec = self.rec
        for m in _BP.finditer(self.text):
            bp = (int(m[1]), int(m[2]))
            if not (50 <= bp[0] <= 300 and 20 <= bp[1] <= 200 and bp[0] > bp[1]):
                continue
            self.taken.append(m.span())
            source = rec.bps.get(bp)
            if source:
                self._fact("bp", f"{bp[0]}/{bp[1]}", *m.span(), source=source)
                if bp == rec.bp:
                    self.stated.add("bp")
            elif not self._threshold(m.start()):
                self._claim("bp", *m.span(), f"record says {self.patient.current_bp}")

    def _durations(self) -> None:
        self.taken += [m.span() for m in _DURATION.finditer(self.text) if self._free(*m.span())]

    def _labelled(
        self, label: re.Pattern[str], own: frozenset[str]
    ) -> list[tuple[int, int, str, bool]]:
        """(start, end, number, is percent) of numbers a few words after `label`.

        A number after another measurement's label ("sugar is high and BP 168/101") is not
        this one's.
        """
        found = []
        for lm in label.finditer(self.text):
            m = _LABEL_REACH.match(self.text, lm.end(), lm.end() + 60)
            if not m:
                continue
            gap_words = {w.lower() for w in re.findall(r"[^\W\d_]+", m[1])}
            if gap_words & (_OTHER_LABELS - own) or not self._free(*m.span(2)):
                continue
            found.append((m.start(2), m.end(3) if m[3] else m.end(2), m[2], bool(m[3])))
        return found

    def _sugars(self) -> None:
        rec = self.rec
        spans = {(m.start(1), m.end(), m[1]) for m in _SUGAR_UNIT.finditer(self.text)}
        labelled = self._labelled(_SUGAR_LABEL, _SUGAR_WORDS)
        spans |= {(s, e, n) for s, e, n, pct in labelled if not pct}
        # Longest first at each start, so "212 mg/dL" rather than "212" is the stated text.
        for start, end, number in sorted(spans, key=lambda x: (x[0], -x[1])):
            value = float(number)
            if not self._free(start, end) or value < 20:
                continue
            self.taken.append((start, end))
            source = rec.sugars.get(int(value)) if value.is_integer() else None
            if source:
                self._fact("sugar", f"{int(value)} mg/dL", start, end, source=source)
                if source == "record":
                    self.stated.add("sugar")
            elif not self._threshold(start):
                self._claim("sugar", start, end, f"record says {self.patient.current_sugar} mg/dL")

    def _risks(self) -> None:
        found = self._labelled(_RISK_LABEL, _RISK_WORDS)
        found += [(m.start(1), m.end(), m[1], bool(m[2])) for m in _RISK_BEFORE.finditer(self.text)]
        for start, end, number, pct in sorted(found):
            # "3 risk factors" is a count.
            small = not pct and "." not in number and int(number) <= _SMALL_COUNT
            if small or not self._free(start, end):
                continue
            self.taken.append((start, end))
            match = next((s for s in self.rec.scores if _close(number, s[0])), None)
            if match:
                self._fact("risk", f"{match[1]} {match[0]:g}", start, end, source=match[2])
            elif not self._threshold(start):
                reason = f"record risk score is {self.patient.risk_score:g}"
                self._claim("number", start, end, reason)

    def _doses(self) -> None:
        for m in _DOSE.finditer(self.text):
            if not self._free(*m.span()):
                continue
            self.taken.append(m.span())
            unit = _dose_unit(m[2])
            hit = self.rec.doses.get((float(m[1]), unit))
            if hit:
                self._fact("dose", hit[0], *m.span(), source=hit[1])
            else:
                self._claim("number", *m.span(), f"no drug in the record is dosed {m[1]} {unit}")

    def _strays(self) -> None:
        for m in _STRAY.finditer(self.text):
            number = m[1]
            if not self._free(*m.span()) or ("." not in number and int(number) <= _SMALL_COUNT):
                continue
            if any(_close(number, n) for n in self.rec.numbers) or any(
                _close(number, s[0]) for s in self.rec.scores
            ):
                continue
            if not self._threshold(m.start()):
                self._claim("number", *m.span(), "no such value in the record")

    # conditions, medications and symptoms, sentence by sentence for the negation scope

    def concepts(self) -> None:
        for s0, s1 in self.sentences:
            sentence = self.text[s0:s1]
            for concept, phrase in find_concepts(sentence).items():
                kind, _, key = concept.partition(":")
                mentions = [
                    (m.start(), m.end(), _status(sentence, m.start(), m.end()))
                    for m in _phrase_pattern(phrase).finditer(sentence)
                ]
                if not mentions:
                    continue
                start, end, status = min(mentions, key=lambda x: (_MENTION_RANK[x[2]], x[0]))
                span = (s0 + start, s0 + end)
                if kind == "condition":
                    self._condition(key, phrase, span, status)
                elif kind == "medication":
                    self._medication(key, span, status)
                else:
                    self._symptom(key, span, status)

    def _condition(self, key: str, phrase: str, span: tuple[int, int], status: str) -> None:
        label = CONDITIONS[key].label
        source = self.rec.conditions.get(key)
        if status == "negated":
            if source == "record":
                self._claim("condition", *span, f"record lists {label}")
            return
        if source:
            self._fact("condition", label, *span, source=source)
            if source == "record":
                self.stated.add(f"condition:{key}")
        elif status == "asserted":
            finding = self._finding(key, phrase)
            if finding:
                self._fact("condition", label, *span, source=finding)
            else:
                history = self.patient.medical_history or "none"
                self._claim("condition", *span, f"not in the record's history ({history})")

    def _finding(self, key: str, phrase: str) -> str | None:
        """A measured finding ("high blood pressure") the current values bear out, if any."""
        if phrase not in _FINDING_PHRASES.get(key, ()):
            return None
        bp, sugar = self.rec.bp, self.patient.current_sugar
        if key == "hypertension" and bp and (bp[0] >= _HIGH_SYSTOLIC or bp[1] >= _HIGH_DIASTOLIC):
            return f"current BP {self.patient.current_bp}"
        if key == "diabetes" and sugar >= _HIGH_SUGAR:
            return f"current sugar {sugar} mg/dL"
        return None

    def _medication(self, drug: str, span: tuple[int, int], status: str) -> None:
        # The first word is enough: "insulin" for "Insulin glargine", "albuterol" for the inhaler.
        word = _word_pattern(drug.split()[0])
        hit = next((m for m in self.rec.medications if word.search(m[0])), None)
        if status == "negated":
            if hit and hit[1] == "record":
                self._claim("medication", *span, f"record lists {hit[0]}")
        elif hit:
            self._fact("medication", hit[0], *span, source=hit[1])
        else:
            self._claim("medication", *span, "not among the record's medications")

    def _symptom(self, key: str, span: tuple[int, int], status: str) -> None:
        source = self.rec.symptoms.get(key)
        if status == "negated":
            if source == "record":
                self._claim("symptom", *span, "record lists it", blocking=False)
        elif source:
            self._fact("symptom", key, *span, source=source)
        elif status == "asserted":
            self._claim("symptom", *span, "record does not mention it", blocking=False)

    # key facts

    def missing(self) -> tuple[list[str], float]:
        p, rec = self.patient, self.rec
        keys = [
            ("name", f"name: {p.name}"),
            ("age", f"age: {p.age}"),
            ("gender", f"gender: {p.gender}"),
            ("bp", f"blood pressure: {p.current_bp}"),
            ("sugar", f"blood sugar: {p.current_sugar}"),
        ]
        stated = sum(k in self.stated for k, _ in keys)
        missing = [label for k, label in keys if k not in self.stated]
        for entry, condition_keys in rec.history:
            if condition_keys:
                said = any(f"condition:{k}" in self.stated for k in condition_keys)
            else:
                # Not in the vocabulary: only its own words can state it.
                said = bool(re.search(rf"\b{re.escape(entry)}\b", self.text, re.I))
            stated += said
            if not said:
                missing.append(f"condition: {entry}")
        return missing, stated / (len(keys) + len(rec.history))


def check(summary: str, patient: Patient, known_names: Iterable[str] = ()) -> Grounding:
    """Compare `summary` with `patient`'s record; see the module docstring for the rules.

    `known_names` (every patient name in the data set) lets the check recognise a name the
    model borrowed from another patient, on top of a built-in list of common first names.
    """
    checker = _Checker(summary, patient, tuple(known_names))
    checker.names()
    checker.gender()
    checker.numbers()
    checker.concepts()
    missing, coverage = checker.missing()
    key = attrgetter("start", "end")
    return Grounding(
        supported=sorted(_dedupe(checker.facts), key=key),
        unsupported=sorted(checker.claims, key=key),
        missing=missing,
        coverage=coverage,
    )


def _dedupe(facts: list[Fact]) -> list[Fact]:
    """One fact per kind, value and source: the first place the summary states it."""
    seen: dict[tuple[str, str, str], Fact] = {}
    for f in sorted(facts, key=lambda x: x.start):
        seen.setdefault((f.kind, f.value, f.source), f)
    return list(seen.values())
