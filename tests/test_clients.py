"""Both command-line clients, driven in a real pseudo-terminal against real servers.

The main server runs the embedded model with short generations. The tests that must press
Ctrl-C (or kill the server) while tokens are still arriving use a server whose backend is the
fake Ollama streaming a few tokens per second, so "mid-stream" never depends on timing luck.
Assertions are on what the user sees and on the summaries file, never on elapsed time.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest

from clinsum.client import Client, ConnectionLost, RPCError
from testkit.fake_ollama import fetch_stats
from tests.conftest import REPO, ServerProcess, free_port, read_until

pytestmark = pytest.mark.slow

MAX_TOKENS = ["--max-tokens", "48"]
TPS_8_400 = ["--tps", "8", "--tokens", "400"]  # a 50 s answer: always interruptible
STEP_TIMEOUT = 90  # generous for a shared 2-core machine; a passing step takes a second or two
SPAWN_TIMEOUT = 240
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
PROMPT_ID = "Enter patient ID"
SAVE_PROMPT = r"Save this summary to patient_summaries\.csv\? \(y/n/e = edit\): "
MENU_PROMPT = r"Choose 1-5 or q: "


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The embedded-model server most tests talk to; its summaries file is `.summaries`."""
    summaries = tmp_path_factory.mktemp("clients") / "patient_summaries.csv"
    proc = ServerProcess(
        [
            *("--backend", "embedded"),
            *("--data", str(data_dir / "patient_data.csv")),
            *("--summaries", str(summaries)),
        ]
    ).wait_ready()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def fake_ollama() -> Iterator[str]:
    """A stand-in Ollama that streams 8 tokens a second: long enough to interrupt."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "testkit.fake_ollama", "--port", str(port), *TPS_8_400],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    try:
        read_until(proc.stdout, "listening", timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def slow_server(data_dir: Path, summaries: Path, ollama_url: str) -> ServerProcess:
    return ServerProcess(
        [
            *("--backend", "ollama", "--ollama-host", ollama_url),
            *("--data", str(data_dir / "patient_data.csv")),
            *("--summaries", str(summaries)),
        ]
    ).wait_ready()


@pytest.fixture(scope="module")
def slow(
    data_dir: Path, fake_ollama: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    summaries = tmp_path_factory.mktemp("slow") / "patient_summaries.csv"
    proc = slow_server(data_dir, summaries, fake_ollama)
    yield proc
    proc.stop()


# -- helpers -----------------------------------------------------------------------------------


def spawn(script: str, *args: str, plain: bool = False, editor: str | None = None) -> pexpect.spawn:
    drop = {"NO_COLOR", "MCP_AUTH_TOKEN", "VISUAL", "EDITOR"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    if editor:
        env["EDITOR"] = editor
    env["TERM"] = "xterm-256color"
    if plain:
        env["NO_COLOR"] = "1"
    child = pexpect.spawn(
        sys.executable,
        [str(REPO / script), *args],
        cwd=str(REPO),
        env=env,
        encoding="utf-8",
        codec_errors="replace",
        timeout=STEP_TIMEOUT,
        dimensions=(40, 120),
    )
    child.logfile_read = io.StringIO()
    return child


def finish(child: pexpect.spawn) -> tuple[int, str]:
    """Wait for the program to end; its exit code and everything it showed, ANSI removed."""
    child.expect(pexpect.EOF)
    child.close()
    text = screen_text(child)
    assert "Traceback" not in text, text
    return child.exitstatus, text


def screen_text(child: pexpect.spawn) -> str:
    return ANSI.sub("", child.logfile_read.getvalue()).replace("\r\n", "\n")


def rows(path: Path) -> dict[str, dict[str, str]]:
    if not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        return {row["patient_id"]: row for row in csv.DictReader(f)}


def squash(text: str) -> str:
    """Text without whitespace: a terminal wraps the live view wherever the width says."""
    return re.sub(r"\s+", "", text)


def answer_save(child: pexpect.spawn) -> None:
    """Say yes to saving, and yes again if the grounding check asks for a confirmation."""
    child.expect(SAVE_PROMPT)
    child.sendline("y")
    which = child.expect(["Summary saved", r"Save it anyway.*\(y/n\): "])
    if which == 1:
        child.sendline("y")
        child.expect("Summary saved")


def search(child: pexpect.spawn, query: str) -> None:
    child.expect("Enter disease/symptom to search for: ")
    child.sendline(query)
    child.expect(r"Found \d+ patients? matching")


# -- the guided demo ---------------------------------------------------------------------------


def test_demo_yes_saves_the_streamed_summary(server: ServerProcess) -> None:
    child = spawn("interactive_streaming_demo.py", "--url", server.url, "--no-spawn", *MAX_TOKENS)
    child.expect(r"\[STEP 1\] SEARCH FOR PATIENTS")
    search(child, "diabetes")
    child.expect(PROMPT_ID)
    first_hit = re.search(r"^\s*1\s*│\s*(\d+)\s*│", screen_text(child), re.M)
    assert first_hit, screen_text(child)
    pid = first_hit.group(1)
    child.sendline(pid)
    child.expect(r"\[STEP 3\] GENERATE SUMMARY WITH STREAMING")
    child.expect("LIVE STREAMING TOKENS")
    child.expect(r"Tokens complete: \d+ tokens?")
    child.expect(r"\[STEP 4\] SAVE TO CSV")
    answer_save(child)
    code, text = finish(child)
    assert code == 0
    saved = rows(server.summaries)[pid]
    assert squash(saved["summary"]) in squash(text.split("LIVE STREAMING TOKENS")[1])
    line = next(ln for ln in server.summaries.read_text().splitlines() if ln.startswith(f"{pid},"))
    assert f'$ grep "^{pid}," patient_summaries.csv\n{line}\n' in text
    assert "Demo complete" in text


def test_demo_plain_output_appends_tokens(server: ServerProcess) -> None:
    """NO_COLOR: no redraw, so the streamed text is on screen exactly as it was saved."""
    child = spawn(
        "interactive_streaming_demo.py",
        *("--url", server.url, "--no-spawn", *MAX_TOKENS),
        plain=True,
    )
    search(child, "hypertension")
    child.expect(PROMPT_ID)
    child.sendline("78")
    answer_save(child)
    code, text = finish(child)
    assert code == 0
    assert "\x1b[" not in child.logfile_read.getvalue()
    streamed = text.split("[Streaming] Starting token stream:\n")[1].split("\n[Streaming] ")[0]
    assert streamed == rows(server.summaries)["78"]["summary"]


def test_demo_reasks_bad_input_and_no_saves_nothing(server: ServerProcess) -> None:
    child = spawn("interactive_streaming_demo.py", "--url", server.url, "--no-spawn", *MAX_TOKENS)
    child.expect("Enter disease/symptom to search for: ")
    child.sendline("   ")
    child.expect("Please type a disease or symptom")
    search(child, "asthma")
    child.expect(PROMPT_ID)
    child.sendline("abc")
    child.expect("'abc' is not a patient ID")
    child.expect(PROMPT_ID)
    child.sendline("99999")
    child.expect("There is no patient with ID 99999")
    child.expect(PROMPT_ID)
    child.sendline("7")
    child.expect(SAVE_PROMPT)
    child.sendline("maybe")
    child.expect(r"Please answer y, n or e \(edit\)")
    child.expect(SAVE_PROMPT)
    child.sendline("n")
    child.expect("Not saved")
    code, _ = finish(child)
    assert code == 0
    assert "7" not in rows(server.summaries)


def stream_closed_at_the_model(fake_url: str, before: dict) -> bool:
    """Whether the fake Ollama saw one more stream closed by its client than `before`, none
    completed, and none left open (waits up to 10 s: the hang-up reaches it a bit late)."""
    deadline = time.monotonic() + 10
    while True:
        now = fetch_stats(fake_url)
        closed = now["streams_closed_by_client"] == before["streams_closed_by_client"] + 1
        if closed and now["open_streams"] == 0:
            return now["streams_completed"] == before["streams_completed"]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_demo_ctrl_c_mid_stream_then_eof(slow: ServerProcess, fake_ollama: str) -> None:
    """Ctrl-C stops the generation at the model, not only on screen. Mutation caught: cancel
    logs but does not stop the task."""
    child = spawn("interactive_streaming_demo.py", "--url", slow.url, "--no-spawn")
    search(child, "diabetes")
    child.expect(PROMPT_ID)
    child.sendline("12")
    child.expect(r"[1-9]\d* tokens? \|")
    before = fetch_stats(fake_ollama)
    child.sendintr()
    child.expect("Generation cancelled")
    assert stream_closed_at_the_model(fake_ollama, before)
    child.expect(PROMPT_ID)  # back to choosing a patient, nothing asked about saving
    child.sendeof()
    code, text = finish(child)
    assert code == 0
    assert "End of input" in text
    assert "Save this summary" not in text
    assert "12" not in rows(slow.summaries)
    assert slow.wait_for("cancelled request")


def test_demo_no_spawn_with_nothing_listening() -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    child = spawn("interactive_streaming_demo.py", "--url", url, "--no-spawn")
    code, text = finish(child)
    assert code == 2
    assert f"No server at {url}" in text
    assert "python mcp_server.py" in text and "--no-spawn" in text


def test_demo_starts_and_stops_its_own_server(data_dir: Path, tmp_path: Path) -> None:
    data = data_dir / "patient_data.csv"  # its search index is built already: a quick start
    summaries = tmp_path / "patient_summaries.csv"
    port = free_port()
    child = spawn(
        "interactive_streaming_demo.py",
        *("--url", f"ws://127.0.0.1:{port}", "--data", str(data), "--summaries", str(summaries)),
        *MAX_TOKENS,
    )
    child.expect("starting one")
    child.expect("Enter disease/symptom to search for: ", timeout=SPAWN_TIMEOUT)
    child.sendline("fatigue")
    child.expect(PROMPT_ID)
    child.sendline("3")
    answer_save(child)
    code, _ = finish(child)
    assert code == 0
    assert "3" in rows(summaries)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # the demo stopped the server it started


# -- the full session --------------------------------------------------------------------------


def test_session_two_patients_saved_and_listed(server: ServerProcess) -> None:
    child = spawn("mcp_client.py", "--url", server.url, "--show-protocol", *MAX_TOKENS)
    child.expect(r'→ \{"jsonrpc":"2.0","id":1,"method":"initialize"')
    child.expect(r'← \{"jsonrpc":"2.0","id":1,"result":\{"protocolVersion":"2025-11-25"')
    child.expect(r'"method":"notifications/initialized"')
    child.expect(r'"method":"tools/list"')
    child.expect(MENU_PROMPT)
    child.sendline("1")
    search(child, "diabetes")
    names = {}
    for pid in ("21", "33"):
        child.expect(MENU_PROMPT)
        child.sendline("3")
        child.expect(PROMPT_ID)
        child.sendline(pid)
        child.expect(r"Generating a clinical summary of ([^\r\n.]+)\.\.\.")
        names[pid] = child.match.group(1)
        child.expect('"method":"stream_token"')
        answer_save(child)
    child.expect(MENU_PROMPT)
    child.sendline("list")
    child.expect(r"\d+ saved summar(y|ies):")
    child.expect(MENU_PROMPT)
    child.sendline("q")
    code, text = finish(child)
    assert code == 0
    listing = re.split(r"\d+ saved summar(?:y|ies):", text)[-1]
    saved = rows(server.summaries)
    for pid, name in names.items():
        assert saved[pid]["name"] == name
        assert name in listing


def test_session_edit_in_editor_rechecks_then_saves_the_edit(
    server: ServerProcess, tmp_path: Path
) -> None:
    """`e` opens $EDITOR on the draft as `git commit` does; the verdict on the edit comes
    before the save question, and the row holds the edited text with edited=true."""
    editor = tmp_path / "edit.sh"
    script = "sed -i 's/Recommendation: .*/Recommendation: review diet and exercise./' \"$1\""
    editor.write_text(f"#!/bin/sh\n{script}\n")
    editor.chmod(0o755)
    child = spawn("mcp_client.py", "--url", server.url, *MAX_TOKENS, editor=str(editor))
    child.expect(MENU_PROMPT)
    child.sendline("3")
    child.expect(PROMPT_ID)
    child.sendline("12")
    child.expect("Digest")
    child.expect(SAVE_PROMPT)
    child.sendline("e")
    child.expect("Edited summary:")
    child.expect("All facts supported by the record")
    child.expect(SAVE_PROMPT)
    child.sendline("y")
    child.expect("Summary saved")
    child.expect(MENU_PROMPT)
    child.sendline("q")
    code, _ = finish(child)
    assert code == 0
    row = rows(server.summaries)["12"]
    assert row["summary"].endswith("Recommendation: review diet and exercise.")
    assert row["edited"] == "true" and row["grounded"] == "true"


def test_demo_inline_edit_naming_another_patient_is_flagged(server: ServerProcess) -> None:
    """Without $VISUAL or $EDITOR the edit is one typed line; a wrong name is shown as
    unsupported and saving it needs the explicit second yes."""
    child = spawn("interactive_streaming_demo.py", "--url", server.url, "--no-spawn", *MAX_TOKENS)
    search(child, "asthma")
    child.expect(PROMPT_ID)
    child.sendline("7")
    child.expect(SAVE_PROMPT)
    child.sendline("e")
    child.expect("Type the new summary on one line")
    child.sendline("Lauren Daniels has asthma.")  # patient 2's name
    child.expect(r"claim\(s\) not supported by the record")
    child.expect("name 'Lauren Daniels'")
    child.expect(SAVE_PROMPT)
    child.sendline("y")
    child.expect(r"Save it anyway.*\(y/n\): ")
    child.sendline("n")
    child.expect("Not saved")
    code, _ = finish(child)
    assert code == 0
    assert "7" not in rows(server.summaries)


def test_session_ctrl_c_mid_stream_returns_to_menu(slow: ServerProcess, fake_ollama: str) -> None:
    """Ctrl-C cancels on the server and stops the generation at the model. Mutation
    caught: cancel logs but does not stop the task."""
    child = spawn("mcp_client.py", "--url", slow.url)
    child.expect(MENU_PROMPT)
    child.sendline("3")
    child.expect(PROMPT_ID)
    child.sendline("45")
    child.expect(r"[1-9]\d* tokens? \|")
    before = fetch_stats(fake_ollama)
    cancels, stopped = slow.log.count("cancelled request"), slow.log.count("cancelled after")
    child.sendintr()
    child.expect("Generation cancelled")
    assert stream_closed_at_the_model(fake_ollama, before)
    assert slow.wait_for("cancelled request", count=cancels + 1)
    assert slow.wait_for("cancelled after", count=stopped + 1)
    child.expect(MENU_PROMPT)
    child.sendline("4")
    child.expect("Nothing to save")
    child.expect(MENU_PROMPT)
    child.sendintr()  # Ctrl-C at a prompt quits
    code, text = finish(child)
    assert code == 130
    assert "Interrupted" in text
    assert "45" not in rows(slow.summaries)


def test_session_unsupported_claims_need_a_second_yes(slow: ServerProcess) -> None:
    """The fake model always claims 152/94 mmHg, which patient 46's record does not say."""
    child = spawn("mcp_client.py", "--url", slow.url, "--max-tokens", "16")
    child.expect(MENU_PROMPT)
    child.sendline("summarize")
    child.expect(PROMPT_ID)
    child.sendline("46")
    child.expect(r"claim\(s\) not supported by the record")
    child.expect(SAVE_PROMPT)
    child.sendline("y")
    child.expect(r"Save it anyway, unsupported claims included\? \(y/n\): ")
    child.sendline("n")
    child.expect("Not saved")
    child.expect(MENU_PROMPT)
    assert "46" not in rows(slow.summaries)
    child.sendline("4")  # changed my mind: save the last summary after all
    child.expect(SAVE_PROMPT)
    child.sendline("y")
    child.expect(r"Save it anyway, unsupported claims included\? \(y/n\): ")
    child.sendline("y")
    child.expect("Summary saved")
    child.expect(MENU_PROMPT)
    child.sendline("q")
    code, _ = finish(child)
    assert code == 0
    assert rows(slow.summaries)["46"]["grounded"] == "false"


def test_session_server_killed_mid_stream(data_dir: Path, fake_ollama: str, tmp_path: Path) -> None:
    doomed = slow_server(data_dir, tmp_path / "patient_summaries.csv", fake_ollama)
    try:
        child = spawn("mcp_client.py", "--url", doomed.url)
        child.expect(MENU_PROMPT)
        child.sendline("3")
        child.expect(PROMPT_ID)
        child.sendline("45")
        child.expect(r"[1-9]\d* tokens? \|")
        doomed.kill()
        child.expect(f"Connection to the server at {doomed.url} was lost")
        code, text = finish(child)
    finally:
        doomed.kill()
    assert code == 1
    lost = [ln for ln in text.splitlines() if "was lost" in ln]
    assert len(lost) == 1, text


def test_session_no_server() -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    code, text = finish(spawn("mcp_client.py", "--url", url))
    assert code == 2
    assert f"No server at {url}" in text


# -- the client library ------------------------------------------------------------------------


async def test_client_routes_concurrent_streams_by_request_id(server: ServerProcess) -> None:
    async with await Client.connect(server.url) as client:
        await client.initialize("test")
        assert {t["name"] for t in client.tools} >= {"search", "summarize", "save_summary"}
        tokens: dict[int, list[str]] = {21: [], 33: []}

        def collect(pid: int) -> Callable[[int, str], None]:
            return lambda index, text: tokens[pid].append(text)

        first, second = await asyncio.gather(
            client.summarize(21, collect(21), max_tokens=24),
            client.summarize(33, collect(33), max_tokens=24),
        )
        assert "".join(tokens[21]) == first["summary"]
        assert "".join(tokens[33]) == second["summary"]
        with pytest.raises(RPCError) as err:
            await client.fetch(99999)
        assert err.value.code == -32001


async def test_client_fails_pending_calls_when_the_connection_drops(
    data_dir: Path, fake_ollama: str, tmp_path: Path
) -> None:
    doomed = slow_server(data_dir, tmp_path / "patient_summaries.csv", fake_ollama)
    try:
        async with await Client.connect(doomed.url) as client:
            streaming = asyncio.Event()
            call = asyncio.ensure_future(
                client.summarize(45, lambda index, text: index and streaming.set())
            )
            await asyncio.wait_for(streaming.wait(), STEP_TIMEOUT)
            doomed.kill()
            with pytest.raises(ConnectionLost, match="was lost"):
                await asyncio.wait_for(call, STEP_TIMEOUT)
            with pytest.raises(ConnectionLost):
                await client.search("diabetes")
    finally:
        doomed.kill()


# -- batch mode --------------------------------------------------------------------------------


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A run without a terminal, as a script or CI would do it: stdout and stderr apart."""
    return subprocess.run(
        [sys.executable, str(REPO / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT * 2,
    )


def test_batch_saves_several_patients(server: ServerProcess) -> None:
    done = run(
        "mcp_client.py",
        *("--url", server.url, "--query", "diabetes", "--patients", "52,64"),
        *("--yes", "--force", "--json", *MAX_TOKENS),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert report["search"], "the query's hits are reported too"
    saved = rows(server.summaries)
    for entry in report["patients"]:
        assert entry["status"] == "saved"
        assert saved[str(entry["patient_id"])]["summary"] == entry["summary"]
    assert "Saved 2 of 2 summaries" in done.stderr


def test_batch_shows_the_query_it_searched_for_a_misspelled_one(server: ServerProcess) -> None:
    """The server respelled "astma": the CLI says what it searched (issue 25)."""
    done = run(
        "mcp_client.py",
        *("--url", server.url, "--query", "astma", "--patients", "12"),
        *("--yes", "--force", "--json", *MAX_TOKENS),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["corrected"] == "asthma" and report["search"]
    assert squash("Showing results for asthma (you typed 'astma')") in squash(done.stderr)
    assert squash("matching 'asthma':") in squash(done.stderr)


def test_batch_unknown_patient_fails(server: ServerProcess) -> None:
    done = run(
        "mcp_client.py",
        *("--url", server.url, "--patients", "88,99999", "--yes", "--force", "--json"),
        *MAX_TOKENS,
    )
    assert done.returncode == 1
    report = json.loads(done.stdout)
    by_id = {e["patient_id"]: e for e in report["patients"]}
    assert by_id[88]["status"] == "saved"
    assert by_id[99999]["status"] == "failed"
    assert by_id[99999]["error"]["code"] == -32001
    assert report["ok"] is False
    assert "Traceback" not in done.stderr


def test_help_documents_every_flag() -> None:
    for script, flags in (
        ("interactive_streaming_demo.py", ["--no-spawn", "--data", "--summaries"]),
        ("mcp_client.py", ["--show-protocol", "--query", "--patients", "--yes", "--json"]),
    ):
        done = run(script, "--help")
        for flag in ["--url", "--token", "--timeout", "--max-tokens", *flags]:
            assert flag in done.stdout
        assert "examples:" in done.stdout
