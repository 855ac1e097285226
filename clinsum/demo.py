"""The guided demo: search, pick a patient, watch the summary stream, save it.

It is the first thing a new user runs, so it must work from a bare checkout: when nothing
answers at `--url` (and the URL is on this machine) it starts a server itself, waits for it,
and stops it again on the way out, whatever the way out is.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit

from .client import (
    Client,
    ConnectFailed,
    ConnectionLost,
    ServerUnreachable,
    add_connection_args,
    is_loopback_url,
)
from .terminal.screen import EXIT_OK, Screen
from .terminal.steps import ask_patient, ask_search, connect, generate, offer_save

REPO = Path(__file__).resolve().parent.parent
# In a checkout the started server runs in it, so that its defaults find the bundled data;
# installed (`clinsum-demo`), it runs where the user is, as `clinsum-server` would.
CHECKOUT = REPO if (REPO / "mcp_server.py").is_file() else None
CLIENT_NAME = "clinsum-demo"
POLL_INTERVAL_S = 0.3
STOP_TIMEOUT_S = 10.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Guided demo: search patients, pick one, watch its clinical summary stream in\n"
            "token by token, then save it to the summaries CSV. If no server answers at --url\n"
            "(on this machine), the demo starts one with the embedded model and stops it\n"
            "when the demo ends."
        ),
        epilog=(
            "examples:\n"
            "  python interactive_streaming_demo.py\n"
            "  python interactive_streaming_demo.py --url ws://127.0.0.1:9000 --no-spawn\n"
            "  python interactive_streaming_demo.py --data my_patients.csv "
            "--summaries /tmp/summaries.csv\n"
            "  MCP_AUTH_TOKEN=s3cret python interactive_streaming_demo.py "
            "--url ws://clinic-host:8765\n"
            "\n"
            "keys: Ctrl-C while a summary streams cancels it (nothing is saved) and asks for a\n"
            "patient again; Ctrl-C at a prompt quits with exit code 130, Ctrl-D with 0.\n"
            "exit codes: 0 done, 1 the server failed or went away, 2 no server / cannot "
            "connect, 130 Ctrl-C."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_args(parser)
    spawn = parser.add_argument_group(
        "local server (started only when none answers; --timeout bounds the wait for it)"
    )
    spawn.add_argument(
        "--no-spawn",
        action="store_true",
        help="never start a server; fail with a hint if none answers at --url",
    )
    spawn.add_argument("--data", type=Path, help="patients CSV for the started server")
    spawn.add_argument("--summaries", type=Path, help="summaries CSV the started server saves to")
    return parser


class LocalServer:
    """The server started by the demo (`python -m clinsum.server`), in its own session so
    that Ctrl-C meant for the demo (the terminal signals the whole foreground group) does not
    kill it mid-stream."""

    def __init__(self, url: str, args: argparse.Namespace) -> None:
        self.url = url
        self.port = urlsplit(url).port or 80
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path: Path | None = None

    async def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "clinsum.server",
            "--port",
            str(self.port),
            "--backend",
            "embedded",
        ]
        # Paths the user typed are relative to where the user is, so they are made absolute.
        if self.args.data is not None:
            cmd += ["--data", str(self.args.data.resolve())]
        if self.args.summaries is not None:
            cmd += ["--summaries", str(self.args.summaries.resolve())]
        env = dict(os.environ)
        if self.args.token:
            env["MCP_AUTH_TOKEN"] = self.args.token
        fd, name = tempfile.mkstemp(prefix="clinsum-demo-server-", suffix=".log")
        self.log_path = Path(name)
        with os.fdopen(fd, "wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *cmd,
                cwd=CHECKOUT,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    async def connect(self, screen: Screen, timeout: float) -> Client:
        """Poll until the server accepts a connection, which it does only once it is ready."""
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.proc.returncode is not None:
                raise ConnectFailed(
                    f"The local server exited (code {self.proc.returncode}): "
                    f"{self.last_log_line()} (full log: {self.log_path})"
                )
            try:
                return await connect(
                    screen, self.url, self.args.token, self.args.timeout, CLIENT_NAME
                )
            except ServerUnreachable:
                if loop.time() >= deadline:
                    raise ConnectFailed(
                        f"The local server was not ready within {timeout:g} s; its last log "
                        f"line: {self.last_log_line()} (full log: {self.log_path})"
                    ) from None
            with suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), POLL_INTERVAL_S)

    async def exited(self) -> bool:
        """Whether the server has died; a dropped connection may be seen a moment earlier."""
        assert self.proc is not None
        with suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S / 5)
        return self.proc.returncode is not None

    def last_log_line(self) -> str:
        assert self.log_path is not None
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return lines[-1].strip() if lines else "(it logged nothing)"

    async def stop(self) -> None:
        """Stop the server; its log is kept only if it died on its own (it tells why)."""
        assert self.proc is not None and self.log_path is not None
        died = self.proc.returncode is not None
        if not died:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if not died:
            self.log_path.unlink(missing_ok=True)


@asynccontextmanager
async def server_connection(screen: Screen, args: argparse.Namespace) -> AsyncIterator[Client]:
    """A connected client, to the server at --url or to one started for the demo."""
    server: LocalServer | None = None
    try:
        client = await connect(screen, args.url, args.token, args.timeout, CLIENT_NAME)
    except ServerUnreachable as exc:
        if args.no_spawn:
            raise ServerUnreachable(
                f"{exc}: start one with `python mcp_server.py` or drop --no-spawn"
            ) from None
        if not is_loopback_url(args.url):
            raise ServerUnreachable(
                f"{exc}: it is not on this machine, so the demo cannot start it; check the "
                "URL, or start the server there"
            ) from None
        server = LocalServer(args.url, args)
    try:
        if server is not None:
            await server.start()
            with screen.waiting(f"No server at {args.url}; starting one (loading the model)..."):
                client = await server.connect(screen, args.timeout)
        try:
            yield client
        except ConnectionLost as exc:
            if server is None or not await server.exited():
                raise
            raise ConnectionLost(
                f"{exc}: the server the demo started stopped: {server.last_log_line()} "
                f"(full log: {server.log_path})"
            ) from None
        finally:
            await client.close()
    finally:
        if server is not None:
            await server.stop()


async def run_demo(screen: Screen, args: argparse.Namespace) -> int:
    screen.banner("STREAMING LLM DEMO - Interactive Patient Summary Generation")
    async with server_connection(screen, args) as client:
        screen.step(1, "Search for patients")
        await ask_search(screen, client)
        screen.step(2, "Select patient")
        while True:
            record = await ask_patient(
                screen, client, "Enter patient ID (from the list, or any valid ID): "
            )
            screen.patient(record)
            screen.step(3, "Generate summary with streaming")
            result = await generate(screen, client, record, args.max_tokens)
            if result is not None:
                break
            screen.step(2, "Select patient (again)")
        screen.step(4, "Save to CSV")
        await offer_save(screen, client, result)
    screen.info("Demo complete.")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    screen = Screen()
    return screen.run(lambda: run_demo(screen, args))
