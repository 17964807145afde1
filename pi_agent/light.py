"""The status light: one table of patterns per agent state and light kind, and the light.

``STATUS_PATTERNS`` is the one place that maps what the agent shows to how an
LED (plain, PWM or RGB) shows it; docs, ``ctl status`` and tests read it.
:class:`StatusLight` never blocks: blinks and pulses run on gpiozero's own
background thread, sleeping until the next transition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gpiozero import RGBLED, DigitalOutputDevice, PWMOutputDevice

from .bounds import scaled_level
from .config import StatusLightSettings
from .errors import DeviceError

# --------------------------------------------------------------------------- status light


Color = tuple[float, float, float]
WHITE: Color = (1.0, 1.0, 1.0)
RED: Color = (1.0, 0.0, 0.0)
GREEN: Color = (0.0, 1.0, 0.0)
BLUE: Color = (0.0, 0.0, 1.0)
CYAN: Color = (0.0, 1.0, 1.0)
YELLOW: Color = (1.0, 1.0, 0.0)
MAGENTA: Color = (1.0, 0.0, 1.0)


@dataclass(frozen=True)
class LightPattern:
    """One way of lighting an LED: off, solid, blink or pulse.

    ``on_s``/``off_s`` are blink on/off seconds, or pulse fade-in/fade-out
    seconds. ``level`` is the steady brightness (pwm and rgb; times
    ``status_light.brightness``); ``color`` is for rgb_led only.
    """

    mode: Literal["off", "solid", "blink", "pulse"]
    on_s: float = 0.0
    off_s: float = 0.0
    level: float = 1.0
    color: Color = WHITE

    def describe(self, kind: str) -> str:
        """Words for docs and ``pi-agent ctl status``."""
        color = ""
        if kind == "rgb_led" and self.mode != "off":
            color = _COLOR_NAMES.get(self.color, str(self.color)) + " "
        if self.mode == "off":
            return "off"
        if self.mode == "solid":
            level = "" if kind == "led" or self.level == 1 else f" at {self.level:.0%}"
            return f"{color}on{level}"
        if self.mode == "blink":
            return f"{color}blink {self.on_s:g} s on / {self.off_s:g} s off"
        return f"{color}pulse {self.on_s:g} s up / {self.off_s:g} s down"


_COLOR_NAMES = {
    WHITE: "white",
    RED: "red",
    GREEN: "green",
    BLUE: "blue",
    CYAN: "cyan",
    YELLOW: "yellow",
    MAGENTA: "magenta",
}


def _p(mode: Any, on_s: float = 0.0, off_s: float = 0.0, level: float = 1.0, color: Color = WHITE):
    return LightPattern(mode, on_s, off_s, level, color)


#: state -> {"led" | "pwm_led" | "rgb_led": LightPattern}. The one place that
#: maps agent states to light; docs and tests read it. A plain LED can only
#: blink, so its patterns differ in timing; every (on, off) pair is unique.
STATUS_PATTERNS: dict[str, dict[str, LightPattern]] = {
    "off": {"led": _p("off"), "pwm_led": _p("off"), "rgb_led": _p("off")},
    "starting": {
        "led": _p("blink", 0.1, 0.1),
        "pwm_led": _p("pulse", 0.25, 0.25),
        "rgb_led": _p("blink", 0.1, 0.1, color=WHITE),
    },
    "connecting": {
        "led": _p("blink", 0.5, 0.5),
        "pwm_led": _p("pulse", 1.0, 1.0),
        "rgb_led": _p("pulse", 1.0, 1.0, color=BLUE),
    },
    "ready": {
        "led": _p("blink", 0.05, 2.95),
        "pwm_led": _p("solid", level=0.1),
        "rgb_led": _p("solid", level=0.5, color=GREEN),
    },
    "listening": {
        "led": _p("solid"),
        "pwm_led": _p("solid", level=1.0),
        "rgb_led": _p("solid", color=WHITE),
    },
    "thinking": {
        "led": _p("blink", 0.2, 0.2),
        "pwm_led": _p("pulse", 0.5, 0.5),
        "rgb_led": _p("pulse", 0.5, 0.5, color=CYAN),
    },
    "speaking": {
        "led": _p("blink", 0.4, 0.1),
        "pwm_led": _p("solid", level=0.5),
        "rgb_led": _p("solid", color=CYAN),
    },
    "tool_running": {
        "led": _p("blink", 0.1, 0.4),
        "pwm_led": _p("blink", 0.1, 0.4),
        "rgb_led": _p("blink", 0.1, 0.4, color=YELLOW),
    },
    "reconnecting": {
        "led": _p("blink", 0.5, 1.5),
        "pwm_led": _p("pulse", 0.5, 1.5),
        "rgb_led": _p("blink", 0.5, 0.5, color=BLUE),
    },
    "muted": {
        "led": _p("blink", 0.05, 0.95),
        "pwm_led": _p("blink", 0.05, 0.95),
        "rgb_led": _p("solid", level=0.5, color=MAGENTA),
    },
    "error_network": {
        "led": _p("blink", 1.0, 1.0),
        "pwm_led": _p("blink", 1.0, 1.0),
        "rgb_led": _p("blink", 1.0, 1.0, color=RED),
    },
    "error_auth": {
        "led": _p("blink", 0.8, 0.2),
        "pwm_led": _p("blink", 0.8, 0.2),
        "rgb_led": _p("solid", color=RED),
    },
    "working": {
        "led": _p("blink", 0.3, 0.7),
        "pwm_led": _p("pulse", 1.5, 1.5),
        "rgb_led": _p("pulse", 1.5, 1.5, color=CYAN),
    },
    "ringing": {
        "led": _p("blink", 0.15, 0.15),
        "pwm_led": _p("blink", 0.15, 0.15),
        "rgb_led": _p("blink", 0.15, 0.15, color=MAGENTA),
    },
    "error_audio": {
        "led": _p("blink", 0.2, 1.0),
        "pwm_led": _p("blink", 0.2, 1.0),
        "rgb_led": _p("blink", 0.2, 1.0, color=RED),
    },
}

STATUS_STATES = tuple(STATUS_PATTERNS)


def status_table() -> dict[str, dict[str, str]]:
    """STATUS_PATTERNS in words (state -> kind -> description), for docs and ``ctl status``."""
    return {
        state: {kind: pattern.describe(kind) for kind, pattern in per_kind.items()}
        for state, per_kind in STATUS_PATTERNS.items()
    }


def light_kind(device: Any) -> str:
    """``led``, ``pwm_led`` or ``rgb_led`` for a gpiozero output device."""
    if isinstance(device, RGBLED):
        return "rgb_led"
    if isinstance(device, PWMOutputDevice):
        return "pwm_led"
    if isinstance(device, DigitalOutputDevice):
        return "led"
    raise DeviceError(f"{device!r} cannot be a status light (need an led, pwm_led or rgb_led)")


class StatusLight:
    """Shows the agent's state on one LED; ``None`` makes every call a no-op.

    Agent thread only. ``show()`` never blocks: blinks and pulses run on
    gpiozero's own background thread, and each call replaces the previous
    pattern (gpiozero stops the old thread first), so the light cannot get
    stuck in a stale pattern.
    """

    def __init__(self, device: Any | None, settings: StatusLightSettings):
        self.device = device
        self.settings = settings
        self.kind = light_kind(device) if device is not None else None
        self.state: str | None = None

    def pattern(self, state: str) -> LightPattern | None:
        """The pattern ``state`` would show on this light (None without a light)."""
        try:
            per_kind = STATUS_PATTERNS[state]
        except KeyError:
            raise ValueError(
                f"unknown status light state {state!r}; known: {', '.join(STATUS_STATES)}"
            ) from None
        return per_kind[self.kind] if self.kind is not None else None

    def show(self, state: str) -> None:
        """Switch to the pattern for ``state`` (ValueError for an unknown state)."""
        pattern = self.pattern(state)
        if state == self.state:
            return
        self.state = state
        if pattern is None:
            return
        self._apply(pattern)

    def _apply(self, p: LightPattern) -> None:
        device, kind = self.device, self.kind
        scale = self.settings.brightness
        if kind == "rgb_led":
            color = tuple(c * scale * (p.level if p.mode == "solid" else 1.0) for c in p.color)
            if p.mode == "off":
                device.off()
            elif p.mode == "solid":
                device.color = tuple(scaled_level(device, c) for c in color)
            elif p.mode == "blink":
                device.blink(on_time=p.on_s, off_time=p.off_s, on_color=color, background=True)
            else:
                device.pulse(fade_in_time=p.on_s, fade_out_time=p.off_s, on_color=color)
        elif kind == "pwm_led":
            if p.mode == "off":
                device.off()
            elif p.mode == "solid":
                device.value = scaled_level(device, min(1.0, p.level * scale))
            elif p.mode == "blink":
                device.blink(on_time=p.on_s, off_time=p.off_s, background=True)
            else:
                device.pulse(fade_in_time=p.on_s, fade_out_time=p.off_s, background=True)
        else:
            if p.mode == "off":
                device.off()
            elif p.mode == "solid":
                device.on()
            else:  # a plain LED cannot fade: a pulse is shown as a blink
                device.blink(on_time=p.on_s, off_time=p.off_s, background=True)


__all__ = [
    "STATUS_PATTERNS",
    "STATUS_STATES",
    "LightPattern",
    "StatusLight",
    "light_kind",
    "status_table",
]
