"""A CSV file read once: its header, and each record as text with the line it starts on.

One pass of the csv module gives both the values and where each record starts (a quoted cell
may span lines, so a record's line is not its number plus one). A short or long row is not
padded or cut: it is reported with its line.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from .model import RecordError
from .parse import RawRecord

# A visit history of a long-followed patient is one cell, well past csv's 128 KiB default.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def read_csv(path: str | Path) -> tuple[list[str], list[RawRecord]]:
    """The header and every record of a CSV file, as text with its first line number.

    Raises:
        RecordError: the file is missing, empty, not UTF-8 or not CSV.
    """
    path = Path(path)
    if not path.exists():
        raise RecordError(f"patient data file not found: {path}")
    if not path.is_file():
        raise RecordError(f"patient data path is not a file: {path}")
    records: list[RawRecord] = []
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, strict=True)
            header = next(reader, None)
            while header is not None and not header:  # blank lines before the header
                header = next(reader, None)
            if header is None:
                raise RecordError(f"{path}: the file is empty (expected a CSV header)")
            columns = [c.strip() for c in header]
            previous_end = reader.line_num
            for values in reader:
                line = previous_end + 1
                previous_end = reader.line_num
                if not values:  # a blank line is no record
                    continue
                problem = ""
                if len(values) != len(columns):
                    problem = f"expected {len(columns)} fields, found {len(values)}"
                    values = (values + [""] * len(columns))[: len(columns)]
                row = dict(zip(columns, values, strict=True))
                records.append(RawRecord(f"line {line}", row, problem=problem))
    except csv.Error as exc:
        raise RecordError(f"{path}: not a readable CSV file: {exc}") from None
    except UnicodeDecodeError as exc:
        raise RecordError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return columns, records
