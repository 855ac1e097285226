"""The PostgreSQL store: drafts, versions and the audit trail, shared by every replica.

`--store postgresql://USER@HOST:PORT/DB`. The password comes from `$PGPASSWORD` or a
`.pgpass` file (libpq reads both); a URL holding one is refused by `config.check_store`, so
no password is ever in a log line or an error. psycopg 3 with psycopg_pool's async pool.

- *Schema.* Created or migrated at start-up inside one transaction holding an advisory lock,
  so two replicas starting at the same moment run each migration once: the second waits,
  then finds it done. `clinsum_schema` records the versions applied.
- *Drafts.* A generated summary is stored under its `summary_id`, so `check_summary` and
  `save_summary` work on any replica; the tools refuse one older than `--draft-ttl`.
- *Versions.* Each save inserts the patient's next version, numbered under a per-patient
  advisory lock, so versions follow the order of the commits: the current summary (the
  highest version) is the last save acknowledged. A trigger refuses UPDATE, DELETE and
  TRUNCATE on `summary_versions` and `audit`: nothing is changed in place or deleted.
- *Audit.* A save's event is inserted in the save's own transaction; generate and check
  events are inserted on their own (`App.audit` logs, and does not fail, when that fails).
- *Away.* While PostgreSQL is unreachable each call fails after `TIMEOUT_S` with a
  `StoreError` naming the store (the tools answer -32007); the pool checks a connection
  before lending it and opens new ones once the server is back, with no restart.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import astuple
from typing import Any, TypeVar

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .base import Draft, Event, StoreError, Version

log = logging.getLogger("PostgreSQL")

TIMEOUT_S = 3.0  # how long a call waits for a connection before it fails
CONNECT_TIMEOUT_S = 3  # libpq's connect_timeout: whole seconds
POOL_MAX = 8
LOCK_NAMESPACE = 0x636C73  # advisory locks: (LOCK_NAMESPACE, 0) migrations,
PATIENT_LOCKS = LOCK_NAMESPACE + 1  # (PATIENT_LOCKS, hashtext(patient_id)) one patient's saves
TABLES = ("drafts", "summary_versions", "audit")

_APPEND_ONLY = """
CREATE FUNCTION clinsum_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'clinsum: % is append-only: rows are never updated or deleted',
        TG_TABLE_NAME;
END $$;
"""

# Each migration runs once, in order, in the start-up transaction. Never edit one that has
# shipped: add the next.
MIGRATIONS: tuple[str, ...] = (
    _APPEND_ONLY
    + """
CREATE TABLE drafts (
    summary_id    text PRIMARY KEY,
    patient_id    bigint NOT NULL,
    text          text NOT NULL,
    model         text NOT NULL,
    generated_at  text NOT NULL,
    grounded      boolean NOT NULL,
    unsupported   jsonb NOT NULL,
    digest_sha256 text NOT NULL,
    created_at    timestamptz NOT NULL
);
CREATE TABLE summary_versions (
    id            bigserial PRIMARY KEY,
    patient_id    bigint NOT NULL,
    version       integer NOT NULL,
    name          text NOT NULL,
    text          text NOT NULL,
    model         text NOT NULL,
    generated_at  text NOT NULL,
    saved_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    grounded      boolean NOT NULL,
    edited        boolean NOT NULL,
    summary_id    text,
    UNIQUE (patient_id, version)
);
CREATE TABLE audit (
    id            bigserial PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    action        text NOT NULL CHECK (action IN ('generate', 'check', 'save')),
    patient_id    bigint NOT NULL,
    summary_id    text,
    version       integer,
    client        text NOT NULL,
    token_id      text,
    detail        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_patient ON audit (patient_id, at);
CREATE TRIGGER summary_versions_append_only BEFORE UPDATE OR DELETE ON summary_versions
    FOR EACH ROW EXECUTE FUNCTION clinsum_append_only();
CREATE TRIGGER summary_versions_no_truncate BEFORE TRUNCATE ON summary_versions
    FOR EACH STATEMENT EXECUTE FUNCTION clinsum_append_only();
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION clinsum_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION clinsum_append_only();
""",
)

_CURRENT = """
SELECT v.patient_id, v.name, v.text, v.model, v.generated_at, v.grounded, v.edited
FROM summary_versions v
JOIN (SELECT patient_id, max(version) AS version, min(id) AS first
      FROM summary_versions GROUP BY patient_id) c USING (patient_id, version)
ORDER BY c.first
"""

T = TypeVar("T")


def _words(exc: BaseException) -> str:
    """libpq's message on one line (it spreads hints over several)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


class PostgresStore:
    kind = "postgresql"
    shares_drafts = True

    def __init__(self, url: str, *, draft_ttl_s: float = 86400.0) -> None:
        self.url = url
        self.label = f"PostgreSQL at {url}"
        self.draft_ttl_s = draft_ttl_s
        self._kwargs: dict[str, Any] = {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "application_name": "clinsum",
        }
        self.pool: AsyncConnectionPool | None = None

    async def open(self, migrate: bool = True) -> None:
        """Connect, create or migrate the schema, check the rights, then open the pool.

        Raises:
            StoreError: unreachable, refused (password, rights) or a newer schema; it says which.
        """
        try:
            conn = await psycopg.AsyncConnection.connect(self.url, **self._kwargs)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {self.label}: {_words(exc)}") from None
        try:
            async with conn:
                if migrate:  # a server; `export` only reads, with whatever rights it has
                    await self._migrate(conn)
                    await self._check_rights(conn)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise StoreError(
                f"{self.label}: user lacks the rights the summaries need: {_words(exc)}. "
                "Run the server once as the database's owner (it creates the tables), then "
                "GRANT SELECT, INSERT ON clinsum_schema, drafts, summary_versions, audit and "
                "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public to this user"
            ) from None
        except psycopg.Error as exc:
            raise StoreError(f"{self.label}: cannot set up the tables: {_words(exc)}") from None
        self.pool = AsyncConnectionPool(
            self.url,
            kwargs=self._kwargs,
            min_size=1,
            max_size=POOL_MAX,
            open=False,
            check=AsyncConnectionPool.check_connection,
            timeout=TIMEOUT_S,
            name="clinsum",
        )
        try:
            await self.pool.open(wait=True, timeout=TIMEOUT_S * 3)
        except PoolTimeout:
            await self.pool.close()
            raise StoreError(f"{self.label} stopped answering during start-up") from None

    async def _migrate(self, conn: psycopg.AsyncConnection[Any]) -> None:
        async with conn.transaction():
            # Held to the end of the transaction: a second replica starting now waits here.
            await conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_NAMESPACE,))
            cur = await conn.execute("SELECT to_regclass('clinsum_schema') IS NOT NULL")
            row = await cur.fetchone()
            if not (row and row[0]):  # a user granted only SELECT and INSERT never runs DDL
                await conn.execute(
                    "CREATE TABLE clinsum_schema ("
                    " version integer PRIMARY KEY,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
            cur = await conn.execute("SELECT coalesce(max(version), 0) FROM clinsum_schema")
            row = await cur.fetchone()
            have = row[0] if row else 0
            if have > len(MIGRATIONS):
                raise StoreError(
                    f"{self.label} has schema version {have}, newer than this server's "
                    f"({len(MIGRATIONS)}): upgrade this server"
                )
            for number in range(have + 1, len(MIGRATIONS) + 1):
                await conn.execute(MIGRATIONS[number - 1].encode())
                await conn.execute("INSERT INTO clinsum_schema (version) VALUES (%s)", (number,))
                log.info("%s: schema migrated to version %d", self.label, number)

    async def _check_rights(self, conn: psycopg.AsyncConnection[Any]) -> None:
        for table in TABLES:
            cur = await conn.execute(
                "SELECT has_table_privilege(%s, 'SELECT') AND has_table_privilege(%s, 'INSERT')",
                (table, table),
            )
            row = await cur.fetchone()
            if not row or not row[0]:
                raise psycopg.errors.InsufficientPrivilege(f"no SELECT and INSERT on {table}")

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close(timeout=1.0)

    async def _run(
        self, what: str, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]
    ) -> T:
        """`fn` on a pooled connection, in one transaction; any failure as a StoreError."""
        if self.pool is None:
            raise StoreError(f"{self.label} is not open")
        try:
            async with self.pool.connection() as conn:
                return await fn(conn)
        except PoolTimeout:
            raise StoreError(
                f"{self.label} is unavailable ({what}: no connection within {TIMEOUT_S:g} s)"
            ) from None
        except psycopg.Error as exc:
            raise StoreError(f"{self.label}: {what} failed: {_words(exc)}") from None

    async def put_draft(self, draft: Draft) -> None:
        d = draft

        async def put(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(
                "INSERT INTO drafts (summary_id, patient_id, text, model, generated_at, "
                "grounded, unsupported, digest_sha256, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, to_timestamp(%s)) "
                "ON CONFLICT (summary_id) DO NOTHING",
                (
                    d.summary_id,
                    d.patient_id,
                    d.text,
                    d.model,
                    d.generated_at,
                    d.grounded,
                    Jsonb(d.unsupported),
                    d.digest_sha256,
                    d.created_at,
                ),
            )

        await self._run("storing the draft", put)

    async def get_draft(self, summary_id: str) -> Draft | None:
        async def get(conn: psycopg.AsyncConnection[Any]) -> Draft | None:
            cur = await conn.execute(
                "SELECT summary_id, patient_id, text, model, generated_at, grounded, "
                "unsupported, digest_sha256, extract(epoch FROM created_at)::float8 "
                "FROM drafts WHERE summary_id = %s",
                (summary_id,),
            )
            row = await cur.fetchone()
            return Draft(*row) if row else None

        return await self._run("reading the draft", get)

    async def save(self, version: Version, event: Event | None = None) -> int:
        v = version

        async def save(conn: psycopg.AsyncConnection[Any]) -> int:
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                    (PATIENT_LOCKS, str(v.patient_id)),
                )
                cur = await conn.execute(
                    "INSERT INTO summary_versions (patient_id, version, name, text, model, "
                    "generated_at, grounded, edited, summary_id) "
                    "SELECT %s, coalesce(max(version), 0) + 1, %s, %s, %s, %s, %s, %s, %s "
                    "FROM summary_versions WHERE patient_id = %s RETURNING version",
                    (*astuple(v), v.patient_id),  # the columns above, in Version's order
                )
                row = await cur.fetchone()
                assert row is not None
                number = int(row[0])
                if event is not None:
                    await self._insert_event(conn, event, number)
            return number

        return await self._run("saving the summary", save)

    async def current(self) -> list[dict[str, str]]:
        async def current(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, str]]:
            cur = await conn.execute(_CURRENT)
            return [
                {
                    "patient_id": str(pid),
                    "name": name,
                    "summary": text,
                    "model": model,
                    "generated_at": generated_at,
                    "grounded": "true" if grounded else "false",
                    "edited": "true" if edited else "false",
                }
                for pid, name, text, model, generated_at, grounded, edited in await cur.fetchall()
            ]

        return await self._run("reading the summaries", current)

    async def history(self, patient_id: int) -> list[dict[str, Any]]:
        async def history(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
            cur = await conn.execute(
                "SELECT version, patient_id, name, text, model, generated_at, grounded, "
                "edited, summary_id, saved_at FROM summary_versions "
                "WHERE patient_id = %s ORDER BY version",
                (patient_id,),
            )
            return [
                Version(*row[1:9]).to_dict(version=row[0], saved_at=row[9].isoformat())
                for row in await cur.fetchall()
            ]

        return await self._run("reading the history", history)

    async def audit(self, event: Event) -> None:
        async def insert(conn: psycopg.AsyncConnection[Any]) -> None:
            await self._insert_event(conn, event, None)

        await self._run(f"recording a {event.action} in the audit trail", insert)

    @staticmethod
    async def _insert_event(
        conn: psycopg.AsyncConnection[Any], e: Event, version: int | None
    ) -> None:
        await conn.execute(
            "INSERT INTO audit (action, patient_id, summary_id, version, client, token_id, "
            "detail) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (e.action, e.patient_id, e.summary_id, version, e.client, e.token_id, Jsonb(e.detail)),
        )


__all__ = ["MIGRATIONS", "PostgresStore"]
