"""`Records`: the patient table the app and the search index hold.

Rows are kept as JSON bytes (`Patient.to_row`) and a patient is decoded when asked for; the
columns every search reads (names, ages, genders, risks) are kept decoded. A risk that was not
recorded is NaN in `risks`, never 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import orjson

from .model import Patient


class Records(Mapping[int, Patient]):
    """Patients by id, in file order, each decoded from its JSON row when asked for.

    Columns every search reads (`names`, `ages`, `genders`, `risks`, by position) are kept
    decoded; `at(position)` is the patient at a position of the file.
    """

    def __init__(
        self,
        rows: bytes | memoryview,
        columns: Mapping[str, Any],
        scale: float,
        source_sha256: str | None = None,
    ) -> None:
        self._rows = memoryview(rows)
        # The sha256 of the file these records were validated from, when known: the search
        # index is keyed by it, and need not read and hash the file a second time.
        self.source_sha256 = source_sha256
        self._ends = np.asarray(columns["ends"], dtype=np.int64)
        self.ids: list[int] = list(columns["ids"])
        self.names: list[str] = list(columns["names"])
        self.ages = np.asarray(columns["ages"], dtype=np.int16)
        self.genders: list[str] = list(columns["genders"])
        self.risks = np.asarray(columns["risks"], dtype=np.float32)
        self.scale = scale
        self._position = {pid: i for i, pid in enumerate(self.ids)}
        columns_of = (self.ids, self.names, self.ages, self.genders, self.risks, self._ends)
        if len({len(column) for column in columns_of}) != 1:
            raise ValueError("the columns do not have one entry per patient")
        if len(self._ends) and self._ends[-1] != len(self._rows):
            raise ValueError(f"the rows end at byte {len(self._rows)}, not {self._ends[-1]}")

    @classmethod
    def of(cls, patients: Mapping[int, Patient], scale: float | None = None) -> Records:
        """`patients` as Records (already Records: themselves)."""
        if isinstance(patients, Records):
            return patients
        rows, ends = bytearray(), []
        for p in patients.values():
            rows += orjson.dumps(p.to_row())
            rows += b"\n"
            ends.append(len(rows))
        values = list(patients.values())
        columns = {
            "ends": ends,
            "ids": [p.patient_id for p in values],
            "names": [p.name for p in values],
            "ages": [p.age for p in values],
            "genders": [p.gender for p in values],
            "risks": [math.nan if p.risk_score is None else p.risk_score for p in values],
        }
        if scale is None:
            scale = max((p.score_scale for p in values), default=1.0)
        return cls(bytes(rows), columns, scale)

    def columns(self) -> dict[str, Any]:
        """The cache header's columns as JSON-ready lists: what `__init__` reads back."""
        return {
            "ends": self._ends.tolist(),
            "ids": self.ids,
            "names": self.names,
            "ages": self.ages.tolist(),
            "genders": self.genders,
            "risks": self.risks.tolist(),
        }

    def rows(self) -> memoryview:
        """Every patient's JSON row, each ending in a newline, in file order."""
        return self._rows

    def at(self, position: int) -> Patient:
        """The patient at `position` of the file (0-based), decoded now."""
        start = int(self._ends[position - 1]) if position else 0
        return Patient.from_row(orjson.loads(self._rows[start : int(self._ends[position])]))

    def __getitem__(self, patient_id: int) -> Patient:
        return self.at(self._position[patient_id])

    def __contains__(self, patient_id: object) -> bool:
        return patient_id in self._position

    def __iter__(self) -> Iterator[int]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __eq__(self, other: object) -> bool:
        # Mapping's own __eq__ compares with dicts only.
        if not isinstance(other, Mapping):
            return NotImplemented
        return len(self) == len(other) and all(
            pid in other and other[pid] == p for pid, p in self.items()
        )

    __hash__ = None  # type: ignore[assignment]
