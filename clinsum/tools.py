"""The operations the service offers, defined once for every face: the registry `TOOLS`.

Each `Tool` carries its parameter specs (`params.Param`), from which come both the
validation of incoming params and the input schema MCP's `tools/list` publishes, and its
handler, whose return type (a `TypedDict` below) gives the output schema (`schemas.py`). The
plain JSON-RPC methods and MCP's `tools/call` run the very same handler, through `Tool.run`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated, Any, NotRequired, TypedDict

from . import grounding
from .app import App, Summary, fingerprint
from .backends.base import LLMError
from .digest import digest
from .errors import (
    BUSY,
    LLM_UNAVAILABLE,
    SAVE_FAILED,
    SEARCH_UNAVAILABLE,
    UNKNOWN_SUMMARY,
    UNSUPPORTED_CLAIMS,
)
from .events import NoEvents
from .jsonrpc import INVALID_PARAMS, Call, RPCError, invalid_params
from .params import Param, check_params
from .prompt import STYLES, build_messages, model_part_done, prefill
from .records import Patient
from .schemas import json_schema, returned
from .search import (
    MAX_QUERY_CHARS,
    MAX_TOP_K,
    Hit,
    SearchError,
    SearchUnavailable,
    unsearchable,
)
from .steering import steer
from .store import Draft, StoreError, Version

MAX_TOKENS_LIMIT = 1024
DEFAULT_MAX_TOKENS = 200
MAX_EDIT_CHARS = 5000  # an edited summary; a 4-visit summary is ~120 words, ~800 characters
MAX_PATIENT_ID = 2**53  # beyond this a JSON number is not an exact integer any more
CLINICIAN = "clinician"  # the `model` column of a summary a person wrote
LOG_EVERY_TOKENS = 10


PATIENT_ID = Param(
    "patient_id",
    "integer",
    "The patient's id, as shown in search results.",
    required=True,
    minimum=1,
    maximum=MAX_PATIENT_ID,
)
FILTERS = Param(
    "filters",
    "object",
    "Optional filters on the results.",
    properties=(
        Param("min_age", "integer", "Youngest age to include.", minimum=0, maximum=150),
        Param("max_age", "integer", "Oldest age to include.", minimum=0, maximum=150),
        Param("gender", "string", "Only this gender (Male or Female).", max_length=20),
        Param(
            "min_risk",
            "number",
            "Lowest risk score to include, on the data's own scale (0 to 1, or 0 to 10 for the "
            "original tool's files).",
            minimum=0,
            maximum=10,
        ),
    ),
)


SUMMARY_ID = Param(
    "summary_id",
    "string",
    "The summary_id returned by summarize.",
    required=True,
    max_length=64,
)
EDITED_TEXT = Param(
    "text",
    "string",
    "The clinician's edit of the summary, checked against the record like the generated "
    f"text (1 to {MAX_EDIT_CHARS} characters).",
    max_length=MAX_EDIT_CHARS,
    refine=lambda text: "must not contain NUL characters (\\u0000)" if "\0" in text else None,
)


# --- What each tool returns: the output schemas are read off these types -------------------
Style = Annotated[str, {"enum": list(STYLES)}]
Record = dict[str, Any]  # a `to_dict()` whose schema is left open: Patient, Digest, Grounding


class SearchResult(TypedDict):
    query: str
    corrected: NotRequired[str]  # the query as searched, when a word was respelled
    results: list[Annotated[dict[str, Any], Hit]]
    note: NotRequired[str]  # why there are no hits (NO_HITS)


class FetchResult(TypedDict):
    patient: Record


class DigestResult(TypedDict):
    digest: Record


class SummarizeResult(TypedDict):
    summary_id: str
    patient_id: int
    name: str
    summary: str
    backend: str
    model: str
    tokens: int
    ttft_ms: float
    tokens_per_s: float
    duration_ms: float
    generated_at: str
    style: Style
    grounding: Record
    digest: Record


class SaveResult(TypedDict):
    saved: bool
    patient_id: int
    name: str
    path: str
    version: int
    grounded: bool
    edited: bool


class CheckResult(TypedDict):
    grounding: Record


class SummariesResult(TypedDict):
    summaries: list[Record]  # the store's current rows


class HistoryResult(TypedDict):
    patient_id: int
    versions: list[Record]


ToolHandler = Callable[[App, Call, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    title: str
    description: str
    params: tuple[Param, ...]
    handler: ToolHandler
    streams: bool = False  # reports tokens through `call.events` while it runs

    def input_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {p.name: p.schema() for p in self.params},
            "required": [p.name for p in self.params if p.required],
            "additionalProperties": False,
        }

    def output_schema(self) -> dict[str, Any]:
        """Read off the type the handler returns (once: `tools/list` asks on every call)."""
        return _output_schema(self.handler)

    async def run(self, app: App, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        """Validate `params`, run the handler, and count the call in `app.metrics`.

        Every face ends here, so this is the one place requests are counted and timed.

        Raises:
            RPCError: bad params, or a failure the caller can act on (unknown patient, busy...).
            asyncio.CancelledError: the caller cancelled or went away.
        """
        start = time.perf_counter()
        outcome = "internal_error"
        try:
            result = await self.handler(app, call, check_params(self.params, params))
            outcome = "ok"
        except RPCError:
            outcome = "error"
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            app.metrics.requests.labels(self.name, outcome).inc()
        latency = app.metrics.latency(self.name)
        if latency is not None:
            latency.observe(time.perf_counter() - start)
        return result


@functools.cache
def _output_schema(handler: ToolHandler) -> dict[str, Any]:
    return json_schema(returned(handler))


async def search(app: App, call: Call, params: dict[str, Any]) -> SearchResult:
    try:
        found = await app.in_thread(
            call, app.index.find, params["query"], params["top_k"], params.get("filters")
        )
    except SearchUnavailable as exc:
        raise RPCError(SEARCH_UNAVAILABLE, f"Search unavailable: {exc}") from None
    except SearchError as exc:  # a combination the per-parameter checks cannot see
        raise RPCError(INVALID_PARAMS, f"Invalid params: {exc}") from None
    out: dict[str, Any] = {"query": params["query"], "results": [h.to_dict() for h in found.hits]}
    if found.corrected is not None:
        out["corrected"] = found.corrected  # "Showing results for ..."
    if not found.hits:
        out["note"] = NO_HITS
    return out


async def fetch(app: App, call: Call, params: dict[str, Any]) -> FetchResult:
    return {"patient": app.patient(params["patient_id"]).to_dict()}


async def digest_tool(app: App, call: Call, params: dict[str, Any]) -> DigestResult:
    # Pure and ~0.1 ms: no thread needed.
    return {"digest": digest(app.patient(params["patient_id"])).to_dict()}


async def summarize(app: App, call: Call, params: dict[str, Any]) -> SummarizeResult:
    patient = app.patient(params["patient_id"])
    key = id(call.session)
    running = app.summarizing.get(key, 0)
    if running >= app.max_inflight:
        raise RPCError(
            BUSY,
            f"Busy: this connection already has {running} summaries running "
            f"(limit {app.max_inflight}); wait for one to finish",
        )
    app.summarizing[key] = running + 1
    try:
        return await _generate(app, call, patient, params["max_tokens"])
    finally:
        app.summarizing[key] -= 1
        if not app.summarizing[key]:
            del app.summarizing[key]


async def _generate(app: App, call: Call, patient: Patient, max_tokens: int) -> SummarizeResult:
    backend = app.backend
    llm_log = logging.getLogger(backend.name.upper())
    events = call.events or NoEvents()
    start = time.perf_counter()
    first: float | None = None
    facts = digest(patient)
    style = app.style()
    head = prefill(patient, style, facts)
    pieces = [head]
    await events.token(0, head)
    count = 0

    def on_queued(position: int) -> None:
        # Called by the backend on the loop thread; the send must not hold up the backend.
        app.background(events.queued(position))

    llm_log.info("Starting streaming summary generation for %s...", patient.name)
    waiting = app.metrics.model_queue
    waiting.inc()
    try:
        stream = backend.stream(
            build_messages(patient, style, facts),
            head,
            max_tokens=max_tokens,
            on_queued=on_queued,
            steer=steer(patient, facts, style),
        )
        async with aclosing(stream):
            async for chunk in stream:
                if first is None:
                    first = time.perf_counter()
                    waiting.dec()
                    llm_log.info("Receiving streaming tokens...")
                count += 1
                app.metrics.tokens.inc()
                pieces.append(chunk)
                await events.token(count, chunk)
                if count % LOG_EVERY_TOKENS == 0 and llm_log.isEnabledFor(logging.INFO):
                    llm_log.info("Received %d tokens (~%d chars)...", count, sum(map(len, pieces)))
                if model_part_done(style, "".join(pieces[1:])):
                    break  # closing the stream stops the model
    except LLMError as exc:
        llm_log.error("generation failed for %s: %s", patient.name, exc)
        raise RPCError(LLM_UNAVAILABLE, f"LLM unavailable: {exc}") from None
    except asyncio.CancelledError:
        llm_log.info("Generation for %s cancelled after %d tokens", patient.name, count)
        raise
    finally:
        if first is None:  # never left the queue: failed, cancelled or an empty answer
            waiting.dec()
    end = time.perf_counter()
    text = "".join(pieces)
    gen_s = end - (first or end)
    rate = (count - 1) / gen_s if count > 1 and gen_s > 0 else 0.0
    llm_log.info("Streaming complete (%d tokens, %d chars, %.1f tok/s)", count, len(text), rate)
    # Off the event loop: a long summary takes 10-20 ms to check, and many summaries ending
    # together would otherwise hold up every other connection's frames (bench/results.md).
    check = await asyncio.to_thread(grounding.check, text, patient, app.known_names, facts)
    summary = Summary(
        summary_id=uuid.uuid4().hex,
        patient=patient,
        digest=facts,
        text=text,
        model=backend.model,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        grounded=check.ok,
        unsupported=[c.to_dict() for c in check.unsupported if c.blocking],
    )
    app.keep(summary)
    if app.drafts_shared:
        try:
            await app.store.put_draft(summary.draft())
        except StoreError as exc:  # it can still be saved here, once the store is back
            app.store_log.warning("draft %s kept by this server only: %s", summary.summary_id, exc)
    await app.audit(app.event(call, "generate", patient.patient_id, summary.summary_id))
    return {
        "summary_id": summary.summary_id,
        "patient_id": patient.patient_id,
        "name": patient.name,
        "summary": text,
        "backend": backend.name,
        "model": backend.model,
        "style": style,
        "tokens": count,
        "ttft_ms": round(((first or end) - start) * 1000, 2),
        "tokens_per_s": round(rate, 2),
        "duration_ms": round((end - start) * 1000, 2),
        "generated_at": summary.generated_at,
        "grounding": check.to_dict(),
        "digest": facts.to_dict(),
    }


async def _kept(app: App, call: Call, summary_id: str) -> Summary:
    """The draft `summary_id` names: from this server's memory, else from a store that shares
    drafts. Unknown, expired or generated from another record: -32002."""
    summary = app.summaries.get(summary_id)
    if summary is None and app.drafts_shared:
        try:
            async with app.limited(call):
                draft = await app.store.get_draft(summary_id)
        except StoreError as exc:
            raise RPCError(SAVE_FAILED, f"Store unavailable: {exc}") from None
        if draft is not None:
            summary = _from_draft(app, draft)
    if summary is None:
        where = (
            "in the summaries store"
            if app.drafts_shared
            else "in memory by the server that generated them"
        )
        raise RPCError(
            UNKNOWN_SUMMARY,
            f"Unknown summary id: {summary_id!r} (summaries are kept {where}; generate it again)",
        )
    age = time.time() - summary.created_at
    if age > app.draft_ttl_s:
        raise RPCError(
            UNKNOWN_SUMMARY,
            f"Summary id {summary_id!r} expired: it was generated {_duration(age)} ago and "
            f"summaries can be saved for {_duration(app.draft_ttl_s)} (--draft-ttl); "
            "generate it again",
        )
    return summary


def _from_draft(app: App, draft: Draft) -> Summary:
    patient = app.patients.get(draft.patient_id)
    facts = digest(patient) if patient is not None else None
    if patient is None or facts is None or fingerprint(facts) != draft.digest_sha256:
        raise RPCError(
            UNKNOWN_SUMMARY,
            f"Summary id {draft.summary_id!r} was generated from a record of patient "
            f"{draft.patient_id} that this server does not have (the patients files differ); "
            "generate it again here",
        )
    summary = Summary(
        summary_id=draft.summary_id,
        patient=patient,
        digest=facts,
        text=draft.text,
        model=draft.model,
        generated_at=draft.generated_at,
        grounded=draft.grounded,
        unsupported=draft.unsupported,
        created_at=draft.created_at,
    )
    app.keep(summary)
    return summary


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"


async def _recheck(app: App, call: Call, patient: Patient, text: str) -> grounding.Grounding:
    """The clinician's words are checked like the model's: same record, same digest."""
    return await app.in_thread(
        call, grounding.check, text, patient, app.known_names, digest(patient)
    )


async def check_summary(app: App, call: Call, params: dict[str, Any]) -> CheckResult:
    summary = await _kept(app, call, params["summary_id"])
    verdict = await _recheck(app, call, summary.patient, params["text"])
    await app.audit(
        replace(
            app.event(call, "check", summary.patient.patient_id, summary.summary_id),
            detail={"grounded": verdict.ok},
        )
    )
    return {"grounding": verdict.to_dict()}


async def save_summary(app: App, call: Call, params: dict[str, Any]) -> SaveResult:
    """A generated summary by `summary_id`, as generated or as edited in `text`; or, with
    `patient_id` and `text`, a clinician's own summary. Text that differs from what was
    generated is checked again; unsupported claims need `force` either way."""
    if "summary_id" in params:
        summary = await _kept(app, call, params["summary_id"])
        if params.get("patient_id", summary.patient.patient_id) != summary.patient.patient_id:
            raise invalid_params("patient_id", "is not the patient of that summary_id")
        p, model, generated_at = summary.patient, summary.model, summary.generated_at
        text, grounded, unsupported = summary.text, summary.grounded, summary.unsupported
    elif "patient_id" in params and "text" in params:
        summary = None
        p, model = app.patient(params["patient_id"]), CLINICIAN
        generated_at = datetime.now(UTC).isoformat(timespec="seconds")
        text, grounded, unsupported = "", False, []
    elif "patient_id" in params:
        raise invalid_params("text", "is required with patient_id (or give summary_id)")
    else:
        raise invalid_params("summary_id", "is required (or give patient_id and text)")
    edited = "text" in params and params["text"] != text
    if edited:
        text = params["text"]
        check = await _recheck(app, call, p, text)
        grounded = check.ok
        unsupported = [c.to_dict() for c in check.unsupported if c.blocking]
    if not grounded and not params["force"]:
        what = "Edited text" if edited else "Summary"
        raise RPCError(
            UNSUPPORTED_CLAIMS,
            f"{what} has {len(unsupported)} claim(s) the record does not support"
            f" ({_first_claim(unsupported)}); pass force=true to save it anyway",
            {"unsupported": unsupported},
        )
    sid = summary.summary_id if summary is not None else None
    version = Version(p.patient_id, p.name, text, model, generated_at, grounded, edited, sid)
    event = replace(
        app.event(call, "save", p.patient_id, sid), detail={"grounded": grounded, "edited": edited}
    )
    try:
        async with app.limited(call):
            number = await app.store.save(version, event)
    except StoreError as exc:
        app.store_log.error("save failed for patient %d: %s", p.patient_id, exc)
        raise RPCError(SAVE_FAILED, f"Save failed: {exc}") from None
    app.store_log.info(
        "Saved summary for patient %d (%s) to %s, version %d",
        p.patient_id,
        p.name,
        app.store.label,
        number,
    )
    return {
        "saved": True,
        "patient_id": p.patient_id,
        "name": p.name,
        "path": app.store.label,
        "version": number,
        "grounded": grounded,
        "edited": edited,
    }


def _first_claim(unsupported: list[dict[str, Any]]) -> str:
    """The first unsupported span and why, so the message alone says what to fix."""
    c = unsupported[0]
    more = f", and {len(unsupported) - 1} more" if len(unsupported) > 1 else ""
    return f"{c['text']!r} at {c['start']}-{c['end']}: {c['reason']}{more}"


async def list_summaries(app: App, call: Call, params: dict[str, Any]) -> SummariesResult:
    try:
        async with app.limited(call):
            return {"summaries": await app.store.current()}
    except StoreError as exc:
        raise RPCError(SAVE_FAILED, str(exc)) from None


async def summary_history(app: App, call: Call, params: dict[str, Any]) -> HistoryResult:
    patient = app.patient(params["patient_id"])
    try:
        async with app.limited(call):
            versions = await app.store.history(patient.patient_id)
    except StoreError as exc:
        raise RPCError(SAVE_FAILED, str(exc)) from None
    return {"patient_id": patient.patient_id, "versions": versions}


NO_HITS = (
    "No patient's record answers this query, or none within the filters: no phrase with these "
    "words, a synonym, something narrower, or a phrase close in meaning."
)
TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        Tool(
            "search",
            "Search patients",
            "Find patients by disease, symptom, medication or name. Returns only patients whose "
            "record answers the query (the same words, a synonym, something narrower, or a "
            "phrase close in meaning); each hit's `matched` names the record phrase and how it "
            "matched. A misspelled word no dictionary knows is read as the closest word of the "
            "records (`corrected` is then the query as searched, and `matched` says 'spelling "
            "of'); a correctly spelled word is never changed. No hits come with a `note` "
            "saying why.",
            (
                Param(
                    "query",
                    "string",
                    "A disease, symptom or phrase, e.g. 'diabetes' or 'shortness of breath'.",
                    required=True,
                    max_length=MAX_QUERY_CHARS,
                    refine=unsearchable,
                ),
                Param(
                    "top_k",
                    "integer",
                    "How many patients to return.",
                    default=5,
                    minimum=1,
                    maximum=MAX_TOP_K,
                ),
                FILTERS,
            ),
            search,
        ),
        Tool(
            "fetch",
            "Fetch a patient record",
            "Return a patient's whole record, with the visit history as a list.",
            (PATIENT_ID,),
            fetch,
        ),
        Tool(
            "digest",
            "Digest a patient's chart",
            "The record's clinical digest, computed without a model: current vitals with their "
            "screening category, trends from the earliest visit to now, medication changes "
            "since the latest visit, conditions added, and the latest visit.",
            (PATIENT_ID,),
            digest_tool,
        ),
        Tool(
            "summarize",
            "Summarize a patient",
            "Generate a 2-3 sentence clinical summary of the patient with the LLM, streamed as "
            "it is generated, and check it against the record. Returns a summary_id to save.",
            (
                PATIENT_ID,
                Param(
                    "max_tokens",
                    "integer",
                    "Upper bound on generated tokens.",
                    default=DEFAULT_MAX_TOKENS,
                    minimum=1,
                    maximum=MAX_TOKENS_LIMIT,
                ),
            ),
            summarize,
            streams=True,
        ),
        Tool(
            "save_summary",
            "Save a summary",
            "Save a finished summary as the patient's newest version (earlier versions are "
            "kept: see summary_history). With text, the clinician's edit (or, with patient_id "
            "instead of summary_id, their own summary) is saved verbatim after a new grounding "
            "check. Unsupported claims need force=true.",
            (
                replace(
                    SUMMARY_ID,
                    description="The summary_id returned by summarize (or give patient_id "
                    "and text to save a clinician's own summary).",
                    required=False,
                ),
                replace(
                    PATIENT_ID,
                    description="With text and no summary_id: whose summary the text is.",
                    required=False,
                ),
                EDITED_TEXT,
                Param(
                    "force",
                    "boolean",
                    "Save even if the grounding check found unsupported claims.",
                    default=False,
                ),
            ),
            save_summary,
        ),
        Tool(
            "check_summary",
            "Check an edited summary",
            "Check a clinician's edit of a generated summary against the patient's record, "
            "without saving it: the same verdict save_summary would give.",
            (SUMMARY_ID, replace(EDITED_TEXT, required=True)),
            check_summary,
        ),
        Tool(
            "list_summaries",
            "List saved summaries",
            "Return each patient's current saved summary (patient_summaries.csv's rows).",
            (),
            list_summaries,
        ),
        Tool(
            "summary_history",
            "A patient's saved summaries",
            "Every version of a patient's saved summary, oldest first: nothing saved is ever "
            "overwritten. Each has its version number, text, model, when it was generated and "
            "saved, grounded, edited, and the summary_id it came from (null: written by a "
            "clinician).",
            (PATIENT_ID,),
            summary_history,
        ),
    )
}
