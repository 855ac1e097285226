"""The LLM goes away (refuses the model, errors mid-stream, stalls, is not there at all): the
caller gets -32004 naming the host and model, other clients carry on, nothing is saved.

One of the robustness tests: tests/server_pool.py says how they run (sizes, the report).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

from testkit.inprocess import Conn, OllamaThread, inprocess, settle

from .server_pool import read_rows

if TYPE_CHECKING:
    from .stress_report import Report

pytest_plugins = ["tests.stress_report", "tests.server_pool"]


async def test_llm_failures_fail_clearly_while_others_stream(
    data_dir: Path, tmp_path: Path, fake: OllamaThread, report: Report
) -> None:
    """Ollama refuses the model, errors mid-stream, stalls: the caller gets -32004 naming the
    host and model within the timeout; another client streams on meanwhile; nothing of the
    failed summaries can be saved; the failed calls leave no slot taken."""
    fake.reset(tps=50, n_tokens=100_000)
    timeout = 1.5
    summaries = tmp_path / "s.csv"
    t0 = time.monotonic()
    async with inprocess(
        data_dir, summaries, fake.url, llm_timeout=timeout, max_inflight=1
    ) as live:
        streamer, caller = await Conn.open(live.url), await Conn.open(live.url)
        # One long summary (400 tokens, 8 s) spanning every failure below; the knobs only
        # touch streams that reach them, and this one is past them all once it has 5 tokens.
        streaming = asyncio.create_task(
            streamer.call("summarize", {"patient_id": 41, "max_tokens": 400}, 60)
        )
        assert await settle(lambda: len(streamer.notes) > 5, 20)
        host = fake.url.split("//")[1]
        failures = []
        for knob, value, words in (
            ("models", [], "not pulled"),
            ("error_after", 3, "failed mid-answer"),
            ("stall_after", 2, f"sent nothing for {timeout:g} s"),
        ):
            setattr(fake.fake, knob, value)
            begin = time.monotonic()
            reply = await caller.call("summarize", {"patient_id": 7}, timeout=timeout + 10)
            end = time.monotonic()
            fake.reset()
            failures.append(reply)
            assert reply["error"]["code"] == -32004, reply
            message = reply["error"]["message"]
            assert words in message and "phi" in message, message
            assert host in message or knob == "models", message
            if knob == "stall_after":  # --llm-timeout, to within a second
                assert timeout <= end - begin < timeout + 1, end - begin
            # The other client received tokens while this one was failing.
            during = [n for n in streamer.notes if begin <= n["_t"] <= end]
            assert during or end - begin < 0.1, knob
            assert await caller.result("ping") == {}
        assert not streaming.done(), "the long summary ended before the failures did"
        reply = await asyncio.wait_for(streaming, 60)
        tokens = streamer.tokens(reply["id"])
        assert [t["index"] for t in tokens] == list(range(len(tokens))) and len(tokens) == 401
        assert "".join(t["token"] for t in tokens) == reply["result"]["summary"]
        # Nothing of patient 7 was kept, so nothing can be saved; its slot is free again.
        assert all(s.patient.patient_id != 7 for s in live.app.summaries.values())
        assert not live.app.summarizing
        ok = await caller.result("summarize", {"patient_id": 7, "max_tokens": 3})
        saved = await caller.result("save_summary", {"summary_id": ok["summary_id"], "force": True})
        assert saved["saved"] is True
        assert [r["patient_id"] for r in read_rows(summaries)] == ["7"]
        await fake.idle()
        for c in (streamer, caller):
            await c.close()
    report.add(
        "LLM goes away",
        seconds=time.monotonic() - t0,
        note=f"{len(failures)} failures (404 model, error mid-stream, stall) answered -32004 "
        "while another client streamed 400 tokens in order",
    )


async def test_llm_refused_fails_clearly_and_saves_nothing(data_dir: Path, tmp_path: Path) -> None:
    from .conftest import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    async with inprocess(data_dir, tmp_path / "s.csv", closed, llm_timeout=2) as live:
        caller, other = await Conn.open(live.url), await Conn.open(live.url)
        failing = asyncio.create_task(caller.call("summarize", {"patient_id": 9}, timeout=15))
        hits = await other.result("search", {"query": "asthma", "top_k": 3})
        record = await other.result("fetch", {"patient_id": hits["results"][0]["patient_id"]})
        assert record["patient"]["name"] == hits["results"][0]["name"]
        reply = await failing
        assert reply["error"]["code"] == -32004
        assert closed.split("//")[1] in reply["error"]["message"]
        assert "phi" in reply["error"]["message"]
        assert not live.app.summaries and not live.app.summarizing
        assert (await caller.result("list_summaries"))["summaries"] == []
        for c in (caller, other):
            await c.close()
