"""The JSON-RPC core without sockets: the spec's examples, message in, replies out."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from clinsum.jsonrpc import Call, Dispatcher, RPCError, Session, parse


def make_dispatcher() -> tuple[Dispatcher, list[tuple[str, dict]]]:
    d = Dispatcher()
    seen: list[tuple[str, dict]] = []

    @d.method("subtract")
    async def subtract(call: Call, params: dict[str, Any]) -> int:
        return params["minuend"] - params["subtrahend"]

    @d.method("fail")
    async def fail(call: Call, params: dict[str, Any]) -> None:
        raise RPCError(-32001, "Unknown patient: no patient with id 7")

    @d.method("crash")
    async def crash(call: Call, params: dict[str, Any]) -> None:
        raise ZeroDivisionError("secret internals")

    @d.method("slow")
    async def slow(call: Call, params: dict[str, Any]) -> str:
        await call.notify("tick", {"request_id": call.id})
        await asyncio.sleep(10)
        return "never"

    @d.on_notification("update")
    async def update(session: Session, params: dict[str, Any]) -> None:
        seen.append(("update", params))

    return d, seen


async def nothing(method: str, params: dict[str, Any]) -> None:
    return None


async def handle(d: Dispatcher, frame: str) -> Any:
    message, error = parse(frame)
    if error is not None:
        return error
    return await d.handle(message, Session(), nothing)


async def test_named_params_call() -> None:
    d, _ = make_dispatcher()
    reply = await handle(
        d, '{"jsonrpc":"2.0","method":"subtract","params":{"minuend":42,"subtrahend":23},"id":3}'
    )
    assert reply == {"jsonrpc": "2.0", "id": 3, "result": 19}


async def test_notification_gets_no_reply_but_runs() -> None:
    d, seen = make_dispatcher()
    assert await handle(d, '{"jsonrpc":"2.0","method":"update","params":{"x":1}}') is None
    assert seen == [("update", {"x": 1})]
    # An unknown notification is not answered either.
    assert await handle(d, '{"jsonrpc":"2.0","method":"nope"}') is None


@pytest.mark.parametrize(
    ("frame", "code", "reply_id"),
    [
        ('{"jsonrpc":"2.0","method":"foobar","id":"1"}', -32601, "1"),
        ('{"jsonrpc":"2.0","method":"foobar,"params":"bar","baz]', -32700, None),
        ('{"jsonrpc":"2.0","method":1,"params":"bar"}', -32600, None),
        ('{"jsonrpc":"1.0","method":"subtract","id":5}', -32600, 5),
        ('{"jsonrpc":"2.0","method":"subtract","id":{"a":1}}', -32600, None),
        ('{"jsonrpc":"2.0","method":"subtract","id":true}', -32600, None),
        ('{"jsonrpc":"2.0","method":"subtract","params":3,"id":6}', -32600, 6),
        ('{"jsonrpc":"2.0","method":"subtract","params":[1,2],"id":7}', -32602, 7),
        ("1", -32600, None),
        ("NaN", -32700, None),
        ('"\\ud800"', -32700, None),
        ("[" * 10_000 + "]" * 10_000, -32700, None),
    ],
)
async def test_error_codes(frame: str, code: int, reply_id: Any) -> None:
    d, _ = make_dispatcher()
    reply = await handle(d, frame)
    assert reply["error"]["code"] == code
    assert reply["id"] == reply_id
    assert reply["jsonrpc"] == "2.0"


async def test_invalid_utf8_bytes_are_a_parse_error() -> None:
    _, error = parse(b'{"jsonrpc":"2.0","method":"\xff","id":1}')
    assert error is not None and error["error"]["code"] == -32700


async def test_empty_batch_is_one_invalid_request() -> None:
    d, _ = make_dispatcher()
    reply = await handle(d, "[]")
    assert reply == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32600, "message": "Invalid Request: empty batch"},
    }


async def test_batch_of_non_objects_answers_each() -> None:
    d, _ = make_dispatcher()
    reply = await handle(d, "[1,2,3]")
    assert [r["error"]["code"] for r in reply] == [-32600, -32600, -32600]


async def test_batch_of_notifications_only_gets_nothing() -> None:
    d, seen = make_dispatcher()
    note = '{"jsonrpc":"2.0","method":"update","params":{"a":%d}}'
    frame = "[" + ",".join(note % i for i in (1, 2)) + "]"
    assert await handle(d, frame) is None
    assert len(seen) == 2


async def test_mixed_batch_as_in_the_spec() -> None:
    d, _ = make_dispatcher()
    frame = """[
        {"jsonrpc":"2.0","method":"subtract","params":{"minuend":7,"subtrahend":2},"id":"1"},
        {"jsonrpc":"2.0","method":"update","params":{"a":1}},
        {"foo":"boo"},
        {"jsonrpc":"2.0","method":"foo.get","params":{"name":"myself"},"id":"5"}
    ]"""
    reply = await handle(d, frame)
    assert reply[0] == {"jsonrpc": "2.0", "id": "1", "result": 5}
    assert reply[1]["error"]["code"] == -32600 and reply[1]["id"] is None
    assert reply[2]["error"]["code"] == -32601 and reply[2]["id"] == "5"
    assert len(reply) == 3


async def test_handler_errors_keep_code_and_internal_errors_hide_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    d, _ = make_dispatcher()
    reply = await handle(d, '{"jsonrpc":"2.0","method":"fail","id":1}')
    assert reply["error"] == {"code": -32001, "message": "Unknown patient: no patient with id 7"}
    reply = await handle(d, '{"jsonrpc":"2.0","method":"crash","id":2}')
    assert reply["error"] == {"code": -32603, "message": "Internal error"}
    assert "secret" not in str(reply)
    assert "ZeroDivisionError" in caplog.text  # the server log keeps the traceback


async def test_cancel_stops_request_without_reply() -> None:
    d, _ = make_dispatcher()
    session = Session()
    sent: list[tuple[str, dict]] = []

    async def notify(method: str, params: dict[str, Any]) -> None:
        sent.append((method, params))

    message, _ = parse('{"jsonrpc":"2.0","method":"slow","id":"s1"}')
    task = asyncio.create_task(d.handle(message, session, notify))
    while not sent:
        await asyncio.sleep(0)
    assert sent == [("tick", {"request_id": "s1"})]
    assert session.cancel("s1") is True
    with pytest.raises(asyncio.CancelledError):
        await task
    assert session.in_flight == {}
    assert session.cancel("s1") is False


async def test_ids_of_different_types_do_not_collide() -> None:
    session = Session()
    loop = asyncio.get_running_loop()
    t1 = loop.create_future()
    session.in_flight[("int", 1)] = t1  # type: ignore[assignment]
    assert session.cancel("1") is False
    assert session.cancel(1) is True
