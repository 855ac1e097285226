"""The original tool's clients work unchanged: its four tools on our WebSocket.

The golden strings below are written out from the original's `mcp_server.py`
(navin251285/helloagent, mcp_tutorial/11_mcp_llm_web_socket, commit 5fcc907). The client
here is written from that protocol, not copied: it sends JSON-RPC over ws://.../mcp and, as
the original's clients do, takes every frame with "type": "stream_token" as a token and the
first other frame as the reply.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from clinsum.app import App
from clinsum.compose import websocket as running
from clinsum.config import Config
from clinsum.legacy import text
from clinsum.legacy.protocol import ALIASES, FrameEvents
from clinsum.records import formats, joined
from clinsum.search import PatientIndex
from clinsum.store import SummaryStore

ORIGINAL = Path(__file__).resolve().parent / "data" / "original"
JERRY = {
    "patient_id": 11,
    "name": "Jerry Rivera",
    "age": 59,
    "current_symptoms": "confusion, numbness in limbs, sweating, difficulty breathing",
}
SUSAN = {
    "patient_id": 3,
    "name": "Susan Hall",
    "age": 20,
    "current_symptoms": "chest pain, joint pain, shortness of breath",
}
# What the scripted model writes after the record's own first sentence.
CONTINUATION = [" Monitor", " blood", " sugar", " and", " breathing", " closely", "."]


# -- the text formats, against strings written out from the original --------------------------


def test_search_text_is_the_originals() -> None:
    assert text.search("diabetes", [JERRY, SUSAN]) == (
        "Found 2 patients matching 'diabetes':\n"
        "\n"
        "1. ID: 11  | Name: Jerry Rivera         | Age: 59 | "
        "Symptoms: confusion, numbness in limbs, sweating, \n"
        "2. ID: 3   | Name: Susan Hall           | Age: 20 | "
        "Symptoms: chest pain, joint pain, shortness of bre\n"
    )


def test_search_text_shows_at_most_five_and_pads_as_the_original() -> None:
    long = {"patient_id": 1234, "name": "A" * 25, "age": 7, "current_symptoms": "x"}
    lines = text.search("x", [long] * 7).splitlines()
    assert lines[0] == "Found 5 patients matching 'x':" and lines[1] == ""
    assert len(lines) == 7  # header, blank, 5 patients: the original's client reads "10." as "1."
    # Wider values are not cut (Python's :3s and :20s only pad), a short age gets one space.
    assert lines[2] == f"1. ID: 1234 | Name: {'A' * 25} | Age: 7  | Symptoms: x"


def test_no_match_sentence_is_the_originals() -> None:
    assert text.search("zzz", []) == (
        "No patients found matching 'zzz'. Try searching for common symptoms or diseases."
    )


def test_patient_summary_text_is_the_originals() -> None:
    assert text.patient_summary(11, "Jerry Rivera", "") == (
        "Patient ID: 11\nName: Jerry Rivera\n\n"
        "Status: No summary yet. Use generate_summary to create one."
    )
    assert text.patient_summary(9, "Larry Bailey", "Stable.\nReview.") == (
        "Patient ID: 9\nName: Larry Bailey\n\nSummary:\nStable.\nReview."
    )


def test_generated_and_saved_texts_are_the_originals() -> None:
    assert text.generated("Jerry Rivera", 11, " Text. \n") == (
        "Generated Summary for Jerry Rivera (ID: 11):\n\nText."
    )
    assert text.saved(11, "Jerry Rivera", "Stable.") == (
        "✓ Summary for Patient ID 11 (Jerry Rivera) has been saved.\n\n"
        "Summary (7 characters):\nStable."
    )


async def test_token_frames_count_characters_streamed_so_far() -> None:
    sent: list[dict[str, Any]] = []

    async def send(frame: dict[str, Any]) -> None:
        sent.append(frame)

    events = FrameEvents(send)
    for i, token in enumerate(["Jerry", " is", " well", "."]):
        await events.token(i, token)
    await events.queued(2)  # never sent: the original's clients would read it as the reply
    assert sent == [
        {"type": "stream_token", "token": "Jerry", "position": 5},
        {"type": "stream_token", "token": " is", "position": 8},
        {"type": "stream_token", "token": " well", "position": 13},
        {"type": "stream_token", "token": ".", "position": 14},
    ]


def test_argument_translation_is_the_only_coercion() -> None:
    search = ALIASES["search_patients_by_disease"]
    assert search.translate({"disease_keyword": "diabetes"}) == {"query": "diabetes", "top_k": 5}
    fetch = ALIASES["get_patient_summary"]
    assert fetch.translate({"patient_id": "11"}) == {"patient_id": 11}
    assert fetch.translate({"patient_id": 11}) == {"patient_id": 11}
    # Anything else goes to the canonical validator as it came.
    assert fetch.translate({"patient_id": "11a"}) == {"patient_id": "11a"}
    update = ALIASES["update_patient_summary"]
    # The original never refused a save: the verdict is recorded, `force` is what says so.
    assert update.translate({"patient_id": "2", "summary": "S"}) == {
        "patient_id": 2,
        "text": "S",
        "force": True,
    }


# -- over a real WebSocket -------------------------------------------------------------------


class ScriptedBackend:
    """A model that writes the same words every time, and says it is queued first."""

    name = "scripted"
    model = "scripted-1"

    async def stream(
        self,
        messages: list[dict],
        prefill: str,
        *,
        max_tokens: int,
        on_queued: Any = None,
        steer: Any = None,
    ) -> AsyncIterator[str]:
        if on_queued is not None:
            on_queued(1)
        for chunk in CONTINUATION[:max_tokens]:
            await asyncio.sleep(0)
            yield chunk

    async def aclose(self) -> None:
        return None


@dataclass
class OriginalClient:
    """The original's protocol: JSON-RPC requests with increasing ids on /mcp; tokens are
    frames with "type": "stream_token"; the first other frame is the reply."""

    ws: ClientConnection
    next_id: int = 0
    tokens: list[dict[str, Any]] = field(default_factory=list)

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict:
        self.next_id += 1
        self.tokens = []
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params or {}}
        await self.ws.send(json.dumps(message))
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if frame.get("type") == "stream_token":
                self.tokens.append(frame)
                continue
            assert frame.get("id") == self.next_id, f"not the reply: {frame}"
            return frame

    async def tool(self, name: str, arguments: dict[str, Any]) -> str:
        reply = await self.request("tools/call", {"name": name, "arguments": arguments})
        assert "result" in reply, reply
        return reply["result"]["content"][0]["text"]

    async def tool_error(self, name: str, arguments: dict[str, Any]) -> str:
        reply = await self.request("tools/call", {"name": name, "arguments": arguments})
        assert "error" in reply and "result" not in reply, reply
        return reply["error"]["message"]


@pytest.fixture(scope="module")
def original_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The original's patients file, its index built once, and its summaries file."""
    folder = tmp_path_factory.mktemp("original")
    shutil.copy(ORIGINAL / "patients_data.csv", folder)
    return folder


@pytest.fixture(scope="module")
def patients_and_index(original_folder: Path) -> tuple[dict, PatientIndex]:
    path = original_folder / "patients_data.csv"
    patients = formats.load(path).patients
    return patients, PatientIndex.open(patients, path, show_progress=False)


@pytest.fixture
async def live(
    patients_and_index: tuple[dict, PatientIndex], original_folder: Path, tmp_path: Path
) -> AsyncIterator[tuple[str, Path]]:
    summaries = tmp_path / "patient_summaries.csv"
    shutil.copy(ORIGINAL / "patient_summaries.csv", summaries)
    store = SummaryStore(summaries)
    store.ensure_exists()
    patients, index = patients_and_index
    app = App(patients, index, ScriptedBackend(), store)
    config = Config(port=0, data=original_folder / "patients_data.csv", summaries=summaries)
    async with running(config, app) as (srv, _):
        port = next(iter(srv.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}", summaries


@pytest.fixture
async def client(live: tuple[str, Path]) -> AsyncIterator[OriginalClient]:
    async with connect(live[0] + "/mcp") as ws:
        yield OriginalClient(ws)


async def test_initialize_with_empty_params_answers_2024_11_05_first(
    client: OriginalClient,
) -> None:
    reply = await client.request("initialize")  # params {}: the request() asserts no frame before
    assert reply["result"]["protocolVersion"] == "2024-11-05"
    assert reply["result"]["serverInfo"]["name"]


async def test_the_path_picks_the_listing(client: OriginalClient, live: tuple[str, Path]) -> None:
    listed = (await client.request("tools/list"))["result"]["tools"]
    assert [t["name"] for t in listed] == [
        "search_patients_by_disease",
        "get_patient_summary",
        "generate_summary",
        "update_patient_summary",
    ]
    assert listed[3]["inputSchema"]["required"] == ["patient_id", "summary"]
    async with connect(live[0] + "/") as ws:
        modern = (await OriginalClient(ws).request("tools/list"))["result"]["tools"]
    assert "search" in [t["name"] for t in modern]
    assert "search_patients_by_disease" not in [t["name"] for t in modern]


async def test_search_text_parsed_as_the_originals_client_does(client: OriginalClient) -> None:
    found = await client.tool("search_patients_by_disease", {"disease_keyword": "diabetes"})
    header, blank, *lines = found.rstrip("\n").split("\n")
    assert header == f"Found {len(lines)} patients matching 'diabetes':" and blank == ""
    assert 1 <= len(lines) <= 5 and found.endswith("\n")
    patients = formats.load(ORIGINAL / "patients_data.csv").patients
    for i, line in enumerate(lines, 1):
        # The original's client: the id is what follows "ID:" up to the first "|".
        pid = int(line.split("|")[0].split(":")[1].strip())
        p = patients[pid]
        assert line == (
            f"{i}. ID: {pid:<3} | Name: {p.name:<20} | Age: {p.age:<2} | "
            f"Symptoms: {joined(p.current_symptoms)[:40]}"
        )
        assert "diabetes" in p.conditions()


async def test_the_originals_user_scenario_finds_blood_preassure(client: OriginalClient) -> None:
    """The original's test_user_scenario.py searches its own file for "blood preassure", as
    its user typed it, and goes on with the patients found (issue 25)."""
    typed = await client.tool("search_patients_by_disease", {"disease_keyword": "blood preassure"})
    right = await client.tool("search_patients_by_disease", {"disease_keyword": "blood pressure"})

    def found(text: str) -> list[int]:
        return [int(line.split("|")[0].split(":")[1]) for line in text.split("\n")[2:] if line]

    assert typed.startswith("Found ") and "matching 'blood preassure':" in typed
    assert found(typed) and found(typed) == found(right)


async def test_get_patient_summary_for_every_patient(client: OriginalClient) -> None:
    saved = await client.tool("get_patient_summary", {"patient_id": "11"})
    assert saved.startswith("Patient ID: 11\nName: Jerry Rivera\n\nSummary:\nJerry Rivera, age 59")
    for pid, name in ((12, "Sharon Clark"), (100, None)):
        shown = await client.tool("get_patient_summary", {"patient_id": str(pid)})
        assert shown.startswith(f"Patient ID: {pid}\nName: {name or ''}")
        assert shown.endswith("\n\nStatus: No summary yet. Use generate_summary to create one.")


async def test_generate_streams_the_originals_frames_and_nothing_else(
    client: OriginalClient,
) -> None:
    reply = await client.request(
        "tools/call", {"name": "generate_summary", "arguments": {"patient_id": "11"}}
    )
    summary = reply["result"]["content"][0]["text"]
    tokens = client.tokens  # every frame before the reply was a token frame
    assert len(tokens) == 1 + len(CONTINUATION)  # the record's first sentence, then the model's
    streamed = "".join(t["token"] for t in tokens)
    assert [t["position"] for t in tokens] == [
        len("".join(t["token"] for t in tokens[: i + 1])) for i in range(len(tokens))
    ]
    assert streamed.startswith("Jerry Rivera is a 59-year-old male with diabetes")
    assert "Risk score 6.6/10." in streamed
    assert summary == f"Generated Summary for Jerry Rivera (ID: 11):\n\n{streamed.strip()}"


async def test_update_saves_verbatim_never_refused(
    client: OriginalClient, live: tuple[str, Path]
) -> None:
    # Numbers the record does not have (its BP is 145/91): saved all the same, as the
    # clinician's text, recorded as not grounded.
    own = "=Patient presents with elevated blood pressure (150/95 mmHg).\nFollow up in 2 weeks."
    reply = await client.tool("update_patient_summary", {"patient_id": "11", "summary": own})
    assert reply == (
        f"✓ Summary for Patient ID 11 (Jerry Rivera) has been saved.\n\n"
        f"Summary ({len(own)} characters):\n{own}"
    )
    rows = {r["patient_id"]: r for r in csv.DictReader(live[1].open(newline=""))}
    assert rows["11"]["summary"] == "'" + own  # a formula-like cell is still escaped
    assert (rows["11"]["model"], rows["11"]["grounded"]) == ("clinician", "false")
    assert len(rows) == 100 and rows["25"]["summary"].startswith("Generated Summary for Janet")
    shown = await client.tool("get_patient_summary", {"patient_id": "11"})
    assert shown.endswith("\n\nSummary:\n'" + own)
    grounded = "Jerry Rivera has diabetes. Monitor blood sugar."
    await client.tool("update_patient_summary", {"patient_id": 11, "summary": grounded})
    rows = {r["patient_id"]: r for r in csv.DictReader(live[1].open(newline=""))}
    assert (rows["11"]["summary"], rows["11"]["grounded"]) == (grounded, "true")


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("get_patient_summary", {"patient_id": "999"}, "no patient with id 999"),
        ("generate_summary", {"patient_id": "eleven"}, "'patient_id' must be an integer"),
        ("search_patients_by_disease", {}, "'disease_keyword' is required"),
        ("update_patient_summary", {"patient_id": "11"}, "'summary' is required"),
    ],
)
async def test_errors_are_json_rpc_errors_in_the_originals_names(
    client: OriginalClient, name: str, arguments: dict[str, Any], message: str
) -> None:
    assert message in await client.tool_error(name, arguments)


async def test_canonical_tools_on_the_same_socket_show_scale_and_extras(
    client: OriginalClient,
) -> None:
    reply = await client.request("tools/call", {"name": "fetch", "arguments": {"patient_id": 11}})
    patient = reply["result"]["structuredContent"]["patient"]
    assert (patient["risk_score"], patient["score_scale"]) == (6.6, 10.0)
    assert patient["visit_history"][0]["bp_risk"] == 10
    found = await client.request(
        "tools/call",
        {"name": "search", "arguments": {"query": "diabetes", "filters": {"min_risk": 7}}},
    )
    results = found["result"]["structuredContent"]["results"]
    patients = formats.load(ORIGINAL / "patients_data.csv").patients
    assert results and all(patients[h["patient_id"]].risk_score >= 7 for h in results)


def test_readme_names_the_original_tools() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Coming from the original tool", 1)[1]
    assert all(re.search(rf"`{name}`", section) for name in ALIASES)
