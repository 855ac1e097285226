"""The words and patterns the check reads a summary with: names, negation, numbers, units."""

from __future__ import annotations

import re
from functools import lru_cache

from ..vocab import CONDITIONS, MEDICATIONS, SYMPTOMS, find_concepts


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
_MENTION_RANK = {"asserted": 0, "hedged": 1, "negated": 2}
_SMALL_COUNT = 10  # "2-3 times", "type 2": counts, not clinical values


def _keys(text: str, kind: str) -> list[str]:
    return [c.partition(":")[2] for c in find_concepts(text) if c.startswith(kind + ":")]


def _close(written: str, target: float) -> bool:
    """Equal to the precision written, on either the 0-1 or the percent scale."""
    decimals = len(written.partition(".")[2])
    tol = 0.5 * 10**-decimals + 1e-9
    value = float(written)
    return abs(value - target) <= tol or abs(value - target * 100) <= tol


def _dose_unit(unit: str) -> str:
    unit = unit.lower()
    return _DOSE_UNITS.get(unit, unit)


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


def sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence, as every part of the grounding check splits them."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        if m.end() > start:
            spans.append((start, m.end()))
        start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans
