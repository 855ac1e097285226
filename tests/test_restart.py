"""A restart on the same files serves the same search results and summaries.

One of the robustness tests: tests/server_pool.py says how they run (sizes, the report).
"""

from __future__ import annotations

from pathlib import Path

from testkit.inprocess import Conn, OllamaThread

from .server_pool import SEARCHES

pytest_plugins = ["tests.stress_report", "tests.server_pool"]


async def test_restart_serves_same_search_and_summaries(
    data_dir: Path, tmp_path: Path, fake: OllamaThread
) -> None:
    """The real start-up path (`running` builds the app) twice on the same files."""
    from clinsum.compose import websocket as running
    from clinsum.config import Config

    fake.reset(tps=0)
    config = Config(
        port=0,
        backend="ollama",
        ollama_host=fake.url,
        data=data_dir / "patient_data.csv",
        summaries=tmp_path / "patient_summaries.csv",
        show_progress=False,
    )

    async def snapshot(url: str) -> tuple[list, list]:
        c = await Conn.open(url)
        found = [await c.result("search", {"query": q, "top_k": 10}) for q in SEARCHES]
        rows = (await c.result("list_summaries"))["summaries"]
        await c.close()
        return found, rows

    async with running(config) as (server, _app):
        url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"
        c = await Conn.open(url)
        ids = []
        for pid in (11, 45, 72):
            result = await c.result("summarize", {"patient_id": pid, "max_tokens": 8})
            await c.result("save_summary", {"summary_id": result["summary_id"], "force": True})
            ids.append(result["summary_id"])
        await c.close()
        before = await snapshot(url)
    assert [r["patient_id"] for r in before[1]] == ["11", "45", "72"]
    async with running(config) as (server, _app):
        url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"
        after = await snapshot(url)
        c = await Conn.open(url)
        # Summary ids live in the memory of the server that made them: unknown after restart.
        assert (await c.call("save_summary", {"summary_id": ids[0]}))["error"]["code"] == -32002
        await c.close()
    assert after == before
