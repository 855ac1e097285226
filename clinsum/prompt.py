"""The prompt and the answer prefill, shared by every backend, in two styles.

**strict** (the default for the embedded 135M model). A model that small forgets or invents
names and numbers easily, so everything the record says is written from the record: the
patient, the visits, the vitals with their screening category, each meaningful trend with its
values in time order, each medication change by name (all from `digest`). The model writes only
the assessment and recommendation after it, with digits forbidden (backends/base.py
`allow_digits`), so it cannot add a number. Earlier measurements (`make eval`, 100 patients)
that shaped this: the record's facts as prefill took grounded summaries from 45% to 87%,
forbidding digits to 96%, and ending the prefill on a heading the model completes to 100%.

**narrative** (the default for Ollama, phi or larger). The model writes the whole summary
from the digest, laid out as facts; the grounding check verifies it afterwards, trends and
flags included.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .digest import Digest, Trend, digest, drug_name
from .grounding.course import ESCALATION
from .records import NOT_RECORDED, joined
from .scores import format_score
from .steering import heading
from .vocab import find_concepts

if TYPE_CHECKING:
    from .records import Patient

STYLES = ("strict", "narrative")
# A backend not listed here gets "strict": the safe choice for a model we know nothing about.
DEFAULT_STYLE = {"embedded": "strict", "ollama": "narrative"}

SYSTEM_PROMPT = (
    "You are a clinical assistant who writes short, factual patient summaries for doctors. "
    "Use only the facts in the patient record: never invent diagnoses, numbers or drugs. "
    "Refer to the patient by the name given in the record."
)
# Where the strict prefill hands over to the model: `steering.heading`. With the digest's
# sentences before it, the model wrote nothing (a line break, which ends the answer) after
# "Recommendation:" for 3 patients of 3 tried, after "Assessment:" for 2 of 3; after
# "Recommendation: continue" it wrote one plain sentence for 6 of 6, and in `make eval` for
# every patient, but about nothing in particular ("to monitor and manage her condition").
# Naming the digest's most important item before "continue" makes the sentence about it.
# After its first sentence the 135M model drifts into invented drugs and events, so the strict
# path takes one sentence from it.
_SENTENCE_DONE = re.compile(r"[.!?](?:\s|$)")

MAX_LISTED = 4  # conditions named in one sentence; see _some
_COUNTS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_NEGATING = re.compile(r"\b(?:without|no|not|non)\b", re.I)
_GENDER_WORDS = {"f": "female", "m": "male"}
_VITAL_WORDS = {
    # category -> how the summary says it; flag words only where the digest flags the value
    "normal": "is in the normal range",
    "elevated": "is above target",
    "stage 1": "is above target (stage 1)",
    "stage 2": "is high (stage 2)",
    "low": "is low",
    "above target": "is above target",
    "high": "is high",
    "crisis": "is high, at crisis level",
    NOT_RECORDED: "",  # "Blood pressure not recorded."
}


def default_style(backend: str) -> str:
    return DEFAULT_STYLE.get(backend, "strict")


def model_part_done(style: str, generated: str) -> bool:
    """Whether to stop reading the model: strict takes one sentence, narrative all it writes."""
    return style == "strict" and bool(_SENTENCE_DONE.search(generated))


def _gender(patient: Patient) -> str:
    word = patient.gender.strip().lower()
    return _GENDER_WORDS.get(word, word)


def _listing(items: list[str] | tuple[str, ...]) -> str:
    """Items as prose ("a, b and c"), lower-cased but for acronyms such as COPD."""
    words = [" ".join(w if w.isupper() else w.lower() for w in item.split()) for item in items]
    return " and ".join([", ".join(words[:-1]), words[-1]]) if len(words) > 1 else "".join(words)


def _value(trend: Trend, value: float, scale: float) -> str:
    return _risk(value, scale) if trend.key == "risk" else f"{value:g}"


def _risk(value: float, scale: float) -> str:
    """A risk score as the file writes it: "0.54" on 0-1, "6.6/10" on the original's 0-10."""
    return f"{value:.2f}" if scale == 1.0 else format_score(value, scale)


# --- the record's sentences (strict prefill; facts for the narrative prompt) -----------------


def _some(items: list[str] | tuple[str, ...], noun: str) -> str:
    """At most MAX_LISTED items in prose; the rest counted. Chronic conditions the vocabulary
    knows (hypertension, diabetes...) come first: a Synthea chart lists 15 or 20 entries,
    most of them past colds and sprains, and a summary of 120 words cannot carry them all."""
    # An entry with a negation ("migraine without aura") goes last, where it cannot seem to
    # deny the entries after it.
    ordered = sorted(items, key=lambda i: (bool(_NEGATING.search(i)), not find_concepts(i)))
    shown, rest = ordered[:MAX_LISTED], len(ordered) - MAX_LISTED
    if rest <= 0:
        return _listing(shown)
    # In words: a count is not a value of the record, and the check would ask where it is from.
    more = _COUNTS[rest] if rest < len(_COUNTS) else f"more than {_COUNTS[-1]}"
    noun = noun if rest > 1 else noun.removesuffix("s")
    return f"{', '.join(_listing([x]) for x in shown)} and {more} other {noun}"


def _identity(patient: Patient) -> str:
    conditions = _some(patient.medical_history, "conditions") or "no recorded conditions"
    symptoms = _listing(patient.current_symptoms)
    presenting = f", presenting with {symptoms}" if symptoms else ", with no current symptoms"
    if not symptoms and patient.source_id is not None:
        presenting = ""  # a FHIR export carries no symptom list: nothing to say either way
    article = "an" if str(patient.age).startswith("8") or patient.age in (11, 18) else "a"
    gender = _gender(patient)
    if gender not in ("male", "female"):
        # Blank, "Other", or anything else: no pronoun is right, and the noun says so.
        gender = f"patient (gender recorded as {gender})" if gender else "patient"
    if patient.deceased is not None:
        return (
            f"{patient.name}, deceased ({patient.deceased}), was {article} {patient.age}-year-old "
            f"{gender} with {conditions}{presenting}."
        )
    return (
        f"{patient.name} is {article} {patient.age}-year-old {gender} "
        f"with {conditions}{presenting}."
    )


def _visits(d: Digest) -> str:
    if d.latest is None:
        return "No earlier visits are on record."
    outcome = d.latest.outcome.strip().rstrip(".")
    # The outcome's own words may escalate ("Admitted for observation"); without a crisis
    # value now, the summary names the latest visit by its date alone.
    shown = outcome and (d.crisis or not ESCALATION.search(outcome))
    said = f" (latest: {outcome.lower()})" if shown else ""
    if d.visits == 1:
        return f"One earlier visit, on {d.latest.date}{said}."
    return f"{d.visits} visits from {d.first_date} to {d.latest.date}{said}."


def _vitals(d: Digest) -> str:
    words = ((v.measure.capitalize(), v.value, v.unit, _VITAL_WORDS[v.category]) for v in d.vitals)
    parts = [" ".join(w for w in said if w) for said in words]
    return ". ".join(parts) + "."


def _current_risk(patient: Patient, d: Digest) -> str:
    """The risk score on the file's own scale, unless a risk trend states it already; nothing
    when the record has no score (a FHIR export): absent is not zero."""
    if patient.risk_score is None or any(t.key == "risk" for t in d.meaningful_trends):
        return ""
    return f"Risk score {_risk(patient.risk_score, patient.score_scale)}."


def _trend_sentence(trend: Trend, scale: float) -> str:
    values = [_value(trend, p.value, scale) for p in trend.points]
    unit = f" {trend.unit}" if trend.unit else ""
    since = trend.first.date
    path = ", ".join(values[:-1]) + f" and now {values[-1]}{unit}"
    step = {
        "continues": "the latest step continues it",
        "reverses": "the latest step reverses it",
        "flat": "the latest step is level",
    }[trend.latest_step]
    return f"{trend.measure.capitalize()} {trend.direction} since {since}: {path}; {step}."


def _trends(d: Digest, scale: float) -> list[str]:
    meaningful = d.meaningful_trends
    out = [_trend_sentence(t, scale) for t in meaningful]
    quiet = [t.measure for t in d.trends if not t.meaningful]
    if quiet and d.first_date and not meaningful:
        out.append(f"{_listing(quiet).capitalize()} changed little since {d.first_date}.")
    return out


def _meds(d: Digest) -> str:
    if not d.med_changes:
        return "No medication changed since the latest visit." if d.latest else ""
    parts = []
    for c in d.med_changes:
        name = c.drug.lower()
        if c.change == "dose changed":
            parts.append(f"{name} re-dosed from {_dose(c.before)} to {_dose(c.after)}")
        else:
            parts.append(f"{name} {c.change}")
    return f"Since the latest visit: {_listing_plain(parts)}."


def _current_medications(patient: Patient) -> str:
    """The medications now, as the record writes them: a summary names what the patient takes."""
    if not patient.current_medications:
        return "No current medications."
    return f"Current medications: {_some(patient.current_medications, 'medications')}."


def _dose(entry: str | None) -> str:
    entry = entry or ""
    return entry[len(drug_name(entry)) :].strip() or entry


def _listing_plain(parts: list[str]) -> str:
    return " and ".join([", ".join(parts[:-1]), parts[-1]]) if len(parts) > 1 else parts[0]


def _new_conditions(d: Digest) -> str:
    new = d.new_conditions
    if not new:
        return ""
    verb = "was" if len(new) == 1 else "were"
    return f"{_some(new, 'conditions').capitalize()} {verb} recorded after the first visit."


def record_sentences(patient: Patient, d: Digest | None = None) -> str:
    """The summary's factual part, every word from the record and its digest."""
    d = d or digest(patient)
    parts = [_identity(patient), _visits(d), _vitals(d), _current_risk(patient, d)]
    parts += _trends(d, patient.score_scale)
    parts += [_meds(d), _current_medications(patient), _new_conditions(d)]
    return " ".join(p for p in parts if p)


# --- the messages ----------------------------------------------------------------------------


def _facts(patient: Patient, d: Digest) -> list[tuple[str, str]]:
    trends = [
        f"{t.measure} {t.direction} "
        + " -> ".join(f"{_value(t, p.value, patient.score_scale)} ({p.date})" for p in t.points)
        for t in d.meaningful_trends
    ]
    flags = [f"{v.measure} {v.value} {v.unit}: {v.category}" for v in d.flags]
    changes = [
        f"{c.drug} {c.change}" + (f" ({c.before} -> {c.after})" if c.before and c.after else "")
        for c in d.med_changes
    ]
    facts = [
        ("Name", patient.name),
        ("Age", str(patient.age)),
        ("Gender", _gender(patient)),
        ("Current symptoms", joined(patient.current_symptoms) or "none"),
        *((v.measure.capitalize(), _vital_fact(v.value, v.unit, v.category)) for v in d.vitals),
        *([("Deceased", patient.deceased)] if patient.deceased is not None else []),
        ("Medical history", joined(patient.medical_history) or "none"),
        *(
            [("Past history (resolved)", joined(patient.past_history))]
            if patient.past_history
            else []
        ),
        ("Current medications", joined(patient.current_medications) or "none"),
        ("Risk score", _risk_fact(patient)),
        ("Trends since the first visit", "; ".join(trends) or "no meaningful change"),
        ("Flagged values", "; ".join(flags) or "none"),
        ("Medication changes since the latest visit", "; ".join(changes) or "none"),
        ("Conditions added since the first visit", ", ".join(d.new_conditions) or "none"),
    ]
    if d.latest:
        facts.append(("Latest visit", f"{d.latest.date}, {d.latest.outcome}: {d.latest.key_point}"))
        facts.append(("Visits", f"{d.visits} since {d.first_date}"))
    return facts


def _vital_fact(value: str, unit: str, category: str) -> str:
    return NOT_RECORDED if category == NOT_RECORDED else f"{value} {unit} ({category})"


def _risk_fact(patient: Patient) -> str:
    if patient.risk_score is None:
        return NOT_RECORDED
    return _risk(patient.risk_score, patient.score_scale)


def build_messages(patient: Patient, style: str = "strict", d: Digest | None = None) -> list[dict]:
    """The chat messages for one summary, in the role/content form every backend takes."""
    if style != "narrative":
        # The facts are in the prefill already; repeating them here would only double the
        # prompt the model evaluates before its first token.
        request = (
            f"Write a concise clinical summary of {patient.name}: the facts, then the "
            "recommendation."
        )
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": request},
        ]
    d = d or digest(patient)
    record = "\n".join(f"{label}: {value}" for label, value in _facts(patient, d))
    request = (
        f"Write a clinical summary of {patient.name} as one paragraph of at most 120 words. "
        "State each trend with its direction and its values in time order, each flagged "
        "value as flagged, each medication change by drug name, and the latest visit's "
        "date and outcome; then give your assessment and recommendation. Call a value "
        "high or low only if it is flagged above. Recommend admission, emergency or "
        "urgent care only if a value is at crisis level. Use only the facts above."
    )
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Patient record:\n{record}\n\n{request}"},
    ]


def prefill(patient: Patient, style: str = "strict", d: Digest | None = None) -> str:
    """The start of the answer, written from the record so that it cannot be wrong.

    strict: every fact, then the heading the model completes. narrative: the name only.
    """
    if style == "narrative":
        return patient.name
    d = d or digest(patient)
    return f"{record_sentences(patient, d)} {heading(d)}"
