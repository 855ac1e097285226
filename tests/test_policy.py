"""The shared access policy as a table, without a socket (access.py `Policy`).

Every face asks the same `Policy.refuse`, so these rows hold for the WebSocket, the HTTP face
and the web page alike; tests/test_access.py repeats the important ones over a real socket.
"""

from __future__ import annotations

import pytest

from clinsum.access import (
    Policy,
    Refusal,
    RefusalLog,
    encode_bearer_subprotocol,
    host_name,
)

TOKEN = "s3cret/with+odd=chars"
OK = None


def headers(**named: str) -> list[tuple[str, str]]:
    return [(k.replace("_", "-"), v) for k, v in named.items()]


DEFAULT = Policy()
ALLOWED = Policy(allowed_origins=["https://EHR.example.org/"], allowed_hosts=["clinsum.lan"])
ANY = Policy(allowed_origins=["*"])
TOKENED = Policy(token=TOKEN)
OPEN_HOST = Policy(check_host=False)  # a non-loopback bind: the token protects instead


@pytest.mark.parametrize(
    ("policy", "request_headers", "status"),
    [
        # No Origin: CLIs, the MCP SDKs and the original tool's clients.
        (DEFAULT, headers(Host="127.0.0.1:8765"), OK),
        (DEFAULT, headers(Host="localhost:8765"), OK),
        (DEFAULT, headers(Host="LOCALHOST"), OK),
        (DEFAULT, headers(Host="[::1]:8765"), OK),
        (DEFAULT, headers(Host="127.3.4.5:1"), OK),
        # Cross-site WebSocket hijacking: any page the clinician has open.
        (DEFAULT, headers(Host="127.0.0.1:8765", Origin="http://evil.example"), 403),
        (DEFAULT, headers(Host="127.0.0.1:8765", Origin="null"), 403),  # sandboxed frame
        (DEFAULT, headers(Host="127.0.0.1:8765", Origin="http://127.0.0.1:9999"), 403),
        # DNS rebinding: evil.example resolves to 127.0.0.1, the Host header gives it away.
        (DEFAULT, headers(Host="evil.example:8765"), 403),
        (DEFAULT, headers(Host="localhost.evil.example"), 403),
        (DEFAULT, headers(Host="127.0.0.1.evil.example:80"), 403),
        (DEFAULT, [], 403),  # no Host at all
        (DEFAULT, [("Host", "127.0.0.1"), ("Host", "evil.example")], 403),
        # Explicitly allowed origins and hosts; configured ones are matched as browsers send.
        (ALLOWED, headers(Host="127.0.0.1", Origin="https://ehr.example.org"), OK),
        (ALLOWED, headers(Host="127.0.0.1", Origin="https://ehr.example.org.evil.example"), 403),
        (ALLOWED, headers(Host="127.0.0.1", Origin="HTTPS://EHR.EXAMPLE.ORG"), 403),
        (ALLOWED, headers(Host="clinsum.lan:8765"), OK),
        (ALLOWED, [("Host", "x"), ("Origin", "https://ehr.example.org"), ("Origin", "null")], 403),
        # '*' is an explicit opt-out of the origin check, not of the Host check.
        (ANY, headers(Host="127.0.0.1", Origin="http://evil.example"), OK),
        (ANY, headers(Host="127.0.0.1", Origin="null"), OK),
        (ANY, headers(Host="evil.example"), 403),
        # Non-loopback bind: any Host, the Origin rule still holds.
        (OPEN_HOST, headers(Host="clinsum.example.org"), OK),
        (OPEN_HOST, headers(Host="clinsum.example.org", Origin="http://evil.example"), 403),
        # The token comes first: nothing else about an unauthenticated request matters.
        (TOKENED, headers(Host="evil.example", Origin="null"), 401),
        (TOKENED, headers(Host="127.0.0.1", Authorization=f"Bearer {TOKEN}"), OK),
        (TOKENED, headers(Host="127.0.0.1", Authorization=f"bearer {TOKEN}"), OK),
        (TOKENED, headers(Host="127.0.0.1", Authorization=f"Bearer {TOKEN}x"), 401),
        (TOKENED, headers(Host="127.0.0.1", Authorization=TOKEN), 401),
        (
            TOKENED,
            [("Host", "127.0.0.1"), ("Authorization", f"Bearer {TOKEN}")] * 2,
            401,  # two Authorization headers are refused, never guessed at
        ),
        (TOKENED, headers(Host="evil.example", Authorization=f"Bearer {TOKEN}"), 403),
        # Browsers cannot set headers on a WebSocket: the page offers the token as a value.
        (
            TOKENED,
            headers(
                Host="127.0.0.1",
                Sec_WebSocket_Protocol=f"clinsum, {encode_bearer_subprotocol(TOKEN)}",
            ),
            OK,
        ),
        (
            TOKENED,
            headers(Host="127.0.0.1", Sec_WebSocket_Protocol="clinsum, clinsum.bearer.d3Jvbmc"),
            401,
        ),
        (TOKENED, headers(Host="127.0.0.1", Sec_WebSocket_Protocol="clinsum.bearer.%%%"), 401),
    ],
)
def test_refuse(policy: Policy, request_headers: list[tuple[str, str]], status: int | None) -> None:
    refusal = policy.refuse(request_headers)
    assert (refusal.status if refusal else None) == status, refusal


def test_own_page_origin_is_allowed_once_its_port_is_known() -> None:
    policy = Policy()
    page = headers(Host="127.0.0.1:8765", Origin="http://127.0.0.1:8080")
    assert policy.refuse(page) is not None
    policy.allow_page(8080)
    for name in ("127.0.0.1", "localhost", "[::1]"):
        assert policy.refuse(headers(Host=f"{name}:8765", Origin=f"http://{name}:8080")) is None
    assert policy.refuse(headers(Host="127.0.0.1", Origin="http://127.0.0.1:8081")) is not None


def test_a_refusal_never_carries_the_token() -> None:
    wrong = "Bearer " + TOKEN[:-1]
    refusal = TOKENED.refuse(headers(Host="127.0.0.1", Authorization=wrong))
    assert refusal is not None and TOKEN[:-1] not in f"{refusal}"


def test_long_values_are_clipped_in_a_refusal() -> None:
    refusal = DEFAULT.refuse(headers(Host="127.0.0.1", Origin="http://" + "a" * 5000))
    assert refusal is not None and len(refusal.value) <= 80


@pytest.mark.parametrize(
    ("header", "name"),
    [("Example.org:8765", "example.org"), ("[::1]:80", "[::1]"), ("[::1]", "[::1]"), ("h", "h")],
)
def test_host_name(header: str, name: str) -> None:
    assert host_name(header) == name


def test_refusals_are_logged_once_per_origin_per_minute() -> None:
    log = RefusalLog()
    evil = Refusal(403, "Origin not allowed", "origin", "http://evil.example")
    other = Refusal(403, "Origin not allowed", "origin", "http://other.example")
    assert log.should_log(evil, now=0.0)
    assert not log.should_log(evil, now=59.0)
    assert log.should_log(other, now=59.5)
    assert log.should_log(evil, now=60.0)
