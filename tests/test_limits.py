"""Limits: the largest frame, requests in flight per connection, connections, a flood from one
client, the bounds of a search.

One of the robustness tests: tests/server_pool.py says how they run (sizes, the report).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from testkit.inprocess import Conn, OllamaThread, inprocess, settle, ws_connect

from .server_pool import SEARCHES

pytest_plugins = ["tests.stress_report", "tests.server_pool"]


async def test_frame_size_limit_is_configurable(
    data_dir: Path, tmp_path: Path, fake: OllamaThread
) -> None:
    async with inprocess(data_dir, tmp_path / "s.csv", fake.url, max_message_bytes=4096) as live:
        ws = await ws_connect(live.url)
        ping = '{"jsonrpc":"2.0","id":1,"method":"ping"}'
        await ws.send(ping.ljust(4096))  # exactly the limit
        assert json.loads(await ws.recv())["result"] == {}
        await ws.send(ping.ljust(4097))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1009
        ws = await ws_connect(live.url)  # the server goes on
        await ws.send(ping)
        assert json.loads(await ws.recv())["result"] == {}
        await ws.close()


async def test_max_inflight_is_per_connection_and_slots_come_back(
    data_dir: Path, tmp_path: Path, fake: OllamaThread
) -> None:
    fake.reset(tps=20, n_tokens=100_000)
    async with inprocess(data_dir, tmp_path / "s.csv", fake.url, max_inflight=2) as live:
        a, b = await Conn.open(live.url), await Conn.open(live.url)
        for i in (1, 2):
            await a.ws.send(
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": f"long-{i}",
                        "method": "summarize",
                        "params": {"patient_id": i, "max_tokens": 1024},
                    }
                )
            )
        assert await settle(lambda: sum(live.app.summarizing.values()) == 2, 10)
        busy = await a.call("summarize", {"patient_id": 3, "max_tokens": 2})
        assert busy["error"]["code"] == -32003 and "limit 2" in busy["error"]["message"]
        # Another connection has its own two slots.
        assert (await b.result("summarize", {"patient_id": 4, "max_tokens": 2}))["summary_id"]
        # A cancelled summary gives its slot back (and gets no reply, as MCP says).
        await a.ws.send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": "long-1"},
                }
            )
        )
        assert await settle(lambda: sum(live.app.summarizing.values()) == 1, 10)
        ok = await a.call("summarize", {"patient_id": 3, "max_tokens": 2})
        assert "result" in ok, ok
        # So does a failed one.
        fake.fake.error_after = 0
        failed = await a.call("summarize", {"patient_id": 3, "max_tokens": 2})
        assert failed["error"]["code"] == -32004
        fake.reset()
        assert "result" in await a.call("summarize", {"patient_id": 3, "max_tokens": 2})
        await a.close()
        await b.close()
        assert await settle(lambda: not live.app.summarizing, 10)


async def test_max_connections_answers_503(
    data_dir: Path, tmp_path: Path, fake: OllamaThread
) -> None:
    async with inprocess(data_dir, tmp_path / "s.csv", fake.url, max_connections=3) as live:
        conns = [await Conn.open(live.url) for _ in range(3)]
        with pytest.raises(InvalidStatus) as info:
            await ws_connect(live.url)
        assert info.value.response.status_code == 503
        assert len(live.sessions) == 3  # refused before any JSON-RPC: no session at all
        await conns.pop().close()
        assert await settle(lambda: len(live.sessions) == 2, 10)
        conns.append(await Conn.open(live.url))
        assert await conns[-1].result("ping") == {}
        for c in conns:
            await c.close()


async def test_a_flood_from_one_client_does_not_hold_up_others(
    data_dir: Path, tmp_path: Path, fake: OllamaThread
) -> None:
    """One 40 KB frame can carry hundreds of searches (a batch); they wait for each other,
    not ahead of every other client's search in the shared thread pool."""
    async with inprocess(data_dir, tmp_path / "s.csv", fake.url) as live:
        flooder = await ws_connect(live.url)
        batch = [
            {"jsonrpc": "2.0", "id": i, "method": "search", "params": {"query": f"pain {i}"}}
            for i in range(400)
        ]
        await flooder.send(json.dumps(batch))
        flood = asyncio.create_task(flooder.recv())
        assert await settle(lambda: bool(live.app._threads), 10)  # the flood is under way
        other = await Conn.open(live.url)
        for query in SEARCHES:
            assert (await other.result("search", {"query": query}))["results"]
        assert not flood.done()  # served while the flood was still running
        assert len(json.loads(await asyncio.wait_for(flood, 300))) == len(batch)
        await other.close()
        await flooder.close()


async def test_query_and_top_k_bounds(data_dir: Path, tmp_path: Path, fake: OllamaThread) -> None:
    async with inprocess(data_dir, tmp_path / "s.csv", fake.url) as live:
        c = await Conn.open(live.url)
        longest = ("chest pain and shortness of breath " * 15)[:500]
        assert len((await c.result("search", {"query": longest, "top_k": 3}))["results"]) <= 3
        assert len((await c.result("search", {"query": "cough", "top_k": 1}))["results"]) == 1
        assert len((await c.result("search", {"query": "cough", "top_k": 50}))["results"]) <= 50
        for params, name in (
            ({"query": longest + "x"}, "query"),
            ({"query": " \t\n"}, "query"),
            ({"query": "cough", "top_k": 0}, "top_k"),
            ({"query": "cough", "top_k": -3}, "top_k"),
            ({"query": "cough", "top_k": 2**63}, "top_k"),
            ({"query": "cough", "top_k": 5.0}, "top_k"),
            ({"query": "cough", "top_k": True}, "top_k"),
            ({"query": "cough", "top_k": "5"}, "top_k"),
        ):
            reply = await c.call("search", params)
            assert reply["error"]["code"] == -32602 and f"'{name}'" in reply["error"]["message"]
        schema = {t["name"]: t for t in (await c.result("tools/list"))["tools"]}["search"]
        props = schema["inputSchema"]["properties"]
        assert props["query"]["maxLength"] == 500
        assert (props["top_k"]["minimum"], props["top_k"]["maximum"]) == (1, 50)
        await c.close()
