"""Issue #10 end to end in-process: the narrative path against the loopback Ollama-format
server with scripted texts that plant errors, the strict path's record-written facts, and
saving a clinician's edit. The registry's tools run through `Tool.run`, without a socket."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import pytest

from clinsum.app import App
from clinsum.backends.ollama import OllamaBackend
from clinsum.digest import digest
from clinsum.errors import UNSUPPORTED_CLAIMS
from clinsum.grounding import check, course
from clinsum.jsonrpc import INVALID_PARAMS, Call, RPCError, Session
from clinsum.prompt import build_messages, prefill
from clinsum.steering import heading
from clinsum.store import SummaryStore
from clinsum.tools import TOOLS
from testkit.fake_ollama import FakeOllama
from tests.records_helpers import changed, make_patient, make_visit

VISITS = (
    make_visit("2023-01-01", "blurred vision", "138/68", 180, "Diabetes",
          "Metformin 850mg, Insulin glargine 10 units", 0.31, 0.40, "Improved",
          "Seen for diabetes management. Glucose 180 mg/dL. Lifestyle counselling given."),
    make_visit("2023-10-06", "increased thirst", "150/79", 231, "Diabetes, High cholesterol",
          "Metformin 850mg, Insulin glargine 10 units, Simvastatin 40mg", 0.44, 0.50,
          "Medication adjusted", "Follow-up for diabetes. Glucose 231 mg/dL. Metformin stopped "
          "for nausea; glipizide started."),
)  # fmt: skip
KATHLEEN = make_patient(
    patient_id=6,
    name="Kathleen Murray",
    age=54,
    gender="Female",
    current_symptoms="increased thirst",
    current_bp="119/78",
    current_sugar=274,
    base_score=0.47,
    risk_score=0.54,
    medical_history="Diabetes, High cholesterol",
    current_medications="Glipizide 5mg, Insulin glargine 10 units, Simvastatin 40mg",
    visit_history=VISITS,
)
OTHER = changed(KATHLEEN, patient_id=7, name="Omar Haddad", visit_history=())
NAMES = (KATHLEEN.name, OTHER.name)

GOOD = (
    " is a 54-year-old woman with diabetes and high cholesterol. Her blood sugar rose from 180 "
    "to 274 mg/dL since 2023-01-01 and is high; her systolic blood pressure fell from 138 to "
    "119 mmHg. Her risk score rose from 0.40 to 0.54. Since the latest visit on 2023-10-06, "
    "metformin was stopped and glipizide started. Assessment: glucose control is worsening. "
    "Recommend a diabetes review within weeks and home glucose monitoring."
)
# Each scripted answer plants one error; the check must report it with its span.
PLANTED = [
    ("wrong direction", "fell from 138 to", "trend", "rose from 138 to"),
    ("wrong value", "from 180 to 274", "sugar", "from 180 to 247"),
    ("another patient's name", "Assessment:", "name", "Omar Haddad's assessment:"),
    ("invented drug", "glipizide started", "medication", "sitagliptin started"),
    ("flag on a normal value", "pressure fell", "flag", "pressure is high and fell"),
    ("escalation", "Recommend a", "escalation", "Admit for observation and recommend a"),
]


def tokens(text: str) -> list[str]:
    return re.findall(r" ?\S+", text)


@pytest.fixture
def app(tmp_path: Path) -> App:
    store = SummaryStore(tmp_path / "patient_summaries.csv")
    store.ensure_exists()
    backend = OllamaBackend(host="http://127.0.0.1:9", model="phi")  # replaced per test
    return App({6: KATHLEEN, 7: OTHER}, index=None, backend=backend, store=store)  # type: ignore[arg-type]


def call(method: str) -> Call:
    return Call(id=1, method=method, notify=None, session=Session())  # type: ignore[arg-type]


async def run(app: App, tool: str, **params: Any) -> dict[str, Any]:
    return await TOOLS[tool].run(app, call(tool), params)


async def summarize_with(app: App, text: str) -> dict[str, Any]:
    async with FakeOllama(tokens=tokens(text)) as srv:
        app.backend = OllamaBackend(host=srv.url, model="phi")
        try:
            return await run(app, "summarize", patient_id=6)
        finally:
            await app.backend.aclose()


def test_the_good_text_states_every_item_of_the_digest() -> None:
    d = digest(KATHLEEN)
    text = KATHLEEN.name + GOOD
    reading = course.read(text, d)
    assert (
        reading.trends_stated
        == {t.key for t in d.meaningful_trends}
        == {"sugar", "systolic", "risk"}
    )
    assert reading.flags_stated == {"blood sugar"}
    assert not reading.contradictions and not reading.false_flags and not reading.escalations
    assert check(text, KATHLEEN, NAMES, d).ok


async def test_narrative_is_the_default_for_ollama_and_the_good_text_passes(app: App) -> None:
    result = await summarize_with(app, GOOD)
    assert result["style"] == "narrative"
    assert result["summary"] == KATHLEEN.name + GOOD
    assert result["grounding"]["ok"], result["grounding"]["unsupported"]
    assert result["digest"]["flags"] == ["blood sugar"]


@pytest.mark.parametrize(("what", "old", "kind", "new"), PLANTED, ids=[p[0] for p in PLANTED])
async def test_narrative_errors_are_caught(
    app: App, what: str, old: str, kind: str, new: str
) -> None:
    assert old in GOOD
    result = await summarize_with(app, GOOD.replace(old, new))
    g = result["grounding"]
    assert not g["ok"]
    claims = [c for c in g["unsupported"] if c["kind"] == kind]
    assert claims, (what, g["unsupported"])
    text = result["summary"]
    assert all(text[c["start"] : c["end"]] == c["text"] for c in claims)
    with pytest.raises(RPCError) as err:
        await run(app, "save_summary", summary_id=result["summary_id"])
    assert err.value.code == UNSUPPORTED_CLAIMS


@pytest.mark.parametrize(
    ("sentence", "kind"),
    [
        ("Her blood sugar fell to 274 mg/dL.", "trend"),
        ("Glucose decreased from 180 to 274 mg/dL.", "trend"),
        ("Blood sugar went from 274 to 180 mg/dL.", "trend"),  # values in the wrong order
        ("Her systolic blood pressure increased.", "trend"),
        ("Her risk score improved.", "trend"),
        ("Blood pressure is uncontrolled.", "flag"),  # 119/78: normal
        ("Blood pressure is elevated.", "flag"),  # not even the mild band
        ("Blood sugar is low.", "flag"),
        ("Blood sugar of 274 mg/dL is normal.", "flag"),  # flagged, never normal
        ("Her blood sugar is in crisis.", "flag"),  # 274: high, not crisis
        ("She needs urgent care.", "escalation"),
        ("Refer to the emergency department.", "escalation"),
    ],
)
def test_course_claims_are_unsupported(sentence: str, kind: str) -> None:
    g = check(sentence, KATHLEEN, NAMES)
    assert kind in {c.kind for c in g.unsupported if c.blocking}, g.unsupported


@pytest.mark.parametrize(
    "sentence",
    [
        "Her blood sugar rose to 274 mg/dL and is high.",
        "Blood sugar is uncontrolled, above target.",
        "Blood pressure is not high.",
        "Her blood pressure is stable.",  # not flagged: stable is true
        "Exercise lowers the risk of stroke.",  # "risk of" is not the score
        "Her risk factors are diabetes and high cholesterol.",
        "Risk score rose since 2023-01-01: 0.40, 0.50 and now 0.54.",
    ],
)
def test_course_statements_that_hold(sentence: str) -> None:
    g = check(sentence, KATHLEEN, NAMES)
    assert g.ok, g.unsupported


def test_escalation_is_allowed_with_a_crisis_value() -> None:
    crisis = changed(KATHLEEN, current_sugar=412)
    assert check("Blood sugar 412 mg/dL is at crisis level: urgent review.", crisis, NAMES).ok
    assert not check("Urgent review.", KATHLEEN, NAMES).ok


def test_strict_prefill_states_the_digest_and_nothing_unsupported() -> None:
    d = digest(KATHLEEN)
    head = prefill(KATHLEEN, "strict", d)
    assert head.endswith(heading(d))
    assert heading(d) == "Recommendation: for the blood sugar, continue"  # the one flag
    reading = course.read(head, d)
    assert reading.trends_stated == {"sugar", "systolic", "risk"}
    assert reading.flags_stated == {"blood sugar"}
    assert "metformin stopped" in head and "glipizide started" in head
    assert "2023-10-06" in head and "medication adjusted" in head
    assert check(head, KATHLEEN, NAMES, d).ok
    # The strict prompt does not repeat the facts: the model evaluates them once.
    assert "274" not in build_messages(KATHLEEN, "strict", d)[1]["content"]
    assert "274" in build_messages(KATHLEEN, "narrative", d)[1]["content"]


def test_strict_prefill_hides_an_escalating_outcome_without_crisis() -> None:
    admitted = (*VISITS[:1], changed(VISITS[1], outcome="Admitted for observation"))
    head = prefill(changed(KATHLEEN, visit_history=admitted))
    assert "admitted" not in head.lower() and "2023-10-06" in head


def test_one_visit_and_no_visit_records_claim_no_change() -> None:
    none = changed(KATHLEEN, visit_history=())
    assert "rose" not in prefill(none) and "fell" not in prefill(none)
    assert check(prefill(none), none, NAMES).ok


# --- the clinician's edit ---------------------------------------------------------------------


async def test_edit_is_rechecked_and_saved_with_the_edited_column(app: App) -> None:
    result = await summarize_with(app, GOOD)
    edited = KATHLEEN.name + GOOD.replace("within weeks", "this month")
    verdict = await run(app, "check_summary", summary_id=result["summary_id"], text=edited)
    assert verdict["grounding"]["ok"]
    saved = await run(app, "save_summary", summary_id=result["summary_id"], text=edited)
    assert saved["edited"] and saved["grounded"]
    with app.store.path.open(newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["summary"] == edited and row["edited"] == "true"


async def test_edit_naming_another_patient_needs_force(app: App) -> None:
    result = await summarize_with(app, GOOD)
    wrong = "Omar Haddad has diabetes."
    with pytest.raises(RPCError) as err:
        await run(app, "save_summary", summary_id=result["summary_id"], text=wrong)
    assert err.value.code == UNSUPPORTED_CLAIMS
    assert "'Omar Haddad' at 0-11" in err.value.message
    (claim,) = [c for c in err.value.data["unsupported"] if c["kind"] == "name"]
    assert (claim["start"], claim["end"]) == (0, 11)
    saved = await run(app, "save_summary", summary_id=result["summary_id"], text=wrong, force=True)
    assert (saved["saved"], saved["edited"], saved["grounded"]) == (True, True, False)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "must not be empty (1 to 5000 characters)"),
        ("x" * 5001, "is too long (5001 characters; at most 5000)"),
    ],
)
async def test_edit_length_is_checked(app: App, text: str, why: str) -> None:
    with pytest.raises(RPCError) as err:
        await run(app, "save_summary", summary_id="0" * 32, text=text)
    assert err.value.code == INVALID_PARAMS
    assert err.value.message == f"Invalid params: 'text' {why}"


async def test_digest_tool_is_in_the_registry(app: App) -> None:
    assert (await run(app, "digest", patient_id=6))["digest"] == digest(KATHLEEN).to_dict()


def test_old_summaries_file_without_edited_column_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "patient_summaries.csv"
    path.write_text(
        "patient_id,name,summary,model,generated_at,grounded\n"
        "3,Janet Vasquez,Old text.,phi,2026-01-01T00:00:00+00:00,true\n"
    )
    store = SummaryStore(path)
    store.save(6, "Kathleen Murray", "New.", "phi", "2026-11-30T00:00:00+00:00", True, True)
    rows = {r["patient_id"]: r for r in store.rows()}
    assert rows["3"]["summary"] == "Old text." and rows["3"]["edited"] == ""
    assert rows["6"]["edited"] == "true"
    assert path.read_text().splitlines()[0].endswith(",grounded,edited")
