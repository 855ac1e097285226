"""A seeded generator of hostile WebSocket frames, each with the answer the server owes it.

Every frame comes with an `Expect`: the error codes allowed (or a result), the id the reply
must carry, no reply at all (notifications), or the close code the connection must end with.
The expectations follow the README: -32700 for what is not JSON, -32600 for a bad envelope,
-32601 for an unknown method, -32602 for bad params (checked before anything is used),
-32001/-32002 for unknown patients and summaries; 1003 binary, 1007 invalid UTF-8, 1009 too
big. No frame may ever be answered with -32603 (internal error): that is a bug by definition.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

MAX_FRAME = 1 << 20  # the server's default --max-message-bytes
FUZZ_PATIENTS = range(1, 31)  # valid ids the fuzz may summarize and save
SMALL_TOKENS = (1, 2, 3)  # valid summaries stay short: the fake streams at the victim's pace

PARSE, INVALID, NO_METHOD, PARAMS = -32700, -32600, -32601, -32602
UNKNOWN_PATIENT, UNKNOWN_SUMMARY, BUSY, UNSUPPORTED = -32001, -32002, -32003, -32005
ABSENT = object()  # a parameter left out


class Raw:
    """JSON text put into a frame verbatim: NaN, deep nesting, bad escapes, huge literals."""

    def __init__(self, text: str) -> None:
        self.text = text


def encode(obj: Any, ensure_ascii: bool = False) -> str:
    raws: list[str] = []

    def default(o: Any) -> str:
        if isinstance(o, Raw):
            raws.append(o.text)
            return f"@@RAW{len(raws) - 1}@@"
        raise TypeError(type(o))

    text = json.dumps(obj, default=default, ensure_ascii=ensure_ascii, separators=(",", ":"))
    for i, raw in enumerate(raws):
        text = text.replace(f'"@@RAW{i}@@"', raw, 1)
    return text


@dataclass
class Expect:
    kind: str  # "reply" | "none" | "close" | "batch"
    id: Any = None
    codes: frozenset[int] = frozenset()  # error codes allowed
    result: bool = False  # whether a result is allowed
    tool_error: bool | None = None  # tools/call: the isError the result must have
    close: int = 0
    members: list[Expect] = field(default_factory=list)


@dataclass
class Frame:
    label: str
    data: str | bytes | list[str] | list[bytes]
    expect: Expect
    binary: bool = False
    vanish: bool = False  # abort the TCP connection after the first streamed token

    def preview(self, n: int = 160) -> str:
        text = repr(self.data)
        return text if len(text) <= n else text[:n] + f"... ({len(text)} chars)"


def deep(depth: int, kind: str = "list") -> Raw:
    if kind == "list":
        return Raw("[" * depth + "]" * depth)
    return Raw('{"a":' * depth + "1" + "}" * depth)


class Fuzzer:
    """`next()` gives the next frame; the mix is fixed by the seed."""

    def __init__(self, seed: int, summary_ids: list[str]) -> None:
        self.rng = random.Random(seed)
        self.summary_ids = summary_ids  # ids of summaries this run generated (shared)
        self.next_id = 1
        self.kinds = [
            (self.junk, 8),
            (self.truncated, 6),
            (self.invalid_json, 6),
            (self.non_finite, 4),
            (self.surrogates, 4),
            (self.nesting, 3),
            (self.envelope, 16),
            (self.unknown_method, 5),
            (self.method_params, 34),
            (self.notification, 5),
            (self.batch, 5),
            (self.long_strings, 1.5),
            (self.fragments, 2),
            (self.binary, 0.25),
            (self.bad_utf8, 0.25),
            (self.size_limit, 0.06),
            (self.vanish, 0.15),
        ]
        self._fns = [fn for fn, _ in self.kinds]
        self._weights = [w for _, w in self.kinds]

    def next(self) -> Frame:
        fn = self.rng.choices(self._fns, self._weights)[0]
        return fn()

    # ----- helpers -------------------------------------------------------------------------

    def rid(self) -> Any:
        self.next_id += 1
        r = self.rng.random()
        if r < 0.8:
            return self.next_id
        if r < 0.95:
            return f"req-{self.next_id}"
        return self.rng.choice([0, -1, 1.5, -0.0, 1e300, 2**64 - 1, -(2**63), "", "🙂", None])

    def reply(self, rid: Any, codes: set[int] | None = None, result: bool = False) -> Expect:
        return Expect("reply", id=rid, codes=frozenset(codes or ()), result=result)

    def request(self, method: str, params: Any = ABSENT, rid: Any = ABSENT) -> dict[str, Any]:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": self.rid() if rid is ABSENT else rid}
        msg["method"] = method
        if params is not ABSENT:
            msg["params"] = params
        return msg

    def text(self, obj: Any) -> str:
        return encode(obj, ensure_ascii=self.rng.random() < 0.3)

    def _unparsable(self, candidate: str, fallback: str = "{") -> str:
        try:
            orjson.loads(candidate)
        except orjson.JSONDecodeError:
            return candidate
        return fallback

    # ----- not JSON ------------------------------------------------------------------------

    def junk(self) -> Frame:
        alphabet = '{}[]:,"\\ abcnrtu0123456789.-+eE\n\t\x00\x7f\u00e9\u2028\U0001f600'
        n = self.rng.randint(0, 200)
        text = "".join(self.rng.choice(alphabet) for _ in range(n))
        return Frame("junk", self._unparsable(text), self.reply(None, {PARSE}))

    def truncated(self) -> Frame:
        frame = self.method_params()
        text = frame.data if isinstance(frame.data, str) else "{}"
        cut = text[: self.rng.randrange(0, max(1, len(text) - 1))]
        return Frame("truncated", self._unparsable(cut), self.reply(None, {PARSE}))

    def invalid_json(self) -> Frame:
        ping = '{"jsonrpc":"2.0","id":1,"method":"ping"}'
        text = self.rng.choice(
            [
                "",
                "   ",
                "\ufeff" + ping,
                ping + " x",
                ping + ping,
                ping[:-1] + ",}",
                "{'jsonrpc':'2.0','id':1,'method':'ping'}",
                '{jsonrpc:"2.0",id:1,method:"ping"}',
                '{"jsonrpc":"2.0" "id":1}',
                '{"jsonrpc":"2.0","id":01,"method":"ping"}',
                '{"jsonrpc":"2.0","id":+1,"method":"ping"}',
                '{"jsonrpc":"2.0","id":.5,"method":"ping"}',
                '{"jsonrpc":"2.0","id":1.,"method":"ping"}',
                '{"jsonrpc":"2.0","id":1,"method":"pi\\xng"}',
                '{"jsonrpc":"2.0","id":1,"method":"\\u12"}',
                '{"jsonrpc":"2.0","id":1,"method":"pi\x01ng"}',
                '{"jsonrpc":"2.0","id":1,"method":"ping"} // comment',
                "[1,]",
                "tru",
                "nul",
                "undefined",
                '"unterminated',
                "{" * 50,
                "]",
            ]
        )
        return Frame("invalid-json", self._unparsable(text), self.reply(None, {PARSE}))

    def non_finite(self) -> Frame:
        value = self.rng.choice(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "nan", "inf"])
        where = self.rng.choice(["id", "top_k", "patient_id", "min_risk", "top"])
        if where == "top":
            text = value
        elif where == "id":
            text = f'{{"jsonrpc":"2.0","id":{value},"method":"ping"}}'
        elif where == "min_risk":
            text = self.text(
                self.request("search", {"query": "asthma", "filters": {"min_risk": Raw(value)}})
            )
        else:
            method = "search" if where == "top_k" else "fetch"
            params = {"query": "asthma", "top_k": Raw(value)}
            if method == "fetch":
                params = {"patient_id": Raw(value)}
            text = self.text(self.request(method, params))
        return Frame(f"non-finite {value}", text, self.reply(None, {PARSE}))

    def surrogates(self) -> Frame:
        lone = self.rng.choice(
            ["\\ud800", "\\udfff", "\\ud800\\u0041", "\\udc00\\ud800", "\\ud83d"]
        )
        where = self.rng.choice(["method", "query", "id", "key"])
        if where == "method":
            text = f'{{"jsonrpc":"2.0","id":1,"method":"{lone}"}}'
        elif where == "id":
            text = f'{{"jsonrpc":"2.0","id":"{lone}","method":"ping"}}'
        elif where == "key":
            text = f'{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"{lone}":1}}}}'
        else:
            text = self.text(self.request("search", {"query": Raw(f'"a{lone}b"')}))
        return Frame("lone surrogate", text, self.reply(None, {PARSE}))

    def nesting(self) -> Frame:
        r = self.rng.random()
        kind = self.rng.choice(["list", "dict"])
        if r < 0.5:  # far past the parser's depth limit: a parse error, not a stack overflow
            depth = self.rng.choice([1025, 5000, 10_000, 10_000])
            where = self.rng.choice(["top", "params", "id"])
            if where == "top":
                text = deep(depth, kind).text
            elif where == "id":
                text = self.text(self.request("ping", rid=deep(depth, kind)))
            else:
                text = self.text(self.request("search", {"query": deep(depth, kind)}))
            return Frame(f"nesting {depth}", text, self.reply(None, {PARSE}))
        # Just inside the limit: parsed, then refused (or ignored) without recursion errors.
        d = 1000
        rid = self.rid()
        case = self.rng.choice(["id", "query", "tool", "meta", "client", "cancel"])
        if case == "id":
            return Frame(
                "deep id", self.text(self.request("ping", rid=deep(d))), self.reply(None, {INVALID})
            )
        if case == "query":
            msg = self.request("search", {"query": deep(d, kind)}, rid=rid)
            return Frame("deep query", self.text(msg), self.reply(rid, {PARAMS}))
        if case == "tool":
            msg = self.request("tools/call", {"name": deep(d, kind), "arguments": {}}, rid=rid)
            return Frame("deep tool name", self.text(msg), self.reply(rid, {PARAMS}))
        if case == "meta":
            params = {"patient_id": 1, "max_tokens": 1, "_meta": {"progressToken": deep(d, kind)}}
            msg = self.request("summarize", params, rid=rid)
            return Frame("deep progressToken", self.text(msg), self.reply(rid, {PARAMS}))
        if case == "client":
            params = {"protocolVersion": "2025-11-25", "clientInfo": {"name": deep(d, kind)}}
            msg = self.request("initialize", params, rid=rid)
            # Accepted, or refused as too deep to log: either way an answer, not a crash.
            return Frame("deep clientInfo", self.text(msg), self.reply(rid, {PARAMS}, True))
        note = {"jsonrpc": "2.0", "method": "notifications/cancelled"}
        note["params"] = {"requestId": deep(d, kind)}
        return Frame("deep cancel", self.text(note), Expect("none"))

    # ----- envelopes -----------------------------------------------------------------------

    def envelope(self) -> Frame:
        rid = self.rid()
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": "ping"}
        field_ = self.rng.choice(["jsonrpc", "id", "method", "params", "whole", "extra", "resp"])
        if field_ == "jsonrpc":
            bad = self.rng.choice([ABSENT, "1.0", "2", 2.0, 2, None, "", ["2.0"], {"v": "2.0"}])
            if bad is ABSENT:
                del msg["jsonrpc"]
            else:
                msg["jsonrpc"] = bad
            return Frame("bad jsonrpc", self.text(msg), self.reply(rid, {INVALID}))
        if field_ == "id":
            msg["id"] = self.rng.choice([True, False, [], {}, [1], {"a": 1}, ["x"]])
            return Frame("bad id type", self.text(msg), self.reply(None, {INVALID}))
        if field_ == "method":
            bad = self.rng.choice([ABSENT, None, 1, True, [], {}, "", ["ping"]])
            if bad is ABSENT:
                del msg["method"]
            else:
                msg["method"] = bad
            return Frame("bad method", self.text(msg), self.reply(rid, {INVALID}))
        if field_ == "params":
            bad = self.rng.choice(["x", 1, True, None, 1.5, [], [1, 2]])
            msg["params"] = bad
            code = PARAMS if isinstance(bad, list) else INVALID
            return Frame("bad params type", self.text(msg), self.reply(rid, {code}))
        if field_ == "whole":
            text = self.rng.choice(["1", '"x"', "true", "false", "null", "-0", "1e5", "[1,2]"])
            if text == "[1,2]":
                members = [self.reply(None, {INVALID}), self.reply(None, {INVALID})]
                return Frame("batch of scalars", text, Expect("batch", members=members))
            return Frame("not an object", text, self.reply(None, {INVALID}))
        if field_ == "extra":
            msg.update({"result": 1, "error": {"code": 1}, "extra": [1, 2]})
            return Frame("extra members", self.text(msg), self.reply(rid, result=True))
        # A response sent to the server: it has no method, so it is an invalid request.
        resp = {"jsonrpc": "2.0", "id": rid, "result": {}}
        return Frame("response as request", self.text(resp), self.reply(rid, {INVALID}))

    def unknown_method(self) -> Frame:
        name = self.rng.choice(
            [
                "nope",
                "SEARCH",
                "search ",
                "rpc.discover",
                "tools/unknown",
                "notifications/cancelled",
                "../search",
                "__init__",
                "__class__",
                "x" * self.rng.choice([1, 100, 10_000]),
                "résumé",
                "\u0000",
                "$(id)",
            ]
        )
        params = self.rng.choice([ABSENT, {}, [], {"a": 1}])
        msg = self.request(name, params)
        return Frame("unknown method", self.text(msg), self.reply(msg["id"], {NO_METHOD}))

    # ----- parameters of every method ------------------------------------------------------

    def _choose(
        self, valid: list[Any], bad: list[Any], p_valid: float = 0.5
    ) -> tuple[Any, int | None]:
        if self.rng.random() < p_valid:
            return self.rng.choice(valid), None
        return self.rng.choice(bad), PARAMS

    def p_patient(self) -> tuple[Any, int | None]:
        r = self.rng.random()
        if r < 0.45:
            return self.rng.choice(FUZZ_PATIENTS), None
        if r < 0.6:
            return self.rng.choice([101, 5000, 999_999, 2**53]), UNKNOWN_PATIENT
        bad = [0, -1, -(2**63), 2**53 + 1, 2**63, 2**64 - 1, Raw("1" + "0" * 30)]
        bad += [1.5, -0.0, 1e308, Raw("1.0"), "1", "", None, ABSENT, True, [], {}, [1], {"id": 1}]
        return self.rng.choice(bad), PARAMS

    def p_max_tokens(self) -> tuple[Any, int | None]:
        bad = [0, -1, 1025, 2**31, 2**64 - 1, 1.0, "3", True, [], {}, 1e308]
        return self._choose([*SMALL_TOKENS, 1024, ABSENT, None], bad, 0.6)

    def p_query(self) -> tuple[Any, int | None]:
        valid = ["diabetes", "chest pain", "high blood pressure", "asthma inhaler", "éé"]
        valid += ["糖尿病", "a" * 500, "../../etc/passwd", "'; DROP TABLE patients; --"]
        valid += ["$(touch /tmp/clinsum-fuzz)", "nul\u0000byte"]
        bad = ["", "   ", "\n\t", "a" * 501, "b" * 5000, 1, None, ABSENT, True, [], {}, ["x"]]
        # Nothing to search for (one letter, stop-words, symbols): refused, not answered.
        bad += ["x", "é", "🙂" * 10, "%s%n%x", "the of and"]
        return self._choose(valid, bad, 0.55)

    def p_top_k(self) -> tuple[Any, int | None]:
        valid = [1, 2, 5, 50, self.rng.randint(1, 50), ABSENT, None]
        bad = [0, -1, 51, 2**63, 1e3, 5.0, "5", True, [], {}]
        return self._choose(valid, bad, 0.6)

    def p_filters(self) -> tuple[Any, int | None]:
        r = self.rng.random()
        if r < 0.3:
            return self.rng.choice([ABSENT, None, {}]), None
        if r < 0.4:
            return self.rng.choice(["x", 1, True, [], [{"min_age": 1}]]), PARAMS
        filters: dict[str, Any] = {}
        code = None
        specs = {
            "min_age": ([0, 18, 150, None], [-1, 151, 2**40, 1.5, "40", True, []]),
            "max_age": ([0, 65, 150, None], [-1, 151, 2**40, 1.5, "40", False, {}]),
            "gender": (["Male", "Female", "female", "X", "ü" * 20], ["", " ", "a" * 21, 1, True]),
            "min_risk": ([0, 1, 0.5, -0.0, 1e-300, None], [-0.01, 1.01, 1e308, "0.5", True, []]),
        }
        for key in self.rng.sample(sorted(specs), self.rng.randint(1, 4)):
            value, c = self._choose(*specs[key], p_valid=0.6)
            filters[key] = value
            code = code or c
        lo, hi = filters.get("min_age"), filters.get("max_age")
        if code is None and isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            code = PARAMS  # an empty age range is refused, not answered with nothing
        if self.rng.random() < 0.1:
            filters[self.rng.choice(["colour", "MIN_AGE", "", "__proto__"])] = 1
            code = PARAMS
        return filters, code

    def p_summary_id(self) -> tuple[Any, int | None, bool]:
        r = self.rng.random()
        if r < 0.3 and self.summary_ids:
            return self.rng.choice(self.summary_ids[-10:]), None, True
        if r < 0.6:
            unknown = [uuid.uuid4().hex, "../../etc/passwd", "/etc/passwd", "..\\..\\boot.ini"]
            unknown += ["$(id)", "`id`", "a", "%00", "f" * 64, "patient_summaries.csv"]
            return self.rng.choice(unknown), UNKNOWN_SUMMARY, False
        bad = ["", " ", "f" * 65, "x" * 10_000, 1, None, ABSENT, True, [], {}]
        return self.rng.choice(bad), PARAMS, False

    def p_force(self) -> tuple[Any, int | None]:
        return self._choose([True, False, None, ABSENT], ["true", 1, 0, [], {}], 0.7)

    def p_meta(self, uses_progress: bool) -> tuple[Any, int | None]:
        r = self.rng.random()
        if r < 0.8:
            return ABSENT, None
        if r < 0.9:
            return {"progressToken": self.rng.choice(["p-1", 7, "x" * 200])}, None
        if r < 0.95:  # _meta itself must be an object
            return self.rng.choice(["x", 1, True, [1]]), PARAMS
        token = self.rng.choice([[], {}, True, None, [1, [2]], {"a": 1}])
        if token is None:
            return {"progressToken": None}, None
        return {"progressToken": token}, PARAMS if uses_progress else None

    def tool_args(self, tool: str) -> tuple[dict[str, Any], int | None]:
        """Arguments for one tool and the error code they deserve (None: a result). A valid
        summarize asks for a few tokens only."""
        args: dict[str, Any] = {}
        codes: list[int | None] = []

        def put(name: str, value_code: tuple[Any, int | None]) -> None:
            value, code = value_code
            if value is not ABSENT:
                args[name] = value
            codes.append(code)

        if tool == "search":
            put("query", self.p_query())
            put("top_k", self.p_top_k())
            put("filters", self.p_filters())
        elif tool == "fetch":
            put("patient_id", self.p_patient())
        elif tool == "summarize":
            put("patient_id", self.p_patient())
            put("max_tokens", self.p_max_tokens())
        elif tool == "save_summary":
            sid, code, known = self.p_summary_id()
            put("summary_id", (sid, code))
            force = self.p_force()
            put("force", force)
            if known and force[1] is None and force[0] is not True and code is None:
                codes.append(UNSUPPORTED)  # maybe: an ungrounded summary needs force
        if self.rng.random() < 0.05:
            args[self.rng.choice(["extra", "patientId", "x" * 1000, "__class__"])] = 1
            codes.append(PARAMS)
        # Validation happens before anything else: any bad parameter gives -32602 first.
        real = [c for c in codes if c is not None]
        if PARAMS in real:
            return args, PARAMS
        if tool == "summarize" and (args.get("max_tokens") or 200) not in SMALL_TOKENS:
            args["max_tokens"] = self.rng.choice(SMALL_TOKENS)
        return args, (real[0] if real else None)

    def method_params(self) -> Frame:
        method = self.rng.choice(
            [
                "search",
                "search",
                "fetch",
                "summarize",
                "save_summary",
                "list_summaries",
                "ping",
                "initialize",
                "tools/list",
                "tools/call",
                "tools/call",
            ]
        )
        rid = self.rid()
        if method in ("search", "fetch", "summarize", "save_summary", "list_summaries"):
            args, code = self.tool_args(method)
            meta, meta_code = self.p_meta(method == "summarize")
            if meta is not ABSENT:
                args["_meta"] = meta
            code = PARAMS if PARAMS in (code, meta_code) else code
            if method == "list_summaries" and self.rng.random() < 0.2:
                args["junk"] = 1
                code = PARAMS
            if code is None:
                expect = self.reply(rid, result=True)
            elif code == UNSUPPORTED:
                expect = self.reply(rid, {UNSUPPORTED}, result=True)
            else:
                expect = self.reply(rid, {code})
            return Frame(method, self.text(self.request(method, args, rid)), expect)
        if method in ("ping", "tools/list"):
            params = self.rng.choice([ABSENT, {}, {"x": 1}, {"_meta": {}}, [], [1]])
            ok = not isinstance(params, list)
            expect = self.reply(rid, result=True) if ok else self.reply(rid, {PARAMS})
            return Frame(method, self.text(self.request(method, params, rid)), expect)
        if method == "initialize":
            version, code = self._choose(
                # No version at all: the original tool's clients; answered with 2024-11-05.
                ["2025-11-25", "2024-11-05", "2099-01-01", "", "x" * 1000, ABSENT],
                [None, 1, [], {}, True],
                0.7,
            )
            params = {} if version is ABSENT else {"protocolVersion": version}
            if self.rng.random() < 0.5:
                params["clientInfo"] = self.rng.choice(
                    [{"name": "fuzz"}, "x", [], {"name": 1}, {"name": "n" * 10_000}, None]
                )
            if self.rng.random() < 0.3:
                params["capabilities"] = self.rng.choice([{}, [], "x", {"a": {"b": 1}}])
            expect = self.reply(rid, result=True) if code is None else self.reply(rid, {code})
            return Frame(method, self.text(self.request(method, params, rid)), expect)
        # tools/call
        names = ["search", "fetch", "summarize", "save_summary", "list_summaries"]
        name, name_code = self._choose(
            names, ["drop_tables", "", "SEARCH", "../search", 1, None, ABSENT, [], {}, "x" * 5000]
        )
        params: dict[str, Any] = {}
        if name is not ABSENT:
            params["name"] = name
        tool_code: int | None = None
        r = self.rng.random()
        if r < 0.1:
            params["arguments"] = self.rng.choice(["x", 1, True, [], [1]])
            args_code: int | None = PARAMS
        elif r < 0.15:
            params["arguments"] = None
            args_code = None
            tool_code = PARAMS if name in ("fetch", "summarize", "save_summary", "search") else None
        else:
            args, tool_code = self.tool_args(name if isinstance(name, str) else "fetch")
            params["arguments"] = args
            args_code = None
        meta, meta_code = self.p_meta(name == "summarize")
        if meta is not ABSENT:
            params["_meta"] = meta
        msg = self.text(self.request("tools/call", params, rid))
        if name_code is not None or args_code is not None:
            return Frame("tools/call", msg, self.reply(rid, {PARAMS}))
        if meta is not ABSENT and not isinstance(meta, dict) and meta is not None:
            return Frame("tools/call", msg, self.reply(rid, {PARAMS}))  # _meta not an object
        if meta_code is not None:
            tool_code = PARAMS
        expect = self.reply(rid, result=True)
        expect.tool_error = None if tool_code == UNSUPPORTED else tool_code is not None
        return Frame("tools/call", msg, expect)

    def notification(self) -> Frame:
        method, params = self.rng.choice(
            [
                ("notifications/initialized", {}),
                ("notifications/initialized", [1]),
                ("notifications/cancelled", {"requestId": 999_999}),
                ("notifications/cancelled", {"requestId": [1, 2]}),
                ("notifications/cancelled", {"requestId": {"a": 1}}),
                ("notifications/cancelled", {"requestId": None, "reason": "x" * 1000}),
                ("notifications/cancelled", {}),
                ("notifications/cancelled", "x"),
                ("notifications/progress", {"progressToken": 1, "progress": 1}),
                ("stream_token", {"request_id": 1}),
                ("nothing/here", {}),
                ("search", {"query": "asthma"}),
                ("summarize", {"patient_id": 1}),
            ]
        )
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
        if not isinstance(params, dict | list):  # a bad envelope is an error even without id
            return Frame("notification, bad params", self.text(msg), self.reply(None, {INVALID}))
        if self.rng.random() < 0.15:
            msg["jsonrpc"] = "1.0"
            return Frame("notification, bad jsonrpc", self.text(msg), self.reply(None, {INVALID}))
        return Frame("notification", self.text(msg), Expect("none"))

    def batch(self) -> Frame:
        if self.rng.random() < 0.1:
            return Frame("empty batch", "[]", self.reply(None, {INVALID}))
        members: list[Any] = []
        expects: list[Expect] = []
        summarizing = 0
        for _ in range(self.rng.randint(1, 20)):
            r = self.rng.random()
            if r < 0.15:
                frame = self.notification()
            elif r < 0.35:
                frame = self.envelope()
            else:
                frame = self.method_params()
            if not isinstance(frame.data, str) or frame.expect.kind == "batch":
                continue
            obj = orjson.loads(frame.data)
            if isinstance(obj, dict) and obj.get("method") in ("summarize", "tools/call"):
                summarizing += 1
                if summarizing > 4:
                    continue
            members.append(Raw(frame.data))
            if frame.expect.kind != "none":
                e = frame.expect
                if isinstance(obj, dict) and obj.get("method") == "summarize":
                    e.codes = e.codes | {BUSY}
                expects.append(e)
        if not members:
            return self.batch()
        text = "[" + ",".join(m.text for m in members) + "]"
        if not expects:
            return Frame("batch of notifications", text, Expect("none"))
        return Frame("batch", text, Expect("batch", members=expects))

    def long_strings(self) -> Frame:
        rid = self.rid()
        n = self.rng.choice([100_000, 500_000])
        case = self.rng.choice(["query", "method", "key", "summary_id", "tool"])
        if case == "query":
            msg, code = self.request("search", {"query": "q" * n}, rid), PARAMS
        elif case == "method":
            msg, code = self.request("m" * n, {}, rid), NO_METHOD
        elif case == "key":
            msg, code = self.request("fetch", {"patient_id": 1, "k" * n: 1}, rid), PARAMS
        elif case == "summary_id":
            msg, code = self.request("save_summary", {"summary_id": "s" * n}, rid), PARAMS
        else:
            msg, code = self.request("tools/call", {"name": "t" * n}, rid), PARAMS
        return Frame(f"long {case}", self.text(msg), self.reply(rid, {code}))

    def fragments(self) -> Frame:
        frame = self.method_params()
        if frame.expect.kind != "reply" or not isinstance(frame.data, str):
            return frame
        if self.rng.random() < 0.5:
            text = frame.data
            cuts = sorted(self.rng.sample(range(1, max(2, len(text))), min(3, len(text) - 1)))
            parts = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
            return Frame("fragmented", [p for p in parts if p], frame.expect)
        # UTF-8 split in the middle of a character across two fragments: still valid text.
        rid = self.rid()
        data = encode(self.request("search", {"query": "é" * 40, "top_k": 1}, rid)).encode()
        i = data.index("é".encode()) + 1
        return Frame("split utf-8", [data[:i], data[i:]], self.reply(rid, result=True))

    # ----- frames that end the connection --------------------------------------------------

    def binary(self) -> Frame:
        data = self.rng.choice(
            [b'{"jsonrpc":"2.0","id":1,"method":"ping"}', bytes(self.rng.randbytes(64)), b""]
        )
        return Frame("binary", data, Expect("close", close=1003), binary=True)

    def bad_utf8(self) -> Frame:
        bad = self.rng.choice(
            [
                b"\xff",
                b"\xc0\xaf",
                b"\xed\xa0\x80",
                b"\xed\xbf\xbf",
                b"\xf4\x90\x80\x80",
                b"\xe2\x82",
            ]
        )
        head = b'{"jsonrpc":"2.0","id":1,"method":"search","params":{"query":"'
        data = self.rng.choice([bad, head + bad + b'"}}', self.rng.randbytes(32) + b"\xff"])
        return Frame("invalid utf-8", data, Expect("close", close=1007))

    def size_limit(self) -> Frame:
        rid = self.next_id = self.next_id + 1
        ping = f'{{"jsonrpc":"2.0","id":{rid},"method":"ping"}}'
        if self.rng.random() < 0.5:  # exactly the limit: still answered
            return Frame("exactly 1 MiB", ping.ljust(MAX_FRAME), self.reply(rid, result=True))
        over = ping.ljust(MAX_FRAME + self.rng.randint(1, 4096))
        return Frame("over 1 MiB", over, Expect("close", close=1009))

    def vanish(self) -> Frame:
        rid = self.next_id = self.next_id + 1
        msg = self.request("summarize", {"patient_id": self.rng.choice(FUZZ_PATIENTS)}, rid)
        return Frame("vanish mid-stream", encode(msg), Expect("none"), vanish=True)


# ----- the same frames as HTTP requests to the MCP Streamable HTTP face ----------------------

MCP_METHODS = ("initialize", "ping", "tools/list", "tools/call")
SDK_CODES = frozenset({PARSE, INVALID, NO_METHOD, PARAMS})  # the SDK's own envelope answers


@dataclass
class HttpCase:
    """One HTTP request and what the face owes it: a status in `statuses`; where the frame
    means the same over HTTP as over the WebSocket, `expect` too (the registry, and so the
    validation of every tool's arguments, is shared)."""

    label: str
    method: str
    path: str
    body: bytes
    headers: dict[str, str]  # on top of a valid session's headers; "" removes one
    statuses: frozenset[int]
    expect: Expect | None = None

    def preview(self, n: int = 160) -> str:
        text = f"{self.method} {self.path} {self.headers} {self.body!r}"
        return text if len(text) <= n else text[:n] + f"... ({len(self.body)} bytes)"


class HttpFuzzer:
    """`next()` gives the next request: most carry a `Fuzzer` frame as their body; the rest
    break the HTTP side (content type, Accept, session id, token, method, path, size)."""

    def __init__(self, seed: int, summary_ids: list[str]) -> None:
        self.frames = Fuzzer(seed, summary_ids)
        self.rng = self.frames.rng

    def next(self) -> HttpCase:
        if self.rng.random() < 0.8:
            return self.from_frame(self.frames.next())
        return self.http_level()

    def from_frame(self, frame: Frame) -> HttpCase:
        data = frame.data
        if isinstance(data, list):  # fragments: one body over HTTP
            data = "".join(data) if isinstance(data[0], str) else b"".join(data)  # type: ignore[arg-type]
        body = data.encode() if isinstance(data, str) else data
        e = frame.expect
        ok = frozenset({200, 202, 400})
        if len(body) > MAX_FRAME:
            return HttpCase(frame.label, "POST", "/mcp", body, {}, frozenset({413}))
        if e.kind == "reply" and e.codes == {PARSE}:
            return HttpCase(frame.label, "POST", "/mcp", body, {}, frozenset({400}), e)
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:  # binary or invalid UTF-8 frames: not JSON either
            return HttpCase(frame.label, "POST", "/mcp", body, {}, frozenset({400}))
        strong = (
            e.kind == "reply"
            and isinstance(obj, dict)
            and obj.get("method") == "tools/call"
            and e.tool_error is not None
            and isinstance(obj.get("params"), dict)
            and "_meta" not in obj["params"]
            and isinstance(obj.get("id"), int | str)
            and not isinstance(obj.get("id"), bool)
        )
        if strong:  # the shared validator answers as over the WebSocket
            return HttpCase(frame.label, "POST", "/mcp", body, {}, frozenset({200}), e)
        return HttpCase(frame.label, "POST", "/mcp", body, {}, ok)

    def http_level(self) -> HttpCase:
        ping = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})
        unknown = {"Mcp-Session-Id": "0" * 32}
        case = self.rng.choice(
            [
                ("wrong content type", "POST", "/mcp", ping, {"Content-Type": "text/plain"}, {415}),
                ("no content type", "POST", "/mcp", ping, {"Content-Type": ""}, {415}),
                ("no session id", "POST", "/mcp", ping, {"Mcp-Session-Id": ""}, {400}),
                ("unknown session", "POST", "/mcp", ping, {"Mcp-Session-Id": "f" * 32}, {404}),
                ("short session id", "POST", "/mcp", ping, {"Mcp-Session-Id": "x"}, {400, 404}),
                ("no token", "POST", "/mcp", ping, {"Authorization": ""}, {401}),
                ("wrong token", "POST", "/mcp", ping, {"Authorization": "Bearer x"}, {401}),
                ("evil origin", "POST", "/mcp", ping, {"Origin": "https://evil.example"}, {403}),
                ("rebinding host", "POST", "/mcp", ping, {"Host": "evil.example"}, {403}),
                ("accept json only", "POST", "/mcp", ping, {"Accept": "application/json"}, {406}),
                ("GET without SSE", "GET", "/mcp", b"", {"Accept": "application/json"}, {405, 406}),
                ("PUT", "PUT", "/mcp", ping, {}, {405}),
                ("unknown path", "POST", "/mcp/../../etc/passwd", ping, {}, {404}),
                ("unknown path", "GET", "/" + "x" * 2000, b"", {}, {404}),
                ("DELETE unknown session", "DELETE", "/mcp", b"", unknown, {404}),
                ("empty body", "POST", "/mcp", b"", {}, {400}),
            ]
        )
        label, method, path, body, headers, statuses = case
        return HttpCase(label, method, path, body, headers, frozenset(statuses))
