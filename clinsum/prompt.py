"""The prompt and the answer prefill, shared by every backend.

A 135M-parameter model forgets or invents names and numbers easily. Two things keep it on the
record: the facts are laid out one per line in a fixed order (the same for every patient, so
the model sees a familiar shape), and the whole first sentence of the answer is written for
it from the record (the prefill): name, age, gender, conditions, symptoms, blood pressure and
blood sugar are right by construction, and the model only adds the concerns and advice.
Each step was kept because `make eval` (grounding.check over the 100 patients of
patient_data.csv) showed it helped; share of summaries free of unsupported claims:
- prefill "<name> is a <age>-year-old <gender>" only: 45%, 71% of the key facts stated;
- the whole first sentence from the record: 87%, all key facts stated;
- digits forbidden after it (backends/base.py `allow_digits`): 96%;
- risk score in the prefill, drug names without doses in the prompt: 98% (one invented name);
- the prefill ending in "Recommendation:": 100%, no wrong name, coverage 1.0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .scores import format_risk

if TYPE_CHECKING:
    from .records import Patient

SYSTEM_PROMPT = (
    "You are a clinical assistant who writes short, factual patient summaries for doctors. "
    "Use only the facts in the patient record: never invent diagnoses, numbers or drugs. "
    "Refer to the patient by the name given in the record."
)

_GENDER_WORDS = {"f": "female", "m": "male"}


def _gender(patient: Patient) -> str:
    word = patient.gender.strip().lower()
    return _GENDER_WORDS.get(word, word)


def _last_outcome(patient: Patient) -> str:
    if not patient.visit_history:
        return "no previous visits"
    # ISO dates sort as text; the file order is not trusted to be chronological.
    return max(patient.visit_history, key=lambda v: v.date).outcome


def _drug_names(patient: Patient) -> list[str]:
    """ "Metformin 500mg" -> "Metformin": the name up to the first word holding a digit."""
    names = []
    for med in patient.medications():
        words = med.split()
        cut = next((i for i, w in enumerate(words) if any(c.isdigit() for c in w)), len(words))
        names.append(" ".join(words[:cut]) or med)
    return names


def _facts(patient: Patient) -> list[tuple[str, str]]:
    return [
        ("Name", patient.name),
        ("Age", str(patient.age)),
        ("Gender", _gender(patient)),
        ("Current symptoms", patient.current_symptoms),
        ("Blood pressure", f"{patient.current_bp} mmHg"),
        ("Blood sugar", f"{patient.current_sugar} mg/dL"),
        ("Medical history", patient.medical_history),
        # Drug names only: the prefill states every number, and the backend forbids digits
        # after it, so a dose in the prompt could only come out as "Metformin  mg".
        ("Current medications", ", ".join(_drug_names(patient)) or "none"),
        # On the file's scale (scores.format_risk): "49%" for 0-1, "6.6/10" for 0-10.
        ("Risk score", format_risk(patient)),
        ("Last visit outcome", _last_outcome(patient)),
    ]


def build_messages(patient: Patient) -> list[dict]:
    """The chat messages for one summary, in the role/content form every backend takes."""
    record = "\n".join(f"{label}: {value}" for label, value in _facts(patient))
    request = (
        f"Patient record:\n{record}\n\n"
        f"Write a concise clinical summary of {patient.name} in 2-3 sentences: "
        "the key concerns and the recommendations. Use only the facts above."
    )
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": request},
    ]


def _listing(items: list[str]) -> str:
    """Items as prose ("a, b and c"), lower-cased but for acronyms such as COPD."""
    words = [" ".join(w if w.isupper() else w.lower() for w in item.split()) for item in items]
    return " and ".join([", ".join(words[:-1]), words[-1]]) if len(words) > 1 else "".join(words)


def prefill(patient: Patient) -> str:
    """The first sentence of the answer, taken from the record so that it cannot be wrong."""
    conditions = _listing(patient.conditions()) or "no recorded conditions"
    symptoms = _listing(patient.symptoms())
    presenting = f"presenting with {symptoms}" if symptoms else "with no current symptoms"
    article = "an" if str(patient.age).startswith("8") or patient.age in (11, 18) else "a"
    return (
        f"{patient.name} is {article} {patient.age}-year-old {_gender(patient)} with {conditions}, "
        f"{presenting}, a blood pressure of {patient.current_bp} mmHg, a blood sugar of "
        f"{patient.current_sugar} mg/dL and a risk score of {format_risk(patient)}."
        # Left to itself after the facts, the model restates them and drifts into conditions
        # the patient does not have; asked for the recommendation, it gives one.
        " Recommendation:"
    )
