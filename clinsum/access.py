"""Who may talk to the server, without I/O: the one access policy every face asks.

Rule 1: every face asks `Policy.refuse` before it reads a single request, so the WebSocket,
the HTTP face and the web page share one set of answers. The order is fixed: the token first
(nothing else about an unauthenticated request is looked at), then Host, then Origin.
Rule 2: `check_access` refuses, once at start-up, to expose patient records to the network
without a token.
Rule 3: this file imports nothing of ours but `errors`, and knows no transport.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from .errors import StartupError
from .jsonrpc import clip

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
# Browsers cannot set headers on a WebSocket; they can offer subprotocols. A page sends its
# token as one offered value, base64url without padding, next to the protocol it speaks.
BEARER_SUBPROTOCOL = "clinsum.bearer."
PAGE_SUBPROTOCOL = "clinsum"
REFUSAL_LOG_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is turned away: the HTTP status and a reason safe to show and log."""

    status: int
    reason: str
    header: str  # "authorization", "host" or "origin": what the log line is keyed on
    value: str  # the offending value, clipped; never a token


def _is_loopback_literal(name: str) -> bool:
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """ "Example.org:8765" -> "example.org", "[::1]:80" -> "[::1]": the name without the port."""
    value = host_header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end > 0 else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def normalise_origin(origin: str) -> str:
    """A configured origin as browsers send one: scheme://host[:port], lower case, no slash.

    Only the configured side is normalised: browsers always send the serialised form, so an
    Origin header that differs from it was not written by a browser and is refused.
    """
    return origin.strip().rstrip("/").lower()


def page_origins(port: int) -> list[str]:
    """The origins a browser gives the server's own page on `port`."""
    return [f"http://{name}:{port}" for name in sorted(LOOPBACK_NAMES)]


def encode_bearer_subprotocol(token: str) -> str:
    """The subprotocol value that carries `token` (what the web page offers)."""
    raw = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
    return BEARER_SUBPROTOCOL + raw


def _decode_bearer_subprotocol(value: str) -> bytes | None:
    raw = value[len(BEARER_SUBPROTOCOL) :]
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (ValueError, binascii.Error):
        return None


class Policy:
    """Who may talk to the server: one decision for every face, with no I/O.

    Args:
        token: the bearer token every request must carry, or None.
        allowed_origins: browser origins let in besides the server's own page; "*" lets any
            origin in (an explicit opt-out). A request with no Origin (CLIs, SDKs, the
            original tool's clients) is always let in: only browsers send one.
        check_host: refuse Host headers other than loopback names and `allowed_hosts`, which
            stops DNS rebinding. Meant for a loopback bind; on a network bind the token
            protects instead.
        allowed_hosts: extra Host names (without port) to accept when `check_host` is on.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        allowed_origins: Iterable[str] = (),
        check_host: bool = True,
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        self._token = token.encode() if token else b""
        origins = {normalise_origin(o) for o in allowed_origins}
        self.any_origin = "*" in origins
        self.origins = origins - {"*"}
        self.check_host = check_host
        self.hosts = LOOPBACK_NAMES | {host_name(h) for h in allowed_hosts}

    @property
    def needs_token(self) -> bool:
        return bool(self._token)

    def allow_page(self, port: int) -> None:
        """Let in the server's own web page, once the HTTP face knows its port."""
        self.origins.update(page_origins(port))

    def refuse(self, headers: Iterable[tuple[str, str]]) -> Refusal | None:
        """None if the request may go on, else the `Refusal` to answer with.

        `headers` are the raw (name, value) pairs, repeated names included: a request with
        two Authorization or two Host headers is refused, never guessed at.
        """
        found: dict[str, list[str]] = {}
        for name, value in headers:
            found.setdefault(name.lower(), []).append(value)
        if self._token and not self._has_token(found):
            return Refusal(401, "Missing or invalid bearer token", "authorization", "")
        if self.check_host:
            hosts = found.get("host", [])
            if len(hosts) != 1:
                return Refusal(403, "Exactly one Host header is required", "host", str(len(hosts)))
            name = host_name(hosts[0])
            if name not in self.hosts and not _is_loopback_literal(name):
                return Refusal(
                    403,
                    "Host not allowed: this server answers loopback names only "
                    "(add names with --allowed-host)",
                    "host",
                    clip(hosts[0]),
                )
        origins = found.get("origin", [])
        if (
            origins
            and not self.any_origin
            and (len(origins) != 1 or origins[0] not in self.origins)
        ):
            return Refusal(
                403,
                "Origin not allowed (start the server with --allowed-origin ORIGIN)",
                "origin",
                clip(", ".join(origins)),
            )
        return None

    def _has_token(self, found: dict[str, list[str]]) -> bool:
        given: list[bytes] = []
        auth = found.get("authorization", [])
        if len(auth) == 1:
            scheme, _, credential = auth[0].partition(" ")
            if scheme.lower() == "bearer":
                given.append(credential.strip().encode())
        elif len(auth) > 1:
            return False
        for header in found.get("sec-websocket-protocol", []):
            for value in header.split(","):
                value = value.strip()
                if value.startswith(BEARER_SUBPROTOCOL):
                    decoded = _decode_bearer_subprotocol(value)
                    if decoded is not None:
                        given.append(decoded)
        # compare_digest on every candidate: the time taken says nothing about the token.
        return any([hmac.compare_digest(g, self._token) for g in given])


class RefusalLog:
    """Logs a refusal once per (header, value) per minute, so a scanning page or a retry loop
    cannot fill the log. The caller passes the clock, which keeps this testable."""

    def __init__(self, interval_s: float = REFUSAL_LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._last: dict[tuple[str, str], float] = {}

    def should_log(self, refusal: Refusal, now: float) -> bool:
        key = (refusal.header, refusal.value)
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            return False
        if len(self._last) > 4096:  # forget old keys rather than grow without bound
            self._last = {k: t for k, t in self._last.items() if now - t < self.interval_s}
        self._last[key] = now
        return True


def is_loopback(host: str) -> bool:
    """Whether a bind address (`--host`) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Exposure(Protocol):
    """What `check_access` reads of the settings (a `Config`)."""

    host: str
    auth_token: str | None
    allow_unauthenticated: bool


def check_access(config: Exposure) -> None:
    """Refuse to expose patient records to the network without a token.

    Raises:
        StartupError: a non-loopback bind with neither a token nor an explicit opt-out.
    """
    if not is_loopback(config.host) and not config.auth_token and not config.allow_unauthenticated:
        raise StartupError(
            f"refusing to listen on {config.host} without authentication: patient records "
            "would be open to the network. Set --auth-token (or MCP_AUTH_TOKEN), or pass "
            "--allow-unauthenticated if this network is trusted."
        )
