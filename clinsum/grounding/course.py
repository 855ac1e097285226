"""Reads what a summary says about the course of care, sentence by sentence, against a Digest.

Issue #10's judging rules, written once so that the grounding check (which blocks a save)
and `make eval` (which counts) read a summary the same way:

- a sentence (or the clause of it that names a measure) names blood sugar (or glucose), blood
  pressure (BP, systolic, diastolic) or the risk score; a condition's name ("hyperglycaemia",
  "hypertension") does not name a measure; "risk factors", "risk of", "risk for" and
  "at risk" are not the score;
- a trend is stated by a direction word (rose, increased, higher, worsened / fell,
  decreased, lower, improved) or by the first and last values in time order ("from 180 to
  274"); a direction against the digest's is a contradiction;
- a flag word (high, uncontrolled, stage 2, ...) on a value the digest does not flag, or a
  mild word (elevated, above target) on a value in the normal band, is a false flag; a
  flagged value called normal or stable is one too;
- an escalation word (admit, emergency, ICU, urgent, ...) without a crisis-level value.

Pure: no model, no I/O. It never works out a trend or a category itself: the Digest did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .words import sentences

if TYPE_CHECKING:
    from ..digest import Digest, Trend, Vital

_MEASURES = {
    "sugar": re.compile(r"\b(?:blood sugar|blood glucose|sugar|glucose)\b", re.I),
    "bp": re.compile(r"\b(?:blood pressure|bp|systolic|diastolic)\b", re.I),
    "risk": re.compile(r"\brisk(?:\s+score)?\b(?!\s+(?:factors?|of|for)\b)(?<!\bat risk)", re.I),
}
_VITAL_OF = {"sugar": "blood sugar", "bp": "blood pressure"}
_TREND_OF = {"sugar": "sugar", "bp": "systolic", "risk": "risk"}

_UP = re.compile(
    r"\b(?:rose|risen|rising|rises|increas\w*|higher|worse\w*|went up|climb\w*|up from)\b", re.I
)
_DOWN = re.compile(
    r"\b(?:fell|fallen|falling|falls|decreas\w*|lower|improv\w*|dropp\w*|declin\w*|went down|"
    r"down from)\b",
    re.I,
)
_NUMBER = re.compile(r"(?<![\w.-])(\d+(?:\.\d+)?)(?:\s*/\s*\d+)?(\s*%)?(?![\w-]|\.\d)")
_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_NEGATED = re.compile(r"\b(?:not|no longer|never|no)\s+(?:\w+\s+)?$", re.I)

# Flag words by strength, as the judging rules list them.
# "Urgent" is also an escalation word, reported as such.
_SEVERE = re.compile(r"\b(?:crisis|severe\w*)\b", re.I)
_STRONG_HIGH = {
    "sugar": re.compile(r"\b(?:high|uncontrolled|hyperglyc(?:a)?emi\w*)\b", re.I),
    "bp": re.compile(r"\b(?:high|uncontrolled|stage\s*(?:2|two|ii)|hypertensive)\b", re.I),
}
_MILD_HIGH = re.compile(r"\b(?:elevated|above target|raised)\b", re.I)
_LOW = re.compile(r"\b(?:low|hypoglyc(?:a)?emi\w*)\b", re.I)
_NORMAL = re.compile(
    r"\b(?:normal|stable|in range|within range|well[- ]controlled|controlled)\b", re.I
)
ESCALATION = re.compile(
    r"\b(?:admit\w*|admission|hospitali[sz]\w*|emergency|icu|intensive care|urgent\w*)\b", re.I
)


@dataclass(frozen=True, slots=True)
class Statement:
    """One thing the summary says about the course, with the digest's verdict."""

    kind: str  # "trend" | "flag" | "escalation"
    measure: str  # "sugar" | "bp" | "risk" | "" (escalation)
    start: int
    end: int
    supported: bool
    reason: str = ""


@dataclass(slots=True)
class Reading:
    statements: list[Statement] = field(default_factory=list)
    trends_stated: set[str] = field(default_factory=set)  # Trend.key, stated rightly
    flags_stated: set[str] = field(default_factory=set)  # Vital.measure, flagged rightly

    @property
    def contradictions(self) -> list[Statement]:
        return [s for s in self.statements if s.kind == "trend" and not s.supported]

    @property
    def false_flags(self) -> list[Statement]:
        return [s for s in self.statements if s.kind == "flag" and not s.supported]

    @property
    def escalations(self) -> list[Statement]:
        return [s for s in self.statements if s.kind == "escalation" and not s.supported]


def _clauses(text: str, s0: int, s1: int) -> list[tuple[str, int, int]]:
    """(measure, start, end): each measure's stretch of the sentence, from its first mention
    to the next other measure's (the words before the first mention go with it)."""
    marks: list[tuple[int, str]] = []
    for key, pattern in _MEASURES.items():
        marks += [(m.start(), key) for m in pattern.finditer(text, s0, s1)]
    marks.sort()
    merged: list[tuple[int, str]] = []
    for pos, key in marks:
        if not merged or merged[-1][1] != key:
            merged.append((pos, key))
    out = []
    for i, (pos, key) in enumerate(merged):
        start = s0 if i == 0 else pos
        end = merged[i + 1][0] if i + 1 < len(merged) else s1
        out.append((key, start, end))
    return out


def _words(pattern: re.Pattern[str], text: str, start: int, end: int) -> list[re.Match[str]]:
    """Matches not negated just before ("not high", "no longer elevated")."""
    return [
        m
        for m in pattern.finditer(text, start, end)
        if not _NEGATED.search(text, max(start, m.start() - 20), m.start())
    ]


def _same(written: str, percent: bool, value: float, key: str) -> bool:
    number = float(written)
    if key == "risk":
        tol = 0.5 * 10 ** -len(written.partition(".")[2]) + 1e-9
        return abs(number - value) <= tol or (percent and abs(number - value * 100) <= tol)
    return number == value


def _values_in_order(trend: Trend, text: str) -> int:
    """+1 if the first and last values appear in time order, -1 if reversed, else 0."""
    clean = _DATE.sub(lambda m: " " * len(m.group()), text)
    numbers = [(m[1], bool(m[2])) for m in _NUMBER.finditer(clean)]
    first = [i for i, (n, pct) in enumerate(numbers) if _same(n, pct, trend.first.value, trend.key)]
    last = [i for i, (n, pct) in enumerate(numbers) if _same(n, pct, trend.last.value, trend.key)]
    if trend.first.value == trend.last.value or not first or not last:
        return 0
    return 1 if min(first) < max(last) else -1


def _trend(reading: Reading, trend: Trend, text: str, start: int, end: int) -> None:
    up = _words(_UP, text, start, end)
    down = _words(_DOWN, text, start, end)
    said = {"rose": bool(up), "fell": bool(down)}
    # Values alone state a direction only without words for one: "212, up from 180" names
    # the later value first.
    order = 0 if up or down else _values_in_order(trend, text[start:end])
    if order:
        said["rose" if order > 0 else "fell"] = True
    if not (said["rose"] or said["fell"]):
        return
    wrong = [d for d, yes in said.items() if yes and d != trend.direction]
    if wrong:
        reason = (
            f"record: {trend.measure} {trend.direction} "
            f"from {_show(trend.first.value)} to {_show(trend.last.value)}"
            if trend.direction != "unchanged"
            else f"record: {trend.measure} unchanged at {_show(trend.last.value)}"
        )
        reading.statements.append(Statement("trend", trend.key, start, end, False, reason))
        return
    reading.statements.append(Statement("trend", trend.key, start, end, True))
    if trend.meaningful:
        reading.trends_stated.add(trend.key)


def _show(value: float) -> str:
    return f"{value:g}"


def _flag(reading: Reading, vital: Vital, key: str, text: str, start: int, end: int) -> None:
    def bad(m: re.Match[str], why: str) -> None:
        reading.statements.append(
            Statement("flag", key, m.start(), m.end(), False, f"{vital.measure} {why}")
        )

    now = f"{vital.value} {vital.unit} is {vital.category}"
    high = vital.flagged and vital.category != "low"
    stated = False
    for m in _words(_STRONG_HIGH[key], text, start, end):
        if high:
            stated = True
        else:
            bad(m, f"{now}, not high")
    for m in _words(_MILD_HIGH, text, start, end):
        if high:
            stated = True
        elif not vital.mild:
            bad(m, f"{now}, not above target")
    for m in _words(_LOW, text, start, end):
        if vital.category == "low":
            stated = True
        else:
            bad(m, f"{now}, not low")
    for m in _words(_SEVERE, text, start, end):
        if not vital.crisis:
            bad(m, f"{now}, not at crisis level")
    if vital.flagged:
        for m in _words(_NORMAL, text, start, end):
            bad(m, f"{now}: flagged, not normal or stable")
    if stated:
        reading.flags_stated.add(vital.measure)


def _unquote(text: str, digest: Digest) -> str:
    """`text` with the latest visit's own outcome and note blanked out (same length, so spans
    stay true): "(latest: blood pressure controlled with medication)" quotes the record, and
    a quote is not the summary's claim about today's values."""
    if digest.latest is None:
        return text
    for phrase in (digest.latest.outcome, digest.latest.key_point):
        phrase = phrase.strip()
        if len(phrase) < 4:
            continue
        for m in re.finditer(re.escape(phrase), text, re.I):
            text = text[: m.start()] + " " * (m.end() - m.start()) + text[m.end() :]
    return text


def read(text: str, digest: Digest) -> Reading:
    """Every trend, flag and escalation statement in `text`, judged against `digest`."""
    reading = Reading()
    text = _unquote(text, digest)
    for s0, s1 in sentences(text):
        for key, start, end in _clauses(text, s0, s1):
            trend = digest.trend(_TREND_OF[key])
            if trend is not None:
                _trend(reading, trend, text, start, end)
            vital = digest.vital(_VITAL_OF[key]) if key in _VITAL_OF else None
            if vital is not None:
                _flag(reading, vital, key, text, start, end)
    if not digest.crisis:
        for m in ESCALATION.finditer(text):
            reading.statements.append(
                Statement(
                    "escalation",
                    "",
                    m.start(),
                    m.end(),
                    False,
                    "no value in the record is at crisis level",
                )
            )
    return reading
