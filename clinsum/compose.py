"""The composition root: loads the records, the index, the model and the store once.

Every face serves the same `App`; none of them builds its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from contextlib import suppress

from . import recordcache
from .app import App
from .backends import Backend, LLMError, create_backend
from .config import Config
from .errors import StartupError
from .prompt import build_messages, prefill
from .records import RecordError
from .search import PatientIndex, SearchError
from .steering import steer
from .store import StoreError, open_store

server_log = logging.getLogger("Server")


async def build_app(config: Config) -> App:
    """Load the records, open the summaries store, start the model, open the index.

    The embedded model loads in processes of its own while the index opens here; summaries
    wait in its queue until it is ready, and everything else is served at once.
    """
    if config.data_note:
        server_log.info("%s", config.data_note)
    try:
        loaded = await asyncio.to_thread(recordcache.load, config.data)
    except RecordError as exc:
        raise StartupError(str(exc)) from None
    patients = loaded.patients
    server_log.info(
        "Loaded %d patients from %s (%s; scores on a 0-%g scale%s)",
        len(patients),
        config.data,
        loaded.kind,
        loaded.scale,
        ", since some are above 1" if loaded.scale == 10 else "",
    )
    for note in loaded.notes:
        server_log.info("%s: %s", config.data, note)
    # Before the index and the model: a store that cannot be used fails the start at once.
    try:
        store = open_store(config.store, config.summaries, draft_ttl_s=config.draft_ttl_s)
        await store.open()
    except StoreError as exc:
        raise StartupError(f"cannot use the summaries store: {exc}") from None
    server_log.info("Summaries store: %s", store.label)

    async def open_index() -> PatientIndex:
        index = await asyncio.to_thread(
            PatientIndex.open,
            patients,
            config.data,
            chroma_url=config.chroma_url,
            show_progress=config.show_progress,
        )
        # torch sets itself up on the first query (tens of ms): before anyone waits for it.
        with suppress(SearchError):
            await asyncio.to_thread(index.search, "warm-up", 1)
        return index

    async def open_backend() -> tuple[Backend, str]:
        # The embedded model loads in its own processes: it returns at once, and summaries
        # wait in its queue (hearing their place) until a process is ready.
        first = patients.at(0) if len(patients) else None
        style = config.summary_style or "strict"  # the embedded backend's default
        return await create_backend(
            config.backend,
            model=config.model,
            model_path=config.model_path,
            ollama_host=config.ollama_host,
            llm_url=config.llm_url,
            api_key=config.api_key,
            workers=config.model_workers,
            warm_up=(
                (build_messages(first, style), prefill(first, style), steer(first, style=style))
                if first
                else None
            ),
            timeout=config.llm_timeout,
        )

    try:
        backend, reason = await open_backend()
    except LLMError as exc:
        await store.close()
        raise StartupError(str(exc)) from None
    server_log.info("LLM backend: %s (model %s): %s", backend.name, backend.model, reason)
    try:
        index = await open_index()
    except SearchError as exc:
        await backend.aclose()
        await store.close()
        raise StartupError(str(exc)) from None
    except BaseException:  # cancelled (SIGTERM while loading): no model process outlives us
        await backend.aclose()
        await store.close()
        raise
    return App(
        patients,
        index,
        backend,
        store,
        max_inflight=config.max_inflight,
        summary_style=config.summary_style,
        draft_ttl_s=config.draft_ttl_s,
        token_id=token_id(config.auth_token),
    )


def token_id(token: str | None) -> str | None:
    """How the audit trail names the token a caller presented: a fingerprint, never the token."""
    if token is None:
        return None
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:12]


__all__ = ["build_app", "token_id"]
