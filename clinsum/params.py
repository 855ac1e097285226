"""A tool's parameters, declared once: `Param` and `check_params`.

From each `Param` come both the validation of incoming params (with a message naming the
parameter and the reason) and the JSON Schema that MCP's `tools/list` publishes, so the two
can never disagree. Pure: no I/O; a refused value raises `jsonrpc.invalid_params`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .jsonrpc import invalid_params


@dataclass(frozen=True, slots=True)
class Param:
    """One named parameter: its JSON type, bounds and default."""

    name: str
    type: str  # "integer" | "string" | "boolean" | "number" | "object"
    description: str
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    properties: tuple[Param, ...] = ()  # for "object": the keys it may hold
    # A check of the value's content beyond type and bounds: returns why it is refused.
    refine: Callable[[Any], str | None] | None = None

    def schema(self) -> dict[str, Any]:
        s: dict[str, Any] = {"type": self.type, "description": self.description}
        if self.default is not None:
            s["default"] = self.default
        if self.minimum is not None:
            s["minimum"] = self.minimum
        if self.maximum is not None:
            s["maximum"] = self.maximum
        if self.max_length is not None:
            s["minLength"] = 1
            s["maxLength"] = self.max_length
        if self.type == "object":
            s["properties"] = {p.name: p.schema() for p in self.properties}
            s["additionalProperties"] = False
        return s

    def check(self, value: Any, where: str = "") -> Any:
        name = where + self.name
        if self.type == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                raise invalid_params(name, f"must be an integer, got {_json_type(value)}")
        elif self.type == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise invalid_params(name, f"must be a number, got {_json_type(value)}")
        elif self.type == "string":
            if not isinstance(value, str):
                raise invalid_params(name, f"must be a string, got {_json_type(value)}")
            if not value.strip():
                limit = f" (1 to {self.max_length} characters)" if self.max_length else ""
                raise invalid_params(name, f"must not be empty{limit}")
            if self.max_length is not None and len(value) > self.max_length:
                raise invalid_params(
                    name, f"is too long ({len(value)} characters; at most {self.max_length})"
                )
        elif self.type == "boolean":
            if not isinstance(value, bool):
                raise invalid_params(name, f"must be true or false, got {_json_type(value)}")
        elif self.type == "object":
            if not isinstance(value, dict):
                raise invalid_params(name, f"must be an object, got {_json_type(value)}")
            return check_params(self.properties, value, where=name + ".")
        if self.refine is not None and (reason := self.refine(value)):
            raise invalid_params(name, reason)
        if self.minimum is not None and value < self.minimum:
            raise invalid_params(name, f"must be at least {_num(self.minimum)}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise invalid_params(name, f"must be at most {_num(self.maximum)}, got {value}")
        return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def check_params(specs: tuple[Param, ...], params: dict[str, Any], where: str = "") -> dict:
    """Validate `params` against `specs`; unknown keys are an error, not silently ignored."""
    known = {p.name for p in specs}
    for key in params:
        if key not in known and key != "_meta":
            allowed = ", ".join(sorted(known)) or "none"
            raise invalid_params(where + key, f"is not a known parameter (allowed: {allowed})")
    out: dict[str, Any] = {}
    for p in specs:
        if p.name in params and params[p.name] is not None:
            out[p.name] = p.check(params[p.name], where)
        elif p.required:
            raise invalid_params(where + p.name, "is required")
        elif p.default is not None:
            out[p.name] = p.default
    return out


__all__ = ["Param", "check_params"]
