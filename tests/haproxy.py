"""HAProxy from Debian in front of server replicas, for the tests and the bench: a config in
a temporary folder, `haproxy -db` in the foreground on a free loopback port, stopped by
`stop()`. The config is the one README's "More than one machine" shows (`config()`)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.harness import free_port, port_open

START_TIMEOUT_S = 10


def config(bind: str, replicas: list[tuple[str, int]]) -> str:
    """TCP mode: WebSocket, HTTP (/mcp, /healthz, the page) pass through unchanged. A replica
    that stops answering is out after two failed checks 200 ms apart; a connection to a dead
    one is retried on another (`redispatch`), so reconnecting clients land on a live one."""
    servers = "\n".join(
        f"    server r{i} {host}:{p} check inter 200ms fall 2 rise 2"
        for i, (host, p) in enumerate(replicas, start=1)
    )
    return f"""global
    maxconn 4096

defaults
    mode tcp
    timeout connect 1s
    timeout client 1h
    timeout server 1h
    retries 3
    option redispatch

frontend clinsum
    bind {bind}
    default_backend replicas

backend replicas
    balance roundrobin
{servers}
"""


class HAProxy:
    def __init__(self, replicas: list[tuple[str, int]]) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="clinsum-haproxy-"))
        cfg = self.folder / "haproxy.cfg"
        cfg.write_text(config(f"127.0.0.1:{self.port}", replicas))
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
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"haproxy did not listen on {self.port}")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


__all__ = ["HAProxy", "config"]
