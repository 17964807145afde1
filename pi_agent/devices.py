"""GPIO devices from the YAML, the push-to-talk button and the status light.

Everything sits on gpiozero and passes ``pin_factory=`` to every constructor:
nothing here touches the global ``Device.pin_factory``, so a test (or
``gpio.pin_factory: mock``) runs the real gpiozero code on its MockFactory.

Threads: gpiozero calls button callbacks on its own thread (synchronously in
the thread that drives a mock pin). :class:`PushToTalk` runs only a tiny
debounce state machine there and hands words to ``emit`` (the agent's queue
put). :class:`StatusLight` is driven from the agent thread only.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any, Literal

from gpiozero import (
    LED,
    Buzzer,
    DigitalInputDevice,
    DigitalOutputDevice,
)
from gpiozero.exc import BadPinFactory, GPIOPinInUse, PinPWMUnsupported
from gpiozero.pins.mock import MockFactory, MockPWMPin

from .bounds import (
    VERB_ARGS,
    BoundedPWMLED,
    BoundedPWMOutput,
    BoundedRGBLED,
    BoundedServo,
    Bounds,
    act,
)
from .config import (
    _VERBS_BY_KIND,
    Config,
    DeviceSettings,
    GpioSettings,
    PttSettings,
    device_range,
)
from .errors import ClosedError, DeviceError, ToolError

log = logging.getLogger(__name__)

OUTPUT_KINDS = frozenset({"led", "pwm_led", "rgb_led", "buzzer", "output", "pwm_output", "servo"})
DIGITAL_KINDS = frozenset({"led", "buzzer", "output"})
PWM_KINDS = frozenset({"pwm_led", "pwm_output"})


# --------------------------------------------------------------------------- factory


def make_pin_factory(gpio: GpioSettings) -> Any:
    """The pin factory ``gpio.pin_factory`` asks for.

    None means gpiozero's own choice (``$GPIOZERO_PIN_FACTORY``, else lgpio on
    a Pi); ``mock`` is a ``MockFactory(pin_class=MockPWMPin)`` because the plain
    MockPin cannot do PWM; any other name is a gpiozero factory entry point.
    """
    name = gpio.pin_factory
    if name is None:
        return None
    if name.lower() == "mock":
        return MockFactory(pin_class=MockPWMPin)
    group = list(entry_points(group="gpiozero_pin_factories"))
    for ep in group:
        if ep.name in (name, name.lower()):
            try:
                return ep.load()()
            except Exception as exc:
                raise _device_error(
                    f"gpio.pin_factory: {name!r} could not be loaded: {exc}", NO_FACTORY_FIX
                ) from exc
    known = ", ".join(sorted(ep.name for ep in group))
    raise _device_error(
        f"gpio.pin_factory: unknown pin factory {name!r}",
        f"use one of {known}, or null for gpiozero's own choice",
    )


# --------------------------------------------------------------------------- devices


def _pins_of(settings: DeviceSettings) -> tuple[int, ...]:
    return tuple(settings.pins) if settings.kind == "rgb_led" else (settings.pin,)


def device_bounds(name: str, settings: DeviceSettings) -> Bounds | None:
    """The :class:`Bounds` of a YAML device (None for on/off kinds and inputs)."""
    span = device_range(settings)
    return None if span is None else Bounds(name, settings.kind, *span)


def _build_device(name: str, settings: DeviceSettings, factory: Any) -> Any:
    """One gpiozero object for one YAML device; outputs with a range are bounded at the pin."""
    s = settings
    kind = s.kind
    bounds = device_bounds(name, s)
    if kind in ("button", "input"):
        # gpiozero wants active_state only when there is no pull resistor. A button is a
        # plain input here: gpiozero's Button adds a hold thread that polls ten times a
        # second all day; PushToTalk times long presses itself, only while one is held.
        active = s.active_high if s.pull_up is None else None
        return DigitalInputDevice(
            s.pin,
            pull_up=s.pull_up,
            active_state=active,
            bounce_time=s.bounce_time,
            pin_factory=factory,
        )
    if kind in DIGITAL_KINDS:
        cls = {"led": LED, "buzzer": Buzzer, "output": DigitalOutputDevice}[kind]
        return cls(
            s.pin, active_high=s.active_high, initial_value=bool(s.initial), pin_factory=factory
        )
    if kind in PWM_KINDS:
        cls = BoundedPWMLED if kind == "pwm_led" else BoundedPWMOutput
        return cls(
            s.pin,
            bounds=bounds,
            active_high=s.active_high,
            initial_value=s.initial,
            frequency=s.frequency,
            pin_factory=factory,
        )
    if kind == "rgb_led":
        red, green, blue = s.pins
        return BoundedRGBLED(
            red,
            green,
            blue,
            bounds=bounds,
            active_high=s.active_high,
            initial_value=(s.initial,) * 3,
            pin_factory=factory,
        )
    if kind == "servo":
        return BoundedServo(
            s.pin,
            bounds=bounds,
            initial_angle=s.initial_angle,
            min_angle=-90,
            max_angle=90,
            min_pulse_width=s.min_pulse_ms / 1000,
            max_pulse_width=s.max_pulse_ms / 1000,
            pin_factory=factory,
        )
    raise DeviceError(f"unknown device kind {kind!r}")  # pragma: no cover - config rejects it


def _device_error(problem: str, fix: str) -> DeviceError:
    """A DeviceError whose message is problem and fix; ``.problem``/``.fix`` keep them apart."""
    error = DeviceError(f"{problem}. {fix[:1].upper()}{fix[1:]}" if fix else problem)
    error.problem, error.fix = problem, fix  # type: ignore[attr-defined]  # for pi-agent check
    return error


NO_FACTORY_FIX = (
    "on a Raspberry Pi: sudo apt install python3-lgpio (or set gpio.pin_factory); "
    "on any other machine set gpio.pin_factory: mock"
)


def _explain(name: str, settings: DeviceSettings, exc: Exception) -> DeviceError:
    """Turn a gpiozero/lgpio failure into one line that names the device, pin and fix."""
    pins = _pins_of(settings)
    found = re.search(r"GPIO(\d+)", str(exc))
    where = f"GPIO{found.group(1)}" if found else "/".join(f"GPIO{p}" for p in pins)
    text = str(exc)
    if isinstance(exc, GPIOPinInUse) or "busy" in text.lower():
        return _device_error(
            f"devices.{name}: {where} is busy: another program (a second pi-agent, a script "
            f"still running, or a kernel driver/overlay) holds it",
            f"stop that program (`gpioinfo` shows the holder) or move {name!r} to a free pin",
        )
    if isinstance(exc, BadPinFactory):
        return _device_error(f"no GPIO pin factory could be loaded ({text})", NO_FACTORY_FIX)
    if isinstance(exc, PinPWMUnsupported):
        return _device_error(
            f"devices.{name}: {where} cannot do PWM with this pin factory",
            "with GPIOZERO_PIN_FACTORY=mock also set GPIOZERO_MOCK_PIN_CLASS=mockpwmpin, "
            "or use gpio.pin_factory: mock",
        )
    return _device_error(
        f"devices.{name}: {settings.kind} on {where} failed: {text or exc!r}",
        "check the wiring and that no other program uses the pin",
    )


class Devices:
    """Every gpiozero device named in ``config.devices``, built at once.

    A failure part-way closes what was already built (gpiozero's
    CompositeDevice habit), so a bad pin never leaves half the board claimed.
    Thread-safe for its own bookkeeping; each gpiozero device has its own locks.
    """

    def __init__(self, config: Config, pin_factory: Any = None):
        self.pin_factory = pin_factory if pin_factory is not None else make_pin_factory(config.gpio)
        self._settings: dict[str, DeviceSettings] = dict(config.devices)
        self._bounds = {
            name: b
            for name, s in self._settings.items()
            if (b := device_bounds(name, s)) is not None
        }
        self._devices: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._closed = False
        try:
            for name, settings in self._settings.items():
                try:
                    self._devices[name] = _build_device(name, settings, self.pin_factory)
                except DeviceError:
                    raise
                except Exception as exc:
                    raise _explain(name, settings, exc) from exc
                log.debug("device %s: %s on %s", name, settings.kind, _pins_of(settings))
        except BaseException:
            self._close_all()
            self._closed = True
            raise

    # -- lifecycle

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Devices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the GPIO devices are closed")

    def close(self) -> None:
        """Restore safe values, then release every pin. Idempotent.

        Safe values go first because a released pin floats: a relay board
        with ``active_high: false`` could switch on as the line is let go.
        """
        with self._lock:
            if self._closed:
                return
            try:
                self.safe_state()
            except Exception:
                log.exception("could not restore safe GPIO values")
            self._closed = True
            self._close_all()

    def _close_all(self) -> None:
        for name, device in list(self._devices.items()):
            try:
                device.close()
            except Exception:
                log.exception("closing device %s failed", name)
        self._devices.clear()

    # -- access

    def __contains__(self, name: object) -> bool:
        return name in self._settings

    def __iter__(self) -> Iterator[str]:
        return iter(self._settings)

    def get(self, name: str) -> Any:
        """The gpiozero object for ``name`` (KeyError naming the known devices)."""
        with self._lock:
            self._check_open()
            try:
                return self._devices[name]
            except KeyError:
                known = ", ".join(self._devices) or "none"
                raise KeyError(f"no device named {name!r}; known: {known}") from None

    def settings(self, name: str) -> DeviceSettings:
        """The YAML settings of ``name``."""
        return self._settings[name]

    def kind(self, name: str) -> str:
        return self._settings[name].kind

    def bounds(self, name: str) -> Bounds | None:
        """The declared range of ``name`` (None for on/off kinds and inputs)."""
        return self._bounds.get(name)

    # -- the one way to act on a device

    def apply(
        self,
        name: str,
        verb: str,
        args: Mapping[str, Any] | None = None,
        *,
        limit: tuple[float | None, float | None] = (None, None),
    ) -> dict[str, Any]:
        """Perform ``verb`` on device ``name`` and return its new state.

        Every writer goes through here (tools, and the MQTT and timer code through
        :meth:`pi_agent.tools.ToolRunner.command`): the verb must be allowed for
        the device's kind, the arguments well-typed, and any level or angle inside
        the device's bounds, narrowed by ``limit`` (a tool's own min/max). ``on``
        on a dimmable device means the top of the range; blink/pulse steps are
        scaled into it. Raises ToolError (BoundsError for a value out of range)
        before anything moves. Verbs and arguments: on, off, toggle, read (none);
        set (on: bool); value (value: 0-1); angle (angle: degrees); blink and
        pulse (count: 1-100, default 1; period_s: 0.2-5 s, default 1).
        """
        if not isinstance(args, Mapping):
            if args is not None:
                raise ToolError(f"the arguments for {verb!r} on {name!r} must be an object")
            args = {}
        with self._lock:
            if self._closed:
                raise ToolError("the GPIO devices are closed")
            device = self._devices.get(name)
            if device is None:
                known = ", ".join(self._devices) or "none"
                raise ToolError(f"no device named {name!r}; known: {known}")
            kind = self._settings[name].kind
            allowed = _VERBS_BY_KIND[kind]
            if verb not in allowed:
                raise ToolError(
                    f"{name} is a {kind}: it cannot {verb!r}; allowed: {', '.join(sorted(allowed))}"
                )
            expected = VERB_ARGS[verb]
            extra = sorted(map(str, set(args) - set(expected)))
            if extra:
                takes = ", ".join(expected) or "no arguments"
                raise ToolError(f"{verb!r} on {name} takes {takes}, not {extra[0]!r}")
            span = self._bounds.get(name)
            if span is not None:
                span = span.narrow(*limit)
            result = act(name, kind, device, verb, args, span)
            return {**self.state(name), **result}

    def state(self, name: str) -> dict[str, Any]:
        """A small JSON-friendly picture of one device (what tools report back)."""
        device = self.get(name)
        kind = self._settings[name].kind
        if kind in DIGITAL_KINDS:
            return {"on": bool(device.is_active)}
        if kind in PWM_KINDS:
            return {"on": bool(device.is_active), "value": round(float(device.value), 3)}
        if kind == "rgb_led":
            color = [round(float(c), 3) for c in device.value]
            return {"on": any(color), "color": color}
        if kind == "servo":
            angle = device.angle
            return {"angle": None if angle is None else round(float(angle), 1)}
        if kind == "button":
            return {"pressed": bool(device.is_active)}
        return {"active": bool(device.is_active)}

    def states(self) -> dict[str, object]:
        """Every device's :meth:`state`, for ``pi-agent ctl status``."""
        with self._lock:
            self._check_open()
            return {name: self.state(name) for name in self._devices}

    def snapshot(self, name: str) -> Any:
        """The raw value to hand back to :meth:`restore` (tool undo)."""
        device = self.get(name)
        if self._settings[name].kind == "servo":
            return device.angle
        return device.value

    def restore(self, name: str, value: Any) -> None:
        """Put a :meth:`snapshot` back (checked like any write); stops a running blink/pulse."""
        with self._lock:
            device = self.get(name)
            kind = self._settings[name].kind
            span = self._bounds.get(name)
            if kind == "servo":
                device.angle = None if value is None else span.check(value, "angle")
            elif kind == "rgb_led":
                device.value = tuple(span.check(c) for c in value)
            else:
                device.value = value if span is None else span.check(value)

    def safe_state(self) -> None:
        """Return every output to its declared ``safe`` value (servos: ``safe_angle``).

        None leaves a device as it is. One failing device does not stop the
        others; the first error is raised at the end.
        """
        with self._lock:
            self._check_open()
            first: Exception | None = None
            for name, device in self._devices.items():
                s = self._settings[name]
                try:
                    if s.kind == "servo":
                        if s.safe_angle is not None:
                            device.angle = s.safe_angle
                    elif s.kind in OUTPUT_KINDS and s.safe is not None:
                        if s.kind in DIGITAL_KINDS:
                            device.value = bool(s.safe)
                        elif s.kind == "rgb_led":
                            device.value = (s.safe,) * 3
                        else:
                            device.value = s.safe
                except Exception as exc:
                    log.exception("could not make %s safe", name)
                    first = first or exc
            if first is not None:
                raise DeviceError(f"could not restore every safe value: {first}") from first


# --------------------------------------------------------------------------- push-to-talk


class PushToTalk:
    """Turns a button's edges into ``press`` / ``release`` / ``cancel`` / ``long_press:<action>``.

    Latency first: the press goes out on the first falling edge, never after a
    debounce delay. ``min_press_ms`` then decides what a too-short press was:

    * a release sooner than ``min_press_ms`` after the press is held back; if
      the button comes back down before that time is up it was contact bounce
      and the press simply continues;
    * if it stays up, the press was a tap too short to be speech and the
      words are ``press`` ... ``cancel`` (the agent drops the turn; the press
      itself already interrupted any playback, so a tap means "stop");
    * after a real release, edges within ``min_press_ms`` are release bounce
      and ignored (the pin is read again afterwards, so a real quick
      re-press is not lost).

    Modes: ``hold`` talks while the button is down (press, then release).
    ``toggle`` alternates: a press emits ``press`` when idle and ``release``
    when talking. Long press (toggle mode only; in hold mode holding *is*
    talking): after ``long_press_s`` the agent gets ``long_press:<action>``,
    preceded by ``cancel`` when that press had just started a turn.

    Callbacks only enqueue through ``emit``. Timers re-check pending
    deadlines by calling :meth:`poll`; tests drive a fake ``clock`` and call
    :meth:`poll` themselves instead of sleeping.
    """

    def __init__(
        self,
        button_device: Any,
        settings: PttSettings,
        emit: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self._emit = emit
        self._clock = clock
        self._button = button_device
        self._min_press = settings.min_press_ms / 1000
        self._lock = threading.Lock()
        self._state: Literal["idle", "down", "settling"] = "idle"
        self._talking = False
        self._pressed_at = 0.0
        self._settle_at = 0.0
        self._quiet_until = float("-inf")
        self._recheck = False
        self._started_turn = False
        self._long_fired = False
        self._timers: set[threading.Timer] = set()
        self._closed = False
        if button_device is not None:
            button_device.when_activated = self.pressed
            button_device.when_deactivated = self.released

    # -- public feed (pins call these; tests and other sources may too)

    @property
    def is_talking(self) -> bool:
        """True between a ``press`` and its ``release``/``cancel`` (toggle state)."""
        return self._talking

    def set_talking(self, talking: bool) -> None:
        """Resync the toggle state when the agent ended (or began) a turn by itself."""
        with self._lock:
            self._talking = talking

    def pressed(self) -> None:
        """The button went down (called on gpiozero's thread)."""
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            if self._state == "settling":  # bounce inside a press: it goes on
                self._state = "down"
            elif self._state == "idle":
                if now < self._quiet_until:  # release bounce
                    self._recheck = True
                    self._schedule(self._quiet_until - now)
                else:
                    self._start_press(now)

    def released(self) -> None:
        """The button came up (called on gpiozero's thread)."""
        with self._lock:
            if self._closed or self._state != "down":
                return
            now = self._clock()
            if now - self._pressed_at >= self._min_press:
                self._finish_press(now)
            else:
                self._state = "settling"
                self._settle_at = self._pressed_at + self._min_press
                self._schedule(self._settle_at - now)

    def poll(self) -> None:
        """Act on deadlines that have passed (timers call this; so may tests)."""
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            if self._state == "settling" and now >= self._settle_at:
                if self._pin_is_down():  # an edge went missing: still pressed
                    self._state = "down"
                else:
                    self._too_short(now)
            if (
                self._state == "down"
                and self.settings.mode == "toggle"
                and self.settings.long_press_action != "none"
                and not self._long_fired
                and now - self._pressed_at >= self.settings.long_press_s
            ):
                self._long_press()
            if self._state == "idle" and self._recheck and now >= self._quiet_until:
                self._recheck = False
                if self._pin_is_down():
                    self._start_press(now)

    def close(self) -> None:
        """Detach from the button and cancel timers. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            timers, self._timers = self._timers, set()
        for timer in timers:
            timer.cancel()
        if self._button is not None:
            with warnings.catch_warnings():  # CallbackSetToNone if the device went first
                warnings.simplefilter("ignore")
                try:
                    self._button.when_activated = None
                    self._button.when_deactivated = None
                except Exception:
                    pass  # the device may already be closed

    # -- state machine (lock held)

    def _start_press(self, now: float) -> None:
        self._state = "down"
        self._pressed_at = now
        self._long_fired = False
        if self.settings.mode == "hold" or not self._talking:
            self._started_turn = True
            self._talking = True
            self._emit("press")
        else:
            self._started_turn = False
            self._talking = False
            self._emit("release")
        if self.settings.mode == "toggle" and self.settings.long_press_action != "none":
            self._schedule(self.settings.long_press_s)

    def _finish_press(self, now: float) -> None:
        self._state = "idle"
        self._quiet_until = now + self._min_press
        if self.settings.mode == "hold":
            self._talking = False
            self._emit("release")

    def _too_short(self, now: float) -> None:
        self._state = "idle"
        self._quiet_until = now + self._min_press
        if self._started_turn and not self._long_fired:
            self._talking = False
            self._emit("cancel")

    def _long_press(self) -> None:
        self._long_fired = True
        if self._started_turn:
            self._talking = False
            self._emit("cancel")
        self._emit(f"long_press:{self.settings.long_press_action}")

    def _pin_is_down(self) -> bool:
        if self._button is None:
            return False
        try:
            return bool(self._button.is_active)
        except Exception:
            return False

    def _schedule(self, delay: float) -> None:
        timer = threading.Timer(max(delay, 0.0) + 0.002, self._fire)
        timer.daemon = True
        timer.name = "pi-agent-ptt-timer"
        self._timers.add(timer)
        timer.start()

    def _fire(self) -> None:
        with self._lock:
            self._timers.discard(threading.current_thread())  # a Timer is its own thread
        self.poll()


from .light import (  # noqa: E402  (re-exported: the light used to live here)
    STATUS_PATTERNS,
    STATUS_STATES,
    LightPattern,
    StatusLight,
    light_kind,
    status_table,
)

__all__ = [
    "STATUS_PATTERNS",
    "STATUS_STATES",
    "Devices",
    "LightPattern",
    "PushToTalk",
    "StatusLight",
    "device_bounds",
    "light_kind",
    "make_pin_factory",
    "status_table",
]
