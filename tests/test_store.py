"""The CSV store: patient_summaries.csv (one current row per patient, atomic replaces) and
patient_summaries.history.csv (every version, appended), safe across processes and crashes."""

from __future__ import annotations

import csv
import multiprocessing as mp
import os
import random
from pathlib import Path

import pytest

from clinsum.store import COLUMNS, HISTORY_COLUMNS, StoreError, SummaryStore, escape_cell


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def save(store: SummaryStore, pid: int, text: str, grounded: bool = True) -> int:
    return store.save(pid, f"Patient {pid}", text, "SmolLM2", "2026-11-24T10:00:00+00:00", grounded)


def texts(store: SummaryStore, pid: int) -> list[tuple[int, str]]:
    return [(v["version"], v["summary"]) for v in store.history(pid)]


def test_missing_file_is_created_with_header(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "patient_summaries.csv"
    SummaryStore(path).ensure_exists()
    assert path.read_text() == ",".join(COLUMNS) + "\n"


def test_one_row_per_patient_replacing_and_keeping_others(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    store = SummaryStore(path)
    save(store, 11, "first, with a comma")
    save(store, 45, 'quoted "text"\nand a newline')
    save(store, 11, "second")
    rows = read(path)
    assert [(r["patient_id"], r["summary"]) for r in rows] == [
        ("11", "second"),
        ("45", 'quoted "text"\nand a newline'),
    ]
    assert rows[0]["grounded"] == "true"
    # grep "^45," finds the row, as users already do.
    assert any(line.startswith("45,") for line in path.read_text().splitlines())
    assert store.rows() == rows


def test_changes_by_another_process_are_seen(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    a, b = SummaryStore(path), SummaryStore(path)
    save(a, 1, "from a")
    save(b, 2, "from b")
    save(a, 3, "from a again")
    assert [r["patient_id"] for r in read(path)] == ["1", "2", "3"]


@pytest.mark.parametrize("cell", ["=HYPERLINK(1)", "+1", "-2", "@SUM(A1)", "\tx"])
def test_formula_cells_are_escaped(tmp_path: Path, cell: str) -> None:
    assert escape_cell(cell) == "'" + cell
    store = SummaryStore(tmp_path / "s.csv")
    store.save(1, cell, cell, "m", "t", False)
    row = read(tmp_path / "s.csv")[0]
    assert row["name"] == "'" + cell and row["summary"] == "'" + cell
    assert row["grounded"] == "false"


def test_original_tool_file_without_new_columns_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text('patient_id,name,summary\n45,Janet Torres,"Based on Janet..."\n')
    save(SummaryStore(path), 11, "new")
    rows = read(path)
    assert [r["patient_id"] for r in rows] == ["45", "11"]
    assert rows[0]["summary"] == "Based on Janet..."


def test_foreign_file_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(StoreError, match="missing column"):
        save(SummaryStore(path), 1, "x")
    assert path.read_text() == "a,b\n1,2\n"


def test_no_temp_files_left_behind(tmp_path: Path) -> None:
    store = SummaryStore(tmp_path / "s.csv")
    for i in range(5):
        save(store, i + 1, f"text {i}")
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert left == ["s.csv", "s.history.csv"]


def _writer(path: str, start: int, count: int) -> None:
    store = SummaryStore(path)
    for pid in range(start, start + count):
        save(store, pid, f"summary for {pid}")
        save(store, pid, f"final summary for {pid}")


def test_two_processes_saving_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), 1 + 100 * i, 25)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    rows = read(path)
    ids = [int(r["patient_id"]) for r in rows]
    assert len(ids) == len(set(ids)) == 75
    assert all(r["summary"] == f"final summary for {r['patient_id']}" for r in rows)


def test_a_save_is_durable_fsync_temp_then_replace_then_fsync_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order that makes a save survive power loss: the temporary file is fsynced with
    every byte of the new file in it, then renamed over the old one, then the folder is
    fsynced so the rename itself is on disk. Mutation caught: both `os.fsync` calls
    removed (or either one, or the folder's done before the rename)."""
    path = tmp_path / "s.csv"
    store = SummaryStore(path)
    save(store, 1, "first")
    events: list[tuple[str, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        content = Path(target).read_text() if Path(target).is_file() else None
        events.append(("fsync", target, content))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save(store, 2, "second")
    monkeypatch.undo()

    expected = path.read_text()
    assert [e[0] for e in events] == ["fsync", "fsync", "replace", "fsync"], events
    (_, history, history_content), *events = events
    # The version is on disk before the current file names it (history first).
    assert history == str(tmp_path / "s.history.csv") and "second" in history_content
    (_, temp, content), (_, src, dst), (_, folder, _) = events
    assert temp == src and Path(temp).parent == tmp_path and temp != str(path)
    assert content == expected and "second" in expected  # every byte, before the rename
    assert dst == str(path)
    assert folder == str(tmp_path)


# ----- versions: patient_summaries.history.csv ----------------------------------------------


def test_every_save_is_a_version_and_the_current_row_is_the_last(tmp_path: Path) -> None:
    """Saving three times keeps three versions, numbered 1-3 in order, in the history file,
    while the current file keeps the original's columns and one row per patient. Mutation
    caught: the history rewritten (or a version replaced) instead of appended."""
    path = tmp_path / "patient_summaries.csv"
    store = SummaryStore(path)
    assert [save(store, 11, t) for t in ("first", "second,\namended", 'third "quoted"')] == [
        1,
        2,
        3,
    ]
    assert save(store, 45, "other patient") == 1
    assert texts(store, 11) == [(1, "first"), (2, "second,\namended"), (3, 'third "quoted"')]
    assert [(r["patient_id"], r["summary"]) for r in read(path)] == [
        ("11", 'third "quoted"'),
        ("45", "other patient"),
    ]
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    history = read(tmp_path / "patient_summaries.history.csv")
    assert list(history[0]) == list(HISTORY_COLUMNS)
    assert [(h["patient_id"], h["version"]) for h in history] == [
        ("11", "1"),
        ("11", "2"),
        ("11", "3"),
        ("45", "1"),
    ]
    assert all(h["saved_at"] for h in history)
    # Another process's store (a fresh object) reads the same history, newline and all.
    assert texts(SummaryStore(path), 11) == [
        (1, "first"),
        (2, "second,\namended"),
        (3, 'third "quoted"'),
    ]


def test_a_summary_id_and_edited_flag_are_kept_with_the_version(tmp_path: Path) -> None:
    store = SummaryStore(tmp_path / "s.csv")
    store.save(3, "Ann", "Ann is well.", "m", "2026-01-01T00:00:00+00:00", True, True, "abc123")
    store.save(3, "Ann", "Own words.", "clinician", "2026-01-02T00:00:00+00:00", False)
    first, second = store.history(3)
    assert (first["summary_id"], first["edited"], first["grounded"]) == ("abc123", True, True)
    assert (second["summary_id"], second["model"], second["grounded"]) == (None, "clinician", False)


def test_the_original_tools_row_becomes_version_1_before_it_is_replaced(tmp_path: Path) -> None:
    """A current file written before the history existed: its row is kept as version 1, so
    the first save here does not destroy the text it amends."""
    path = tmp_path / "s.csv"
    path.write_text('patient_id,name,summary\n45,Janet Torres,"Based on Janet..."\n')
    store = SummaryStore(path)
    assert save(store, 45, "amended") == 2
    assert texts(store, 45) == [(1, "Based on Janet..."), (2, "amended")]
    assert store.history(45)[0]["saved_at"] is None  # when it was saved is not known


def test_a_torn_history_record_is_ignored_then_cut_off(tmp_path: Path) -> None:
    """A writer killed mid-append leaves half a record (here: cut inside a quoted summary with
    a newline in it). Readers ignore it; the next save cuts it off and appends after the last
    whole record. Mutation caught: reading up to the end of the file (the torn record read
    as a version, or the file refused)."""
    path = tmp_path / "s.csv"
    store = SummaryStore(path)
    save(store, 1, "one")
    save(store, 1, "two\nlines")
    history = tmp_path / "s.history.csv"
    whole = history.read_bytes()
    record = whole[whole.index(b"2,1,") :]
    for cut in sorted({1, len(record) // 2, record.index(b"\n") + 1, len(record) - 1}):
        history.write_bytes(whole[: len(whole) - len(record) + cut])
        fresh = SummaryStore(path)
        assert texts(fresh, 1) == [(1, "one")], cut
        assert save(fresh, 1, f"after cut {cut}") == 2
        assert texts(SummaryStore(path), 1) == [(1, "one"), (2, f"after cut {cut}")]
        assert history.read_bytes().endswith(b"\n")
        history.write_bytes(whole)


def test_a_save_killed_between_history_and_current_is_completed_at_start(tmp_path: Path) -> None:
    """The version reached the history, the current file was not replaced yet: at start-up
    (`ensure_exists`) the current row becomes that version, so the two files agree."""
    path = tmp_path / "s.csv"
    store = SummaryStore(path)
    save(store, 5, "old")
    before = path.read_bytes()
    save(store, 5, "new")
    path.write_bytes(before)  # as if killed before the rename
    restarted = SummaryStore(path)
    restarted.ensure_exists()
    assert [r["summary"] for r in read(path)] == ["new"]
    assert texts(restarted, 5) == [(1, "old"), (2, "new")]


def test_a_foreign_history_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "s.history.csv").write_text("a,b\n1,2\n")
    with pytest.raises(StoreError, match="history"):
        save(SummaryStore(tmp_path / "s.csv"), 1, "x")
    assert (tmp_path / "s.history.csv").read_text() == "a,b\n1,2\n"


def _saver(path: str, seed: int, saves: int, patients: int, out: str) -> None:
    """One process of the concurrency test: random patients, each save's answer written down
    only once `save` returned (acknowledged)."""
    rng = random.Random(seed)
    store = SummaryStore(path)
    with open(out, "w") as acks:
        for i in range(saves):
            pid = rng.randint(1, patients)
            text = f"p{seed} save {i} for {pid}"
            version = save(store, pid, text)
            acks.write(f"{pid}\t{version}\t{text}\n")
            acks.flush()


def test_two_processes_200_saves_to_20_patients_every_save_a_version(tmp_path: Path) -> None:
    """Two processes, 100 saves each, to 20 patients at once: every acknowledged save is a
    version with the number it was told, no version is duplicated or lost, and each patient's
    current row is their highest version. Mutation caught: the version numbered outside the
    lock (two saves get the same number)."""
    two_processes_saving(tmp_path, 100)


@pytest.mark.stress
def test_two_processes_4000_saves_to_20_patients(tmp_path: Path) -> None:
    two_processes_saving(tmp_path, 2000)


def two_processes_saving(tmp_path: Path, per_process: int) -> None:
    path = tmp_path / "s.csv"
    ctx = mp.get_context("spawn")
    outs = [tmp_path / f"acks{i}.tsv" for i in range(2)]
    procs = [
        ctx.Process(target=_saver, args=(str(path), i, per_process, 20, str(outs[i])))
        for i in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
        assert p.exitcode == 0
    acked = {}
    for out in outs:
        for line in out.read_text().splitlines():
            pid, version, text = line.split("\t")
            acked[(pid, int(version))] = text
    assert len(acked) == 2 * per_process  # no two saves told the same (patient, version)
    history = read(tmp_path / "s.history.csv")
    assert {(h["patient_id"], int(h["version"])): h["summary"] for h in history} == acked
    assert len(history) == 2 * per_process
    current = {r["patient_id"]: r["summary"] for r in read(path)}
    last = {}
    for (pid, _version), text in sorted(acked.items(), key=lambda kv: kv[0][1]):
        last[pid] = text
    assert current == last
    for pid in current:  # versions run 1..n with no gap
        versions = sorted(v for p, v in acked if p == pid)
        assert versions == list(range(1, len(versions) + 1))
