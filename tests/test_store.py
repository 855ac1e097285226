"""patient_summaries.csv: one row per patient, atomic replaces, safe across processes."""

from __future__ import annotations

import csv
import multiprocessing as mp
import os
from pathlib import Path

import pytest

from clinsum.store import COLUMNS, StoreError, SummaryStore, escape_cell


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def save(store: SummaryStore, pid: int, text: str, grounded: bool = True) -> None:
    store.save(pid, f"Patient {pid}", text, "SmolLM2", "2026-11-24T10:00:00+00:00", grounded)


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
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["s.csv"]


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
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"], events
    (_, temp, content), (_, src, dst), (_, folder, _) = events
    assert temp == src and Path(temp).parent == tmp_path and temp != str(path)
    assert content == expected and "second" in expected  # every byte, before the rename
    assert dst == str(path)
    assert folder == str(tmp_path)
