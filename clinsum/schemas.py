"""JSON Schema from Python types: a tool's output schema is derived from what it returns.

Rule 1: a result's shape is written once, as a type (a `TypedDict`, or the dataclass a
`to_dict` flattens), and its schema is read off that type, so the two cannot drift apart.
Rule 2: pure; imports nothing of ours. Only the types the tools return are spelled: bool,
int, float, str, lists, mappings (an object of any keys), `TypedDict`s, dataclasses, `Any`;
`Annotated[T, {...}]` adds keywords to T's schema (an `enum`, say), and
`Annotated[dict[str, Any], SomeDataclass]` is that dataclass flattened by its `to_dict`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, NotRequired, Required

_SCALARS: dict[Any, str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    type(None): "null",
}


def json_schema(tp: Any) -> dict[str, Any]:
    """The JSON Schema of values of type `tp`.

    Raises:
        TypeError: `tp` is not one of the types this module spells.
    """
    if tp is Any:
        return {}
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        inner, *extras = typing.get_args(tp)
        # Annotated[dict[str, Any], Hit]: a dict that is the dataclass flattened (`to_dict`).
        flattened = [e for e in extras if isinstance(e, type) and dataclasses.is_dataclass(e)]
        out = json_schema(flattened[0] if flattened else inner)
        for extra in extras:
            if isinstance(extra, Mapping):
                out.update(extra)
        return out
    if origin in (NotRequired, Required):
        return json_schema(typing.get_args(tp)[0])
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    if origin in (list, tuple) or tp in (list, tuple):
        args = typing.get_args(tp)
        return {"type": "array", "items": json_schema(args[0])} if args else {"type": "array"}
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return {"type": "object"}
    if typing.is_typeddict(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        # Under `from __future__ import annotations` Python 3.11's __required_keys__ cannot
        # see NotRequired (the annotations are strings then): read it off the hints.
        required = [
            k
            for k, hint in hints.items()
            if k in tp.__required_keys__ and typing.get_origin(hint) is not NotRequired
        ]
        return _object(hints, required)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        fields = dataclasses.fields(tp)
        required = [
            f.name
            for f in fields
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        return _object({f.name: hints[f.name] for f in fields}, required)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [json_schema(arg) for arg in typing.get_args(tp)]}
    raise TypeError(f"no JSON Schema for {tp!r}")


def _object(hints: Mapping[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: json_schema(hint) for name, hint in hints.items()},
        "required": required,
    }


def returned(fn: Any) -> Any:
    """The type `fn` is annotated to return (its module's names resolved)."""
    return typing.get_type_hints(fn, include_extras=True)["return"]


__all__ = ["json_schema", "returned"]
