"""The original tool's four tools, as a table of aliases over `tools.TOOLS`.

Each alias names the canonical tool it runs, how the original's arguments are spelled in
ours, and how our result is written as the original's text. Renaming (`disease_keyword` ->
`query`, `summary` -> `text`) and reading a string of digits as a patient id are the only
coercions; `Tool.run` then validates as for every face, and errors come back as JSON-RPC
errors, with our parameter names spelled back as the original's.

Rule 1: nothing here checks a parameter, calls a handler or touches the store or the index.
Rule 2: the text formats live in `text.py`; this file only says which one each tool uses.

`install(dispatcher, app)` adds the aliases to a dispatcher's `tools/call`; with
`listing=True` its `tools/list` shows the original's four tools instead of ours (the
WebSocket path `/mcp`, where the original's clients connect).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..app import App
from ..events import Events, NoEvents
from ..jsonrpc import Call, Dispatcher, RPCError, invalid_params
from ..tools import TOOLS
from . import text

PATH = "/mcp"  # where the original tool served, and its clients connect

Render = Callable[[dict[str, Any], dict[str, Any], list[dict[str, Any]]], str]
Then = Callable[[dict[str, Any]], list[tuple[str, dict[str, Any]]]]


class FrameEvents:
    """The original's spelling of a token: a bare frame, not JSON-RPC, with the number of
    characters streamed so far (this token included). Queue positions are not sent: its
    clients take any other frame for the reply."""

    def __init__(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self.send = send
        self.position = 0

    async def token(self, index: int, text: str) -> None:
        self.position += len(text)
        await self.send({"type": "stream_token", "token": text, "position": self.position})

    async def queued(self, position: int) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Alias:
    """One of the original's tools: which canonical tool runs it and how its text reads."""

    tool: str  # the name in TOOLS
    description: str
    arguments: Mapping[str, str]  # the original's argument -> its description (all required)
    render: Render  # (canonical params, result, follow-up results) -> the original's text
    renames: Mapping[str, str] = field(default_factory=dict)  # original name -> canonical
    fixed: Mapping[str, Any] = field(default_factory=dict)  # canonical params it never sent
    then: Then = lambda result: []  # canonical calls the text also needs, from the result
    streams: bool = False  # tokens go out as the original's frames

    def translate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The original's arguments as canonical params: renamed, "11" read as 11."""
        params = dict(self.fixed)
        for key, value in arguments.items():
            name = self.renames.get(key, key)
            if name == "patient_id" and isinstance(value, str) and _digits(value):
                value = int(value)
            params[name] = value
        return params

    def input_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                name: {"type": "string", "description": description}
                for name, description in self.arguments.items()
            },
            "required": list(self.arguments),
        }

    async def run(self, app: App, call: Call, arguments: Mapping[str, Any]) -> str:
        params = self.translate(arguments)
        send = call.session.send_frame
        events: Events = FrameEvents(send) if self.streams and send else NoEvents()
        call.events = events
        try:
            result = await TOOLS[self.tool].run(app, call, params)
            more = [await TOOLS[name].run(app, call, p) for name, p in self.then(result)]
        except RPCError as exc:
            raise self._respell(exc) from None
        return self.render(params, result, more)

    def _respell(self, exc: RPCError) -> RPCError:
        """Our parameter names in an error, written as the original's."""
        message, data = exc.message, exc.data
        for original, canonical in self.renames.items():
            message = message.replace(f"'{canonical}'", f"'{original}'")
            if isinstance(data, dict) and data.get("param") == canonical:
                data = {**data, "param": original}
        return RPCError(exc.code, message, data)


def _digits(value: str) -> bool:
    return value.strip().isascii() and value.strip().isdigit()


def _saved_summary(rows: list[dict[str, Any]], patient_id: int) -> str:
    return next((r["summary"] for r in rows if r["patient_id"] == str(patient_id)), "")


_PATIENT_ID = "The patient's id, as shown in search results (a string of digits or a number)."

ALIASES: dict[str, Alias] = {
    "search_patients_by_disease": Alias(
        "search",
        "Search for patients by disease, symptom or medication (the 5 best matches, as text).",
        {"disease_keyword": "Disease name or symptoms, e.g. 'diabetes', 'chest pain'."},
        lambda params, result, fetched: text.search(
            result["query"], [f["patient"] for f in fetched]
        ),
        renames={"disease_keyword": "query"},
        fixed={"top_k": text.MAX_SEARCH_LINES},
        # The text shows each patient's symptoms, which a search hit does not carry.
        then=lambda result: [("fetch", {"patient_id": h["patient_id"]}) for h in result["results"]],
    ),
    "get_patient_summary": Alias(
        "fetch",
        "A patient's saved summary, or that there is none yet.",
        {"patient_id": _PATIENT_ID},
        lambda params, result, rows: text.patient_summary(
            result["patient"]["patient_id"],
            result["patient"]["name"],
            _saved_summary(rows[0]["summaries"], result["patient"]["patient_id"]),
        ),
        then=lambda result: [("list_summaries", {})],
    ),
    "generate_summary": Alias(
        "summarize",
        "Write a clinical summary of a patient with the LLM; tokens are streamed as "
        '{"type": "stream_token"} frames.',
        {"patient_id": _PATIENT_ID},
        lambda params, result, _: text.generated(
            result["name"], result["patient_id"], result["summary"]
        ),
        streams=True,
    ),
    "update_patient_summary": Alias(
        "save_summary",
        "Save a clinician's summary text for a patient, as written (it is stored with its "
        "grounding verdict).",
        {"patient_id": _PATIENT_ID, "summary": "The summary text to save."},
        lambda params, result, _: text.saved(result["patient_id"], result["name"], params["text"]),
        renames={"summary": "text"},
        # The original saved whatever the clinician wrote: the verdict is recorded, not enforced.
        fixed={"force": True},
    ),
}


def install(dispatcher: Dispatcher, app: App, *, listing: bool = False) -> Dispatcher:
    """Let `tools/call` run the original's tools too; with `listing`, list only those.

    The canonical tools stay callable either way: the path only picks what is listed.
    """
    canonical_call = dispatcher.methods["tools/call"]

    async def tools_call(call: Call, params: dict[str, Any]) -> dict[str, Any]:
        name = params.get("name")
        alias = ALIASES.get(name) if isinstance(name, str) else None
        if alias is None:
            return await canonical_call(call, params)
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise invalid_params("arguments", "must be an object")
        result = await alias.run(app, call, arguments)
        return {"content": [{"type": "text", "text": result}], "isError": False}

    async def tools_list(call: Call, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "tools": [
                {"name": name, "description": a.description, "inputSchema": a.input_schema()}
                for name, a in ALIASES.items()
            ]
        }

    dispatcher.methods["tools/call"] = tools_call
    if listing:
        dispatcher.methods["tools/list"] = tools_list
    return dispatcher
