"""The clients pass the token (`--token`, `MCP_AUTH_TOKEN`), and the server never logs it or a
near miss of it, even at debug level.

One of the robustness tests: tests/server_pool.py says how they run (sizes, the report).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from websockets.exceptions import InvalidStatus

from testkit.inprocess import Conn, OllamaThread, ws_connect

from .conftest import REPO
from .server_pool import TOKEN, Pool

pytest_plugins = ["tests.stress_report", "tests.server_pool"]


def run_client(url: str, *args: str, token_env: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MCP_AUTH_TOKEN"}
    env["NO_COLOR"] = "1"
    if token_env is not None:
        env["MCP_AUTH_TOKEN"] = token_env
    return subprocess.run(
        [sys.executable, str(REPO / "mcp_client.py"), "--url", url, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )


def test_client_token_flag_and_env(pool: Pool, fake: OllamaThread) -> None:
    fake.reset(tps=0)
    url = pool.members[0].url
    batch = ("--query", "diabetes", "--patients", "1", "--yes", "--json", "--max-tokens", "1")
    done = run_client(url, "--token", TOKEN, *batch)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is True and result["patients"][0]["status"] == "saved", result
    assert run_client(url, *batch, token_env=TOKEN).returncode == 0
    for args in ((), ("--token", "wrong-" + TOKEN)):
        refused = run_client(url, *args, *batch)
        assert refused.returncode == 2, refused.stderr
        assert "HTTP 401" in refused.stderr and "--token" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr


async def test_token_never_logged_even_at_debug(pool: Pool) -> None:
    url = pool.members[0].url
    near_misses = [TOKEN[:-1], TOKEN + "x", TOKEN.upper()]
    for header in [*(f"Bearer {t}" for t in near_misses), TOKEN, f"Basic {TOKEN}"]:
        with pytest.raises(InvalidStatus) as info:
            await ws_connect(url, headers={"Authorization": header})
        assert info.value.response.status_code == 401
    conn = await Conn.open(url, TOKEN)
    assert await conn.result("ping") == {}
    await conn.close()
    server = pool.members[0]
    assert server.wait_for("Refused") and server.wait_for("Client connected")
    log = pool.log()
    assert "[asyncio] Using selector" in log  # debug lines are written: the level is debug
    for secret in (TOKEN, *near_misses, TOKEN[4:]):
        assert secret not in log
