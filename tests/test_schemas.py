"""Output schemas read off types (`clinsum/schemas.py`), without a server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, NotRequired, TypedDict

import pytest

from clinsum.schemas import json_schema
from clinsum.tools import TOOLS


@dataclass
class Point:
    x: int
    label: str
    tags: list[str] = field(default_factory=list)


class Answer(TypedDict):
    points: list[Annotated[dict[str, Any], Point]]
    kind: Annotated[str, {"enum": ["a", "b"]}]
    note: NotRequired[str]
    ok: bool
    score: float
    extra: dict[str, Any]


def test_typeddict_dataclass_and_annotations() -> None:
    """NotRequired keys are left out of `required` (even under postponed annotations), a
    flattened dataclass is described by its fields, and Annotated keywords are kept. Mutation
    caught: every key required, or the dataclass read as an open object."""
    assert json_schema(Answer) == {
        "type": "object",
        "properties": {
            "points": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "x": {"type": "integer"},
                        "label": {"type": "string"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["x", "label"],
                },
            },
            "kind": {"type": "string", "enum": ["a", "b"]},
            "note": {"type": "string"},
            "ok": {"type": "boolean"},
            "score": {"type": "number"},
            "extra": {"type": "object"},
        },
        "required": ["points", "kind", "ok", "score", "extra"],
    }


def test_unknown_type_is_refused() -> None:
    with pytest.raises(TypeError):
        json_schema(complex)


def test_every_tool_has_an_object_output_schema() -> None:
    """Each handler's return type gives its schema; search's hits are `search.Hit`'s fields."""
    for tool in TOOLS.values():
        assert tool.output_schema()["type"] == "object", tool.name
    hit = TOOLS["search"].output_schema()["properties"]["results"]["items"]
    assert hit["required"] == ["patient_id", "name", "age", "gender", "score", "matched"]
    assert TOOLS["search"].output_schema()["required"] == ["query", "results"]
