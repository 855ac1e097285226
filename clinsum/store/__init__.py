"""Saved summaries: the `Store` protocol and its two implementations, chosen by `--store`.

- `csv` (the default): `patient_summaries.csv` and its history file (`csvfile.py`);
- `postgresql://USER@HOST:PORT/DB`: PostgreSQL, shared by replicas (`postgres.py`).

`python -m clinsum.store export --store URL --csv FILE` writes PostgreSQL's current
summaries as the CSV file the clients and the original tool read (`__main__.py`).
"""

from __future__ import annotations

from pathlib import Path

from .base import Draft, Event, Store, StoreError, Version
from .csvfile import COLUMNS, HISTORY_COLUMNS, CsvStore, SummaryStore, escape_cell, history_path

CSV = "csv"


def is_postgres_url(spec: str) -> bool:
    return spec.startswith(("postgresql://", "postgres://"))


def open_store(spec: str, summaries: Path, *, draft_ttl_s: float = 86400.0) -> Store:
    """The store `--store` names (not opened yet: `await store.open()`).

    Raises:
        StoreError: `spec` is neither `csv` nor a usable PostgreSQL URL.
    """
    if spec == CSV:
        return CsvStore(summaries)
    if is_postgres_url(spec):
        from .postgres import PostgresStore  # psycopg is imported only when used

        return PostgresStore(spec, draft_ttl_s=draft_ttl_s)
    raise StoreError(f"--store must be 'csv' or a URL postgresql://USER@HOST:PORT/DB, got {spec!r}")


__all__ = [
    "COLUMNS",
    "CSV",
    "HISTORY_COLUMNS",
    "CsvStore",
    "Draft",
    "Event",
    "Store",
    "StoreError",
    "SummaryStore",
    "Version",
    "escape_cell",
    "history_path",
    "is_postgres_url",
    "open_store",
]
