"""What the demo's fake model says and which tools it calls.

Without ``--config`` the demo plays a fixed kitchen conversation. With a config,
the fake model calls that config's OWN tools, one per turn, with arguments made
from each function declaration's schema (:func:`example_args`), so the demo
shows what a real call would do to your devices: the same validation, bounds,
rate limits and pins as on the Pi.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

# Interior points of a number's range, in the order successive calls use them.
_FRACTIONS = (0.5, 0.8, 0.2, 1.0, 0.0)


@dataclass(frozen=True)
class Step:
    """One demo turn: what the user says, the call the fake model makes, its answer."""

    said: str
    call: tuple[str, dict[str, Any]] | None
    answer: str


KITCHEN: tuple[Step, ...] = (
    Step("Turn on the kitchen lamp.", ("set_lamp", {"on": True}), "Done, the kitchen lamp is on."),
    Step("What do you see?", ("look", {}), "I see coloured bars and a clock."),
    Step(
        "Dim the counter light to half.",
        ("dim_counter_light", {"value": 0.5}),
        "Dimmed to half.",
    ),
    Step("Open the blind.", ("move_blind", {"angle": 90}), "The blind is open."),
    Step("Is the back door open?", ("is_door_open", {}), "No, the back door is closed."),
    Step("Turn the lamp off again.", ("set_lamp", {"on": False}), "The lamp is off."),
)


def example_args(schema: dict[str, Any] | None, n: int = 0) -> dict[str, Any]:
    """Arguments that satisfy a declaration's ``parameters`` schema; ``n`` varies them.

    Every required property is given; booleans alternate (true first), numbers
    step through points inside ``minimum..maximum``, enums cycle. Optional
    properties are given on odd ``n`` at their gentlest (lowest) value: the
    device layer may bound them together in ways a schema cannot state (a
    blink's count x period_s). Raises ValueError for a schema no value
    satisfies (an INTEGER range with no whole number in it).
    """
    if not schema:
        return {}
    value = example_value(schema, n, "parameters")
    if not isinstance(value, dict):
        raise ValueError("parameters: the top level must be an OBJECT")
    return value


def example_value(
    schema: dict[str, Any], n: int, path: str = "value", *, lowest: bool = False
) -> Any:
    """One valid value for ``schema`` (see :func:`example_args`); ``lowest``: the minimum."""
    enum = schema.get("enum")
    if enum:
        return enum[n % len(enum)]
    kind = str(schema.get("type", "STRING")).upper()
    if kind == "OBJECT":
        required = set(schema.get("required") or ())
        out = {}
        for key, sub in (schema.get("properties") or {}).items():
            if key in required:
                out[key] = example_value(sub, n, f"{path}.{key}", lowest=lowest)
            elif n % 2:
                out[key] = example_value(sub, n, f"{path}.{key}", lowest=True)
        return out
    if kind == "BOOLEAN":
        return n % 2 == 0
    if kind in ("NUMBER", "INTEGER"):
        fraction = 0.0 if lowest else _FRACTIONS[n % len(_FRACTIONS)]
        return _number(schema, fraction, integer=kind == "INTEGER", path=path)
    if kind == "ARRAY":
        items = schema.get("items") or {"type": "STRING"}
        return [example_value(items, n, f"{path}[0]", lowest=lowest)]
    return f"demo {n + 1}"


def _number(schema: dict[str, Any], fraction: float, *, integer: bool, path: str) -> float | int:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is None and high is None:
        low, high = 0.0, 10.0
    elif low is None:
        low = float(high) - 10.0
    elif high is None:
        high = float(low) + 10.0
    low, high = float(low), float(high)
    if low > high:
        raise ValueError(f"{path}: minimum {low:g} is above maximum {high:g}")
    if integer:
        first, last = math.ceil(low), math.floor(high)
        if first > last:
            raise ValueError(f"{path}: no whole number between {low:g} and {high:g}")
        return first + round(fraction * (last - first))
    # The ends only: a PWM level's schema says 0..max, but what the device allows may be
    # "0 (off) or min..max", which a schema cannot express; both ends are always valid.
    return high if fraction >= 0.5 else low


def spoken(args: dict[str, Any]) -> str:
    """``on true, value 0.4``: arguments as a phrase espeak-ng can say."""
    words = []
    for key, value in args.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float, str)):
            text = f"{value:g}" if isinstance(value, float) else str(value)
        else:
            text = json.dumps(value)
        words.append(f"{key.replace('_', ' ')} {text}")
    return ", ".join(words)


def steps_for(declarations: Sequence[dict[str, Any]]) -> Iterator[Step]:
    """Endless turns calling each declared function in turn, arguments varying per round."""
    if not declarations:
        while True:
            yield Step("Hello, what can you do?", None, "This config declares no tools.")
    n = 0
    while True:
        for declaration in declarations:
            name = declaration["name"]
            try:
                args = example_args(declaration.get("parameters"), n)
            except ValueError as exc:  # a schema no value satisfies: say so, call nothing
                yield Step(f"Please use {name.replace('_', ' ')}.", None, f"I cannot: {exc}.")
                continue
            said = f"Please use {name.replace('_', ' ')}" + (
                f" with {spoken(args)}." if args else "."
            )
            answer = f"I called {name}" + (f" with {spoken(args)}." if args else ".")
            yield Step(said, (name, args), answer)
        n += 1
