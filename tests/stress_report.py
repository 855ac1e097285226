"""The robustness tests' counts, printed as one table at the end of the run.

A pytest plugin: tests take the `report` fixture and call `report.add("fuzz", frames=...)`
(before they assert,
so a failing run still shows its counts) and `pytest_terminal_summary` prints one row per test
and a total. `make stress` also writes the table to `bench/stress_results.md`.

Registered by `pytest_plugins = ["tests.stress_report"]` in the robustness test modules (or,
once, in conftest.py).
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

COLUMNS = (
    ("frames", "frames tried"),
    ("reconnects", "reconnects"),
    ("crashes", "crashes"),
    ("kills", "kills"),
    ("acked", "acknowledged saves"),
    ("lost", "saves lost"),
    ("duplicated", "rows duplicated"),
    ("leaked_tasks", "leaked tasks"),
)
RESULTS = Path(__file__).resolve().parent.parent / "bench" / "stress_results.md"


@dataclass
class Row:
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Report:
    """Counts by test name; adding to a name again sums the counts."""

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        self.stress = False

    def add(self, name: str, *, note: str = "", seconds: float = 0.0, **counts: int) -> None:
        unknown = set(counts) - {key for key, _ in COLUMNS}
        if unknown:
            raise KeyError(f"unknown report column(s): {', '.join(sorted(unknown))}")
        row = self.rows.setdefault(name, Row())
        for key, value in counts.items():
            row.counts[key] = row.counts.get(key, 0) + int(value)
        if note:
            row.notes.append(note)
        row.seconds += seconds

    def table(self) -> list[str]:
        head = ["test", *(title for _, title in COLUMNS), "s", "notes"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        total: dict[str, int] = {}
        for name, row in self.rows.items():
            cells = []
            for key, _ in COLUMNS:
                if key in row.counts:
                    total[key] = total.get(key, 0) + row.counts[key]
                    cells.append(str(row.counts[key]))
                else:
                    cells.append("")
            lines.append(
                f"| {name} | "
                + " | ".join(cells)
                + f" | {row.seconds:.0f} | {'; '.join(row.notes)} |"
            )
        cells = [str(total[key]) if key in total else "" for key, _ in COLUMNS]
        lines.append("| **total** | " + " | ".join(cells) + " |  |  |")
        return lines


REPORT = Report()


@pytest.fixture(scope="session")
def report() -> Report:
    """The run's report; tests add their counts to it."""
    return REPORT


def pytest_collection_finish(session: pytest.Session) -> None:
    REPORT.stress = any(item.get_closest_marker("stress") for item in session.items)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not REPORT.rows:
        return
    size = "full size (make stress)" if REPORT.stress else "small size (make test)"
    terminalreporter.write_sep("=", f"robustness report, {size}")
    lines = REPORT.table()
    for line in lines:
        terminalreporter.write_line(line)
    if REPORT.stress:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(
            "# Stress results\n\n"
            f"`make stress` on {platform.node()} ({platform.machine()}, "
            f"Python {platform.python_version()}), {time.strftime('%Y-%m-%d %H:%M')}, "
            f"pytest exit status {exitstatus}.\n\n" + "\n".join(lines) + "\n"
        )
        terminalreporter.write_line(f"(written to {RESULTS})")
