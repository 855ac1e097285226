"""What every summaries store is: the `Store` protocol and the records it keeps.

Two stores implement it: the CSV files (`csvfile.CsvStore`, one machine, nothing to set up)
and PostgreSQL (`postgres.PostgresStore`, shared by replicas). The tools in `tools.py` only
ever talk to a `Store`, so every tool works the same on both. Pure: no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class StoreError(RuntimeError):
    """The store cannot be read or written; the message names the store and says why."""


@dataclass(frozen=True, slots=True)
class Version:
    """One saved summary. Saving never replaces a version: it adds the next one."""

    patient_id: int
    name: str
    text: str
    model: str
    generated_at: str
    grounded: bool
    edited: bool
    summary_id: str | None  # the draft it came from; None for a clinician's own summary

    def to_dict(self, version: int, saved_at: str | None) -> dict[str, Any]:
        """What `summary_history` returns for this version."""
        return {
            "version": version,
            "patient_id": self.patient_id,
            "name": self.name,
            "summary": self.text,
            "model": self.model,
            "generated_at": self.generated_at,
            "saved_at": saved_at,
            "grounded": self.grounded,
            "edited": self.edited,
            "summary_id": self.summary_id,
        }


@dataclass(frozen=True, slots=True)
class Draft:
    """A generated summary not saved yet, as a store that shares drafts keeps it."""

    summary_id: str
    patient_id: int
    text: str
    model: str
    generated_at: str
    grounded: bool
    unsupported: list[dict[str, Any]]
    digest_sha256: str  # the digest it was checked against: the record must still match
    created_at: float  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class Event:
    """One line of the audit trail: a summary generated, checked or saved."""

    action: str  # "generate" | "check" | "save"
    patient_id: int
    summary_id: str | None
    client: str  # the client's address, as the face saw it
    token_id: str | None  # which token the caller presented (a fingerprint), if auth is on
    detail: dict[str, Any] = field(default_factory=dict)


class Store(Protocol):
    """Where summaries are saved. Every method raises `StoreError` when the store fails."""

    kind: str  # "csv" | "postgresql"
    label: str  # the store as users name it: a file path, or the URL (never a password)
    shares_drafts: bool  # drafts reach other server processes through this store

    async def open(self) -> None:
        """Create (or migrate) what the store needs; raises StoreError if it cannot."""
        ...

    async def close(self) -> None: ...

    async def put_draft(self, draft: Draft) -> None: ...

    async def get_draft(self, summary_id: str) -> Draft | None: ...

    async def save(self, version: Version, event: Event | None = None) -> int:
        """Add `version` as the patient's newest; returns its number (1, 2, ...)."""
        ...

    async def current(self) -> list[dict[str, str]]:
        """Each patient's newest version, as the CSV's columns (all strings)."""
        ...

    async def history(self, patient_id: int) -> list[dict[str, Any]]:
        """Every version of this patient, oldest first (`Version.to_dict`)."""
        ...

    async def audit(self, event: Event) -> None: ...
