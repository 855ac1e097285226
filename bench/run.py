"""`make bench`: how long people wait for the server, next to the same work done directly.

Each figure is measured through a real `mcp_server.py` subprocess over loopback and, where
it makes sense, directly in this process (the same `PatientIndex`, backend or
`SummaryStore` call, no server). The two are interleaved request by request in one run, so
the ratio between them survives a noisy two-core machine even when the absolute numbers
do not.

    python bench/run.py                   # everything; builds the 100,000-patient index once
    python bench/run.py --quick           # skip the 100,000-patient figures
    python bench/run.py --scale 20000 --out bench/results.md
    python bench/run.py --only search,save

This file is the command line only: it picks sections (`bench/sections/`, registered in
`SECTIONS`), runs them in turn and writes what they return. Writes the Markdown table to
`--out` and the raw figures to the same name with `.json`. Scale data and indexes live in
`bench/data/` (git-ignored) and are reused between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench import prep
from bench.harness import (
    DEFAULT_OUT,
    RUN_DIR,
    Context,
    Row,
    log,
    render,
    update_readme,
)
from bench.sections import SECTIONS


def chosen(args: argparse.Namespace) -> list[str]:
    """The sections to run, in registry order."""
    if args.only:
        return [name for name in SECTIONS if name in args.only]
    return [name for name, s in SECTIONS.items() if s.quick or not args.quick]


async def run(args: argparse.Namespace) -> int:
    """Each chosen section in turn, then the report."""
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    (RUN_DIR / "summaries_embedded.csv").unlink(missing_ok=True)

    small = prep.ensure_data(100)
    log("opening the 100-patient index (built once, reused)")
    build_100, patients, index = prep.ensure_index(100, log)
    gc.freeze()  # as the server does: no full collections of torch & co. mid-measurement
    ctx = Context(args.quick, args.scale, small, patients, index, raw={"build_100": build_100})

    rows: list[Row] = []
    try:
        for name in chosen(args):
            section = SECTIONS[name]
            await ctx.release(keep=section.shares)
            rows += await section.run(ctx)
    finally:
        await ctx.release()

    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg()[0],
        "duration_s": time.perf_counter() - t_start,
        "args": " ".join(sys.argv[1:]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(rows, meta))
    figures = [r for r in rows if r.value is None]
    singles = [r for r in rows if r.value is not None]
    payload = {
        "meta": meta,
        "rows": [{k: v for k, v in r.__dict__.items() if k != "value"} for r in figures],
        "single": [
            {"figure": r.figure, "value": r.value, "target": r.target, "met": r.ok} for r in singles
        ],
        "raw": ctx.raw,
    }
    out.with_suffix(".json").write_text(
        orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode()
    )
    log(f"wrote {out} and {out.with_suffix('.json')} in {meta['duration_s'] / 60:.1f} min")
    full_run = not args.only and not args.quick and out.resolve() == DEFAULT_OUT.resolve()
    if full_run and update_readme(rows, meta):
        log("updated the table in README.md")
    print(out.read_text())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    sections = "\n".join(f"  {name:<14} {s.help}" for name, s in SECTIONS.items())
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=f"sections, in the order they run:\n{sections}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scale", type=int, default=100_000, help="patients in the scale test (default 100000)"
    )
    parser.add_argument("--quick", action="store_true", help="skip the scale test")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="Markdown report (and .json)")
    parser.add_argument(
        "--only",
        type=lambda s: set(s.split(",")),
        help="comma-separated sections (listed below), for working on one figure",
    )
    args = parser.parse_args(argv)
    if args.scale < 1:
        parser.error("--scale must be at least 1")
    if args.only and (unknown := args.only - set(SECTIONS)):
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; see the list below --help")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
