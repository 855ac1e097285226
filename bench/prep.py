"""Scale data for the benchmark: generated patients and their index, built once and reused.

Kept apart from `run.py` so the long 100,000-patient build can be started on its own
(`python bench/prep.py --scale 100000`) while other figures are being worked on.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

DATA_DIR = REPO / "bench" / "data"
SEED = 42


def data_file(n: int) -> Path:
    return DATA_DIR / f"patients_{n}.csv"


def build_record(n: int) -> Path:
    return DATA_DIR / f"patients_{n}.build.json"


def ensure_data(n: int) -> Path:
    """The 100-patient set is the repo's own file (copied, so its index lives in bench/data);
    larger sets are generated with the same seeded generator the tests use."""
    from clinsum import datagen

    path = data_file(n)
    if path.exists():
        return path
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    if n == 100:
        shutil.copyfile(REPO / "patient_data.csv", tmp)
    else:
        datagen.write_csv(datagen.generate(n, SEED), tmp)
    tmp.replace(path)
    return path


def ensure_index(n: int, log: Callable[[str], None] = print) -> tuple[dict, Any, Any]:
    """Open (building if needed) the index for `n` patients: (build figures, patients,
    index). The figures of the build that made it are kept beside it, since a reused index
    cannot be timed again."""
    from clinsum import records
    from clinsum.embeddings import load_embedder
    from clinsum.search import PatientIndex

    path = ensure_data(n)
    embedder = load_embedder()  # loaded first: seconds that are not part of the build rate
    record = build_record(n)
    t0 = time.perf_counter()
    # As the server reads them: validated once, then from `<file>.records.jsonl`.
    patients = records.load(path).patients
    load_s = time.perf_counter() - t0
    cpu0, t1 = time.process_time(), time.perf_counter()
    load1 = os.getloadavg()[0]
    index = PatientIndex.open(patients, path, embedder=embedder, show_progress=sys.stderr.isatty())
    open_s = time.perf_counter() - t1
    cpu_s = time.process_time() - cpu0
    if index.rebuilt or not record.exists():
        info = {
            "patients": n,
            "built": index.rebuilt,
            "load_s": round(load_s, 2),
            "open_s": round(open_s, 2),
            "cpu_s": round(cpu_s, 2),
            "rate_per_s": round(n / open_s, 1),
            "rate_per_cpu_s": round(n / cpu_s, 1) if cpu_s else None,
            "loadavg_before": round(load1, 2),
            "loadavg_after": round(os.getloadavg()[0], 2),
            "cores": os.cpu_count(),
            "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        if index.rebuilt:
            record.write_text(json.dumps(info, indent=2) + "\n")
            log(f"built index for {n} patients in {open_s:.1f} s ({n / open_s:.1f}/s)")
    info = json.loads(record.read_text()) if record.exists() else info
    info["reopen_s"] = None if index.rebuilt else round(open_s, 2)
    info["reload_s"] = round(load_s, 2)
    return info, patients, index


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=100_000)
    args = parser.parse_args()
    print(json.dumps(ensure_index(args.scale)[0], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
