"""What a grounding check returns: the facts a summary states, and the claims it cannot back."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Fact:
    """A fact of the record that the summary states correctly, and where it does."""

    kind: str  # name/age/gender/bp/sugar/risk/dose/date/condition/medication/symptom
    value: str  # the record's value
    text: str
    start: int
    end: int
    source: str = "record"  # or "visit YYYY-MM-DD" when only the visit history has it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Claim:
    """Something the summary says that the record does not support."""

    kind: str  # name/age/gender/bp/sugar/number/condition/medication/symptom/trend/flag/escalation
    text: str
    start: int
    end: int
    reason: str
    blocking: bool = True  # False only for symptoms, see the module docstring

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Grounding:
    supported: list[Fact]
    unsupported: list[Claim]
    missing: list[str]  # key facts not stated, e.g. "blood sugar: 212"
    coverage: float  # share of key facts stated, 0..1

    @property
    def ok(self) -> bool:
        return not any(c.blocking for c in self.unsupported)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "coverage": round(self.coverage, 3),
            "supported": [f.to_dict() for f in self.supported],
            "unsupported": [c.to_dict() for c in self.unsupported],
            "missing": list(self.missing),
        }
