"""The clinical vocabulary shared by the data generator, the search and the grounding check.

One table maps each canonical condition to the ways people write it ("HTN", "high blood
pressure", "type 2 diabetes mellitus"), the symptoms it brings and the drugs that treat it.
Keeping it in one place is what lets a query, a record and a generated summary that use
different words for the same thing agree with each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True, slots=True)
class Condition:
    key: str
    label: str
    synonyms: tuple[str, ...]
    symptoms: tuple[str, ...]
    medications: tuple[str, ...]


CONDITIONS: dict[str, Condition] = {
    c.key: c
    for c in (
        Condition(
            "diabetes",
            "Diabetes",
            (
                "diabetes",
                "diabetic",
                "diabetics",
                "diabetes mellitus",
                "type 2 diabetes",
                "type 2 diabetes mellitus",
                "type ii diabetes",
                "type 1 diabetes",
                "t2dm",
                "t1dm",
                "dm2",
                "niddm",
                "high blood sugar",
                "hyperglycemia",
                "hyperglycaemia",
            ),
            ("increased thirst", "frequent urination", "blurred vision", "fatigue"),
            ("Metformin", "Insulin glargine", "Glipizide", "Sitagliptin", "Empagliflozin"),
        ),
        Condition(
            "hypertension",
            "Hypertension",
            (
                "hypertension",
                "hypertensive",
                "hypertensives",
                "high bp",
                "high blood pressure",
                "elevated blood pressure",
                "raised blood pressure",
                "htn",
            ),
            ("headache", "dizziness", "blurred vision", "chest pain"),
            ("Lisinopril", "Amlodipine", "Losartan", "Hydrochlorothiazide"),
        ),
        Condition(
            "asthma",
            "Asthma",
            ("asthma", "asthmatic", "asthmatics", "reactive airway disease"),
            ("wheezing", "shortness of breath", "chest tightness", "cough"),
            ("Albuterol inhaler", "Fluticasone inhaler", "Montelukast"),
        ),
        Condition(
            "copd",
            "COPD",
            (
                "copd",
                "chronic obstructive pulmonary disease",
                "emphysema",
                "chronic bronchitis",
            ),
            ("shortness of breath", "chronic cough", "wheezing", "sputum production"),
            ("Tiotropium", "Albuterol inhaler", "Salmeterol"),
        ),
        Condition(
            "heart_failure",
            "Heart failure",
            (
                "heart failure",
                "congestive heart failure",
                "chf",
                "hfref",
                "hfpef",
                "cardiac failure",
            ),
            ("shortness of breath", "swollen ankles", "fatigue", "difficulty breathing"),
            ("Furosemide", "Carvedilol", "Spironolactone", "Sacubitril/valsartan"),
        ),
        Condition(
            "arthritis",
            "Arthritis",
            (
                "arthritis",
                "osteoarthritis",
                "rheumatoid arthritis",
                "degenerative joint disease",
                "oa",
                "ra",
            ),
            ("joint pain", "joint stiffness", "swollen joints"),
            ("Ibuprofen", "Naproxen", "Methotrexate", "Acetaminophen"),
        ),
        Condition(
            "high_cholesterol",
            "High cholesterol",
            (
                "high cholesterol",
                "hypercholesterolemia",
                "hypercholesterolaemia",
                "hyperlipidemia",
                "hyperlipidaemia",
                "dyslipidemia",
                "elevated cholesterol",
                "elevated ldl",
            ),
            ("fatigue",),
            ("Atorvastatin", "Simvastatin", "Rosuvastatin", "Ezetimibe"),
        ),
        Condition(
            "obesity",
            "Obesity",
            ("obesity", "obese", "morbid obesity", "overweight", "bmi over 30"),
            ("fatigue", "joint pain", "shortness of breath"),
            ("Semaglutide", "Orlistat"),
        ),
        Condition(
            "kidney_disease",
            "Chronic kidney disease",
            (
                "chronic kidney disease",
                "kidney disease",
                "ckd",
                "renal insufficiency",
                "renal failure",
                "kidney failure",
                "nephropathy",
            ),
            ("swollen ankles", "fatigue", "decreased urine output", "nausea"),
            ("Furosemide", "Calcitriol", "Sodium bicarbonate"),
        ),
        Condition(
            "coronary_artery_disease",
            "Coronary artery disease",
            (
                "coronary artery disease",
                "cad",
                "ischemic heart disease",
                "ischaemic heart disease",
                "angina",
                "coronary heart disease",
            ),
            ("chest pain", "shortness of breath", "fatigue"),
            ("Aspirin", "Nitroglycerin", "Metoprolol", "Atorvastatin"),
        ),
        Condition(
            "atrial_fibrillation",
            "Atrial fibrillation",
            ("atrial fibrillation", "afib", "a-fib", "af"),
            ("palpitations", "dizziness", "shortness of breath", "fatigue"),
            ("Apixaban", "Warfarin", "Metoprolol", "Diltiazem"),
        ),
        Condition(
            "depression",
            "Depression",
            ("depression", "major depressive disorder", "mdd", "depressive disorder"),
            ("low mood", "insomnia", "fatigue", "loss of appetite"),
            ("Sertraline", "Fluoxetine", "Escitalopram"),
        ),
        Condition(
            "hypothyroidism",
            "Hypothyroidism",
            ("hypothyroidism", "underactive thyroid", "hashimoto's thyroiditis"),
            ("fatigue", "weight gain", "cold intolerance"),
            ("Levothyroxine",),
        ),
        Condition(
            "gerd",
            "GERD",
            ("gerd", "gastroesophageal reflux disease", "acid reflux", "reflux"),
            ("heartburn", "chest pain", "nausea"),
            ("Omeprazole", "Pantoprazole", "Famotidine"),
        ),
        Condition(
            "osteoporosis",
            "Osteoporosis",
            ("osteoporosis", "low bone density", "osteopenia"),
            ("back pain",),
            ("Alendronate", "Calcium with vitamin D"),
        ),
        Condition(
            "stroke",
            "History of stroke",
            ("stroke", "cva", "cerebrovascular accident", "tia", "transient ischemic attack"),
            ("weakness", "confusion", "dizziness", "slurred speech"),
            ("Clopidogrel", "Aspirin", "Atorvastatin"),
        ),
    )
}

# Symptoms and the phrasings that mean the same thing. Keys are canonical symptom names.
SYMPTOMS: dict[str, tuple[str, ...]] = {
    "shortness of breath": (
        "shortness of breath",
        "short of breath",
        "breathlessness",
        "breathless",
        "dyspnea",
        "dyspnoea",
        "difficulty breathing",
        "sob",
        "orthopnea",
        "orthopnoea",
    ),
    "chest pain": ("chest pain", "chest discomfort"),
    "headache": ("headache", "headaches", "migraine"),
    "dizziness": ("dizziness", "dizzy", "lightheadedness", "vertigo"),
    "fatigue": ("fatigue", "tiredness", "tired", "exhaustion", "lethargy"),
    "wheezing": ("wheezing", "wheeze"),
    "cough": ("cough", "coughing", "chronic cough"),
    "joint pain": ("joint pain", "arthralgia", "painful joints", "aching joints"),
    "joint stiffness": ("joint stiffness", "stiff joints", "morning stiffness"),
    "swollen joints": ("swollen joints", "joint swelling"),
    "swollen ankles": ("swollen ankles", "ankle swelling", "edema", "oedema", "leg swelling"),
    "increased thirst": ("increased thirst", "polydipsia", "excessive thirst"),
    "frequent urination": ("frequent urination", "polyuria"),
    "blurred vision": ("blurred vision", "blurry vision"),
    "palpitations": ("palpitations", "racing heart", "irregular heartbeat"),
    "nausea": ("nausea", "nauseous", "vomiting"),
    "confusion": ("confusion", "confused", "disorientation"),
    "weakness": ("weakness", "weak"),
    "insomnia": ("insomnia", "trouble sleeping", "poor sleep"),
    "low mood": ("low mood", "sadness", "depressed mood"),
    "weight gain": ("weight gain",),
    "back pain": ("back pain", "lower back pain"),
    "heartburn": ("heartburn",),
    "sputum production": ("sputum production", "productive cough", "phlegm"),
    "chest tightness": ("chest tightness", "tight chest"),
    "decreased urine output": ("decreased urine output", "low urine output"),
    "loss of appetite": ("loss of appetite", "poor appetite"),
    "cold intolerance": ("cold intolerance",),
    "slurred speech": ("slurred speech",),
}

# Every drug the vocabulary knows, lower-cased, mapped to the conditions it treats.
MEDICATIONS: dict[str, tuple[str, ...]] = {}
for _c in CONDITIONS.values():
    for _m in _c.medications:
        MEDICATIONS[_m.lower()] = (*MEDICATIONS.get(_m.lower(), ()), _c.key)
# Drugs a small model likes to invent; known so that the grounding check can catch them.
for _extra in (
    "prednisone",
    "amoxicillin",
    "azithromycin",
    "gabapentin",
    "tramadol",
    "morphine",
    "oxycodone",
    "hydrocodone",
    "digoxin",
    "heparin",
    "enalapril",
    "ramipril",
    "valsartan",
    "propranolol",
    "atenolol",
    "bisoprolol",
    "glyburide",
    "pioglitazone",
    "dapagliflozin",
    "liraglutide",
    "dulaglutide",
    "insulin",
    "pravastatin",
    "lovastatin",
    "citalopram",
    "paroxetine",
    "venlafaxine",
    "bupropion",
    "duloxetine",
    "lorazepam",
    "alprazolam",
    "diazepam",
    "zolpidem",
    "ciprofloxacin",
    "doxycycline",
    "cephalexin",
    "ranitidine",
    "esomeprazole",
    "lansoprazole",
    "budesonide",
    "ipratropium",
    "rivaroxaban",
    "dabigatran",
    "torsemide",
    "chlorthalidone",
    "spironolactone",
    "colchicine",
    "allopurinol",
    "hydroxychloroquine",
    "celecoxib",
    "diclofenac",
    "paracetamol",
    "acetaminophen",
    "aspirin",
    "hydralazine",
    "clonidine",
    "nifedipine",
    "glimepiride",
    "amiodarone",
    "labetalol",
    "isosorbide",
    "fenofibrate",
    "prednisolone",
    "methylprednisolone",
    "levofloxacin",
):
    MEDICATIONS.setdefault(_extra, ())


def _normalise(text: str) -> str:
    """Lower-case, turn punctuation into spaces and squeeze them, so phrases match on words."""
    return " " + re.sub(r"[^a-z0-9/'+-]+", " ", text.lower()).strip() + " "


@lru_cache(maxsize=1)
def _phrase_table() -> tuple[tuple[str, str], ...]:
    """(normalised phrase, concept) pairs, longest phrases first so they win over their parts."""
    pairs: list[tuple[str, str]] = []
    for c in CONDITIONS.values():
        for s in (c.label, *c.synonyms):
            pairs.append((_normalise(s), f"condition:{c.key}"))
    for key, phrasings in SYMPTOMS.items():
        for s in phrasings:
            pairs.append((_normalise(s), f"symptom:{key}"))
    for med in MEDICATIONS:
        pairs.append((_normalise(med), f"medication:{med}"))
    pairs.sort(key=lambda p: -len(p[0]))
    return tuple(pairs)


def find_concepts(text: str) -> dict[str, str]:
    """Map each concept named in `text` to the phrase that named it.

    Concepts are `condition:<key>`, `symptom:<key>` and `medication:<name>`. Longer phrases are
    matched first and consume their words, so "chronic kidney disease" is one condition and
    "type 2 diabetes mellitus" is not also read as some other "type".
    """
    norm = _normalise(text)
    found: dict[str, str] = {}
    for phrase, concept in _phrase_table():
        idx = norm.find(phrase)
        if idx < 0:
            continue
        found.setdefault(concept, phrase.strip())
        # Blank the matched words out so shorter phrases inside them do not match again.
        norm = norm[:idx] + " " * (len(phrase) - 1) + norm[idx + len(phrase) - 1 :]
    return found


# --- what search needs beyond the concepts ---------------------------------------------------
# Synonyms above that name something narrower than the condition (a kind of it): a query for
# the condition finds them, a query naming them finds only them.
NARROWER: dict[str, frozenset[str]] = {
    "arthritis": frozenset(
        {"osteoarthritis", "rheumatoid arthritis", "degenerative joint disease", "oa", "ra"}
    ),
    "diabetes": frozenset({"type 1 diabetes", "t1dm"}),
    "copd": frozenset({"emphysema", "chronic bronchitis"}),
    "heart_failure": frozenset({"hfref", "hfpef"}),
    "obesity": frozenset({"morbid obesity"}),
}
# Synonyms above that name a finding or a milder state, not the condition: good enough for the
# grounding check, but search never treats one as the other ("hyperglycaemia" is not diabetes,
# "osteopenia" not osteoporosis, a TIA not a stroke).
LOOSE: frozenset[str] = frozenset(
    {
        "high blood sugar",
        "hyperglycemia",
        "hyperglycaemia",
        "overweight",
        "osteopenia",
        "tia",
        "transient ischemic attack",
        "angina",
        "nephropathy",
        "renal failure",
        "kidney failure",
        "reflux",
    }
)
_DIURETICS = ("furosemide", "hydrochlorothiazide", "spironolactone", "torsemide", "chlorthalidone")
# What a query phrase stands for, in the words records use: abbreviations, lay and British
# terms. Search tries these as well as the query itself; only whole queries (or the parts of a
# query split at "and", "with", ",") are looked up.
ALIASES: dict[str, tuple[str, ...]] = {
    "ra": ("rheumatoid arthritis",),
    "oa": ("osteoarthritis",),
    "mi": ("myocardial infarction",),
    "heart attack": ("myocardial infarction",),
    "heart stopped": ("cardiac arrest",),
    "uti": ("urinary tract infection", "cystitis"),
    "water infection": ("urinary tract infection", "cystitis"),
    "bladder infection": ("cystitis",),
    "adhd": ("attention deficit disorder",),
    "bmi over 30": ("obesity",),
    "lumbago": ("low back pain",),
    "cervicalgia": ("neck pain",),
    "brittle bones": ("osteoporosis",),
    "appendix removed": ("appendectomy",),
    "appendix out": ("appendectomy",),
    "appendicectomy": ("appendectomy",),
    "spontaneous abortion": ("miscarriage",),
    "hay fever": ("allergic rhinitis",),
    "eczema": ("atopic dermatitis",),
    "wisdom teeth": ("impacted molars",),
    "gunshot wound": ("bullet wound",),
    "blood poisoning": ("sepsis",),
    "ectopic pregnancy": ("tubal pregnancy",),
    "epilepsy": ("seizure disorder",),
    "fits": ("seizure",),
    "pre-eclampsia": ("preeclampsia",),
    "pre eclampsia": ("preeclampsia",),
    "low hemoglobin": ("anemia",),
    "low oxygen": ("hypoxemia",),
    "broken": ("fracture",),
    "twisted": ("sprain",),
    "sprained": ("sprain",),
    "strep throat": ("streptococcal sore throat",),
    "covid": ("covid-19",),
    "coronavirus": ("covid-19",),
    "panic attacks": ("anxiety (panic)",),
    "alcohol misuse": ("unhealthy alcohol drinking behavior",),
    "heavy drinker": ("unhealthy alcohol drinking behavior",),
    "drug abuse": ("misuses drugs",),
    "drug misuse": ("misuses drugs",),
    "substance misuse": ("misuses drugs", "unhealthy alcohol drinking behavior"),
    "dementia": ("alzheimer's disease",),
    "raised bp": ("hypertension",),
    "borderline diabetes": ("prediabetes",),
    "sore throat": ("pharyngitis", "sore throat"),
    "collarbone": ("clavicle",),
    # Lay words (issue 25): "sugar" is what many patients call diabetes; "water pills" are
    # the diuretics.
    "sugar problems": ("diabetes",),
    "sugar problem": ("diabetes",),
    "sugar diabetes": ("diabetes",),
    "water pills": _DIURETICS,
    "water pill": _DIURETICS,
    "water tablets": _DIURETICS,
}
# British spellings, rewritten word by word to the American ones most records use.
_SPELLING = (
    (re.compile(r"aem"), "em"),  # anaemia, haemoglobin, ischaemic, septicaemia
    (re.compile(r"(?<![a-z])oesophag"), "esophag"),
    (re.compile(r"\boedem"), "edem"),
    (re.compile(r"\boestr"), "estr"),
    (re.compile(r"rrhoea"), "rrhea"),
    (re.compile(r"\bfoet"), "fet"),
    (re.compile(r"paed"), "ped"),
    (re.compile(r"tumour"), "tumor"),
    (re.compile(r"isation\b"), "ization"),
)


def american(word: str) -> str:
    """A word in American spelling ("anaemia" -> "anemia", "oedema" -> "edema")."""
    for pattern, repl in _SPELLING:
        word = pattern.sub(repl, word)
    return word
