"""Shared test helpers: real server processes on free loopback ports, temp copies of data."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "patient_data.csv"
READY = "Server ready on ws://"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python mcp_server.py ...` as a child process, with its log lines collected."""

    def __init__(self, args: Sequence[str], port: int | None = None, env: dict | None = None):
        self.port = port or free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        args = list(args)
        self.summaries = (
            Path(args[args.index("--summaries") + 1]) if "--summaries" in args else None
        )
        cmd = [sys.executable, str(REPO / "mcp_server.py"), "--port", str(self.port), *args]
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = 180) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(READY in line for line in self.lines):
                return self
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server not ready within {timeout}s:\n{self.log}")

    def wait_for(self, text: str, timeout: float = 30, count: int = 1) -> bool:
        """Whether `count` log lines contain `text` within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(text in line for line in self.lines) >= count:
                return True
            time.sleep(0.02)
        return False

    def stop(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reader.join(2)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def server_args(
    data_dir: Path, summaries: Path, *extra: str, backend: str = "embedded"
) -> list[str]:
    """The flags most test servers share: a backend and a temp copy of the files."""
    return [
        *("--backend", backend),
        *("--data", str(data_dir / "patient_data.csv")),
        *("--summaries", str(summaries)),
        *extra,
    ]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temp folder holding a copy of patient_data.csv (its index is built beside it)."""
    folder = tmp_path_factory.mktemp("data")
    shutil.copy(DATA, folder / "patient_data.csv")
    return folder


@pytest.fixture(scope="session")
def shared_server(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One embedded-backend server for the whole run, for tests that only read."""
    summaries = tmp_path_factory.mktemp("shared") / "patient_summaries.csv"
    server = ServerProcess(server_args(data_dir, summaries, "--max-inflight", "16")).wait_ready()
    yield server
    server.stop()
