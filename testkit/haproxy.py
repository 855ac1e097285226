"""HAProxy from Debian in front of server replicas, for the tests and the bench: a config in
a temporary folder, `haproxy -db` in the foreground on a free loopback port, stopped by
`stop()`. The config is the one README's "More than one machine" shows (`config()`)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from testkit.processes import free_port, stop_process

START_TIMEOUT_S = 10


Replicas = list[tuple[str, int]]  # (host, port) of each replica


def config(bind: str, replicas: Replicas, *more: tuple[str, Replicas]) -> str:
    """TCP mode: WebSocket, HTTP (/mcp, /healthz, the page) pass through unchanged. A replica
    that stops answering is out after two failed checks 200 ms apart; a connection to a dead
    one is retried on another (`redispatch`), so reconnecting clients land on a live one.
    `more`: further (bind, replicas) pairs, e.g. the HTTP face's port beside the WebSocket's."""
    pairs = ""
    for n, (address, servers) in enumerate([(bind, replicas), *more], start=1):
        suffix = "" if n == 1 else f"_{n}"
        lines = "\n".join(
            f"    server r{i} {host}:{port} check inter 200ms fall 2 rise 2"
            for i, (host, port) in enumerate(servers, start=1)
        )
        pairs += f"""
frontend clinsum{suffix}
    bind {address}
    default_backend replicas{suffix}

backend replicas{suffix}
    balance roundrobin
{lines}
"""
    return f"""global
    maxconn 4096

defaults
    mode tcp
    timeout connect 1s
    timeout client 1h
    timeout server 1h
    retries 3
    option redispatch
{pairs}"""


class HAProxy:
    """On 127.0.0.1 and a free port in front of `replicas`; or, with `pairs`, on each given
    (bind, replicas) (`port` is then the first bind's)."""

    def __init__(
        self, replicas: Replicas | None = None, pairs: list[tuple[str, Replicas]] | None = None
    ) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if pairs is None:
            assert replicas is not None
            pairs = [(f"127.0.0.1:{free_port()}", replicas)]
        self.host, port = pairs[0][0].rsplit(":", 1)
        self.port = int(port)
        self.folder = Path(tempfile.mkdtemp(prefix="clinsum-haproxy-"))
        cfg = self.folder / "haproxy.cfg"
        cfg.write_text(config(*pairs[0], *pairs[1:]))
        check = subprocess.run(
            [binary, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
        )
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refused its config: {check.stderr}")
        self.proc = subprocess.Popen(
            [binary, "-db", "-f", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _listening(self.host, self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"haproxy did not listen on {self.port}")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop_process(self.proc)
        shutil.rmtree(self.folder, ignore_errors=True)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


__all__ = ["HAProxy", "config"]
