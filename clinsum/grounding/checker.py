"""The claim-by-claim reading of a summary: names, gender, numbers, conditions and drugs."""

from __future__ import annotations

import bisect
import re
from typing import TYPE_CHECKING

from ..records import BloodPressure, joined, shown
from ..vocab import CONDITIONS, find_concepts
from .record import _name_lists, _record
from .result import Claim, Fact
from .words import (
    _AGE,
    _BP,
    _DATE,
    _DOSE,
    _DURATION,
    _FEMALE_WORDS,
    _FINDING_PHRASES,
    _GENDER_WORD,
    _LABEL_REACH,
    _MALE_WORDS,
    _MENTION_RANK,
    _NAME_GAP,
    _NOT_NAMES,
    _OTHER_LABELS,
    _OTHER_PERSON,
    _RISK_BEFORE,
    _RISK_LABEL,
    _RISK_WORDS,
    _SMALL_COUNT,
    _STRAY,
    _SUGAR_LABEL,
    _SUGAR_UNIT,
    _SUGAR_WORDS,
    _THRESHOLD,
    _TITLE_GAP,
    _TITLE_GENDER,
    _TITLES,
    _WORD,
    _close,
    _dose_unit,
    _phrase_pattern,
    _status,
    _word_pattern,
    sentences,
)

if TYPE_CHECKING:
    from ..digest import Digest
    from ..records import Patient


class Checker:
    def __init__(
        self, summary: str, patient: Patient, known_names: tuple[str, ...], digest: Digest
    ) -> None:
        self.text = summary
        self.patient = patient
        self.digest = digest
        self.rec = _record(patient)
        self.first_names, self.last_names = _name_lists(known_names)
        self.own_names = frozenset(patient.name.lower().replace(".", "").split())
        self.facts: list[Fact] = []
        self.claims: list[Claim] = []
        self.stated: set[str] = set()
        self.taken: list[tuple[int, int]] = []
        self.quoted: list[tuple[int, int]] = []  # the record's own entries, repeated verbatim
        self.sentences = sentences(self.text)
        self.sentence_starts = [s for s, _ in self.sentences]
        self.other_person = {
            i for i, (s, e) in enumerate(self.sentences) if _OTHER_PERSON.search(summary, s, e)
        }

    # helpers

    def _about_someone_else(self, pos: int) -> bool:
        return bisect.bisect_right(self.sentence_starts, pos) - 1 in self.other_person

    def _free(self, start: int, end: int) -> bool:
        return all(end <= s or start >= e for s, e in self.taken)

    def _fact(self, kind: str, value: str, start: int, end: int, source: str = "record") -> None:
        self.facts.append(Fact(kind, value, self.text[start:end], start, end, source))

    def _claim(self, kind: str, start: int, end: int, reason: str, blocking: bool = True) -> None:
        if self._quoted(start, end):
            return  # the record's own words (`quotes`)
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

    def quotes(self) -> None:
        """Entries of the record's free-text fields that the summary repeats word for word:
        the current symptoms and the latest visit's outcome, which the strict prefill quotes,
        and the patient's name.
        What they say is the record's, whatever words are in them (a finding such as "body
        mass index 30+ - obesity", a drug, a number), so nothing inside them is read as a
        claim again: the summary and its check read the record the same way."""
        entries = list(self.patient.current_symptoms)
        if self.digest.latest is not None:
            entries.append(self.digest.latest.outcome.strip().rstrip("."))
        for entry in sorted({e.strip() for e in entries if len(e.strip()) >= 3}, key=len)[::-1]:
            for m in re.finditer(rf"(?<!\w){re.escape(entry)}(?!\w)", self.text, re.I):
                if self._free(*m.span()):
                    self.taken.append(m.span())  # no number inside is read again
                    self.quoted.append(m.span())
        # The patient's name, as the record spells it: "Grace Angina" is a name, not angina.
        for word in self.patient.name.split():
            if len(word) >= 3:
                pattern = rf"(?<!\w){re.escape(word)}(?!\w)"
                self.quoted += [m.span() for m in re.finditer(pattern, self.text)]

    def _quoted(self, start: int, end: int) -> bool:
        return any(start >= s and end <= e for s, e in self.quoted)

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
            # The summary's own words, read here; the record's values are typed already.
            try:
                bp = BloodPressure.of(int(m[1]), int(m[2]))
            except ValueError:  # not a blood pressure ("12/3" of a date, say)
                continue
            self.taken.append(m.span())
            source = rec.bps.get(bp)
            if source:
                self._fact("bp", str(bp), *m.span(), source=source)
                if bp == rec.bp:
                    self.stated.add("bp")
            elif not self._threshold(m.start()):
                self._claim("bp", *m.span(), f"record says {shown(self.patient.current_bp)}")

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
                said = shown(self.patient.current_sugar)
                unit = "" if self.patient.current_sugar is None else " mg/dL"
                self._claim("sugar", start, end, f"record says {said}{unit}")

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
                risk = self.patient.risk_score
                reason = (
                    "record has no risk score" if risk is None else f"record risk score is {risk:g}"
                )
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
                # A mention of the summary's own comes before one inside the record's words.
                start, end, status = min(
                    mentions,
                    key=lambda x: (self._quoted(s0 + x[0], s0 + x[1]), _MENTION_RANK[x[2]], x[0]),
                )
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
                history = joined(self.patient.medical_history) or "none"
                self._claim("condition", *span, f"not in the record's history ({history})")

    def _finding(self, key: str, phrase: str) -> str | None:
        """A measured finding ("high blood pressure") the current values bear out, if any."""
        if phrase not in _FINDING_PHRASES.get(key, ()):
            return None
        # "High blood sugar" at 150 mg/dL is a false flag, which `course` reports; as a
        # condition it is borne out by any value above the normal band.
        measure = {"hypertension": "blood pressure", "diabetes": "blood sugar"}[key]
        vital = self.digest.vital(measure)
        if vital and (vital.flagged or vital.mild):
            return f"current {measure} {vital.value} {vital.unit}"
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
            *([("bp", f"blood pressure: {p.current_bp}")] if p.current_bp is not None else []),
            *(
                [("sugar", f"blood sugar: {p.current_sugar}")]
                if p.current_sugar is not None
                else []
            ),
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
