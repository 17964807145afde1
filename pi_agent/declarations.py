"""YAML tools -> function declarations: the schema subset, each verb's arguments, refusals.

The Live API takes an OpenAPI subset and closes the session on anything else
(:func:`check_schema`, :func:`check_declaration`). A YAML tool is one device and
one verb; its arguments (:class:`Param`) come from the verb and the device's
bounds narrowed by the tool's, and the same description that goes into the
declaration checks the model's arguments and says, when it refuses one, what is
allowed (:class:`Refused`, in the result shape of :mod:`pi_agent.tools`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .bounds import BLINK_PERIOD_S, Bounds
from .config import ToolSettings
from .errors import BoundsError, ToolError
from .models import BEHAVIORS
from .timers import error_result

#: The only keys the Live API's OpenAPI-subset Schema may carry here; anything
#: else (``additionalProperties``, ``default``, ``readOnly``...) risks a 1007.
SCHEMA_KEYS = frozenset(
    {
        "type",
        "description",
        "properties",
        "required",
        "minimum",
        "maximum",
        "enum",
        "items",
        "nullable",
        "format",
    }
)
SCHEMA_TYPES = frozenset({"OBJECT", "BOOLEAN", "NUMBER", "INTEGER", "STRING", "ARRAY"})
DECLARATION_KEYS = frozenset({"name", "description", "parameters", "behavior"})

DEFAULT_PERIOD_S = 1.0
LONG_VERBS = frozenset({"blink", "pulse"})  # NON_BLOCKING unless the YAML says otherwise


class Refused(ToolError):
    """A refused call that tells the model how (or whether) a new call could succeed.

    The keyword arguments are those of :func:`pi_agent.timers.error_result`, plus
    ``retry_after_s`` for a limit that lifts by itself.
    """

    def __init__(self, reason: str, *, retry_after_s: float | None = None, **details: Any):
        super().__init__(reason)
        self.details = details
        self.retry_after_s = retry_after_s

    def result(self) -> dict[str, Any]:
        out = error_result(str(self), **self.details)
        if self.retry_after_s is not None:
            out["retryable"] = True
            out["retry_after_s"] = self.retry_after_s
        return out


def error_from(exc: BaseException) -> dict[str, Any]:
    """The informative error result for an exception raised by a tool or a device."""
    if isinstance(exc, Refused):
        return exc.result()
    if isinstance(exc, BoundsError):
        return error_result(str(exc), allowed_range={"min": exc.low, "max": exc.high})
    return error_result(str(exc))


def check_schema(schema: Any, path: str = "parameters") -> None:
    """Raise ValueError if ``schema`` strays outside the OpenAPI subset the API takes."""
    if not isinstance(schema, dict):
        raise ValueError(f"{path}: a schema must be an object")
    unknown = set(schema) - SCHEMA_KEYS
    if unknown:
        raise ValueError(f"{path}: unsupported schema keys {sorted(unknown)}")
    kind = schema.get("type")
    if kind not in SCHEMA_TYPES:
        raise ValueError(f"{path}.type: {kind!r} is not one of {sorted(SCHEMA_TYPES)}")
    if kind == "OBJECT":
        props = schema.get("properties")
        if not isinstance(props, dict) or not props:
            # The API answers "properties: should be non-empty for OBJECT type".
            raise ValueError(f"{path}.properties: an OBJECT needs at least one property")
        for key, sub in props.items():
            check_schema(sub, f"{path}.properties.{key}")
        required = schema.get("required", [])
        if not isinstance(required, list) or not set(required) <= set(props):
            raise ValueError(f"{path}.required: must list names from properties")
    if "items" in schema:
        check_schema(schema["items"], f"{path}.items")


def check_declaration(declaration: Any) -> None:
    """Raise ValueError unless ``declaration`` is a FunctionDeclaration the API accepts."""
    if not isinstance(declaration, dict):
        raise ValueError("a function declaration must be an object")
    unknown = set(declaration) - DECLARATION_KEYS
    if unknown:
        raise ValueError(f"unsupported declaration keys {sorted(unknown)}")
    name = declaration.get("name")
    if not isinstance(name, str) or not _valid_name(name):
        raise ValueError(f"{name!r} is not a valid function name ([A-Za-z0-9_-]{{1,63}})")
    if not isinstance(declaration.get("description"), str) or not declaration["description"]:
        raise ValueError(f"{name}: a declaration needs a description")
    if declaration.get("behavior", "BLOCKING") not in BEHAVIORS:
        raise ValueError(f"{name}.behavior: {declaration['behavior']!r} is not one of {BEHAVIORS}")
    if "parameters" in declaration:
        check_schema(declaration["parameters"], f"{name}.parameters")
        if declaration["parameters"].get("type") != "OBJECT":
            raise ValueError(f"{name}.parameters: the top level must be an OBJECT")


def _valid_name(name: str) -> bool:
    ok = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
    return 1 <= len(name) <= 63 and set(name) <= ok and not name[0].isdigit()


@dataclass(frozen=True)
class Param:
    """One argument a verb takes; it becomes a Schema property and a validator."""

    name: str
    type: str  # BOOLEAN | NUMBER | INTEGER
    description: str
    required: bool = True
    minimum: float | None = None
    maximum: float | None = None
    default: Any = None
    zero_ok: bool = False  # a PWM level: 0 (off) is allowed below ``minimum``
    unit: str | None = None  # for allowed_range in an error result

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "description": self.description}
        if self.minimum is not None:
            out["minimum"] = 0.0 if self.zero_ok else self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out

    def allowed(self) -> str:
        """``0 to 0.8`` or ``0 (off) or 0.2 to 0.8``."""
        low, high = self.minimum, self.maximum
        if self.zero_ok and low:
            return f"0 (off) or {low:g} to {high:g}"
        return f"{low:g} to {high:g}"

    def spec(self) -> str:
        """``value (number 0 to 0.8, required)`` for error messages."""
        kind = {"BOOLEAN": "true or false", "NUMBER": "number", "INTEGER": "integer"}[self.type]
        bounds = ""
        if self.minimum is not None and self.maximum is not None:
            bounds = f" {self.allowed()}"
        need = "required" if self.required else f"optional, default {self.default:g}"
        return f"{self.name} ({kind}{bounds}, {need})"

    def allowed_range(self) -> dict[str, Any] | None:
        """``{"min", "max", "unit"?}`` for an error result; None for a boolean."""
        if self.minimum is None or self.maximum is None:
            return None
        out: dict[str, Any] = {"min": self.minimum, "max": self.maximum}
        if self.unit:
            out["unit"] = self.unit
        return out

    def refuse(self, reason: str) -> Refused:
        """A :class:`Refused` carrying what this argument accepts."""
        if self.type == "BOOLEAN":
            return Refused(reason, valid_options=[True, False])
        hint = "0 switches it off" if self.zero_ok and self.minimum else None
        return Refused(reason, allowed_range=self.allowed_range(), hint=hint)

    def check(self, tool: str, value: Any) -> Any:
        """The value converted to its Python type, or Refused saying what is allowed."""
        where = f"argument {self.name!r} of {tool}"
        if self.type == "BOOLEAN":
            if not isinstance(value, bool):
                raise self.refuse(f"{where} must be true or false, not {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = "whole number" if self.type == "INTEGER" else "number"
            raise self.refuse(f"{where} must be a {kind}, not {value!r}")
        if not math.isfinite(value):
            raise self.refuse(f"{where} must be a finite number, not {value!r}")
        if self.type == "INTEGER":
            if value != int(value):
                raise self.refuse(f"{where} must be a whole number, not {value!r}")
            value = int(value)
        else:
            value = float(value)
        if self.zero_ok and value == 0:
            return value
        low, high = self.minimum, self.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.refuse(f"{where} is {value:g}, outside the allowed {self.allowed()}")
        return value


@dataclass(frozen=True)
class Tool:
    """A YAML tool bound to its device kind and its derived parameters."""

    settings: ToolSettings
    kind: str
    params: tuple[Param, ...]

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def verb(self) -> str:
        return self.settings.verb

    @property
    def device(self) -> str:
        return self.settings.device

    @property
    def behavior(self) -> str:
        """BLOCKING or NON_BLOCKING: the YAML's, else NON_BLOCKING for blink and pulse."""
        if self.settings.behavior is not None:
            return self.settings.behavior.upper()
        return "NON_BLOCKING" if self.verb in LONG_VERBS else "BLOCKING"

    def declaration(self) -> dict[str, Any]:
        decl: dict[str, Any] = {"name": self.name, "description": self.settings.description}
        if self.params:  # no-arg verbs omit parameters: an empty OBJECT is rejected
            decl["parameters"] = {
                "type": "OBJECT",
                "properties": {p.name: p.schema() for p in self.params},
                "required": [p.name for p in self.params if p.required],
            }
            if not decl["parameters"]["required"]:
                del decl["parameters"]["required"]
        return decl

    def signature(self) -> str:
        if not self.params:
            return "it takes no arguments"
        return "it takes: " + "; ".join(p.spec() for p in self.params)


def params_for(t: ToolSettings, span: Bounds | None, device_text: str) -> tuple[Param, ...]:
    """The arguments a verb takes; the YAML may override the main one's description.

    ``span`` is the device's range already narrowed by the tool's min/max: a
    tool without bounds offers exactly its device's.
    """
    what = device_text or t.device
    custom = t.parameter_description
    verb = t.verb
    if verb == "set":
        return (
            Param("on", "BOOLEAN", custom or f"true switches {what} on, false switches it off."),
        )
    if verb == "value" and span is not None:
        low, high = span.low, span.high
        if low > 0:
            lowest = f"0 is off, otherwise {low:g} is the lowest allowed"
        else:
            lowest = f"{low:g} is the lowest allowed"
        text = custom or f"Level of {what}: {lowest}, {high:g} the highest."
        return (Param("value", "NUMBER", text, minimum=low, maximum=high, zero_ok=True),)
    if verb == "angle" and span is not None:
        low, high = span.low, span.high
        text = custom or f"Angle of {what} in degrees, {low:g} to {high:g}."
        return (Param("angle", "NUMBER", text, minimum=low, maximum=high, unit="degrees"),)
    if verb in ("blink", "pulse"):
        top = max(BLINK_PERIOD_S[0], min(BLINK_PERIOD_S[1], t.max_duration_s))
        period = min(DEFAULT_PERIOD_S, top)
        count = max(1, min(3, t.max_count, int(t.max_duration_s / period)))
        return (
            Param(
                "count",
                "INTEGER",
                custom or f"How many times to {verb}.",
                required=False,
                minimum=1,
                maximum=t.max_count,
                default=count,
                unit="times",
            ),
            Param(
                "period_s",
                "NUMBER",
                f"Seconds per {verb} (on and off together).",
                required=False,
                minimum=BLINK_PERIOD_S[0],
                maximum=top,
                default=period,
                unit="seconds",
            ),
        )
    return ()


__all__ = [
    "DECLARATION_KEYS",
    "LONG_VERBS",
    "SCHEMA_KEYS",
    "Param",
    "Refused",
    "Tool",
    "check_declaration",
    "check_schema",
    "error_from",
    "params_for",
]
