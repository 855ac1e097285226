"""What the model's sentence is about, and which words it may not start: per patient.

Pure: no model, no I/O. Two things steer the strict style's one model-written sentence:
- `heading(d)`: the words the prefill ends on name the digest's most important item (the
  worst flagged value, else a meaningful trend, else a medication change), so the
  recommendation is about what the digest flags; with nothing to act on it says so.
- `Steer`: words the model may not start (conditions, drugs and drug classes the record does
  not have, and pronouns its gender contradicts), with the words it must stay free to write
  (the record's own). Backends that take logit biases turn it into biases on first tokens
  (`backends/runner.py`); the others ignore it, and the grounding check still reads what they
  wrote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .digest import Digest, digest
from .vocab import CONDITIONS, MEDICATIONS

if TYPE_CHECKING:
    from .records import Patient

# Classes of drugs a small model reaches for when it has no name ("a statin", "diuretics",
# "a multi-dose oral medication"): banned unless the record's own words contain them
# ("atorvastatin" contains "statin").
DRUG_CLASSES = (
    "statin",
    "statins",
    "diuretic",
    "diuretics",
    "anticoagulant",
    "anticoagulants",
    "antibiotic",
    "antibiotics",
    "antidepressant",
    "antidepressants",
    "steroid",
    "steroids",
    "corticosteroid",
    "inhaler",
    "inhalers",
    "opioid",
    "opioids",
    "insulin",
    "multi-dose",
    "antihypertensive",
    "antihypertensives",
    "anticonvulsant",
    "chemotherapy",
)
# Words that say which way a measure went. Named after its measure, a direction the digest
# does not have is a contradiction ("continue to monitor the blood sugar level increase" for
# a sugar that fell): `make eval` found 5 in 159 once the heading named the measure.
RISE_WORDS = ("increase", "increased", "increasing", "rise", "rising", "rose", "worsening")
FALL_WORDS = ("decrease", "decreased", "decreasing", "fall", "falling", "fell", "drop", "dropped")
FEMALE_PRONOUNS = ("she", "her", "hers", "herself")
MALE_PRONOUNS = ("he", "him", "his", "himself")
_WORD = re.compile(r"[a-z][a-z'-]+")


@dataclass(frozen=True, slots=True)
class Steer:
    """Words the model may not start, and words it must stay free to write (a token that
    begins one of `keep` is never banned, however many `avoid` words it also begins)."""

    avoid: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()


NO_STEER = Steer()


def record_text(patient: Patient) -> str:
    """Every free-text field of the record, visits included, lower-cased."""
    return " ".join(patient.texts()).lower()


def steer(patient: Patient, d: Digest | None = None, style: str = "strict") -> Steer:
    """The words this patient's summary may not start, and those it must keep."""
    d = d or digest(patient)
    text = record_text(patient)
    words = set(_WORD.findall(text))
    avoid: set[str] = set()
    for condition in CONDITIONS.values():
        terms = (condition.label, *condition.synonyms)
        if not any(_mentions(text, t) for t in terms):
            avoid.update(t.lower() for t in terms if " " not in t and len(t) >= 4)
    for drug in MEDICATIONS:
        name = drug.split()[0]
        if len(name) >= 4 and name not in words:
            avoid.add(name)
    avoid.update(c for c in DRUG_CLASSES if c not in text)
    gender = patient.gender.strip().lower()
    if gender in ("m", "male"):
        avoid.update(FEMALE_PRONOUNS)
    elif gender in ("f", "female"):
        avoid.update(MALE_PRONOUNS)
    else:  # blank, "Other", unknown: no pronoun can be right, so the name is used
        avoid.update(FEMALE_PRONOUNS + MALE_PRONOUNS)
    # Directions no trend of the record took; a value that is not low is not called low. In
    # the strict style the record's sentences state every trend already, and the model's one
    # sentence recommends: a direction there is a measure restated, often the wrong one ("for
    # the blood pressure, continue medication, and for the blood sugar level increase", for a
    # sugar that fell: 4 in 159 in `make eval` with only the directions no trend took).
    directions = {t.direction for t in d.trends} if style == "narrative" else set()
    if "rose" not in directions:
        avoid.update(RISE_WORDS)
    if "fell" not in directions:
        avoid.update(FALL_WORDS)
    if not any(v.category == "low" for v in d.vitals):
        avoid.add("low")
    keep = words | set(_WORD.findall(patient.name.lower()))
    return Steer(tuple(sorted(avoid - keep)), tuple(sorted(keep)))


def _mentions(text: str, term: str) -> bool:
    return re.search(rf"(?<![a-z]){re.escape(term.lower())}(?![a-z])", text) is not None


def focus(d: Digest) -> str:
    """The digest's most important item, as the heading names it; "" when there is none.

    The worst flagged value first (a crisis before any other flag), then the first
    meaningful trend, then the first medication change.
    """
    if d.flags:
        worst = min(d.flags, key=lambda v: (not v.crisis, v.measure))
        return f"for the {worst.measure}"
    if d.meaningful_trends:
        return f"for the {d.meaningful_trends[0].measure}"
    if d.med_changes:
        change = d.med_changes[0]
        verb = {"started": "started", "stopped": "stopped"}.get(change.change, "re-dosed")
        return f"with {change.drug.lower()} {verb}"
    return ""


def heading(d: Digest) -> str:
    """Where the strict prefill hands over to the model."""
    item = focus(d)
    if not item:
        return "Recommendation: no change is needed; continue"
    return f"Recommendation: {item}, continue"


__all__ = ["NO_STEER", "Steer", "focus", "heading", "steer"]
