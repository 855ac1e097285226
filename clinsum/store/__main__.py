"""`python -m clinsum.store export --store URL --csv FILE`: PostgreSQL's current summaries as
the CSV file the clients and the original tool read (one row per patient, its columns).

Exit status 0 when written, 2 with one line saying why when not.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from ..config import check_store
from . import StoreError, is_postgres_url
from .csvfile import write_current


async def export(url: str, csv_path: Path) -> int:
    """Write the current summaries at `url` to `csv_path`; returns how many rows.

    Raises:
        StoreError: the database or the file cannot be used; it says which and why.
    """
    from .postgres import PostgresStore

    store = PostgresStore(url)
    await store.open(migrate=False)
    try:
        rows = await store.current()
    finally:
        await store.close()
    await asyncio.to_thread(write_current, csv_path, rows)
    return len(rows)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clinsum.store")
    sub = p.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="write the current summaries as patient_summaries.csv")
    ex.add_argument("--store", required=True, help="postgresql://USER@HOST:PORT/DB")
    ex.add_argument("--csv", required=True, type=Path, help="the CSV file to write")
    a = p.parse_args(argv)
    problem = check_store(a.store)
    if problem is None and not is_postgres_url(a.store):
        problem = "export reads a PostgreSQL store: give its postgresql:// URL"
    if problem:
        p.error(f"--store: {problem}")
    try:
        n = asyncio.run(export(a.store, a.csv))
    except StoreError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n} current summaries to {a.csv}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
