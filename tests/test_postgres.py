"""The PostgreSQL store against a real PostgreSQL 15: a private cluster this module starts
(`testkit/pg.py`: initdb and pg_ctl in a temporary folder, on a free loopback port, as an
unprivileged user) and stops at the end of the run.

Two `App`s over one database stand for two replicas behind a load balancer: a draft made on
one is checked and saved on the other. The tools run through the dispatcher every face uses
(`tests/scripted.py`), with a scripted model, so what the grounding check says is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from websockets.exceptions import InvalidHandshake

from clinsum.app import App
from clinsum.config import parse_args
from clinsum.records import load_patients
from clinsum.store import Event, StoreError, SummaryStore, Version
from clinsum.store.postgres import MIGRATIONS, PostgresStore
from testkit.pg import OWNER, PgCluster

from .conftest import DATA, REPO, ServerProcess, free_port, server_args
from .scripted import Rpc, ScriptedBackend

PATIENTS = load_patients(DATA)
AGREEABLE = [" Continue", " the", " current", " treatment", "."]
TOKEN_ID = "sha256:0123456789ab"


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    """The run's one PostgreSQL cluster; stopped, and its folder removed, at the end."""
    cluster = PgCluster(fsync=False)  # the tests' durability is PostgreSQL's own, not fsync's
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def url(pg: PgCluster, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh database owned by the test role, whose password is in $PGPASSWORD."""
    monkeypatch.setenv("PGPASSWORD", pg.passwords[OWNER])
    return pg.url(pg.new_database())


async def opened(url: str, **kwargs: Any) -> PostgresStore:
    store = PostgresStore(url, **kwargs)
    await store.open()
    return store


def replica(store: PostgresStore, patients: Any = PATIENTS, index: Any = None) -> App:
    """One server's `App` over the shared store (each has its own memory of drafts)."""
    app = App(patients, index, ScriptedBackend(AGREEABLE), store)
    app.token_id = TOKEN_ID
    return app


def rows(pg: PgCluster, url: str, query: str) -> list[list[str]]:
    out = pg.sql(query, db=url.rsplit("/", 1)[1])
    return [line.split("|") for line in out.splitlines()]


async def test_versions_are_added_never_changed_and_current_is_the_newest(url: str) -> None:
    """Three saves of one patient are versions 1-3; the current summary is the third; the
    database itself refuses to update or delete a version or an audit row. Mutation caught:
    the append-only triggers left out of the migration."""
    store = await opened(url)
    try:
        for i, text in enumerate(["first", "second", "third"], start=1):
            v = Version(7, "Ann", text, "m", "2026-01-01T00:00:00+00:00", True, False, f"s{i}")
            assert await store.save(v) == i
        await store.save(Version(3, "Bob", "bob", "clinician", "t", False, True, None))
        await store.audit(Event("generate", 7, "s1", "127.0.0.1:5000", None))
        current = await store.current()
        assert [(r["patient_id"], r["summary"], r["grounded"]) for r in current] == [
            ("7", "third", "true"),
            ("3", "bob", "false"),
        ]
        history = await store.history(7)
        assert [(h["version"], h["summary"], h["summary_id"]) for h in history] == [
            (1, "first", "s1"),
            (2, "second", "s2"),
            (3, "third", "s3"),
        ]
        assert all(h["saved_at"] for h in history)
        async with await psycopg.AsyncConnection.connect(url) as conn:
            for statement in (
                "UPDATE summary_versions SET text = 'changed'",
                "DELETE FROM summary_versions",
                "TRUNCATE summary_versions",
                "UPDATE audit SET client = 'x'",
                "DELETE FROM audit",
            ):
                with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                    await conn.execute(statement)
                await conn.rollback()
        assert [h["summary"] for h in await store.history(7)] == ["first", "second", "third"]
    finally:
        await store.close()


async def test_replicas_starting_at_once_migrate_the_schema_once(url: str) -> None:
    """Eight servers open the same empty database at the same moment: every one starts, and
    each migration ran once. Mutation caught: the advisory lock removed (concurrent CREATE
    TABLE fails, or a migration is recorded twice)."""
    stores = [PostgresStore(url) for _ in range(8)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT version FROM clinsum_schema ORDER BY version")
        assert [r[0] for r in await cur.fetchall()] == list(range(1, len(MIGRATIONS) + 1))
    again = await opened(url)  # a later start finds nothing to do
    await again.close()


async def test_a_draft_from_one_replica_is_checked_and_saved_on_another(
    pg: PgCluster, url: str
) -> None:
    """Replica A generates; replica B, which never saw the summary, checks and saves it by
    its summary_id. The audit trail has the three events with the client and the token's
    fingerprint, and the save's version. Mutation caught: drafts kept in memory only (B
    answers -32002 unknown summary id)."""
    a_store, b_store = await opened(url), await opened(url)
    try:
        b_app = replica(b_store)
        a, b = Rpc(replica(a_store)), Rpc(b_app)
        made = await a.result("summarize", {"patient_id": 1})
        sid = made["summary_id"]
        assert sid not in b_app.summaries
        checked = await b.result("check_summary", {"summary_id": sid, "text": made["summary"]})
        assert checked["grounding"]["ok"] is True
        saved = await b.result("save_summary", {"summary_id": sid})
        assert saved["version"] == 1 and saved["path"].startswith("PostgreSQL at postgresql://")
        history = (await a.result("summary_history", {"patient_id": 1}))["versions"]
        assert [(h["summary"], h["summary_id"]) for h in history] == [(made["summary"], sid)]
        trail = rows(
            pg,
            url,
            "SELECT action, patient_id, summary_id, coalesce(version::text, ''), "
            "client, token_id FROM audit ORDER BY id",
        )
        assert trail == [
            ["generate", "1", sid, "", "test", TOKEN_ID],
            ["check", "1", sid, "", "test", TOKEN_ID],
            ["save", "1", sid, "1", "test", TOKEN_ID],
        ]
        unknown = await b.call("save_summary", {"summary_id": "f" * 32})
        assert unknown["error"]["code"] == -32002 and "Unknown" in unknown["error"]["message"]
    finally:
        await a_store.close()
        await b_store.close()


async def test_a_draft_older_than_the_ttl_is_refused_on_every_replica(url: str) -> None:
    """The TTL is judged from the draft's creation time in the database, so a replica that
    reads it later refuses it the same way: -32002 saying it expired, nothing saved."""
    a_store, b_store = await opened(url), await opened(url)
    try:
        a_app, b_app = replica(a_store), replica(b_store)
        b_app.draft_ttl_s = 0.2
        sid = (await Rpc(a_app).result("summarize", {"patient_id": 2}))["summary_id"]
        await asyncio.sleep(0.3)
        expired = await Rpc(b_app).call("save_summary", {"summary_id": sid})
        assert expired["error"]["code"] == -32002, expired
        assert "expired" in expired["error"]["message"]
        assert await b_store.current() == []
    finally:
        await a_store.close()
        await b_store.close()


# ----- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ("postgresql://", "USER and HOST and DB missing"),
        ("postgresql://clinsum@127.0.0.1:port/db", "port"),
        ("postgresql://clinsum:s3cret@127.0.0.1/db", "must not hold a password"),
        ("mysql://clinsum@127.0.0.1/db", "expected 'csv' or postgresql://"),
        ("postgresql://clinsum@127.0.0.1:5432/", "DB missing"),
    ],
)
def test_a_malformed_store_url_stops_the_command_line(
    spec: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--store", spec])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--store" in err and said in err, err
    assert "s3cret" not in err


async def test_a_wrong_password_is_a_clear_error_without_the_password(
    pg: PgCluster, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPASSWORD", "not-the-password")
    with pytest.raises(StoreError) as failed:
        await opened(url)
    message = str(failed.value)
    assert url in message and "password authentication failed" in message, message
    assert "not-the-password" not in message


async def test_a_user_without_rights_gets_a_clear_error(
    pg: PgCluster, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL 15 lets no one but the owner create tables in `public`: a user with only
    CONNECT cannot set up the tables, and cannot use tables the owner made either."""
    pg.sql(
        "DO $$ BEGIN CREATE ROLE norights LOGIN PASSWORD 'nr'; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    monkeypatch.setenv("PGPASSWORD", "nr")
    intruder = url.replace(f"//{OWNER}@", "//norights@")
    with pytest.raises(StoreError, match="lacks the rights") as before:
        await opened(intruder)
    assert "permission denied" in str(before.value)
    monkeypatch.setenv("PGPASSWORD", pg.passwords[OWNER])
    await (await opened(url)).close()  # the owner creates them
    monkeypatch.setenv("PGPASSWORD", "nr")
    with pytest.raises(StoreError, match="lacks the rights") as after:
        await opened(intruder)
    assert "GRANT SELECT, INSERT" in str(after.value)
    # What the message says to run is enough: the user then saves, and runs no DDL.
    db = url.rsplit("/", 1)[1]
    pg.sql(
        "GRANT SELECT, INSERT ON clinsum_schema, drafts, summary_versions, audit TO norights; "
        "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO norights",
        db=db,
    )
    granted = await opened(intruder)
    try:
        assert await granted.save(Version(1, "A", "a", "m", "t", True, False, None)) == 1
    finally:
        await granted.close()


async def test_5000_characters_of_quotes_and_sql_are_kept_and_nul_is_refused(url: str) -> None:
    """A clinician's 5,000-character text full of quotes and SQL is saved verbatim (the
    queries are parameterised); the same with NUL characters is -32602 naming `text`, and
    the saved version stays the only one."""
    store = await opened(url)
    try:
        rpc = Rpc(replica(store))
        hostile = ("'); DROP TABLE summary_versions; -- \"x\" '' \\' $$ ; SELECT 1; " * 100)[:5000]
        saved = await rpc.result("save_summary", {"patient_id": 4, "text": hostile, "force": True})
        assert saved["version"] == 1
        nul = hostile[:100] + "\0" + hostile[101:4000] + "\0"
        refused = await rpc.call("save_summary", {"patient_id": 4, "text": nul, "force": True})
        assert refused["error"]["code"] == -32602 and "NUL" in refused["error"]["message"]
        assert [h["summary"] for h in await store.history(4)] == [hostile]
        assert (await store.current())[0]["summary"] == hostile
    finally:
        await store.close()


# ----- PostgreSQL away ------------------------------------------------------------------------


def test_postgresql_down_at_start_up_exits_2_saying_so(data_dir: Path) -> None:
    """A server started with --store pointing at a port where no PostgreSQL listens: one
    line saying it cannot connect to that store, exit status 2, no traceback."""
    dead = f"postgresql://{OWNER}@127.0.0.1:{free_port()}/clinsum"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "mcp_server.py"),
            *("--port", "0", "--data", str(data_dir / "patient_data.csv")),
            *("--backend", "ollama", "--ollama-host", "http://127.0.0.1:9"),
            *("--store", dead),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PGPASSWORD": "unused"},
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"cannot connect to PostgreSQL at {dead}" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr


async def test_postgresql_away_mid_run_is_32007_and_back_saves_without_restart(
    pg: PgCluster, url: str, data_dir: Path
) -> None:
    """PostgreSQL stops while the server runs: saving, listing and history answer -32007
    naming the store, while search, fetch, digest and summarize keep working; a summary
    generated meanwhile is kept. PostgreSQL starts again: both summaries save, with no
    restart. Mutation caught: a failed draft store failing summarize."""
    from testkit.inprocess import patients_and_index

    patients, index = await asyncio.to_thread(
        patients_and_index, str(data_dir / "patient_data.csv")
    )
    store = await opened(url)
    rpc = Rpc(replica(store, patients, index))
    try:
        before = (await rpc.result("summarize", {"patient_id": 5}))["summary_id"]
        pg.stop_server()
        try:
            failed = await rpc.call("save_summary", {"summary_id": before})
            assert failed["error"]["code"] == -32007, failed
            assert f"PostgreSQL at {url}" in failed["error"]["message"]
            for method in ("list_summaries", "summary_history"):
                params = {"patient_id": 5} if method == "summary_history" else {}
                reply = await rpc.call(method, params)
                assert reply["error"]["code"] == -32007, reply
            found = await rpc.result("search", {"query": "diabetes"})
            assert found["results"]
            assert (await rpc.result("fetch", {"patient_id": 5}))["patient"]["patient_id"] == 5
            await rpc.result("digest", {"patient_id": 5})
            during = (await rpc.result("summarize", {"patient_id": 6}))["summary_id"]
        finally:
            pg.start_server()
        saved = None
        async with asyncio.timeout(60):  # the pool reconnects in the background
            while saved is None:
                reply = await rpc.call("save_summary", {"summary_id": before})
                if "result" in reply:
                    saved = reply["result"]
                else:
                    assert reply["error"]["code"] == -32007, reply
                    await asyncio.sleep(0.5)
        assert saved["version"] == 1
        assert (await rpc.result("save_summary", {"summary_id": during}))["version"] == 1
        listed = await rpc.result("list_summaries", {})
        assert sorted(r["patient_id"] for r in listed["summaries"]) == ["5", "6"]
    finally:
        if not pg.running():
            pg.start_server()
        await store.close()


# ----- concurrency ----------------------------------------------------------------------------


async def test_two_replicas_eight_clients_200_saves_to_20_patients(url: str) -> None:
    """Two replicas (each its own pool), four clients on each, 200 saves to 20 patients at
    once: every acknowledged save is a version with the number it was told, none is lost or
    duplicated, and each patient's current summary is the last one acknowledged. Mutation
    caught: the per-patient lock removed (two saves numbered alike: a unique violation)."""
    await concurrent_saves(url, per_client=25)


@pytest.mark.stress
async def test_two_replicas_eight_clients_4000_saves_to_20_patients(url: str) -> None:
    await concurrent_saves(url, per_client=500)


async def concurrent_saves(url: str, per_client: int) -> None:
    """8 clients, 4 on each of two replicas, `per_client` saves each to patients 1-20."""
    stores = [await opened(url), await opened(url)]
    try:
        apps = [replica(s) for s in stores]
        acked: list[tuple[int, int, str]] = []

        async def client(n: int) -> None:
            rpc = Rpc(apps[n % 2])
            rng = random.Random(n)
            for i in range(per_client):
                pid = rng.randint(1, 20)
                text = f"client {n} save {i}: {PATIENTS[pid].name} was seen."
                result = await rpc.result(
                    "save_summary", {"patient_id": pid, "text": text, "force": True}
                )
                acked.append((pid, result["version"], text))

        await asyncio.gather(*(client(n) for n in range(8)))
        assert len(acked) == 8 * per_client
        assert len({(pid, v) for pid, v, _ in acked}) == 8 * per_client
        stored = {}
        for pid in range(1, 21):
            for h in await stores[0].history(pid):
                stored[(pid, h["version"])] = h["summary"]
        assert stored == {(pid, v): text for pid, v, text in acked}
        # The last save committed is the highest version (replies may arrive in either order).
        last = {pid: text for pid, _, text in sorted(acked, key=lambda a: (a[0], a[1]))}
        current = {int(r["patient_id"]): r["summary"] for r in await stores[1].current()}
        assert current == last
    finally:
        for s in stores:
            await s.close()


# ----- export ---------------------------------------------------------------------------------


async def test_export_writes_the_current_summaries_as_the_csv(
    pg: PgCluster, url: str, tmp_path: Path
) -> None:
    """`python -m clinsum.store export` writes one row per patient (the newest version), in
    the CSV columns the clients and the original tool read; a bad URL exits 2 saying why."""
    store = await opened(url)
    try:
        for text in ("old", "=new, formula-like"):
            await store.save(Version(9, "Cy", text, "m", "t", True, False, None))
        await store.save(Version(2, "Di", "di", "m", "t", False, True, None))
    finally:
        await store.close()
    out = tmp_path / "exported.csv"
    env = {**os.environ, "PGPASSWORD": pg.passwords[OWNER]}
    cmd = [sys.executable, "-m", "clinsum.store", "export"]
    done = subprocess.run(
        [*cmd, "--store", url, "--csv", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    with out.open(newline="") as f:
        exported = list(csv.DictReader(f))
    assert [(r["patient_id"], r["summary"]) for r in exported] == [
        ("9", "'=new, formula-like"),
        ("2", "di"),
    ]
    assert SummaryStore(out).rows() == exported
    bad = subprocess.run(
        [*cmd, "--store", "postgresql://nobody@127.0.0.1:1/x", "--csv", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
    )
    assert bad.returncode == 2 and "export failed: cannot connect" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr


# ----- two replicas behind HAProxy ------------------------------------------------------------


async def test_failover_kill_9_the_replica_that_made_the_draft_save_on_the_other(
    url: str, data_dir: Path, tmp_path: Path
) -> None:
    """Two server processes on one database behind HAProxy (testkit/haproxy.py, the config
    README shows). A client summarizes through HAProxy; the replica that generated the
    draft is killed with -9; the client reconnects through HAProxy and saves the same
    summary_id on the other replica. Mutation caught: drafts kept in memory only (the save
    after failover is -32002)."""
    from testkit.haproxy import HAProxy
    from testkit.inprocess import OllamaThread
    from testkit.rpc import Peer

    with OllamaThread(tps=200) as fake:
        replicas = [
            ServerProcess(
                server_args(
                    data_dir,
                    tmp_path / f"r{i}.csv",
                    *("--store", url, "--ollama-host", fake.url),
                    backend="ollama",
                )
            )
            for i in range(2)
        ]
        proxy = None
        try:
            await asyncio.gather(*(asyncio.to_thread(r.wait_ready, 180) for r in replicas))
            proxy = await asyncio.to_thread(HAProxy, [("127.0.0.1", r.port) for r in replicas])
            peer = await Peer.open(proxy.url)
            made = await peer.result("summarize", {"patient_id": 1, "max_tokens": 16})
            sid = made["summary_id"]
            makers = [r for r in replicas if "Starting streaming summary generation" in r.log]
            assert len(makers) == 1, [r.log[-500:] for r in replicas]
            maker, other = makers[0], next(r for r in replicas if r is not makers[0])
            maker.kill()  # SIGKILL: no goodbye, its memory of the draft is gone
            await asyncio.sleep(0)
            saved = None
            async with asyncio.timeout(30):
                while saved is None:
                    try:
                        again = await Peer.open(proxy.url)
                        reply = await again.call(
                            "save_summary", {"summary_id": sid, "force": True}, timeout=10
                        )
                    except (OSError, ConnectionError, InvalidHandshake, TimeoutError):
                        await asyncio.sleep(0.05)
                        continue
                    assert "result" in reply, reply
                    saved = reply["result"]
            assert saved["version"] == 1
            assert other.wait_for("Saved summary for patient 1", 10), other.log[-2000:]
            history = await again.result("summary_history", {"patient_id": 1})
            assert [(v["summary_id"], v["summary"]) for v in history["versions"]] == [
                (sid, made["summary"])
            ]
            await again.close()
        finally:
            if proxy is not None:
                await asyncio.to_thread(proxy.stop)
            for r in replicas:
                await asyncio.to_thread(r.stop)


async def test_kill_9_during_saves_every_acknowledged_save_is_a_version(
    pg: PgCluster, url: str, data_dir: Path, tmp_path: Path
) -> None:
    """A server on PostgreSQL is killed with -9 at random moments while a client saves one
    summary_id again and again, then started again: every save it acknowledged is a version
    in the table, the versions run 1..n with no gap, and after each restart the same
    summary_id (a draft in the database, not in the dead server's memory) saves again."""
    await kill_during_saves(pg, url, data_dir, tmp_path, kills=4)


@pytest.mark.stress
async def test_kill_9_during_saves_30_kills(
    pg: PgCluster, url: str, data_dir: Path, tmp_path: Path
) -> None:
    await kill_during_saves(pg, url, data_dir, tmp_path, kills=30)


async def kill_during_saves(
    pg: PgCluster, url: str, data_dir: Path, tmp_path: Path, kills: int
) -> None:
    from testkit.inprocess import OllamaThread
    from testkit.rpc import Peer

    rng = random.Random(26)
    acked: list[int] = []
    per_round: list[int] = []
    with OllamaThread(tps=200) as fake:
        args = server_args(
            data_dir,
            tmp_path / "s.csv",
            "--store",
            url,
            "--ollama-host",
            fake.url,
            backend="ollama",
        )
        sid = None
        for _ in range(kills):
            srv = ServerProcess(args)
            try:
                await asyncio.to_thread(srv.wait_ready, 180)
                peer = await Peer.open(srv.url)
                if sid is None:
                    sid = (await peer.result("summarize", {"patient_id": 3, "max_tokens": 8}))[
                        "summary_id"
                    ]

                async def saver(peer: Peer = peer, sid: str = sid) -> None:
                    while True:
                        reply = await peer.call("save_summary", {"summary_id": sid, "force": True})
                        acked.append(reply["result"]["version"])

                task = asyncio.create_task(saver())
                await asyncio.sleep(rng.uniform(0.3, 1.0))
                srv.kill()
                with contextlib.suppress(ConnectionError, OSError, KeyError, asyncio.TimeoutError):
                    await asyncio.wait_for(task, 10)
                task.cancel()
                per_round.append(len(acked) - sum(per_round))
            finally:
                srv.stop()
    assert all(per_round) and len(per_round) == kills, per_round  # each round saved, restarts too
    assert acked == sorted(acked)
    db = url.rsplit("/", 1)[1]
    stored = [
        int(v)
        for v in pg.sql(
            "SELECT version FROM summary_versions WHERE patient_id = 3 ORDER BY version", db=db
        ).split()
    ]
    assert stored == list(range(1, len(stored) + 1))  # no gap, no duplicate
    assert set(acked) <= set(stored)  # nothing acknowledged was lost
    assert len(stored) - len(acked) <= kills  # at most one unacknowledged commit per kill


def test_the_page_reconnects_through_haproxy_and_saves_the_edit_on_the_other_replica(
    pg: PgCluster, url: str, data_dir: Path, tmp_path: Path
) -> None:
    """The web page in Chromium behind HAProxy: a summary is generated and edited, the
    replica that generated it is killed with -9, the page says "Reconnecting…", reconnects
    through HAProxy to the other replica, and Save stores the edit, unchanged, under that
    summary_id. Replicas bind 127.0.0.3 and 127.0.0.4 on the same two ports and HAProxy
    127.0.0.2 on them, so the WebSocket port the page is told is the balancer's too.
    Mutation caught: the page not reconnecting on its own (no "Reconnecting…", Save off)."""
    from playwright.sync_api import expect, sync_playwright

    from testkit.haproxy import HAProxy
    from testkit.inprocess import OllamaThread
    from testkit.web import launch_chromium

    ws_port, http_port = free_port(), free_port()
    front = "127.0.0.2"
    patient = PATIENTS[2]
    with OllamaThread(tps=200) as fake:
        replicas = [
            ServerProcess(
                server_args(
                    data_dir,
                    tmp_path / f"r{i}.csv",
                    *("--host", host, "--http-port", str(http_port), "--store", url),
                    *("--ollama-host", fake.url, "--allowed-host", front),
                    *("--allowed-origin", f"http://{front}:{http_port}"),
                    backend="ollama",
                ),
                port=ws_port,
            )
            for i, host in enumerate(("127.0.0.3", "127.0.0.4"))
        ]
        proxy = None
        try:
            for r in replicas:
                r.wait_ready(180)
            proxy = HAProxy(
                pairs=[
                    (f"{front}:{ws_port}", [(h, ws_port) for h in ("127.0.0.3", "127.0.0.4")]),
                    (f"{front}:{http_port}", [(h, http_port) for h in ("127.0.0.3", "127.0.0.4")]),
                ]
            )
            with sync_playwright() as p:
                browser = launch_chromium(p)
                try:
                    page = browser.new_page()
                    errors: list[str] = []
                    page.on("pageerror", lambda e: errors.append(str(e)))
                    page.goto(f"http://{front}:{http_port}/")
                    expect(page.locator("#conn")).to_contain_text("Connected")
                    box = page.get_by_role("searchbox", name="Search patients")
                    box.fill(patient.name)
                    box.press("Enter")
                    page.get_by_role("button", name=patient.name).first.click()
                    page.get_by_role("button", name="Summarize").click()
                    summary = page.get_by_role("textbox", name="Summary", exact=True)
                    expect(summary).to_be_visible(timeout=30_000)
                    edited = f"{patient.name} is a {patient.age}-year-old. Edited before failover."
                    summary.fill(edited)
                    page.evaluate(
                        """() => { window.connTexts = [];
                        new MutationObserver(() => window.connTexts.push(
                            document.getElementById("conn").textContent))
                          .observe(document.getElementById("conn"),
                                   {childList: true, characterData: true, subtree: true}); }"""
                    )
                    makers = [r for r in replicas if "Starting streaming summary" in r.log]
                    assert len(makers) == 1
                    makers[0].kill()
                    expect(page.locator("#conn")).to_contain_text("Connected", timeout=20_000)
                    texts = page.evaluate("() => window.connTexts")
                    assert any(t.startswith("Reconnecting…") for t in texts), texts
                    assert summary.input_value() == edited  # nothing on the page was lost
                    page.get_by_role("button", name="Save", exact=True).click()
                    expect(page.locator("#save-status")).to_contain_text("Saved", timeout=20_000)
                    assert not errors, errors
                finally:
                    browser.close()
        finally:
            if proxy is not None:
                proxy.stop()
            for r in replicas:
                r.stop()
    saved = rows(pg, url, "SELECT text, summary_id IS NOT NULL, edited FROM summary_versions")
    assert saved == [[edited, "t", "t"]]


async def test_two_server_processes_four_clients_each_200_saves(
    url: str, data_dir: Path, tmp_path: Path
) -> None:
    """The same as the in-process test with real replicas: two server processes on one
    database, four WebSocket clients on each, 200 saves to 20 patients at once. Every
    acknowledged save is a version with its number, and each patient's current summary (as
    either replica lists it) is the last acknowledged."""
    from testkit.inprocess import OllamaThread
    from testkit.rpc import Peer

    with OllamaThread(tps=200) as fake:
        replicas = [
            ServerProcess(
                server_args(
                    data_dir,
                    tmp_path / f"unused{i}.csv",
                    *("--store", url, "--ollama-host", fake.url),
                    backend="ollama",
                )
            )
            for i in range(2)
        ]
        try:
            await asyncio.gather(*(asyncio.to_thread(r.wait_ready, 180) for r in replicas))
            acked: list[tuple[int, int, str]] = []

            async def client(n: int) -> None:
                peer = await Peer.open(replicas[n % 2].url)
                rng = random.Random(100 + n)
                try:
                    for i in range(25):
                        pid = rng.randint(1, 20)
                        text = f"client {n} save {i}: {PATIENTS[pid].name} was seen."
                        result = await peer.result(
                            "save_summary", {"patient_id": pid, "text": text, "force": True}
                        )
                        acked.append((pid, result["version"], text))
                finally:
                    await peer.close()

            await asyncio.gather(*(client(n) for n in range(8)))
            assert len({(pid, v) for pid, v, _ in acked}) == len(acked) == 200
            # The last save committed is the highest version: two clients' acknowledgements
            # for one patient may reach this test in either order.
            last = {pid: text for pid, _, text in sorted(acked, key=lambda a: (a[0], a[1]))}
            for r in replicas:
                peer = await Peer.open(r.url)
                listed = (await peer.result("list_summaries"))["summaries"]
                assert {int(x["patient_id"]): x["summary"] for x in listed} == last
                versions = 0
                for pid in last:
                    history = await peer.result("summary_history", {"patient_id": pid})
                    got = [(h["version"], h["summary"]) for h in history["versions"]]
                    assert got == sorted((v, t) for p, v, t in acked if p == pid)
                    versions += len(got)
                assert versions == 200
                await peer.close()
        finally:
            for r in replicas:
                await asyncio.to_thread(r.stop)
