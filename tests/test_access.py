"""Who may talk to the server, and what a request can reach.

Loopback by default; a public address only with a token (or an explicit opt-in); the bearer
token checked in constant time before any JSON-RPC is read (401), origins (403); every
parameter validated before the index, the model or the file is touched; nothing from a
request reaches a file path or a shell. In-process servers, so the test can watch the
dispatcher, the index, the model and every file the process opens (audit hooks).

The token never appearing in the log at debug level is checked on real server processes in
test_client_token.py (in-process, the test's own logging would show websockets' handshake).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import os
import secrets
import socket
import sys
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from clinsum import access
from clinsum.access import check_access
from clinsum.config import Config, parse_args
from clinsum.errors import StartupError
from testkit.inprocess import Conn, OllamaThread, inprocess, ws_connect

from .fuzz_frames import PARAMS, Fuzzer

TOKEN = "tok-" + secrets.token_hex(16)
ORIGIN = "https://ok.example"


@pytest.fixture(scope="module")
def fake() -> Iterator[OllamaThread]:
    with OllamaThread(n_tokens=16) as f:
        yield f


# ----- binding -------------------------------------------------------------------------------


def test_loopback_is_the_default() -> None:
    assert parse_args([]).host == "127.0.0.1"
    assert Config().host == "127.0.0.1"


async def test_default_server_listens_on_loopback_only(
    data_dir: Path, tmp_path: Path, fake: OllamaThread
) -> None:
    async with inprocess(data_dir, tmp_path / "s.csv", fake.url) as live:
        assert {s.getsockname()[0] for s in live.server.sockets} == {"127.0.0.1"}


@pytest.mark.parametrize(
    "host",
    ["0.0.0.0", "::", "192.0.2.10", "10.1.2.3", "fe80::1", "example.org", "localhost.evil.org"],
)
def test_public_bind_needs_a_token_or_an_explicit_opt_in(host: str) -> None:
    with pytest.raises(StartupError, match="--auth-token"):
        check_access(Config(host=host))
    check_access(Config(host=host, auth_token="t"))
    check_access(Config(host=host, allow_unauthenticated=True))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost"])
def test_loopback_bind_needs_nothing(host: str) -> None:
    check_access(Config(host=host))


def test_token_from_flag_or_env_and_never_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_AUTH_TOKEN", "")
    config = parse_args(["--host", "0.0.0.0"])
    assert config.auth_token is None  # an empty variable is no token ...
    with pytest.raises(StartupError):
        check_access(config)  # ... so a public bind is still refused
    with pytest.raises(SystemExit):
        parse_args(["--auth-token", ""])  # `--auth-token "$UNSET"` must not mean "no auth"
    monkeypatch.setenv("MCP_AUTH_TOKEN", "from-env")
    assert parse_args([]).auth_token == "from-env"
    assert parse_args(["--auth-token", "from-flag"]).auth_token == "from-flag"


# ----- bearer token and origin ---------------------------------------------------------------


def raw_handshake(
    port: int, headers: list[bytes], then: bytes = b"", host: bytes | None = None
) -> bytes:
    """An opening handshake written by hand (any bytes in any header, one Host header), plus
    `then` in the same write; returns the status line."""
    request = [
        b"GET / HTTP/1.1",
        b"Host: " + (host if host is not None else b"127.0.0.1:%d" % port),
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: " + base64.b64encode(secrets.token_bytes(16)),
        b"Sec-WebSocket-Version: 13",
        *headers,
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\r\n".join(request) + b"\r\n\r\n" + then)
        answer = b""
        while b"\r\n" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def masked_text_frame(payload: bytes) -> bytes:
    mask = secrets.token_bytes(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


async def test_bearer_token_is_checked_before_anything_else(
    data_dir: Path,
    tmp_path: Path,
    fake: OllamaThread,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    compared: list[tuple[type, type]] = []
    real_compare = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((type(a), type(b)))
        return real_compare(a, b)

    monkeypatch.setattr(access.hmac, "compare_digest", spy)
    async with inprocess(
        data_dir, tmp_path / "s.csv", fake.url, auth_token=TOKEN, allowed_origins=[ORIGIN]
    ) as live:
        handled: list[Any] = []
        real_handle = live.transport.dispatcher.handle

        async def counting_handle(*args: Any) -> Any:
            handled.append(args[0])
            return await real_handle(*args)

        monkeypatch.setattr(live.transport.dispatcher, "handle", counting_handle)
        refused: list[dict[str, str] | None] = [
            None,
            {"Authorization": ""},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer "},
            {"Authorization": f"Bearer {TOKEN[:-1]}"},
            {"Authorization": f"Bearer {TOKEN}x"},
            {"Authorization": f"Bearer {TOKEN.upper()}"},
            {"Authorization": f"Bearer {TOKEN} {TOKEN}"},
            {"Authorization": TOKEN},
            {"Authorization": f"Token {TOKEN}"},
            {"Authorization": "Basic " + base64.b64encode(f"user:{TOKEN}".encode()).decode()},
            {"Cookie": f"token={TOKEN}"},
            {"X-Auth-Token": TOKEN},
            {"Origin": "https://evil.example"},  # no token: 401 comes first
        ]
        for headers in refused:
            with pytest.raises(InvalidStatus) as info:
                await ws_connect(live.url, headers=headers)
            response = info.value.response
            assert response.status_code == 401, headers
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="clinsum"'
        for url in (f"{live.url}/?token={TOKEN}", f"{live.url}/?access_token={TOKEN}"):
            with pytest.raises(InvalidStatus) as info:
                await ws_connect(url)
            assert info.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as info:
            await ws_connect(live.url, subprotocols=[TOKEN])  # type: ignore[list-item]
        assert info.value.response.status_code == 401
        # Bytes no client library would send, and a JSON-RPC request in the same packet as
        # the handshake: refused, and the request is never read.
        port = live.server.sockets[0].getsockname()[1]
        ping = masked_text_frame(b'{"jsonrpc":"2.0","id":1,"method":"ping"}')
        for header in (
            b"Authorization: Bearer \xff\xfe" + TOKEN.encode(),
            b"Authorization: Bearer " + TOKEN.encode() + b"\x00",
            b"Authorization: Bearer " + b"A" * 6000,
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\nAuthorization: x",
        ):
            status = await asyncio.to_thread(raw_handshake, port, [header], ping)
            # Refused with a 4xx, or (a NUL in a header) the connection dropped unanswered.
            assert status == b"" or status.startswith(b"HTTP/1.1 4"), (header, status)
        assert not handled and not live.sessions  # nothing got as far as JSON-RPC
        assert not [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert compared and all(types == (bytes, bytes) for types in compared)

        for scheme in ("Bearer", "bearer"):  # the scheme is case-insensitive (RFC 9110)
            conn = Conn(await ws_connect(live.url, headers={"Authorization": f"{scheme} {TOKEN}"}))
            assert await conn.result("ping") == {}
            await conn.close()
        for origin in ("https://evil.example", "null", f"{ORIGIN}.evil.example", ORIGIN.upper()):
            with pytest.raises(InvalidStatus) as info:
                await ws_connect(live.url, TOKEN, headers={"Origin": origin})
            assert info.value.response.status_code == 403, origin
        for headers in ({"Origin": ORIGIN}, None):  # the allowed origin; non-browser clients
            conn = Conn(await ws_connect(live.url, TOKEN, headers=headers))
            assert await conn.result("ping") == {}
            await conn.close()


async def test_default_flags_keep_web_pages_and_rebinding_out(
    data_dir: Path, tmp_path: Path, fake: OllamaThread, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue #14, over a real socket with default flags (no token, no --allowed-origin).

    Mutation guarded: the default origin policy back to "any origin" (the evil and `null`
    origins would read patient records), or the Host check removed (DNS rebinding)."""
    caplog.set_level(logging.WARNING)
    async with inprocess(data_dir, tmp_path / "s.csv", fake.url) as live:
        port = next(iter(live.server.sockets)).getsockname()[1]
        for origin in ("http://evil.example", "null", "http://127.0.0.1:1"):
            for _ in range(3):  # refused every time, logged once
                with pytest.raises(InvalidStatus) as info:
                    await ws_connect(live.url, headers={"Origin": origin})
                assert info.value.response.status_code == 403, origin
        conn = Conn(await ws_connect(live.url))  # no Origin: CLIs and SDKs
        assert (await conn.result("fetch", {"patient_id": 45}))["patient"]["patient_id"] == 45
        await conn.close()
        status = await asyncio.to_thread(raw_handshake, port, [], host=b"evil.example:%d" % port)
        assert status.startswith(b"HTTP/1.1 403"), status
        for host in (b"localhost:%d" % port, b"[::1]:%d" % port, b"localhost"):
            status = await asyncio.to_thread(raw_handshake, port, [], host=host)
            assert status.startswith(b"HTTP/1.1 101"), (host, status)
        assert not live.sessions or all(s.peer for s in live.sessions.values())
    refused = [r.getMessage() for r in caplog.records if "Refused" in r.getMessage()]
    assert sum("evil.example" in m and "origin" in m for m in refused) == 1, refused
    assert sum("[origin: null]" in m for m in refused) == 1, refused
    assert any("[host: evil.example:" in m for m in refused), refused


async def test_allowed_and_wildcard_origins(
    data_dir: Path, tmp_path: Path, fake: OllamaThread, caplog: pytest.LogCaptureFixture
) -> None:
    """An --allowed-origin is let in; '*' lets anything in, with a warning at start-up."""
    async with inprocess(data_dir, tmp_path / "a.csv", fake.url, allowed_origins=[ORIGIN]) as live:
        conn = Conn(await ws_connect(live.url, headers={"Origin": ORIGIN}))
        assert await conn.result("ping") == {}
        await conn.close()
    assert not any("'*'" in r.getMessage() for r in caplog.records)
    async with inprocess(data_dir, tmp_path / "b.csv", fake.url, allowed_origins=["*"]) as live:
        for origin in ("http://evil.example", "null"):
            conn = Conn(await ws_connect(live.url, headers={"Origin": origin}))
            assert await conn.result("ping") == {}
            await conn.close()
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "'*'" in r.getMessage()]
    assert len(warnings) == 1


async def test_a_refusal_log_never_holds_the_token(
    data_dir: Path, tmp_path: Path, fake: OllamaThread, caplog: pytest.LogCaptureFixture
) -> None:
    async with inprocess(data_dir, tmp_path / "s.csv", fake.url, auth_token=TOKEN) as live:
        for wrong in (TOKEN[:-1], TOKEN + "x"):
            with pytest.raises(InvalidStatus):
                await ws_connect(live.url, wrong, headers={"Origin": "http://evil.example"})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Refused" in text and TOKEN[:-4] not in text


def test_patient_data_files_are_the_owners_only(tmp_path: Path) -> None:
    """New summaries file and its temporary copies 0600; an existing file keeps its mode."""
    from clinsum.store import csvfile as store_mod

    path = tmp_path / "patient_summaries.csv"
    store = store_mod.SummaryStore(path)
    store.ensure_exists()
    assert path.stat().st_mode & 0o777 == 0o600
    assert Path(str(path) + ".lock").stat().st_mode & 0o777 == 0o600
    seen: list[int] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        seen.append(os.stat(src).st_mode & 0o777)
        real_replace(src, dst)

    store_mod.os.replace = spy  # type: ignore[attr-defined]
    try:
        store.save(1, "Ann", "Ann is well.", "m", "2026-01-01T00:00:00+00:00", True)
        path.chmod(0o640)  # the owner's choice is kept through a rewrite
        store.save(2, "Bob", "Bob is well.", "m", "2026-01-01T00:00:00+00:00", True)
    finally:
        store_mod.os.replace = real_replace  # type: ignore[attr-defined]
    assert seen == [0o600, 0o640]
    assert path.stat().st_mode & 0o777 == 0o640


async def test_index_folder_is_the_owners_only(
    data_dir: Path, tmp_path: Path, fake: OllamaThread
) -> None:
    async with inprocess(data_dir, tmp_path / "s.csv", fake.url):
        pass
    assert (data_dir / "patient_data.chroma").stat().st_mode & 0o777 == 0o700
    assert (data_dir / "patient_data.terms.npz").stat().st_mode & 0o777 == 0o600


# ----- what a request can reach ----------------------------------------------------------------

_AUDIT: dict[str, Any] = {"marker": None, "hits": []}
_FILES = ("open", "os.remove", "os.rename", "os.mkdir", "os.listdir", "os.scandir")
_SPAWN = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "subprocess.Popen")


def _audit(event: str, args: tuple) -> None:
    marker = _AUDIT["marker"]
    if marker is None:
        return
    if event.startswith(_SPAWN) or (event in _FILES and marker in repr(args)):
        _AUDIT["hits"].append((event, args))


sys.addaudithook(_audit)  # audit hooks cannot be removed; this one is idle outside the test


async def test_request_data_never_reaches_a_path_or_a_shell(
    data_dir: Path, tmp_path: Path, fake: OllamaThread
) -> None:
    marker = "probe" + secrets.token_hex(4)
    summaries = tmp_path / "patient_summaries.csv"
    requests: list[tuple[str, dict[str, Any], int | None]] = [
        ("save_summary", {"summary_id": f"../../{marker}"}, -32002),
        ("save_summary", {"summary_id": f"/tmp/{marker}"}, -32002),
        ("save_summary", {"summary_id": f"$(touch /tmp/{marker})"}, -32002),
        ("save_summary", {"summary_id": f"`touch /tmp/{marker}`", "force": True}, -32002),
        ("save_summary", {"summary_id": f"..\\..\\{marker}"}, -32002),
        ("fetch", {"patient_id": f"1; touch /tmp/{marker}"}, PARAMS),
        ("search", {"query": f"asthma; touch /tmp/{marker} #"}, None),
        ("search", {"query": "asthma", "filters": {"gender": marker}}, None),
        ("summarize", {"patient_id": 3, "max_tokens": 2, "_meta": {"progressToken": marker}}, None),
        ("list_summaries", {"path": f"/tmp/{marker}"}, PARAMS),
        ("tools/call", {"name": f"../{marker}", "arguments": {}}, PARAMS),
        (f"../../{marker}", {}, -32601),
        ("initialize", {"protocolVersion": marker, "clientInfo": {"name": marker}}, None),
    ]
    async with inprocess(data_dir, summaries, fake.url) as live:
        before = summaries.read_bytes()
        conn = await Conn.open(live.url)
        _AUDIT.update(marker=marker, hits=[])
        try:
            with suppress(OSError):  # the watch works: this open is seen
                open(f"/nonexistent/{marker}")  # noqa: SIM115
            assert [event for event, _ in _AUDIT["hits"]] == ["open"]
            _AUDIT["hits"].clear()
            for method, params, code in requests:
                reply = await conn.call(method, params)
                if code is None:
                    assert "result" in reply, (method, reply)
                else:
                    assert reply["error"]["code"] == code, (method, reply)
        finally:
            _AUDIT["marker"] = None
        await conn.close()
        assert summaries.read_bytes() == before
    assert not _AUDIT["hits"], _AUDIT["hits"]
    for folder in (tmp_path, data_dir, Path("/tmp")):
        assert not list(folder.glob(f"*{marker}*"))


async def test_every_parameter_is_validated_before_use(
    data_dir: Path, tmp_path: Path, fake: OllamaThread
) -> None:
    """Fuzzed requests that deserve -32602 get it, and none of them reaches the index, the
    model or the summaries file; unknown patients never reach the model either."""
    async with inprocess(data_dir, tmp_path / "s.csv", fake.url) as live:
        used: list[str] = []
        app = live.app

        class Watch:
            def __init__(self, name: str, target: Any) -> None:
                self._name, self._target = name, target

            def __getattr__(self, attr: str) -> Any:
                used.append(f"{self._name}.{attr}")
                return getattr(self._target, attr)

        app.index, app.backend, app.store = (
            Watch("index", app.index),
            Watch("backend", app.backend),
            Watch("store", app.store),
        )
        fuzzer = Fuzzer(77, [])
        conn = await Conn.open(live.url)
        sent = 0
        try:
            while sent < 400:
                frame = fuzzer.method_params()
                codes = frame.expect.codes
                if frame.expect.result or not codes <= {PARAMS, -32001, -32002}:
                    continue
                await conn.ws.send(frame.data)
                reply = await conn.reply()
                assert reply.get("error", {}).get("code") in codes, (frame.data[:300], reply)
                sent += 1
        finally:
            app.index, app.backend, app.store = (
                app.index._target,
                app.backend._target,
                app.store._target,
            )
        await conn.close()
        assert not used, sorted(set(used))
