"""The server's settings: one `Config`, filled from the command line and the environment.

Every face reads the same `Config`; `Config.policy()` turns its access settings into the one
`Policy` they all ask before serving a request.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import logs
from .access import Policy, is_loopback
from .backends import KINDS
from .prompt import STYLES
from .records import default_data_file

DEFAULT_PORT = 8765


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data: Path = Path("patient_data.csv")
    summaries: Path = Path("patient_summaries.csv")
    chroma_url: str | None = None
    backend: str = "auto"
    model: str | None = None
    model_path: str | None = None
    ollama_host: str | None = None
    llm_url: str | None = None  # the openai backend's server, http://HOST:PORT/v1
    api_key: str | None = None  # its key (--api-key or $OPENAI_API_KEY); never logged
    model_workers: int = 1  # embedded: model processes serving the queue
    llm_timeout: float = 60.0
    summary_style: str | None = None  # prompt.STYLES; None: the backend's default
    log_level: str = "info"
    max_message_bytes: int = 1 << 20
    max_inflight: int = 4
    max_connections: int = 256
    auth_token: str | None = None
    allow_unauthenticated: bool = False
    allowed_origins: list[str] = field(default_factory=list)
    allowed_hosts: list[str] = field(default_factory=list)
    show_progress: bool = True
    data_note: str = ""  # why `data` is not the default file (said at start-up)
    stdio: bool = False  # MCP over stdin/stdout instead of the WebSocket port
    http_port: int | None = None  # the HTTP face (MCP Streamable HTTP, /healthz, /metrics)
    # Where summaries are saved (issue 26): "csv" (`summaries`) or a postgresql:// URL.
    store: str = "csv"
    draft_ttl_s: float = 24 * 3600.0  # how long a summary_id can be saved

    def policy(self) -> Policy:
        """The access policy every face shares (token, Origin and Host checks)."""
        return Policy(
            token=self.auth_token,
            allowed_origins=self.allowed_origins,
            check_host=is_loopback(self.host),
            allowed_hosts=self.allowed_hosts,
        )


def parse_args(argv: Sequence[str] | None = None) -> Config:
    p = argparse.ArgumentParser(
        description="Clinical patient-summary server: JSON-RPC 2.0 and MCP over WebSocket, "
        "MCP over Streamable HTTP (--http-port) or stdio (--stdio).",
        epilog=(
            "examples:\n"
            "  python mcp_server.py                      # ws://127.0.0.1:8765, auto backend\n"
            "  python mcp_server.py --backend embedded --port 9000\n"
            "  python mcp_server.py --host 0.0.0.0 --auth-token s3cret\n"
            "  python mcp_server.py --chroma-url http://127.0.0.1:8000\n"
            "  python mcp_server.py --http-port 8766             # also MCP over HTTP\n"
            "  python mcp_server.py --stdio                      # for MCP hosts (Claude, Cursor)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 8765; 0 = any)")
    p.add_argument(
        "--http-port",
        type=int,
        metavar="N",
        help="also serve HTTP on this port (0 = any): MCP Streamable HTTP at /mcp, /healthz, "
        "/metrics and the web page",
    )
    p.add_argument(
        "--stdio",
        action="store_true",
        help="speak MCP over stdin/stdout (for MCP hosts that start the server); logs go to "
        "stderr and no WebSocket port is opened",
    )
    p.add_argument(
        "--data",
        type=Path,
        help="patients file: CSV (one row per patient or per visit) or JSON list, or a FHIR R4 "
        "export (a folder of Bulk Data NDJSON files or Bundles, one .ndjson(.gz), one Bundle); "
        "default patient_data.csv, else the original tool's patients_data.csv if only that "
        "is here",
    )
    p.add_argument(
        "--summaries",
        type=Path,
        default=Path("patient_summaries.csv"),
        help="where saved summaries go (created if missing)",
    )
    p.add_argument(
        "--chroma-url", help="use a Chroma server (http://HOST:PORT) instead of embedded Chroma"
    )
    p.add_argument(
        "--backend",
        choices=KINDS,
        default="auto",
        help="LLM backend; auto = the --llm-url server if given and up, else Ollama if "
        "reachable with the model pulled, else embedded",
    )
    p.add_argument(
        "--model",
        help="model name: Ollama's (default phi), or the --llm-url server's (default: the "
        "first it lists)",
    )
    p.add_argument("--model-path", help="GGUF file for the embedded backend (default SmolLM2)")
    p.add_argument(
        "--ollama-host",
        default=os.environ.get("OLLAMA_HOST"),
        help="Ollama URL (default $OLLAMA_HOST or http://127.0.0.1:11434)",
    )
    p.add_argument(
        "--llm-url",
        metavar="URL",
        help="an OpenAI-compatible server for --backend openai (http://HOST:PORT/v1): "
        "llama.cpp's llama-server, vLLM, LM Studio, Ollama's /v1",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("OPENAI_API_KEY") or None,
        help="the --llm-url server's API key (default $OPENAI_API_KEY); never logged",
    )
    p.add_argument(
        "--model-workers",
        type=int,
        default=1,
        metavar="N",
        help="embedded backend: model processes serving summaries in parallel, each with its "
        "own threads and its own copy of the model (default 1)",
    )
    p.add_argument(
        "--llm-timeout",
        type=float,
        default=60.0,
        help="seconds a model may stay silent before the call fails (default 60)",
    )
    p.add_argument(
        "--summary-style",
        choices=STYLES,
        help="strict: the record's facts are written from the record and the model adds the "
        "assessment (default for embedded); narrative: the model writes the whole summary "
        "from the digest, checked afterwards (default for Ollama)",
    )
    p.add_argument("--log-level", choices=logs.LEVELS, default="info")
    p.add_argument(
        "--max-message-bytes",
        type=int,
        default=1 << 20,
        help="largest frame accepted; larger ones close the connection with 1009 (default 1 MiB)",
    )
    p.add_argument(
        "--max-inflight",
        type=int,
        default=4,
        help="summaries one connection may run at once; beyond it a busy error (default 4)",
    )
    p.add_argument(
        "--max-connections", type=int, default=256, help="open connections allowed (default 256)"
    )
    p.add_argument(
        "--auth-token",
        default=os.environ.get("MCP_AUTH_TOKEN") or None,
        help="require 'Authorization: Bearer TOKEN' (default $MCP_AUTH_TOKEN)",
    )
    p.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="allow a non-loopback --host without --auth-token",
    )
    p.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="also accept browser pages from this Origin, e.g. https://ehr.example.org "
        "(repeatable; '*' accepts any origin: unsafe). Requests without Origin are accepted",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="on a loopback bind, also accept this Host name (repeatable); the default accepts "
        "localhost, 127.0.0.1 and [::1] only, which stops DNS rebinding",
    )
    _store_args(p)
    a = p.parse_args(argv)
    for name in ("max_message_bytes", "max_inflight", "max_connections", "model_workers"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    for flag, port in (("--port", a.port), ("--http-port", a.http_port)):
        if port is not None and not 0 <= port <= 65535:
            p.error(f"{flag} must be between 0 and 65535")
    if a.backend == "openai" and not a.llm_url:
        p.error("--backend openai needs --llm-url (http://HOST:PORT/v1)")
    if a.auth_token is not None and not a.auth_token.strip():
        # `--auth-token "$UNSET"` would otherwise run without authentication, silently.
        p.error("--auth-token must not be empty")
    store_error = check_store(a.store)
    if store_error:
        p.error(f"--store: {store_error}")
    if a.draft_ttl is None:
        p.error("--draft-ttl must be a duration such as 3600, 90s, 30m, 24h or 7d (above 0)")
    data, data_note = (a.data, "") if a.data else default_data_file()
    return Config(
        host=a.host,
        port=a.port,
        data=data,
        data_note=data_note,
        summaries=a.summaries,
        chroma_url=a.chroma_url,
        backend=a.backend,
        model=a.model,
        model_path=a.model_path,
        ollama_host=a.ollama_host,
        llm_url=a.llm_url,
        api_key=a.api_key,
        model_workers=a.model_workers,
        llm_timeout=a.llm_timeout,
        summary_style=a.summary_style,
        log_level=a.log_level,
        max_message_bytes=a.max_message_bytes,
        max_inflight=a.max_inflight,
        max_connections=a.max_connections,
        auth_token=a.auth_token,
        allow_unauthenticated=a.allow_unauthenticated,
        allowed_origins=a.allowed_origin,
        allowed_hosts=a.allowed_host,
        # A host reading our stderr is no terminal; a progress bar there is only noise.
        show_progress=sys.stderr.isatty() and not a.stdio,
        stdio=a.stdio,
        http_port=a.http_port,
        store=a.store,
        draft_ttl_s=a.draft_ttl,
    )


# ---------------------------------------------------------------- the summaries store (#26)

_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float | None:
    """'3600', '90s', '30m', '24h', '7d' in seconds; None if it is not a positive duration."""
    text = text.strip().lower()
    number, unit = text, "s"
    for name in sorted(_UNITS, key=len, reverse=True):
        if text.endswith(name):
            number, unit = text[: -len(name)], name
            break
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        return None
    return seconds if 0 < seconds < float("inf") else None


def check_store(spec: str) -> str | None:
    """Why `--store` cannot be used, or None: `csv`, or postgresql://USER@HOST[:PORT]/DB with
    no password in it (a password on the command line is visible to every user in `ps`)."""
    from urllib.parse import urlsplit

    if spec == "csv":
        return None
    form = "expected 'csv' or postgresql://USER@HOST:PORT/DB"
    if not spec.startswith(("postgresql://", "postgres://")):
        return f"{form}, got {spec!r}"
    try:
        url = urlsplit(spec)
        url.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        return f"{form}: {exc}"
    if url.password is not None:
        return (
            "the URL must not hold a password (every user can read it in `ps`); "
            "put it in $PGPASSWORD or a .pgpass file"
        )
    if not url.hostname or not url.username or not url.path.strip("/"):
        missing = [
            n
            for n, v in (("USER", url.username), ("HOST", url.hostname), ("DB", url.path[1:]))
            if not v
        ]
        return f"{form}: {' and '.join(missing)} missing in {spec!r}"
    return None


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store",
        default="csv",
        metavar="csv|URL",
        help="where summaries are saved: csv (--summaries and its .history.csv; default) or "
        "postgresql://USER@HOST:PORT/DB (password from $PGPASSWORD or .pgpass), which "
        "replicas share",
    )
    p.add_argument(
        "--draft-ttl",
        type=duration,
        default=24 * 3600.0,
        metavar="DURATION",
        help="how long a generated summary can be saved: 3600, 90s, 30m, 24h, 7d (default 24h)",
    )


__all__ = ["DEFAULT_PORT", "Config", "parse_args"]
