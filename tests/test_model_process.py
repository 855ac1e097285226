"""The embedded model in a process of its own: its death never takes the server down.

Real processes throughout: a server with the WebSocket and HTTP faces and a `--stdio` server,
each with its model process, which the tests stop (SIGSTOP, so that a kill always lands
mid-answer) and kill with SIGKILL or SIGSEGV. No wall-clock assertion: the guards only catch
a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from clinsum.backends.embedded import EmbeddedBackend
from testkit.processes import model_pids
from testkit.rpc import HttpPeer, Peer, StdioPeer, wait_until

from .conftest import REPO, ServerProcess, free_port, server_args

GUARD = 60  # seconds: only a hang reaches this
KILLS = 20  # kill cycles in `make test`; `make stress` runs 200
SIGNALS = (signal.SIGKILL, signal.SIGSEGV)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Face:
    """One face of a running server, and how a summary is asked for and answered on it."""

    name: str
    peer: Peer | HttpPeer | StdioPeer
    server_pid: int
    calls: int = 0

    def summarize(self, patient_id: int, max_tokens: int) -> tuple[Any, Callable[[], int]]:
        """Start a summary; returns its reply future and a count of its streamed tokens."""
        self.calls += 1
        args = {"patient_id": patient_id, "max_tokens": max_tokens}
        if self.name == "ws":
            rid, fut = self.peer.start("summarize", args)
            return fut, lambda: len(self.peer.tokens(rid))
        token = f"kill-{self.calls}"
        _, fut = self.peer.start(
            "tools/call",
            {"name": "summarize", "arguments": args, "_meta": {"progressToken": token}},
        )
        notes = self.peer.notes
        return fut, lambda: sum(
            1
            for _, m in notes
            if m["method"] == "notifications/progress" and m["params"]["progressToken"] == token
        )

    def outcome(self, reply: dict[str, Any]) -> tuple[bool, str]:
        """(succeeded, the error's text) of a summarize reply on this face."""
        if self.name == "ws":
            if "error" in reply:
                return False, f"{reply['error']['code']} {reply['error']['message']}"
            return True, ""
        result = reply["result"]
        text = " ".join(c.get("text", "") for c in result.get("content", []))
        return not result.get("isError"), text


@contextlib.asynccontextmanager
async def three_faces(data_dir: Path, tmp_path: Path) -> AsyncIterator[list[Face]]:
    """A WebSocket + HTTP server and a `--stdio` server, both narrative (long answers)."""
    http_port = free_port()
    args = server_args(data_dir, tmp_path / "s.csv", "--summary-style", "narrative")
    server = ServerProcess([*args, "--http-port", str(http_port)]).wait_ready()
    log = (tmp_path / "stdio.log").open("w")
    stdio = None
    try:
        ws = await Peer.open(server.url)
        http = await HttpPeer.open(f"http://127.0.0.1:{http_port}/mcp")
        stdio_args = server_args(data_dir, tmp_path / "s2.csv", "--summary-style", "narrative")
        stdio = await StdioPeer.open(stdio_args, stderr=log)
        faces = [
            Face("ws", ws, server.pid),
            Face("http", http, server.pid),
            Face("stdio", stdio, stdio.proc.pid),
        ]
        yield faces
        assert server.proc.poll() is None, server.log
        assert stdio.proc.returncode is None
    finally:
        for face in faces if stdio else []:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(face.peer.close(), 10)
        server.stop()
        log.close()


async def model_ready(face: Face) -> int:
    """The pid of the face's model process, once it answers (a 2-token summary works)."""
    async with asyncio.timeout(GUARD):
        while True:
            fut, _ = face.summarize(1, 2)
            ok, error = face.outcome(await fut)
            if ok:
                (pid,) = model_pids(face.server_pid)
                return pid
            assert "restarting" in error or "loading" in error, error
            await asyncio.sleep(0.2)


async def kill_loop(faces: list[Face], kills: int, summaries: list[Path]) -> None:
    """`kills` times, on each face in turn: stop the model mid-answer, kill it with SIGKILL
    or SIGSEGV, hear -32004 naming the signal, then get a whole summary from its successor."""
    baseline: dict[int, int] = {}
    model: dict[int, int] = {}  # server pid -> its model process, known to answer
    for face in faces:
        model[face.server_pid] = await model_ready(face)
        baseline.setdefault(face.server_pid, open_fds(face.server_pid))
    saved = [p.read_bytes() for p in summaries]
    for i in range(kills):
        face, sig = faces[i % len(faces)], SIGNALS[i % len(SIGNALS)]
        pid = model[face.server_pid]
        fut, streamed = face.summarize(2 + i % 50, 1024)
        async with asyncio.timeout(GUARD):
            await wait_until(lambda s=streamed: s() >= 2, GUARD, "the model's first token")
        os.kill(pid, signal.SIGSTOP)  # it cannot finish the answer before the kill lands
        assert not fut.done()
        os.kill(pid, sig)
        os.kill(pid, signal.SIGCONT)  # a stopped process takes SIGSEGV only once continued
        ok, error = face.outcome(await asyncio.wait_for(fut, GUARD))
        assert not ok, f"cycle {i} on {face.name}: the answer survived its model"
        number = int(sig)
        assert f"embedded model process died (signal {number}" in error, error
        if face.name == "ws":
            assert error.startswith("-32004 "), error
        async with asyncio.timeout(GUARD):
            await wait_until(lambda p=pid: not alive(p), GUARD, "the killed process to go")
        # The next summary works, from a new process.
        model[face.server_pid] = await model_ready(face)
        assert model[face.server_pid] != pid
    for face in faces:
        assert len(model_pids(face.server_pid)) == 1  # one process: none leaked, none doubled
        # No descriptor leaks: a few may come and go with the open connections.
        assert open_fds(face.server_pid) <= baseline[face.server_pid] + 4
    # Nothing partial was saved: summarize never writes, and a failed one leaves no trace.
    assert [p.read_bytes() for p in summaries] == saved


async def test_killing_the_model_mid_answer_never_takes_a_face_down(
    data_dir: Path, tmp_path: Path
) -> None:
    async with three_faces(data_dir, tmp_path) as faces:
        await kill_loop(faces, KILLS, [tmp_path / "s.csv", tmp_path / "s2.csv"])


@pytest.mark.stress
async def test_killing_the_model_200_times(data_dir: Path, tmp_path: Path) -> None:
    async with three_faces(data_dir, tmp_path) as faces:
        await kill_loop(faces, 200, [tmp_path / "s.csv", tmp_path / "s2.csv"])


async def test_a_kill_while_the_model_loads_is_reported_and_the_next_start_serves() -> None:
    backend = EmbeddedBackend()
    backend.start()
    try:
        async with asyncio.timeout(GUARD):
            await wait_until(lambda: backend.pids(), GUARD, "the model process to start")
            (pid,) = backend.pids()
            assert backend.health()["state"] == "loading"
            os.kill(pid, signal.SIGKILL)
            await wait_until(lambda: backend.health()["state"] != "loading", GUARD, "the death")
            health = backend.health()
            assert health["state"] == "failed"
            assert "exited while loading (signal 9 (SIGKILL))" in health["reason"]
            await wait_until(lambda: backend.health()["state"] == "ready", GUARD, "a restart")
            chunks = [
                c
                async for c in backend.stream([{"role": "user", "content": "Hi"}], "", max_tokens=3)
            ]
            assert chunks and backend.pids() != [pid]
    finally:
        await backend.aclose()


async def test_a_model_file_that_is_not_a_gguf_leaves_the_server_serving(
    data_dir: Path, tmp_path: Path
) -> None:
    """Search and fetch work, /healthz says the model failed and why, summarize answers
    -32004 with the reason; the server never exits."""
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"PK\x03\x04 a zip file, not a model")
    http_port = free_port()
    args = server_args(data_dir, tmp_path / "s.csv", "--model-path", str(bogus))
    server = ServerProcess([*args, "--http-port", str(http_port)]).wait_ready()
    try:
        peer = await Peer.open(server.url)
        assert (await peer.result("search", {"query": "asthma"}))["results"]
        assert (await peer.result("fetch", {"patient_id": 3}))["patient"]["patient_id"] == 3
        async with httpx.AsyncClient() as client:
            await wait_until(lambda: server.wait_for("not a GGUF", 0.1), GUARD, "the verdict")
            health = (await client.get(f"http://127.0.0.1:{http_port}/healthz")).json()
        assert health["llm"]["state"] == "failed"
        assert "bogus.gguf is not a GGUF model file" in health["llm"]["reason"]
        reply = await peer.call("summarize", {"patient_id": 3})
        assert reply["error"]["code"] == -32004
        assert "not a GGUF model file" in reply["error"]["message"]
        await peer.close()
        assert server.proc.poll() is None
    finally:
        server.stop()


ORPHAN_CHECK = """
import asyncio, sys
from clinsum.backends.embedded import EmbeddedBackend

async def main():
    backend = EmbeddedBackend()
    backend.start()
    while backend.health()["state"] != "ready":
        await asyncio.sleep(0.05)
    print(backend.pids()[0], flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def test_a_parent_killed_with_sigkill_leaves_no_model_process() -> None:
    """The model process notices that its parent is gone (the kernel's parent-death signal,
    and EOF on its stdin) and ends: no orphan holds the model's memory."""
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_CHECK],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert parent.stdout is not None
        line = ""
        deadline = time.monotonic() + GUARD
        os.set_blocking(parent.stdout.fileno(), False)
        while not line and time.monotonic() < deadline and parent.poll() is None:
            line = parent.stdout.readline()
            time.sleep(0.05)
        child = int(line)
        assert alive(child)
        parent.kill()
        parent.wait(GUARD)
        deadline = time.monotonic() + GUARD
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child), "the model process outlived its parent"
    finally:
        parent.kill()
        parent.wait(GUARD)


def test_sigterm_stops_the_server_and_its_model_process(data_dir: Path, tmp_path: Path) -> None:
    """SIGTERM ends the server within its usual bound, and the model process with it: the
    server closes the process's stdin, and it exits."""
    server = ServerProcess(server_args(data_dir, tmp_path / "s.csv")).wait_ready()
    try:
        assert server.wait_for("model process 1 (pid", GUARD)
        deadline = time.monotonic() + GUARD
        while not model_pids(server.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        (child,) = model_pids(server.pid)
        assert server.stop(timeout=10) == 0
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child), "the model process outlived the server"
    finally:
        server.kill()
