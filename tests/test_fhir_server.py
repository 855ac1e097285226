"""A FHIR export served end to end by a real server process (issue #24): search, fetch and a
summary from the embedded model, over the WebSocket, as for a CSV file."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from clinsum.records import formats
from testkit.processes import ServerProcess
from testkit.rpc import Peer

FHIR = Path(__file__).parent / "data" / "fhir"

pytestmark = pytest.mark.slow


def _active_hypertension(folder: Path) -> set[str]:
    """FHIR ids of the patients with an active, confirmed hypertension, from the raw NDJSON."""
    ids = set()
    for line in (folder / "Condition.000.ndjson").read_text().splitlines():
        r = json.loads(line)
        clinical = r.get("clinicalStatus", {}).get("coding", [{}])[0].get("code")
        verified = r.get("verificationStatus", {}).get("coding", [{}])[0].get("code")
        if "hypertension" in json.dumps(r["code"]).lower() and (clinical, verified) == (
            "active",
            "confirmed",
        ):
            ids.add(r["subject"]["reference"].rsplit("/", 1)[-1])
    return ids


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fhir") / "bulk"
    shutil.copytree(FHIR / "bulk", folder)
    return folder


@pytest.fixture(scope="module")
def server(export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    summaries = tmp_path_factory.mktemp("fhir_summaries") / "patient_summaries.csv"
    args = ["--backend", "embedded", "--data", str(export), "--summaries", str(summaries)]
    srv = ServerProcess(args).wait_ready()
    yield srv
    srv.stop()


async def test_search_fetch_and_summarize_a_fhir_export(server: ServerProcess, export) -> None:
    patients = formats.load(export).patients  # the same export, read here: the id map is shared
    truth = _active_hypertension(export)
    assert truth
    peer = await Peer.open(server.url)
    try:
        found = await peer.result("search", {"query": "hypertension", "top_k": 20})
        hits = {patients[h["patient_id"]].source_id for h in found["results"]}
        assert truth <= hits  # every patient whose active conditions say so
        first = sorted(truth)[0]
        pid = next(i for i, p in patients.items() if p.source_id == first)
        record = (await peer.result("fetch", {"patient_id": pid}))["patient"]
        assert record["source_id"] == first
        assert record["risk_score"] is None and "ypertension" in record["medical_history"]
        # A summary names the patient, the active conditions and the current medications, and
        # says which vital was not recorded.
        unmeasured = next(
            p
            for p in patients.values()
            if p.current_sugar is None and p.medical_history and p.current_medications
        )
        done = await peer.result("summarize", {"patient_id": unmeasured.patient_id}, timeout=300)
        text = done["summary"]
        assert text.startswith(unmeasured.name)
        assert "Blood sugar not recorded." in text
        assert unmeasured.medical_history[0].lower() in text.lower()
        assert unmeasured.current_medications[0].lower() in text.lower()
        assert done["grounding"]["ok"], done["grounding"]
        # Saved under the patient's int from the id map, and read back by it.
        saved = await peer.result("save_summary", {"summary_id": done["summary_id"]})
        assert saved["saved"] and saved["patient_id"] == unmeasured.patient_id
        history = await peer.result("summary_history", {"patient_id": unmeasured.patient_id})
        assert [v["summary"] for v in history["versions"]] == [text]
    finally:
        await peer.close()
