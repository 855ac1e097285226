"""Shared test helpers: real server processes on free loopback ports, temp copies of data.

`ServerProcess` comes from testkit/processes.py, which the benchmark uses too: one way to start
a server.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.processes import REPO, ServerProcess, free_port, read_until

# tests/server_pool.py is a plugin (pytest_plugins) that the robustness tests also import from:
# have its asserts rewritten before the first import, as a plugin's are.
pytest.register_assert_rewrite("tests.server_pool")

DATA = REPO / "patient_data.csv"
# Tokens a closed or cancelled answer may still sample in the embedded model process: those
# already in the pipe, plus the one in flight when the cancel frame arrives.
CANCEL_SLACK = 8

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

__all__ = ["DATA", "REPO", "ServerProcess", "free_port", "read_until", "server_args"]


def server_args(
    data_dir: Path, summaries: Path, *extra: str, backend: str = "embedded"
) -> list[str]:
    """The flags most test servers share: a backend and a temp copy of the files."""
    return [
        *("--backend", backend),
        *("--data", str(data_dir / "patient_data.csv")),
        *("--summaries", str(summaries)),
        *extra,
    ]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temp folder holding a copy of patient_data.csv (its index is built beside it)."""
    folder = tmp_path_factory.mktemp("data")
    shutil.copy(DATA, folder / "patient_data.csv")
    return folder


@pytest.fixture(scope="session")
def shared_server(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One embedded-backend server for the whole run, for tests that only read."""
    summaries = tmp_path_factory.mktemp("shared") / "patient_summaries.csv"
    server = ServerProcess(server_args(data_dir, summaries, "--max-inflight", "16")).wait_ready()
    yield server
    server.stop()
