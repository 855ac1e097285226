"""The tools behind the JSON-RPC dispatcher, with a scripted model and no socket.

Message in, replies out (as in test_jsonrpc.py): `build_dispatcher(app)` runs the same
`Tool.run` both faces call, with an `App` whose backend writes exactly what a test tells it
to, so what the grounding check finds, and hence what `save_summary` must do, is known.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clinsum.app import App
from clinsum.records import Patient, load_patients
from clinsum.steering import steer
from clinsum.store import COLUMNS, SummaryStore

from .conftest import DATA
from .scripted import Rpc, ScriptedBackend

PATIENTS = load_patients(DATA)
# Patient 1's blood pressure is 137/85 mmHg: 120/80 is a claim the record does not support.
PATIENT: Patient = PATIENTS[1]
WRONG_BP = [" His", " blood", " pressure", " is", " 120/80", " mmHg", "."]
AGREEABLE = [" Continue", " the", " current", " treatment", "."]


def app_with(chunks: list[str], summaries: Path) -> App:
    store = SummaryStore(summaries)
    store.ensure_exists()
    # Neither summarize nor save_summary touches the search index.
    return App(PATIENTS, None, ScriptedBackend(chunks), store)  # type: ignore[arg-type]


HEADER = ",".join(COLUMNS) + "\n"


async def test_save_refuses_unsupported_claims_until_forced(tmp_path: Path) -> None:
    """A summary claiming a blood pressure the record does not have: saving it without
    `force` is -32005 with the claim in `data.unsupported`, and nothing is written; with
    `force` it is written with grounded=false. Mutation caught: the server saves unsupported
    summaries without `force` (never -32005)."""
    summaries = tmp_path / "patient_summaries.csv"
    rpc = Rpc(app_with(WRONG_BP, summaries))
    summary = await rpc.result("summarize", {"patient_id": PATIENT.patient_id})
    assert summary["summary"].endswith("His blood pressure is 120/80 mmHg.")
    assert summary["grounding"]["ok"] is False

    refused = await rpc.call("save_summary", {"summary_id": summary["summary_id"]})
    assert refused["error"]["code"] == -32005, refused
    assert "force" in refused["error"]["message"]
    claims = refused["error"]["data"]["unsupported"]
    assert [c["text"] for c in claims if "120/80" in c["text"]], claims
    assert summaries.read_text() == HEADER  # nothing written

    saved = await rpc.result("save_summary", {"summary_id": summary["summary_id"], "force": True})
    assert saved["saved"] is True and saved["grounded"] is False
    rows = SummaryStore(summaries).rows()
    assert [(r["patient_id"], r["grounded"]) for r in rows] == [("1", "false")]
    assert rows[0]["summary"] == summary["summary"]


async def test_only_a_grounded_summary_is_saved_as_grounded(tmp_path: Path) -> None:
    """A summary that sticks to the record saves without `force` and is marked grounded; one
    with a wrong number is not marked grounded, in the reply or in the file. Mutation caught:
    the server marks every summary grounded."""
    good_file, bad_file = tmp_path / "good.csv", tmp_path / "bad.csv"
    good = Rpc(app_with(AGREEABLE, good_file))
    result = await good.result("summarize", {"patient_id": PATIENT.patient_id})
    assert result["grounding"]["ok"] is True, result["grounding"]
    saved = await good.result("save_summary", {"summary_id": result["summary_id"]})
    assert saved["grounded"] is True
    assert SummaryStore(good_file).rows()[0]["grounded"] == "true"

    bad = Rpc(app_with(WRONG_BP, bad_file))
    result = await bad.result("summarize", {"patient_id": PATIENT.patient_id})
    assert result["grounding"]["ok"] is False
    forced = await bad.result("save_summary", {"summary_id": result["summary_id"], "force": True})
    assert forced["grounded"] is False
    assert SummaryStore(bad_file).rows()[0]["grounded"] == "false"


async def test_an_unwritable_summaries_file_is_error_32007(tmp_path: Path) -> None:
    """The summaries folder is replaced by a plain file after start-up (a file where a
    folder should be defeats root too, unlike permissions): the save answers -32007 naming
    the file, and the server keeps the summary, so a retry after the fix succeeds."""
    folder = tmp_path / "out"
    summaries = folder / "patient_summaries.csv"
    rpc = Rpc(app_with(AGREEABLE, summaries))
    result = await rpc.result("summarize", {"patient_id": PATIENT.patient_id})
    for entry in folder.iterdir():
        entry.unlink()
    folder.rmdir()
    folder.write_text("not a folder")

    failed = await rpc.call("save_summary", {"summary_id": result["summary_id"]})
    assert failed["error"]["code"] == -32007, failed
    assert str(summaries) in failed["error"]["message"]
    listed = await rpc.call("list_summaries", {})
    assert listed["error"]["code"] == -32007, listed

    folder.unlink()
    folder.mkdir()
    saved = await rpc.result("save_summary", {"summary_id": result["summary_id"]})
    assert saved["saved"] is True
    assert [r["patient_id"] for r in SummaryStore(summaries).rows()] == ["1"]


@pytest.mark.parametrize("version", ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"])
async def test_every_supported_protocol_version_is_accepted(tmp_path: Path, version: str) -> None:
    """Mutation caught: a supported MCP protocol version dropped (the client would be moved
    to the newest one, which it may not speak)."""
    rpc = Rpc(app_with(AGREEABLE, tmp_path / "s.csv"))
    init = await rpc.result("initialize", {"protocolVersion": version, "capabilities": {}})
    assert init["protocolVersion"] == version
    assert rpc.session.protocol_version == version


async def test_summary_history_returns_every_version_and_list_the_current(tmp_path: Path) -> None:
    """Generated, then saved as is, edited, and rewritten by a clinician: three versions,
    oldest first, each saying where it came from; list_summaries shows only the last.
    Mutation caught: a save replacing the patient's version instead of adding one."""
    rpc = Rpc(app_with(AGREEABLE, tmp_path / "s.csv"))
    pid = PATIENT.patient_id
    summary = await rpc.result("summarize", {"patient_id": pid})
    sid = summary["summary_id"]
    first = await rpc.result("save_summary", {"summary_id": sid})
    edited_text = summary["summary"] + " Review in two weeks."
    second = await rpc.result("save_summary", {"summary_id": sid, "text": edited_text})
    third = await rpc.result(
        "save_summary", {"patient_id": pid, "text": "Seen today.", "force": True}
    )
    assert [first["version"], second["version"], third["version"]] == [1, 2, 3]

    history = await rpc.result("summary_history", {"patient_id": pid})
    assert history["patient_id"] == pid
    got = [
        (v["version"], v["summary"], v["summary_id"], v["edited"], v["model"])
        for v in history["versions"]
    ]
    assert got == [
        (1, summary["summary"], sid, False, "scripted-1"),
        (2, edited_text, sid, True, "scripted-1"),
        (3, "Seen today.", None, True, "clinician"),  # written by a person: edited
    ]
    assert all(v["saved_at"] for v in history["versions"])
    listed = (await rpc.result("list_summaries", {}))["summaries"]
    assert [(r["patient_id"], r["summary"]) for r in listed] == [(str(pid), "Seen today.")]
    assert (await rpc.result("summary_history", {"patient_id": 2}))["versions"] == []
    unknown = await rpc.call("summary_history", {"patient_id": 999999})
    assert unknown["error"]["code"] == -32001, unknown


async def test_an_expired_summary_id_is_32002_saying_it_expired(tmp_path: Path) -> None:
    """Past --draft-ttl a summary_id cannot be checked or saved, and the error says why
    (not "unknown"); nothing is written. Mutation caught: the age never compared."""
    app = app_with(AGREEABLE, tmp_path / "s.csv")
    app.draft_ttl_s = 3600
    rpc = Rpc(app)
    sid = (await rpc.result("summarize", {"patient_id": PATIENT.patient_id}))["summary_id"]
    app.summaries[sid].created_at -= 3601
    for method, params in (
        ("save_summary", {"summary_id": sid}),
        ("check_summary", {"summary_id": sid, "text": "x"}),
    ):
        reply = await rpc.call(method, params)
        assert reply["error"]["code"] == -32002, reply
        assert "expired" in reply["error"]["message"] and "--draft-ttl" in reply["error"]["message"]
    assert (tmp_path / "s.csv").read_text() == HEADER


async def test_a_text_with_nul_is_refused_and_quotes_and_sql_are_kept(tmp_path: Path) -> None:
    """5,000 characters of quotes and SQL are saved verbatim; the same text with a NUL
    character is -32602 naming `text` (PostgreSQL cannot store NUL: both stores refuse it
    alike), and the saved version stays."""
    rpc = Rpc(app_with(AGREEABLE, tmp_path / "s.csv"))
    hostile = ('\'; DROP TABLE summary_versions; -- "quoted" , \\ ' * 200)[:5000]
    saved = await rpc.result("save_summary", {"patient_id": 1, "text": hostile, "force": True})
    assert saved["version"] == 1
    with_nul = hostile[:2000] + "\0" + hostile[2001:]
    refused = await rpc.call("save_summary", {"patient_id": 1, "text": with_nul, "force": True})
    assert refused["error"]["code"] == -32602 and "'text'" in refused["error"]["message"]
    assert "NUL" in refused["error"]["message"]
    history = (await rpc.result("summary_history", {"patient_id": 1}))["versions"]
    assert [v["summary"] for v in history] == [hostile]


async def test_max_tokens_goes_up_to_1024_and_no_further(tmp_path: Path) -> None:
    """`max_tokens` 1024 is served in full (the model is asked for 1024 and streams them);
    1025 is -32602 naming the parameter and the limit, before anything is generated; and
    `tools/list` publishes the limit, so hosts know it. Mutation caught: the `max_tokens`
    maximum raised (MAX_TOKENS_LIMIT 4096), or dropped from its `Param`."""
    rpc = Rpc(app_with([" word"] * 1100, tmp_path / "s.csv"))
    most = await rpc.result("summarize", {"patient_id": PATIENT.patient_id, "max_tokens": 1024})
    assert most["tokens"] == 1024
    rpc.notes.clear()
    over = await rpc.call("summarize", {"patient_id": PATIENT.patient_id, "max_tokens": 1025})
    assert "result" not in over, "max_tokens 1025 was served"
    assert over["error"]["code"] == -32602, over
    assert "'max_tokens' must be at most 1024, got 1025" in over["error"]["message"]
    assert rpc.notes == []  # not even the record-written start was streamed
    listed = await rpc.result("tools/list", {})
    summarize = next(t for t in listed["tools"] if t["name"] == "summarize")
    assert summarize["inputSchema"]["properties"]["max_tokens"]["maximum"] == 1024


async def test_summarize_asks_the_model_to_avoid_what_the_record_lacks(tmp_path: Path) -> None:
    """Issue 22: every summary carries its patient's steer to the backend (patient 1 has
    hypertension only and is male). Mutation caught: `_generate` not passing `steer`."""
    app = app_with(AGREEABLE, tmp_path / "s.csv")
    await Rpc(app).result("summarize", {"patient_id": PATIENT.patient_id})
    (sent,) = app.backend.steers  # type: ignore[attr-defined]
    assert sent == steer(PATIENT)
    assert {"diabetes", "she", "her"} <= set(sent.avoid)
    assert "hypertension" in sent.keep


# Each kind of mistake a narrative model makes about patient 1 (male, hypertension only, BP
# 137/85 stage 1, sugar 77 normal and falling), and the kind the server's check names.
MISTAKES = [
    (" He has diabetes.", "condition"),
    (" He takes metformin daily.", "medication"),
    (" His blood pressure is 120/80 mmHg.", "bp"),
    (" Brenda Riley agreed.", "name"),
    (" Her blood pressure is stable.", "gender"),
    (" His blood sugar rose sharply since the first visit.", "trend"),
    (" His blood sugar is dangerously high.", "flag"),
    (" Admit him to hospital urgently.", "escalation"),
]


@pytest.mark.parametrize(("mistake", "kind"), MISTAKES, ids=[k for _, k in MISTAKES])
async def test_a_narrative_mistake_is_flagged_by_kind(
    mistake: str, kind: str, tmp_path: Path
) -> None:
    """Issue 22, narrative style (the model writes everything, e.g. Ollama, which takes no
    logit biases): whatever kind of mistake the model makes, the summary comes back with
    `grounding.ok` false and the claim's kind, and is not saved without `force`."""
    app = app_with([mistake], tmp_path / "s.csv")
    app.summary_style = "narrative"
    rpc = Rpc(app)
    result = await rpc.result("summarize", {"patient_id": PATIENT.patient_id})
    assert result["summary"] == PATIENT.name + mistake
    assert result["grounding"]["ok"] is False
    assert kind in {c["kind"] for c in result["grounding"]["unsupported"] if c["blocking"]}
    refused = await rpc.call("save_summary", {"summary_id": result["summary_id"]})
    assert refused["error"]["code"] == -32005
