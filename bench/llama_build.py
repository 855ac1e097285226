"""The portable llama.cpp build against the CPU's native one, on this machine, in one run.

`make setup` builds llama-cpp-python for a portable x86-64 baseline (the Makefile says why).
This script times it against a native build (`GGML_NATIVE`, llama.cpp's default) installed
into a folder of its own, which `make setup` never makes:

    CMAKE_ARGS="" .venv/bin/pip install --target /tmp/llama-native --no-deps \\
        --no-cache-dir --no-binary llama-cpp-python llama-cpp-python==0.3.36
    .venv/bin/python bench/llama_build.py --native /tmp/llama-native

Each build runs in a child process (the model process's own `runner.Model`, one thread, as
the server's) that generates the same long answers; the builds alternate round by round.
On a CPU with AMX the native build crashes at its first prompt (the fault this build avoids);
it is then run a second time with llama.cpp's `use_extra_bufts = False`, which skips the AMX
weight repack, and both outcomes are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROUNDS = 3
ANSWERS = 3  # per round and build
MAX_TOKENS = 200

CHILD = r"""
import json, sys, time
from dataclasses import asdict
import llama_cpp
if sys.argv[1] == "no-extra-bufts":
    default = llama_cpp.llama_model_default_params
    def params():
        p = default()
        p.use_extra_bufts = False
        return p
    llama_cpp.llama_model_default_params = params
    llama_cpp.llama.llama_cpp.llama_model_default_params = params
from clinsum.backends.base import DEFAULT_SETTINGS
from clinsum.backends.embedded import default_model_path
from clinsum.backends.runner import Model, Request, Settings
settings = Settings.of({**asdict(DEFAULT_SETTINGS), "stop": []})
model = Model(str(default_model_path()), 1, settings)
story = [{"role": "user", "content": "Tell me a long story about a dragon and a knight."}]
rates, firsts = [], []
for i in range(int(sys.argv[2])):
    times = []
    start = time.perf_counter()
    request = Request(i, story, "Once upon a time", int(sys.argv[3]))
    model.generate(request, lambda t: times.append(time.perf_counter()))
    firsts.append((times[0] - start) * 1000)
    rates.append((len(times) - 1) / (times[-1] - times[0]))
info = llama_cpp.llama_print_system_info().decode()
print(json.dumps({"rates": rates, "first_ms": firsts, "info": info}))
"""


def run(build: Path | None, mode: str) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*([str(build)] if build else []), str(REPO)]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(ANSWERS), str(MAX_TOKENS)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    if proc.returncode != 0:
        return {"crashed": proc.returncode}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--native", type=Path, required=True, help="folder of the native build")
    a = p.parse_args()
    amx = "amx" in Path("/proc/cpuinfo").read_text()
    results: dict[str, list[float]] = {"portable": [], "native": []}
    firsts: dict[str, list[float]] = {"portable": [], "native": []}
    notes = []
    native_mode = "plain"
    for r in range(ROUNDS):
        for name in ("portable", "native") if r % 2 == 0 else ("native", "portable"):
            build = a.native if name == "native" else None
            got = run(build, native_mode if name == "native" else "plain")
            if "crashed" in got and name == "native" and native_mode == "plain":
                notes.append(f"native build, plain: exit {got['crashed']} at the first prompt")
                native_mode = "no-extra-bufts"
                got = run(build, native_mode)
            if "crashed" in got:
                notes.append(f"{name} ({native_mode}): exit {got['crashed']}")
                continue
            results[name] += got["rates"]
            firsts[name] += got["first_ms"]
            if r == 0:
                notes.append(f"{name}: {got['info'].strip()}")
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "?")
    print(f"CPU: {cpu}; AMX reported: {'yes' if amx else 'no'}")
    for name in results:
        if results[name]:
            print(
                f"{name}: {statistics.median(results[name]):.1f} tok/s median "
                f"(n={len(results[name])}), first token {statistics.median(firsts[name]):.0f} ms"
            )
    if results["portable"] and results["native"]:
        ratio = statistics.median(results["portable"]) / statistics.median(results["native"])
        print(f"portable / native ({native_mode}): {ratio:.3f}")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
