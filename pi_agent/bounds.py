"""Bounds that hold at the pin: a device's declared range and the verbs that respect it.

A YAML device of kind pwm_led, pwm_output, rgb_led or servo declares ``min``/
``max`` (config.py). Here that range becomes :class:`Bounds`, and the gpiozero
classes are subclassed so that every write is checked where it reaches the pin:
gpiozero's value setter, ``on``, its blink/pulse thread (steps scaled into the
range), restore and safe values all pass through ``_write`` (or the servo's
``value`` setter). :func:`act` performs one tool verb on a device inside a
(possibly narrower) range; :meth:`pi_agent.devices.Devices.apply` is its only
caller, so there is exactly one place where verbs meet pins.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import chain, cycle, repeat
from typing import Any

from gpiozero import PWMLED, RGBLED, AngularServo, PWMOutputDevice
from gpiozero.threads import GPIOThread

from .config import MAX_BLINK_COUNT, describe_range
from .errors import BoundsError, ToolError

BLINK_PERIOD_S = (0.2, 5.0)  # bounds of one on+off (or fade up+down) cycle
ANGLE_SLACK = 1e-9  # degrees: float noise of gpiozero's angle -> duty -> angle round trip


@dataclass(frozen=True)
class Bounds:
    """What may reach a device's pin: ``low..high`` (PWM duty 0-1, or servo degrees).

    For PWM and RGB kinds 0 (off) is always allowed as well, so off, auto-off
    and safe-off never fail. :meth:`scale` maps a fraction of "full on" (a blink
    step, a pulse ramp, a status-light level) into the range, so a blink peaks
    at ``high`` rather than at 1.
    """

    device: str
    kind: str
    low: float
    high: float

    def allows(self, value: float) -> bool:
        if self.kind == "servo":
            return self.low - ANGLE_SLACK <= value <= self.high + ANGLE_SLACK
        return value == 0 or self.low <= value <= self.high

    def check(self, value: float, what: str = "value") -> float:
        """``value`` itself, or BoundsError naming the device and its allowed range."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ToolError(f"{self.device}: {what} must be a number, not {value!r}")
        if not math.isfinite(value) or not self.allows(value):
            shown = f"{value:g}" if math.isfinite(value) else repr(value)
            raise BoundsError(
                f"{self.device}: {what} {shown} is outside the allowed {self.describe()}",
                self.low,
                self.high,
            )
        return value

    def describe(self) -> str:
        return describe_range(self.kind, self.low, self.high)

    def narrow(self, low: float | None = None, high: float | None = None) -> Bounds:
        """These bounds cut down to ``low..high`` (a tool's own min/max); never widened."""
        new_low = self.low if low is None or low < self.low else low
        new_high = self.high if high is None or high > self.high else high
        if new_low > new_high:  # config refuses this; stay inside the device's range anyway
            new_low = new_high
        return Bounds(self.device, self.kind, new_low, new_high)

    def scale(self, fraction: float) -> float:
        """A fraction of full on (0-1) as a level inside the range; 0 stays off."""
        if fraction <= 0:
            return 0.0
        return min(self.high, max(self.low, self.low + fraction * (self.high - self.low)))


def _blink_steps(
    on_time: float, off_time: float, fade_in: float, fade_out: float, n: int | None, fps: int = 25
) -> Iterator[tuple[float, float]]:
    """(fraction of full on, seconds) steps of gpiozero's blink/pulse, for any ``n``."""
    sequence: list[tuple[float, float]] = []
    if fade_in > 0:
        sequence += [(i / fps / fade_in, 1 / fps) for i in range(int(fps * fade_in))]
    sequence.append((1.0, on_time))
    if fade_out > 0:
        sequence += [(1 - i / fps / fade_out, 1 / fps) for i in range(int(fps * fade_out))]
    sequence.append((0.0, off_time))
    return cycle(sequence) if n is None else chain.from_iterable(repeat(sequence, n))


class _BoundedPWM:
    """Mixin for gpiozero's PWM outputs: every write is checked against ``bounds`` at the pin.

    ``_write`` is where gpiozero's value setter, on/off and its blink thread all
    end up, so a value outside the bounds cannot reach the pin by any path.
    ``on`` means ``high``; ``blink``/``pulse`` run gpiozero's own GPIOThread
    with steps scaled into the range (``span`` narrows it further for a tool).
    """

    bounds: Bounds
    _blink_thread: Any

    def __init__(self, *args: Any, bounds: Bounds, **kwargs: Any):
        self.bounds = bounds
        super().__init__(*args, **kwargs)

    def _write(self, value: float) -> None:
        self.bounds.check(value)
        super()._write(value)  # type: ignore[misc]

    def on(self) -> None:
        self.value = self.bounds.high

    def toggle(self) -> None:
        self.value = 0 if self.is_active else self.bounds.high

    def blink(
        self,
        on_time: float = 1,
        off_time: float = 1,
        fade_in_time: float = 0,
        fade_out_time: float = 0,
        n: int | None = None,
        background: bool = True,
        *,
        span: Bounds | None = None,
    ) -> None:
        self._stop_blink()
        steps = _blink_steps(on_time, off_time, fade_in_time, fade_out_time, n)
        self._blink_thread = GPIOThread(self._bounded_blink, (steps, span or self.bounds))
        self._blink_thread.start()
        if not background:
            self._blink_thread.join()
            self._blink_thread = None

    def pulse(
        self,
        fade_in_time: float = 1,
        fade_out_time: float = 1,
        n: int | None = None,
        background: bool = True,
        *,
        span: Bounds | None = None,
    ) -> None:
        self.blink(0, 0, fade_in_time, fade_out_time, n, background, span=span)

    def _bounded_blink(self, steps: Iterable[tuple[float, float]], span: Bounds) -> None:
        for fraction, delay in steps:
            self._write(span.scale(fraction))
            if self._blink_thread.stopping.wait(delay):
                break


class BoundedPWMLED(_BoundedPWM, PWMLED):
    """A PWMLED that never drives its pin outside its :class:`Bounds`."""


class BoundedPWMOutput(_BoundedPWM, PWMOutputDevice):
    """A PWMOutputDevice (a heater, a fan) that never drives its pin outside its bounds."""


class BoundedRGBLED(RGBLED):
    """An RGBLED whose three channels are :class:`BoundedPWMLED` with the same bounds."""

    def __init__(
        self,
        red: int,
        green: int,
        blue: int,
        *,
        bounds: Bounds,
        active_high: bool = True,
        initial_value: tuple[float, float, float] = (0, 0, 0),
        pin_factory: Any = None,
    ):
        self.bounds = bounds
        self._leds = ()
        self._blink_thread = None
        super(RGBLED, self).__init__(pin_factory=pin_factory)  # gpiozero's Device part
        leds: list[BoundedPWMLED] = []
        try:
            for pin in (red, green, blue):
                leds.append(
                    BoundedPWMLED(
                        pin, bounds=bounds, active_high=active_high, pin_factory=pin_factory
                    )
                )
            self._leds = tuple(leds)
            self.value = initial_value
        except BaseException:
            for led in leds:
                led.close()
            self._leds = ()
            raise

    def on(self) -> None:
        self.value = (self.bounds.high,) * 3

    def toggle(self) -> None:
        if self.is_active:
            self.off()
        else:
            self.on()

    def blink(
        self,
        on_time: float = 1,
        off_time: float = 1,
        fade_in_time: float = 0,
        fade_out_time: float = 0,
        on_color: Any = (1, 1, 1),
        off_color: Any = (0, 0, 0),
        n: int | None = None,
        background: bool = True,
        *,
        span: Bounds | None = None,
    ) -> None:
        """Colours are fractions of full on per channel, scaled into the bounds."""
        self._stop_blink()
        steps = _blink_steps(on_time, off_time, fade_in_time, fade_out_time, n)
        args = (steps, tuple(on_color), tuple(off_color), span or self.bounds)
        self._blink_thread = GPIOThread(self._bounded_blink, args)
        self._blink_thread.start()
        if not background:
            self._blink_thread.join()
            self._blink_thread = None

    def pulse(
        self,
        fade_in_time: float = 1,
        fade_out_time: float = 1,
        on_color: Any = (1, 1, 1),
        off_color: Any = (0, 0, 0),
        n: int | None = None,
        background: bool = True,
        *,
        span: Bounds | None = None,
    ) -> None:
        self.blink(0, 0, fade_in_time, fade_out_time, on_color, off_color, n, background, span=span)

    def _bounded_blink(
        self, steps: Iterable[tuple[float, float]], on: tuple, off: tuple, span: Bounds
    ) -> None:
        for led in self._leds:
            led._controller = self
        for t, delay in steps:
            for led, low, high in zip(self._leds, off, on, strict=False):
                led._write(span.scale(low + t * (high - low)))
            if self._blink_thread.stopping.wait(delay):
                break


class BoundedServo(AngularServo):
    """An AngularServo that refuses any position outside its bounds (in degrees).

    Servo writes its pin from the ``value`` setter (and ``pulse_width``), so
    both are checked; ``angle``, ``min()``, ``max()`` all pass through ``value``.
    """

    def __init__(self, pin: int, *, bounds: Bounds, **kwargs: Any):
        self.bounds = bounds
        super().__init__(pin, **kwargs)

    def _angle_of(self, value: float) -> float:
        fraction = (value - self._min_value) / self._value_range
        return self._angular_range * fraction + self._min_angle

    def _set_value(self, value: float | None) -> None:
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ToolError(f"{self.bounds.device}: servo value must be a number")
            if math.isfinite(value):
                self.bounds.check(self._angle_of(value), "angle")
        AngularServo.value.fset(self, value)

    def _set_pulse_width(self, width: float | None) -> None:
        if width is None:
            self._set_value(None)
            return
        fraction = (width / self.frame_width - self._min_dc) / self._dc_range
        self._set_value(fraction * self._value_range + self._min_value)

    value = property(AngularServo.value.fget, _set_value, doc=AngularServo.value.__doc__)
    pulse_width = property(AngularServo.pulse_width.fget, _set_pulse_width)


def scaled_level(device: Any, fraction: float) -> float:
    """A fraction of full on for ``device``: scaled into its bounds when it has some."""
    bounds = getattr(device, "bounds", None)
    return fraction if bounds is None else bounds.scale(fraction)


VERB_ARGS: dict[str, tuple[str, ...]] = {
    "on": (),
    "off": (),
    "toggle": (),
    "read": (),
    "set": ("on",),
    "value": ("value",),
    "angle": ("angle",),
    "blink": ("count", "period_s"),
    "pulse": ("count", "period_s"),
}


def _number(args: Mapping, key: str, device: str, default: float | None = None) -> float:
    value = args.get(key)
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ToolError(f"{key} for {device} must be a number, not {value!r}")
    if not math.isfinite(value):
        raise ToolError(f"{key} for {device} must be a finite number, not {value!r}")
    return value


def act(
    name: str, kind: str, device: Any, verb: str, args: Mapping, span: Bounds | None
) -> dict[str, Any]:
    """Do one allowed verb on one gpiozero device inside ``span``; extra result keys.

    Called by :meth:`pi_agent.devices.Devices.apply`, which checked the verb and
    holds the lock. Raises ToolError/BoundsError before anything moves.
    """
    if verb == "set":
        on = args.get("on")
        if not isinstance(on, bool):
            raise ToolError(f"'set' on {name} needs on: true or false, not {on!r}")
        verb = "on" if on else "off"
    if verb == "toggle":
        verb = "off" if device.is_active else "on"
    if verb == "off":
        device.off()
    elif verb == "on":
        if span is None:
            device.on()
        else:
            _write_level(kind, device, span.high)
    elif verb == "value":
        _write_level(kind, device, span.check(_number(args, "value", name)))
    elif verb == "angle":
        device.angle = span.check(_number(args, "angle", name), "angle")
    elif verb in ("blink", "pulse"):
        count = _number(args, "count", name, default=1)
        period = _number(args, "period_s", name, default=1.0)
        if count != int(count) or not 1 <= count <= MAX_BLINK_COUNT:
            raise ToolError(f"count for {name} must be a whole number 1 to {MAX_BLINK_COUNT}")
        low, high = BLINK_PERIOD_S
        if not low <= period <= high:
            raise ToolError(f"period_s for {name} must be {low:g} to {high:g} seconds")
        count, half = int(count), period / 2
        if span is None:  # on/off kinds: gpiozero's own blink is 0/1 only
            device.blink(on_time=half, off_time=half, n=count, background=True)
        elif verb == "blink":
            device.blink(half, half, n=count, background=True, span=span)
        else:
            device.pulse(half, half, n=count, background=True, span=span)
        running = "blinking" if verb == "blink" else "pulsing"
        return {running: True, "count": count, "duration_s": round(count * period, 3)}
    return {}


def _write_level(kind: str, device: Any, level: float) -> None:
    device.value = (level,) * 3 if kind == "rgb_led" else level


__all__ = [
    "BLINK_PERIOD_S",
    "MAX_BLINK_COUNT",
    "VERB_ARGS",
    "BoundedPWMLED",
    "BoundedPWMOutput",
    "BoundedRGBLED",
    "BoundedServo",
    "Bounds",
    "act",
    "scaled_level",
]
