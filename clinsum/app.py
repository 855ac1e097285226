"""`App`: everything a request may touch (the records, the index, the model, the store), and
the summaries it has generated, kept until saved.

Tools (`tools.py`) receive the `App`; faces serve it, or the future of it while it loads
(`AppSource`). It is built once, by the composition root (`compose.build_app`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from .backends.base import Backend
from .digest import Digest
from .errors import UNKNOWN_PATIENT
from .jsonrpc import Call, RPCError
from .metrics import Metrics
from .prompt import default_style
from .records import Patient, Records
from .search import PatientIndex
from .store import CsvStore, Draft, Event, Store, StoreError, SummaryStore

DEFAULT_DRAFT_TTL_S = 24 * 3600.0  # how long a summary_id can be saved (--draft-ttl)
THREADS_PER_CONNECTION = 2  # searches and saves one connection may run in threads at once


@dataclass(slots=True)
class Summary:
    """A finished summary, the only thing `save_summary` can save."""

    summary_id: str
    patient: Patient
    digest: Digest
    text: str
    model: str
    generated_at: str
    grounded: bool
    unsupported: list[dict[str, Any]]
    created_at: float = field(default_factory=time.time)  # seconds since the epoch

    def draft(self) -> Draft:
        """What a store that shares drafts keeps of it."""
        return Draft(
            summary_id=self.summary_id,
            patient_id=self.patient.patient_id,
            text=self.text,
            model=self.model,
            generated_at=self.generated_at,
            grounded=self.grounded,
            unsupported=self.unsupported,
            digest_sha256=fingerprint(self.digest),
            created_at=self.created_at,
        )


def fingerprint(facts: Digest) -> str:
    """The digest's sha256: a draft saved on another server must match that server's record."""
    return hashlib.sha256(orjson.dumps(facts.to_dict(), option=orjson.OPT_SORT_KEYS)).hexdigest()


STORE_LOGS = {"csv": "CSV", "postgresql": "PostgreSQL"}


@dataclass
class App:
    """Everything a request may touch: the records, the index, the model and the store."""

    patients: Mapping[int, Patient]  # `Records` once built: decoded one patient at a time
    index: PatientIndex
    backend: Backend
    store: Store  # a bare SummaryStore (tests, older callers) is wrapped in a CsvStore
    max_inflight: int = 4
    summary_style: str | None = None  # one of prompt.STYLES; None: the backend's default
    summaries: OrderedDict[str, Summary] = field(default_factory=OrderedDict)
    known_names: tuple[str, ...] = ()
    max_kept_summaries: int = 1000
    metrics: Metrics = field(default_factory=Metrics)  # what /metrics reports
    summarizing: dict[int, int] = field(default_factory=dict)  # id(session) -> running count
    _background: set[asyncio.Task[Any]] = field(default_factory=set)
    _threads: dict[int, list[Any]] = field(default_factory=dict)  # id(session) -> [sem, users]
    draft_ttl_s: float = DEFAULT_DRAFT_TTL_S
    token_id: str | None = None  # the audit trail's name for the --auth-token, if any
    drafts_shared: bool = False  # read from the store once: unknown ids never reach a store

    def __post_init__(self) -> None:
        self.patients = Records.of(self.patients)
        self.known_names = tuple(self.patients.names)
        if isinstance(self.store, SummaryStore):
            self.store = CsvStore(self.store)
        self.drafts_shared = self.store.shares_drafts
        self.store_log = logging.getLogger(STORE_LOGS.get(self.store.kind, "Store"))

    def patient(self, patient_id: int) -> Patient:
        try:
            return self.patients[patient_id]
        except KeyError:
            raise RPCError(
                UNKNOWN_PATIENT, f"Unknown patient: no patient with id {patient_id}"
            ) from None

    def style(self) -> str:
        return self.summary_style or default_style(self.backend.name)

    def background(self, coro: Awaitable[Any]) -> None:
        """Run a fire-and-forget send, keeping a reference so the task is not collected."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def in_thread(self, call: Call, fn: Callable[..., Any], *args: Any) -> Any:
        """`asyncio.to_thread`, at most THREADS_PER_CONNECTION at once per connection.

        The thread pool is shared: without this, one client's batch of thousands of
        searches (one 1 MiB frame) queues ahead of every other client's search for minutes.
        """
        async with self.limited(call):
            return await asyncio.to_thread(fn, *args)

    @asynccontextmanager
    async def limited(self, call: Call) -> AsyncIterator[None]:
        """One of the connection's THREADS_PER_CONNECTION slots (threads, store calls)."""
        key = id(call.session)
        slot = self._threads.setdefault(key, [asyncio.Semaphore(THREADS_PER_CONNECTION), 0])
        slot[1] += 1
        try:
            async with slot[0]:
                yield
        finally:
            slot[1] -= 1
            if not slot[1]:
                del self._threads[key]

    def event(self, call: Call, action: str, patient_id: int, summary_id: str | None) -> Event:
        return Event(action, patient_id, summary_id, call.session.peer, self.token_id)

    async def audit(self, event: Event) -> None:
        """Record a generate or check; a store that fails is logged, never the caller's error
        (summaries go on while the store is away; a save's event is written with it)."""
        try:
            await self.store.audit(event)
        except StoreError as exc:
            self.store_log.warning("audit of %s not recorded: %s", event.action, exc)

    def keep(self, summary: Summary) -> None:
        self.summaries[summary.summary_id] = summary
        while len(self.summaries) > self.max_kept_summaries:
            self.summaries.popitem(last=False)


# A face that starts before loading finishes (stdio answers `initialize` at once; the HTTP
# face serves /healthz with 503 meanwhile) holds the app as a future of it.
AppSource = App | asyncio.Future[App]


def loaded(source: AppSource) -> App | None:
    """The app if it has finished loading, else None (still loading, or failed)."""
    if isinstance(source, App):
        return source
    if source.done() and not source.cancelled() and source.exception() is None:
        return source.result()
    return None


def on_loaded(source: AppSource, fn: Callable[[App], None]) -> None:
    """Call `fn(app)` once the app has loaded (now, if it has); never if loading fails."""
    if isinstance(source, App):
        fn(source)
        return

    def done(future: asyncio.Future[App]) -> None:
        app = loaded(future)
        if app is not None:
            fn(app)

    source.add_done_callback(done)


async def wait_loaded(source: AppSource) -> App:
    """The app, once loaded.

    Raises:
        StartupError: loading failed; the message says what to change.
    """
    if isinstance(source, App):
        return source
    # shield: a cancelled request must not cancel the loading every request waits for.
    return await asyncio.shield(source)


__all__ = ["App", "AppSource", "Summary", "fingerprint", "loaded", "on_loaded", "wait_loaded"]
