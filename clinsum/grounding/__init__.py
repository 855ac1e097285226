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

What the summary says about the course of care (trends, flagged values, escalation) is read
by `course` against the record's `Digest`, the same reading `make eval` counts with: a trend
in the wrong direction, a flag word on a value that is not abnormal and an escalation without
a crisis-level value are unsupported claims.

Modules: `words` (vocabulary and patterns), `record` (the record reduced to what is compared),
`checker` (names, gender, numbers, conditions, drugs), `course` (trends, flags, escalation),
`result` (what a check returns).
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import attrgetter
from typing import TYPE_CHECKING

from ..digest import Digest
from ..digest import digest as make_digest
from . import course
from .checker import Checker
from .result import Claim, Fact, Grounding

if TYPE_CHECKING:
    from ..records import Patient


def check(
    summary: str,
    patient: Patient,
    known_names: Iterable[str] = (),
    digest: Digest | None = None,
) -> Grounding:
    """Compare `summary` with `patient`'s record; see the module docstring for the rules.

    `known_names` (every patient name in the data set) lets the check recognise a name the
    model borrowed from another patient, on top of a built-in list of common first names.
    `digest` is the record's digest when the caller has it already (the summary was written
    from it); otherwise it is made here.
    """
    digest = digest or make_digest(patient)
    checker = Checker(summary, patient, tuple(known_names), digest)
    checker.names()
    checker.gender()
    checker.quotes()
    checker.numbers()
    checker.concepts()
    missing, coverage = checker.missing()
    claims = list(checker.claims)
    for s in course.read(summary, digest).statements:
        if not s.supported:
            claims.append(Claim(s.kind, summary[s.start : s.end], s.start, s.end, s.reason))
    key = attrgetter("start", "end")
    return Grounding(
        supported=sorted(_dedupe(checker.facts), key=key),
        unsupported=sorted(claims, key=key),
        missing=missing,
        coverage=coverage,
    )


def _dedupe(facts: list[Fact]) -> list[Fact]:
    """One fact per kind, value and source: the first place the summary states it."""
    seen: dict[tuple[str, str, str], Fact] = {}
    for f in sorted(facts, key=lambda x: x.start):
        seen.setdefault((f.kind, f.value, f.source), f)
    return list(seen.values())


__all__ = ["Claim", "Fact", "Grounding", "check", "course"]
