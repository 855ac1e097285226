"""Patient records, at the bottom of clinsum: the typed model, every file format, the table and
its cache. Each value is parsed once, here; every layer above reads typed values.

- `model`: `Patient`, `Visit`, `BloodPressure`, "no entry" and "not recorded" (pure);
- `parse`: canonical rows to typed patients, the one validator every format ends in (pure);
- `csvfile`: a CSV file read once, each record with its line;
- `formats`: the files users have (our CSV, the original tool's CSV and JSON, one row per
  visit), detected from the file itself; `load(path)`;
- `fhir`: FHIR R4 exports (Bulk Data NDJSON and Bundles);
- `table`: `Records`, the patient table the app and the index hold;
- `cache`: `load(path)` through `<file>.records.jsonl`, so an unchanged file is not validated
  again at start-up.
"""

from .cache import load, source_hash
from .formats import default_data_file, load_patients
from .model import (
    NOT_RECORDED,
    BloodPressure,
    Loaded,
    Patient,
    RecordError,
    Visit,
    entries,
    is_no_entry,
    joined,
    shown,
)
from .parse import COLUMNS, SCALES, file_hash
from .table import Records

__all__ = [
    "COLUMNS",
    "NOT_RECORDED",
    "SCALES",
    "BloodPressure",
    "Loaded",
    "Patient",
    "RecordError",
    "Records",
    "Visit",
    "default_data_file",
    "entries",
    "file_hash",
    "is_no_entry",
    "joined",
    "load",
    "load_patients",
    "shown",
    "source_hash",
]
