"""Child processes for the tests and the bench: a real `mcp_server.py` on a free loopback port
(`ServerProcess`), reading a child's pipe with a deadline (`read_until`), stopping one
(`stop_process`), finding the embedded model's processes (`model_pids`).

One way to start, wait for and stop a server, whoever runs it: tests/conftest.py and
bench/harness.py both use `ServerProcess`.
"""

from __future__ import annotations

import math
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, AnyStr, TextIO

from websockets.exceptions import InvalidHandshake
from websockets.sync.client import connect as ws_connect

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
READY = "Server ready on ws://"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def ws_answers(url: str, timeout: float) -> bool:
    """Whether a WebSocket handshake with `url` gets an HTTP answer within `timeout` seconds
    (a refusal such as 401 counts: the face is serving)."""
    try:
        with ws_connect(url, open_timeout=timeout, compression=None):
            return True
    except InvalidHandshake:
        return True
    except (OSError, TimeoutError):
        return False


def model_pids(parent: int) -> list[int]:
    """The embedded model processes (`runner.py`) whose parent is `parent`, zombies left out."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(ppid) == parent and state != "Z" and b"runner.py" in cmdline:
            found.append(int(entry.name))
    return found


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited after `timeout` seconds; reaped either way."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def read_until(stream: IO[AnyStr], text: AnyStr, timeout: float) -> list[AnyStr]:
    """Lines from a child process's pipe, up to and including the first holding `text`.

    The lines are read in a daemon thread, so a child that goes silent fails the caller after
    `timeout` seconds instead of hanging it; the caller then kills the child, and the thread
    ends at the pipe's end of file. Every blocking read of a child's pipe in the tests goes
    through here (or through an asyncio timeout).

    Raises:
        TimeoutError: no such line within `timeout` seconds.
        EOFError: the pipe closed first (the child exited).
        Both messages hold the lines that did come.
    """
    lines: list[AnyStr] = []
    outcome: queue.SimpleQueue[bool | BaseException] = queue.SimpleQueue()

    def scan() -> None:
        try:
            while line := stream.readline():
                lines.append(line)
                if text in line:
                    outcome.put(True)
                    return
            outcome.put(False)
        except BaseException as exc:  # a closed pipe: the caller hears of it
            outcome.put(exc)

    threading.Thread(target=scan, daemon=True).start()
    try:
        found = outcome.get(timeout=timeout)
    except queue.Empty:
        raise TimeoutError(f"no line with {text!r} within {timeout:g} s; read {lines!r}") from None
    if isinstance(found, BaseException):
        raise found
    if not found:
        raise EOFError(f"the pipe closed before a line with {text!r}; read {lines!r}")
    return lines


class ServerProcess:
    """`python mcp_server.py ...` as a child process on a free loopback port, with its log
    lines collected (and copied to `log_path` when given).

    `wait_ready()` returns once the server logs that it is ready; a server started with
    `--log-level warning` or quieter never logs that line, so for it a WebSocket handshake
    that gets answered is the signal (the port is bound before the app loads, but the face
    serves only once data, index and model are loaded). `ready_s` is the time from spawn
    to ready.
    """

    def __init__(
        self,
        args: Sequence[str],
        port: int | None = None,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        self.ready_s = math.nan
        args = list(args)
        http = args[args.index("--http-port") + 1] if "--http-port" in args else None
        self.http_url = f"http://127.0.0.1:{http}" if http not in (None, "0") else None
        self.summaries = (
            Path(args[args.index("--summaries") + 1]) if "--summaries" in args else None
        )
        level = args[args.index("--log-level") + 1] if "--log-level" in args else "info"
        self._probe = level in ("warning", "error")
        self._ready_at: float | None = None
        self._log_file: TextIO | None = open(log_path, "w") if log_path else None  # noqa: SIM115 - closed in stop()
        cmd = [PY, str(REPO / "mcp_server.py"), "--port", str(self.port), *args]
        self.started = time.perf_counter()
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
        for raw in self.proc.stderr:
            line = raw.rstrip("\n")
            if self._ready_at is None and READY in line:
                self._ready_at = time.perf_counter()
            self.lines.append(line)
            if self._log_file is not None:
                self._log_file.write(raw)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = 180) -> ServerProcess:
        """Block until the server is ready.

        Raises:
            RuntimeError: the server exited first, or was not ready within `timeout`
                seconds (it is then killed); the message holds its log.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = deadline - time.monotonic()
            if self._ready_at is not None or (self._probe and ws_answers(self.url, left)):
                self.ready_s = (self._ready_at or time.perf_counter()) - self.started
                return self
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log}")
            time.sleep(0.01)
        self.kill()
        raise RuntimeError(f"server not ready within {timeout}s:\n{self.log}")

    def wait_for(self, text: str, timeout: float = 30, count: int = 1) -> bool:
        """Whether `count` log lines containing `text` appear within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(text in line for line in self.lines) >= count:
                return True
            time.sleep(0.02)
        return False

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, then SIGKILL after `timeout` seconds; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reader.join(2)
        if self._log_file is not None and not self._reader.is_alive():
            self._log_file.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
