"""Clients that vanish mid-stream, over the WebSocket and over Streamable HTTP: the server runs
in-process so its own tasks, sessions, fds and threads are counted; every generation stops,
nothing leaks, nothing of theirs can be saved.

One of the robustness tests: tests/server_pool.py says how they run (sizes, the report).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from testkit.inprocess import (
    Conn,
    OllamaThread,
    fd_count,
    http_session,
    http_vanish_once,
    inprocess,
    inprocess_http,
    settle,
    thread_count,
    ws_connect,
)

if TYPE_CHECKING:
    from .stress_report import Report

pytest_plugins = ["tests.stress_report", "tests.server_pool"]


async def vanish_once(url: str, patient_id: int) -> None:
    """Start a long summary, wait for two tokens, then drop the TCP connection: no close
    frame, no FIN handshake, just gone."""
    ws = await ws_connect(url)
    request = {"patient_id": patient_id, "max_tokens": 1024}
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "summarize", "params": request}))
    seen = 0
    async with asyncio.timeout(30):
        while seen < 2:
            msg = json.loads(await ws.recv())
            seen += msg.get("method") == "stream_token"
    ws.transport.abort()


async def run_vanishing(
    data_dir: Path,
    tmp_path: Path,
    fake: OllamaThread,
    report: Report,
    caplog: pytest.LogCaptureFixture,
    clients: int,
) -> None:
    caplog.set_level("INFO")
    fake.reset(tps=50, n_tokens=100_000)  # no summary can finish before its client is gone
    t0 = time.monotonic()
    async with inprocess(data_dir, tmp_path / "s.csv", fake.url) as live:
        # Warm-up: one full summary and one vanish, so pools and caches are in steady state.
        conn = await Conn.open(live.url)
        await conn.result("summarize", {"patient_id": 5, "max_tokens": 3})
        await conn.close()
        await vanish_once(live.url, 5)

        def quiet() -> bool:
            return (
                not live.sessions
                and not live.server.all_connections
                and not live.app.summarizing
                and not live.app._background
                and fake.fake.open_streams == 0
            )

        assert await settle(quiet, 20)
        await asyncio.sleep(0.3)
        tasks, fds, threads = len(asyncio.all_tasks()), fd_count(), thread_count()
        closed, completed = fake.fake.streams_closed_by_client, fake.fake.streams_completed
        kept = len(live.app.summaries)
        cancelled_logs = sum("cancelled after" in r.getMessage() for r in caplog.records)

        for start in range(0, clients, 10):  # ten at a time
            await asyncio.gather(
                *(vanish_once(live.url, 1 + i % 100) for i in range(start, start + 10))
            )
        settled = await settle(quiet, 30)
        await asyncio.sleep(0.3)  # the last done-callbacks
        leaked = len(asyncio.all_tasks()) - tasks
        fd_delta, thread_delta = fd_count() - fds, thread_count() - threads
        stopped = fake.fake.streams_closed_by_client - closed
        cancelled = sum("cancelled after" in r.getMessage() for r in caplog.records)
        cancelled -= cancelled_logs
        report.add(
            "vanishing clients",
            reconnects=clients,
            leaked_tasks=max(leaked, 0),
            seconds=time.monotonic() - t0,
            note=f"{clients} clients aborted mid-stream; generations stopped {stopped}, "
            f"cancel logged {cancelled}; open LLM streams after: {fake.fake.open_streams}; "
            f"sessions {len(live.sessions)}; fds {fd_delta:+d}, threads {thread_delta:+d}",
        )
        assert settled, (len(live.sessions), live.app.summarizing, fake.fake.open_streams)
        assert leaked <= 0, [t for t in asyncio.all_tasks()]
        assert stopped == clients and cancelled == clients
        assert fake.fake.streams_completed == completed  # no generation ran on unheard
        assert len(live.app.summaries) == kept  # and nothing of theirs can be saved
        assert fd_delta <= 2 and thread_delta <= 2, (fd_delta, thread_delta)
        conn = await Conn.open(live.url)
        assert await conn.result("ping") == {}
        await conn.close()


async def test_vanishing_clients_leak_nothing(
    data_dir: Path,
    tmp_path: Path,
    fake: OllamaThread,
    report: Report,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await run_vanishing(data_dir, tmp_path, fake, report, caplog, 100)


@pytest.mark.stress
async def test_vanishing_clients_leak_nothing_full(
    data_dir: Path,
    tmp_path: Path,
    fake: OllamaThread,
    report: Report,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await run_vanishing(data_dir, tmp_path, fake, report, caplog, 1000)


# ----- over Streamable HTTP (issue #11) --------------------------------------------------------


async def run_http_vanishing(
    data_dir: Path, tmp_path: Path, fake: OllamaThread, report: Report, clients: int
) -> None:
    """As `run_vanishing`, over MCP Streamable HTTP: each client opens a session, starts a
    long summary with progress and drops the stream after two tokens, without a DELETE. The
    generation must stop at the next token, and the session, its tasks and its connection
    end with it: no waiting for the SDK's 30-minute idle timeout."""
    fake.reset(tps=50, n_tokens=100_000)  # no summary can finish before its client is gone
    t0 = time.monotonic()
    async with inprocess_http(data_dir, tmp_path / "s.csv", fake.url) as live:
        await http_vanish_once(live.url, 5)  # warm-up: pools and caches in steady state

        def quiet() -> bool:
            return (
                live.face.sessions() == 0
                and live.face.connections() == 0
                and not live.app.summarizing
                and fake.fake.open_streams == 0
            )

        assert await settle(quiet, 20)
        await asyncio.sleep(0.3)
        tasks, fds, threads = len(asyncio.all_tasks()), fd_count(), thread_count()
        closed, completed = fake.fake.streams_closed_by_client, fake.fake.streams_completed
        kept = len(live.app.summaries)

        for start in range(0, clients, 10):  # ten at a time
            await asyncio.gather(
                *(http_vanish_once(live.url, 1 + i % 100) for i in range(start, start + 10))
            )
        stopped_in_time = await settle(
            lambda: fake.fake.streams_closed_by_client - closed == clients, 10
        )
        settled = await settle(quiet, 20)
        await asyncio.sleep(0.3)  # the last done-callbacks
        leaked = len(asyncio.all_tasks()) - tasks
        fd_delta, thread_delta = fd_count() - fds, thread_count() - threads
        stopped = fake.fake.streams_closed_by_client - closed
        report.add(
            "vanishing clients, HTTP",
            reconnects=clients,
            leaked_tasks=max(leaked, 0),
            seconds=time.monotonic() - t0,
            note=f"{clients} MCP sessions dropped their stream mid-summary, no DELETE; "
            f"generations stopped {stopped}; sessions after {live.face.sessions()}, "
            f"connections {live.face.connections()}; open LLM streams after: "
            f"{fake.fake.open_streams}; fds {fd_delta:+d}, threads {thread_delta:+d}",
        )
        assert stopped_in_time and stopped == clients, (stopped, clients)
        assert settled, (live.face.sessions(), live.face.connections(), live.app.summarizing)
        assert leaked <= 0, [t for t in asyncio.all_tasks()]
        assert fake.fake.streams_completed == completed  # no generation ran on unheard
        assert len(live.app.summaries) == kept  # and nothing of theirs can be saved
        assert fd_delta <= 2 and thread_delta <= 2, (fd_delta, thread_delta)
        async with httpx.AsyncClient(timeout=10) as client:  # and the face still serves
            headers = await http_session(client, live.url)
            ping = await client.post(
                live.url, json={"jsonrpc": "2.0", "id": 9, "method": "ping"}, headers=headers
            )
            assert ping.status_code == 200 and '"result":{}' in ping.text


async def test_http_vanishing_clients_leak_nothing(
    data_dir: Path, tmp_path: Path, fake: OllamaThread, report: Report
) -> None:
    await run_http_vanishing(data_dir, tmp_path, fake, report, 30)


@pytest.mark.stress
async def test_http_vanishing_clients_leak_nothing_full(
    data_dir: Path, tmp_path: Path, fake: OllamaThread, report: Report
) -> None:
    await run_http_vanishing(data_dir, tmp_path, fake, report, 300)
