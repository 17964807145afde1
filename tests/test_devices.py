"""Devices, push-to-talk and the status light on gpiozero's own MockFactory.

Real gpiozero code runs on MockPWMPin pins: tests press buttons with
``drive_low()``/``drive_high()`` and read what the outputs did from
``pin.state`` and the timestamped ``pin.states``. Where timing decides
(debounce, long press) a fake clock stands in for time.monotonic.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
from gpiozero import LED, PWMLED, RGBLED, AngularServo, Button, DigitalInputDevice
from gpiozero.pins.mock import MockFactory, MockPWMPin

from pi_agent.config import ConfigError, PttSettings, StatusLightSettings, parse_config
from pi_agent.devices import (
    STATUS_PATTERNS,
    STATUS_STATES,
    Devices,
    PushToTalk,
    StatusLight,
    light_kind,
    make_pin_factory,
    status_table,
)
from pi_agent.errors import BoundsError, ClosedError, DeviceError, ToolError

from .conftest import wait_for

TIMEOUT = 5.0


@pytest.fixture(autouse=True)
def factory():
    """A fresh MockFactory per test, passed explicitly (the global stays untouched)."""
    factory = MockFactory(pin_class=MockPWMPin)
    yield factory
    factory.reset()


@pytest.fixture
def build(factory):
    """Build Devices from a ``devices:`` mapping; every one is closed before the reset."""
    made: list[Devices] = []

    def build(devices: dict, **sections) -> Devices:
        config = parse_config({"devices": devices, **sections})
        result = Devices(config, pin_factory=factory)
        made.append(result)
        return result

    yield build
    for devices in made:
        devices.close()


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


ALL_KINDS = {
    "talk": {"kind": "button", "pin": 17},
    "status": {"kind": "pwm_led", "pin": 18, "initial": 0.3},
    "plain": {"kind": "led", "pin": 4},
    "rgb": {"kind": "rgb_led", "pins": [5, 6, 13]},
    "beeper": {"kind": "buzzer", "pin": 16},
    "lamp": {"kind": "output", "pin": 23, "active_high": False, "initial": 1, "safe": 0},
    "fan": {"kind": "pwm_output", "pin": 12, "safe": None},
    "arm": {"kind": "servo", "pin": 19, "initial_angle": 30, "safe_angle": 0},
    "door": {"kind": "input", "pin": 24, "pull_up": True},
}


# --------------------------------------------------------------------------- devices


def test_devices_build_every_kind_with_explicit_factory(build, factory):
    devices = build(ALL_KINDS)
    # A plain input: gpiozero's Button would add a hold thread polling all day.
    assert isinstance(devices.get("talk"), DigitalInputDevice)
    assert isinstance(devices.get("status"), PWMLED)
    assert isinstance(devices.get("plain"), LED)
    assert isinstance(devices.get("rgb"), RGBLED)
    assert isinstance(devices.get("arm"), AngularServo)
    assert isinstance(devices.get("door"), DigitalInputDevice)
    for name in devices:
        assert devices.get(name).pin_factory is factory
    # initial values reached the pins; the relay is active-low, so "on" is a low pin
    assert factory.pin(18).state == pytest.approx(0.3)
    assert factory.pin(23).state == 0
    assert devices.get("lamp").is_active
    assert devices.get("arm").angle == pytest.approx(30)
    assert factory.pin(19).frequency == 50
    assert factory.pin(24).pull == "up"


def test_devices_states_are_json_friendly(build, factory):
    devices = build(ALL_KINDS)
    factory.pin(24).drive_low()  # reed switch closed
    assert devices.states() == {
        "talk": {"pressed": False},
        "status": {"on": True, "value": 0.3},
        "plain": {"on": False},
        "rgb": {"on": False, "color": [0.0, 0.0, 0.0]},
        "beeper": {"on": False},
        "lamp": {"on": True},
        "fan": {"on": False, "value": 0.0},
        "arm": {"angle": 30.0},
        "door": {"active": True},
    }


def test_devices_servo_without_initial_angle_sends_no_pulses(build, factory):
    devices = build({"arm": {"kind": "servo", "pin": 19}})
    assert devices.get("arm").angle is None
    assert factory.pin(19).frequency is None


def test_devices_get_unknown_names_the_known(build):
    devices = build({"plain": {"kind": "led", "pin": 4}})
    with pytest.raises(KeyError, match=r"'nope'.*plain"):
        devices.get("nope")


def test_devices_safe_state_restores_declared_values(build, factory):
    devices = build(ALL_KINDS)
    devices.get("lamp").on()
    devices.get("fan").value = 0.7
    devices.get("status").pulse()
    devices.get("arm").angle = 80
    devices.get("rgb").color = (1, 0, 1)
    devices.safe_state()
    assert factory.pin(23).state == 1  # relay off = high on an active-low board
    assert factory.pin(12).state == pytest.approx(0.7)  # safe: null leaves it
    assert factory.pin(18).state == 0
    assert devices.get("arm").angle == pytest.approx(0)
    assert [factory.pin(p).state for p in (5, 6, 13)] == [0, 0, 0]
    # the pulse thread is gone: nothing changes any more
    factory.pin(18).clear_states()
    assert not wait_for(lambda: len(factory.pin(18).states) > 1, timeout=0.1)


def test_devices_close_is_idempotent_and_applies_safe_values_first(build, factory):
    devices = build(ALL_KINDS)
    devices.get("lamp").on()
    pin = factory.pin(23)
    pin.clear_states()
    devices.close()
    devices.close()
    assert devices.closed
    assert [s.state for s in pin.states][:2] == [0, 1]  # switched off before release
    for call in (devices.states, devices.safe_state, lambda: devices.get("lamp")):
        with pytest.raises(ClosedError):
            call()
    # every pin is free again
    LED(23, pin_factory=factory).close()
    Button(17, pin_factory=factory).close()


def test_devices_context_manager_closes(factory):
    config = parse_config({"devices": {"plain": {"kind": "led", "pin": 4}}})
    with Devices(config, pin_factory=factory) as devices:
        devices.get("plain").on()
    assert devices.closed
    LED(4, pin_factory=factory).close()


def test_devices_pin_in_use_names_device_pin_and_fix(build, factory):
    squatter = LED(23, pin_factory=factory)
    try:
        with pytest.raises(DeviceError) as info:
            build({"talk": {"kind": "button", "pin": 17}, "lamp": {"kind": "output", "pin": 23}})
        message = str(info.value)
        assert "devices.lamp" in message
        assert "GPIO23" in message
        assert "busy" in message
        assert "free pin" in message
        # what was built before the failure was closed again
        Button(17, pin_factory=factory).close()
    finally:
        squatter.close()


class _LgpioError(Exception):
    """Stands in for lgpio.error, whose text for a claimed line is 'GPIO busy'."""


class _BusyPin(MockPWMPin):
    def _set_function(self, value):
        if value == "output":  # claiming the line fails; releasing it is fine
            raise _LgpioError("'GPIO busy'")
        super()._set_function(value)


def test_devices_lgpio_busy_error_becomes_device_error(build, factory):
    factory.pin(22, pin_class=_BusyPin)
    with pytest.raises(DeviceError, match=r"devices\.relay: GPIO22 is busy.*gpioinfo"):
        build({"relay": {"kind": "output", "pin": 22}})


def test_make_pin_factory_choices():
    assert make_pin_factory(parse_config({}).gpio) is None
    mock = make_pin_factory(parse_config({"gpio": {"pin_factory": "mock"}}).gpio)
    assert isinstance(mock, MockFactory)
    assert mock.pin_class is MockPWMPin
    with pytest.raises(DeviceError, match=r"unknown pin factory 'nope'.*lgpio.*mock"):
        make_pin_factory(parse_config({"gpio": {"pin_factory": "nope"}}).gpio)


def test_devices_use_configured_mock_factory_without_a_given_one():
    config = parse_config({"gpio": {"pin_factory": "mock"}, "devices": ALL_KINDS})
    with Devices(config) as devices:
        assert isinstance(devices.pin_factory, MockFactory)
        devices.get("status").value = 0.5  # PWM works: MockPWMPin was chosen
        assert devices.pin_factory.pin(18).state == 0.5


@pytest.mark.parametrize(
    "devices, problem",
    [
        ({"a": {"kind": "led", "pin": 28}}, "28 is not a usable BCM GPIO pin (2-27)"),
        ({"a": {"kind": "led", "pin": 1}}, "1 is not a usable BCM GPIO pin"),
        (
            {"a": {"kind": "led", "pin": 4}, "b": {"kind": "button", "pin": 4}},
            "GPIO4 is already used by 'a'",
        ),
        (
            {"a": {"kind": "button", "pin": 3, "pull_up": False}},
            "GPIO3 has a fixed pull-up resistor",
        ),
        ({"a": {"kind": "rgb_led", "pins": [5, 6]}}, "exactly 3 pins"),
    ],
)
def test_devices_pins_are_validated_before_gpiozero_sees_them(devices, problem):
    with pytest.raises(ConfigError, match=re.escape(problem)):
        parse_config({"devices": devices})


def test_config_checks_added_for_devices_and_tools():
    with pytest.raises(ConfigError, match=r"initial_angle: 120 is above the maximum 90"):
        parse_config({"devices": {"arm": {"kind": "servo", "pin": 19, "initial_angle": 120}}})
    tools = [
        {"name": "dim", "description": "d", "device": "dim", "verb": "value", "max": 2},
        {"name": "arm", "description": "a", "device": "arm", "verb": "angle", "min": -95},
    ]
    devices = {
        "lamp": {"kind": "output", "pin": 23, "safe": 0.5},
        "dim": {"kind": "pwm_led", "pin": 18},
        "arm": {"kind": "servo", "pin": 19},
    }
    with pytest.raises(ConfigError) as info:
        parse_config({"devices": devices, "tools": tools})
    assert info.value.problems == [
        "devices.lamp.safe: must be 0 (off) or 1 (on) for a output",
        "tools[0].max: 2 is outside the range of device 'dim' (0 to 1, devices.dim.min/max); "
        "a tool may only narrow it",
        "tools[1].min: -95 is outside the range of device 'arm' (-90 to 90, devices.arm.min/max); "
        "a tool may only narrow it",
    ]


# --------------------------------------------------------------------------- bounds at the pin

BOUNDED = {
    "strip": {"kind": "pwm_led", "pin": 12, "max": 0.8},
    "heater": {"kind": "pwm_output", "pin": 13, "min": 0.2, "max": 0.6, "active_high": False},
    "rgb": {"kind": "rgb_led", "pins": [5, 6, 7], "max": 0.5},
    "arm": {"kind": "servo", "pin": 19, "min": -45, "max": 30, "initial_angle": 0},
    "lamp": {"kind": "output", "pin": 23},
    "door": {"kind": "input", "pin": 24},
}


def _levels(factory, pin: int, active_high: bool = True) -> list[float]:
    """Every level the pin was driven to, as device values (active-low inverted back)."""
    states = [float(s.state) for s in factory.pin(pin).states]
    return states if active_high else [1 - v for v in states]


def _in_range(values, low: float, high: float) -> bool:
    return all(v == 0 or low - 1e-12 <= v <= high + 1e-12 for v in values)


def _stopped(device) -> bool:
    return device._blink_thread is None or not device._blink_thread.is_alive()


def test_bounds_on_means_max_and_value_is_checked(build, factory):
    devices = build(BOUNDED)
    assert devices.apply("strip", "on") == {"on": True, "value": 0.8}
    assert factory.pin(12).state == pytest.approx(0.8)
    with pytest.raises(BoundsError) as info:
        devices.apply("strip", "value", {"value": 0.9})
    assert str(info.value) == "strip: value 0.9 is outside the allowed 0 to 0.8"
    assert (info.value.low, info.value.high) == (0.0, 0.8)
    assert isinstance(info.value, ToolError)
    assert factory.pin(12).state == pytest.approx(0.8)  # nothing moved
    assert devices.apply("strip", "toggle") == {"on": False, "value": 0.0}
    assert devices.apply("strip", "toggle")["value"] == 0.8
    assert devices.apply("heater", "value", {"value": 0})["value"] == 0  # off is always fine
    with pytest.raises(BoundsError, match=r"heater: value 0.1 is outside the allowed "
                       r"0 \(off\) or 0.2 to 0.6"):  # fmt: skip
        devices.apply("heater", "value", {"value": 0.1})
    assert devices.apply("heater", "set", {"on": True})["value"] == 0.6
    assert factory.pin(13).state == pytest.approx(0.4)  # active low: 1 - 0.6
    assert devices.apply("rgb", "on")["color"] == [0.5, 0.5, 0.5]
    assert devices.apply("lamp", "on") == {"on": True}


def test_bounds_hold_for_raw_gpiozero_writes_too(build, factory):
    devices = build(BOUNDED)
    strip, rgb, arm = devices.get("strip"), devices.get("rgb"), devices.get("arm")
    for write in (
        lambda: setattr(strip, "value", 1.0),
        lambda: setattr(rgb, "value", (0, 0, 0.9)),
        lambda: setattr(rgb, "color", (1, 0, 0)),
        lambda: setattr(arm, "angle", 31),
        lambda: setattr(arm, "value", 1),
        lambda: setattr(arm, "pulse_width", 0.002),
        arm.max,
        arm.min,
    ):
        with pytest.raises(BoundsError):
            write()
    strip.on()
    rgb.on()
    strip.toggle()
    assert _in_range(_levels(factory, 12), 0, 0.8)
    assert factory.pin(5).state == pytest.approx(0.5)
    assert arm.angle == 0
    arm.angle = 30  # the edge itself is allowed
    assert arm.angle == pytest.approx(30)


def test_bounds_blink_and_pulse_scale_into_the_range(build, factory):
    devices = build(BOUNDED)
    for pin in (12, 13, 5, 6, 7):
        factory.pin(pin).clear_states()
    result = devices.apply("strip", "pulse", {"count": 2, "period_s": 0.4})
    assert result["pulsing"] is True and result["duration_s"] == 0.8
    devices.apply("heater", "pulse", {"count": 1, "period_s": 0.4})
    devices.apply("rgb", "blink", {"count": 2, "period_s": 0.2})
    for name in ("strip", "heater", "rgb"):
        device = devices.get(name)
        assert wait_for(lambda device=device: _stopped(device)), name
    strip = _levels(factory, 12)
    assert max(strip) == pytest.approx(0.8) and _in_range(strip, 0, 0.8)
    peak = strip.index(max(strip))
    assert strip[1 : peak + 1] == sorted(strip[1 : peak + 1])  # still a fade up
    heater = _levels(factory, 13, active_high=False)
    assert max(heater) == pytest.approx(0.6) and _in_range(heater, 0.2, 0.6)
    assert heater[-1] == 0
    for pin in (5, 6, 7):
        assert max(_levels(factory, pin)) == pytest.approx(0.5)
        assert _in_range(_levels(factory, pin), 0, 0.5)


def test_bounds_narrowed_by_a_limit_never_widened(build, factory):
    devices = build(BOUNDED)
    assert devices.apply("strip", "on", limit=(None, 0.5))["value"] == 0.5
    assert devices.apply("strip", "on", limit=(None, 0.95))["value"] == 0.8  # not widened
    with pytest.raises(BoundsError, match=r"outside the allowed 0 to 0\.5"):
        devices.apply("strip", "value", {"value": 0.6}, limit=(0, 0.5))
    with pytest.raises(BoundsError, match=r"arm: angle -50 is outside the allowed -45 to 30"):
        devices.apply("arm", "angle", {"angle": -50})
    with pytest.raises(BoundsError, match=r"angle 20 is outside the allowed -10 to 10 degrees"):
        devices.apply("arm", "angle", {"angle": 20}, limit=(-10, 10))
    assert devices.apply("arm", "angle", {"angle": -45}) == {"angle": -45.0}


@pytest.mark.parametrize(
    "name, verb, args, error",
    [
        ("ghost", "on", {}, "no device named 'ghost'; known: strip, heater"),
        ("door", "on", {}, "door is a input: it cannot 'on'; allowed: read"),
        ("lamp", "pulse", {}, "lamp is a output: it cannot 'pulse'"),
        ("strip", "value", {}, "value for strip must be a number, not None"),
        ("strip", "value", {"value": "high"}, "value for strip must be a number, not 'high'"),
        ("strip", "value", {"value": float("nan")}, "must be a finite number, not nan"),
        ("strip", "value", {"value": True}, "must be a number, not True"),
        ("strip", "set", {"on": "yes"}, "'set' on strip needs on: true or false, not 'yes'"),
        ("strip", "on", {"level": 1}, "'on' on strip takes no arguments, not 'level'"),
        ("strip", "blink", {"count": 1000}, "count for strip must be a whole number 1 to 100"),
        ("strip", "blink", {"count": 1.5}, "must be a whole number 1 to 100"),
        ("strip", "blink", {"period_s": 60}, "period_s for strip must be 0.2 to 5 seconds"),
        ("strip", "on", [1], "the arguments for 'on' on 'strip' must be an object"),
    ],
)
def test_bounds_apply_refuses_bad_calls_before_anything_moves(build, factory, name, verb, args,
                                                              error):  # fmt: skip
    devices = build(BOUNDED)
    before = {p: (pin.state, len(pin.states)) for p, pin in factory.pins.items()}
    with pytest.raises(ToolError, match=re.escape(error)):
        devices.apply(name, verb, args)
    assert {p: (pin.state, len(pin.states)) for p, pin in factory.pins.items()} == before


def test_bounds_restore_is_checked_and_apply_after_close(build, factory):
    devices = build(BOUNDED)
    devices.restore("strip", 0.5)
    with pytest.raises(BoundsError):
        devices.restore("strip", 0.9)
    with pytest.raises(BoundsError):
        devices.restore("rgb", (0.1, 0.2, 0.7))
    with pytest.raises(BoundsError):
        devices.restore("arm", 60)
    devices.restore("arm", None)  # detached: no pulses at all is always safe
    assert factory.pin(12).state == pytest.approx(0.5)
    assert devices.bounds("strip").high == 0.8 and devices.bounds("lamp") is None
    devices.close()
    with pytest.raises(ToolError, match="closed"):
        devices.apply("strip", "on")


def test_bounds_status_light_on_a_bounded_led(build, factory):
    devices = build({"pwm": {"kind": "pwm_led", "pin": 18, "max": 0.4},
                     "rgb": {"kind": "rgb_led", "pins": [5, 6, 13], "max": 0.3}})  # fmt: skip
    pwm = StatusLight(devices.get("pwm"), StatusLightSettings(brightness=1.0))
    rgb = StatusLight(devices.get("rgb"), StatusLightSettings(brightness=1.0))
    pwm.show("listening")  # solid at 100 % = the device's max
    rgb.show("listening")
    assert factory.pin(18).state == pytest.approx(0.4)
    assert factory.pin(5).state == pytest.approx(0.3)
    factory.pin(18).clear_states()
    pwm.show("thinking")  # a pulse, peaking at the device's max
    assert wait_for(lambda: len(factory.pin(18).states) > 15)
    pwm.show("off")
    assert _in_range(_levels(factory, 18), 0, 0.4)


# --------------------------------------------------------------------------- push-to-talk


@pytest.fixture
def ptt_setup(build, factory):
    made: list[PushToTalk] = []

    def make(**settings) -> tuple[PushToTalk, list[str], FakeClock]:
        devices = build({"talk": {"kind": "button", "pin": 17}})
        events: list[str] = []
        clock = FakeClock()
        ptt = PushToTalk(devices.get("talk"), PttSettings(**settings), events.append, clock=clock)
        made.append(ptt)
        return ptt, events, clock

    yield make
    for ptt in made:
        ptt.close()


def test_ptt_hold_press_goes_out_at_once_release_ends_turn(ptt_setup, factory):
    ptt, events, clock = ptt_setup()
    pin = factory.pin(17)
    pin.drive_low()
    assert events == ["press"]  # no debounce delay before the press
    assert ptt.is_talking
    clock.advance(2.0)
    pin.drive_high()
    assert events == ["press", "release"]
    assert not ptt.is_talking


def test_ptt_hold_contact_bounce_is_filtered(ptt_setup, factory):
    ptt, events, clock = ptt_setup(min_press_ms=60)
    pin = factory.pin(17)
    pin.drive_low()
    for _ in range(3):  # chatter right after the press
        clock.advance(0.003)
        pin.drive_high()
        clock.advance(0.003)
        pin.drive_low()
    clock.advance(1.0)
    ptt.poll()
    pin.drive_high()
    clock.advance(0.004)  # chatter on the release
    pin.drive_low()
    clock.advance(0.004)
    pin.drive_high()
    clock.advance(1.0)
    ptt.poll()
    assert events == ["press", "release"]


def test_ptt_hold_tap_shorter_than_min_press_cancels(ptt_setup, factory):
    ptt, events, clock = ptt_setup(min_press_ms=60)
    pin = factory.pin(17)
    pin.drive_low()
    clock.advance(0.02)
    pin.drive_high()
    assert events == ["press"]  # undecided: could still be bounce
    clock.advance(0.03)
    ptt.poll()
    assert events == ["press"]
    clock.advance(0.011)
    ptt.poll()
    assert events == ["press", "cancel"]
    assert not ptt.is_talking


def test_ptt_hold_quick_repress_after_release_is_not_lost(ptt_setup, factory):
    ptt, events, clock = ptt_setup(min_press_ms=60)
    pin = factory.pin(17)
    pin.drive_low()
    clock.advance(0.5)
    pin.drive_high()
    clock.advance(0.02)
    pin.drive_low()  # inside the release-bounce window, and it stays down
    assert events == ["press", "release"]
    clock.advance(0.05)
    ptt.poll()
    assert events == ["press", "release", "press"]
    pin.drive_high()  # a held Button makes gpiozero's close wait for its hold thread


def test_ptt_hold_long_hold_is_just_talking(ptt_setup, factory):
    ptt, events, clock = ptt_setup(long_press_s=1.0, long_press_action="mute")
    pin = factory.pin(17)
    pin.drive_low()
    clock.advance(10.0)
    ptt.poll()
    pin.drive_high()
    assert events == ["press", "release"]


def test_ptt_toggle_press_press(ptt_setup, factory):
    ptt, events, clock = ptt_setup(mode="toggle")
    pin = factory.pin(17)
    pin.drive_low()
    clock.advance(0.15)
    pin.drive_high()
    assert events == ["press"]
    assert ptt.is_talking
    clock.advance(2.0)
    pin.drive_low()
    assert events == ["press", "release"]  # the stop goes out on the press, too
    clock.advance(0.15)
    pin.drive_high()
    assert events == ["press", "release"]
    assert not ptt.is_talking


def test_ptt_toggle_long_press_cancels_the_started_turn(ptt_setup, factory):
    ptt, events, clock = ptt_setup(mode="toggle", long_press_s=3.0, long_press_action="cancel")
    pin = factory.pin(17)
    pin.drive_low()
    clock.advance(2.9)
    ptt.poll()
    assert events == ["press"]
    clock.advance(0.2)
    ptt.poll()
    ptt.poll()  # fires once
    pin.drive_high()
    assert events == ["press", "cancel", "long_press:cancel"]
    assert not ptt.is_talking


def test_ptt_toggle_long_press_while_talking(ptt_setup, factory):
    ptt, events, clock = ptt_setup(mode="toggle", long_press_s=3.0, long_press_action="mute")
    pin = factory.pin(17)
    pin.drive_low()
    clock.advance(0.1)
    pin.drive_high()
    clock.advance(1.0)
    pin.drive_low()  # stops the turn at once...
    clock.advance(3.5)
    ptt.poll()  # ...and holding on mutes
    pin.drive_high()
    assert events == ["press", "release", "long_press:mute"]


def test_ptt_toggle_long_press_none_does_nothing(ptt_setup, factory):
    ptt, events, clock = ptt_setup(mode="toggle", long_press_action="none")
    pin = factory.pin(17)
    pin.drive_low()
    clock.advance(30)
    ptt.poll()
    pin.drive_high()
    assert events == ["press"]


def test_ptt_toggle_state_resync_and_pinless_feed(factory):
    events: list[str] = []
    clock = FakeClock()
    ptt = PushToTalk(None, PttSettings(mode="toggle"), events.append, clock=clock)
    try:
        ptt.pressed()
        clock.advance(0.1)
        ptt.released()
        assert ptt.is_talking
        ptt.set_talking(False)  # the agent ended the turn by itself
        clock.advance(1)
        ptt.pressed()
        clock.advance(0.1)
        ptt.released()
        assert events == ["press", "press"]
        assert ptt.is_talking
    finally:
        ptt.close()


def test_ptt_real_timers_fire_cancel_and_long_press(build, factory):
    # No fake clock here: the timers alone must deliver the deferred words.
    got = threading.Event()
    events: list[str] = []

    def emit(word: str) -> None:
        events.append(word)
        if word.startswith("long_press"):
            got.set()

    devices = build({"talk": {"kind": "button", "pin": 17}})
    settings = PttSettings(
        mode="toggle", min_press_ms=30, long_press_s=0.3, long_press_action="mute"
    )
    ptt = PushToTalk(devices.get("talk"), settings, emit)
    try:
        pin = factory.pin(17)
        pin.drive_low()
        pin.drive_high()  # a 0 ms tap: settles into a cancel after 30 ms
        assert wait_for(lambda: events == ["press", "cancel"])
        pin.drive_low()  # maybe inside the quiet window: the re-check timer picks it up
        assert got.wait(TIMEOUT)
        pin.drive_high()
        assert events == ["press", "cancel", "press", "cancel", "long_press:mute"]
    finally:
        ptt.close()


def test_ptt_close_detaches(ptt_setup, factory):
    ptt, events, _clock = ptt_setup()
    ptt.close()
    factory.pin(17).drive_low()
    factory.pin(17).drive_high()
    assert events == []


# --------------------------------------------------------------------------- status light


LIGHTS = {
    "led": {"kind": "led", "pin": 4},
    "pwm": {"kind": "pwm_led", "pin": 18},
    "rgb": {"kind": "rgb_led", "pins": [5, 6, 13]},
}


@pytest.fixture
def lights(build):
    devices = build(LIGHTS)
    settings = StatusLightSettings(brightness=0.5)
    return {
        "led": StatusLight(devices.get("led"), settings),
        "pwm_led": StatusLight(devices.get("pwm"), settings),
        "rgb_led": StatusLight(devices.get("rgb"), settings),
    }


def test_status_patterns_cover_every_state_and_kind():
    assert set(STATUS_STATES) == {
        "starting",
        "connecting",
        "ready",
        "listening",
        "thinking",
        "speaking",
        "tool_running",
        "working",
        "ringing",
        "reconnecting",
        "muted",
        "error_network",
        "error_auth",
        "error_audio",
        "off",
    }
    for kind in ("led", "pwm_led", "rgb_led"):
        patterns = [STATUS_PATTERNS[state][kind] for state in STATUS_STATES]
        assert len(set(patterns)) == len(patterns), f"two states look alike on a {kind}"
        for pattern in patterns:
            assert pattern.mode != "pulse" or kind != "led"
            assert pattern.describe(kind)
    assert STATUS_PATTERNS["error_auth"]["rgb_led"].describe("rgb_led") == "red on"
    assert STATUS_PATTERNS["connecting"]["rgb_led"].describe("rgb_led").startswith("blue pulse")


def test_status_table_in_words():
    table = status_table()
    assert table["connecting"] == {
        "led": "blink 0.5 s on / 0.5 s off",
        "pwm_led": "pulse 1 s up / 1 s down",
        "rgb_led": "blue pulse 1 s up / 1 s down",
    }
    assert table["ready"]["pwm_led"] == "on at 10%"
    assert table["off"] == {"led": "off", "pwm_led": "off", "rgb_led": "off"}


def test_status_unknown_state_raises_even_without_a_light():
    light = StatusLight(None, StatusLightSettings())
    light.show("ready")  # no device: a no-op
    with pytest.raises(ValueError, match="unknown status light state 'sleeping'"):
        light.show("sleeping")


def test_status_light_refuses_a_button(build):
    devices = build({"talk": {"kind": "button", "pin": 17}})
    with pytest.raises(DeviceError):
        light_kind(devices.get("talk"))


LIGHT_PINS = {"led": (4,), "pwm_led": (18,), "rgb_led": (5, 6, 13)}


def _pins(kind: str, factory) -> list:
    return [factory.pin(p) for p in LIGHT_PINS[kind]]


def _lit_pin(kind: str, pattern, factory):
    """The pin to watch and its peak: for RGB the first channel the colour uses."""
    pins = _pins(kind, factory)
    if kind != "rgb_led":
        return pins[0], 1.0  # pwm blinks and pulses always peak at full
    index = next(i for i, c in enumerate(pattern.color) if c)
    return pins[index], pattern.color[index] * 0.5  # brightness 0.5 scales colours


@pytest.mark.parametrize("state", STATUS_STATES)
def test_status_each_state_drives_its_pattern(state, lights, factory):
    for light in lights.values():  # start dark, so the first "on" is a recorded change
        light.show("off" if state != "off" else "listening")
    for kind in lights:
        for pin in _pins(kind, factory):
            pin.clear_states()
    for light in lights.values():
        light.show(state)
    for kind, light in lights.items():
        pattern = STATUS_PATTERNS[state][kind]
        assert light.state == state
        pins = _pins(kind, factory)
        if pattern.mode == "off":
            assert [p.state for p in pins] == [0] * len(pins)
        elif pattern.mode == "solid":
            if kind == "led":
                expected = [1]
            elif kind == "pwm_led":
                expected = [pattern.level * 0.5]
            else:
                expected = [c * pattern.level * 0.5 for c in pattern.color]
            assert [p.state for p in pins] == pytest.approx(expected)
    # Timed patterns: watch one full "on" (blink) or one fade-up (pulse) per light.
    for kind in lights:
        pattern = STATUS_PATTERNS[state][kind]
        if pattern.mode not in ("blink", "pulse"):
            continue
        pin, peak = _lit_pin(kind, pattern, factory)
        # pin.states: [(0, state at clear), (seconds since previous change, new state), ...]
        if pattern.mode == "blink":
            assert wait_for(lambda pin=pin: len(pin.states) >= 3), f"{kind} never blinked"
            on, off = pin.states[1], pin.states[2]
            assert on.state == pytest.approx(peak)
            assert off.state == 0
            assert off.timestamp == pytest.approx(pattern.on_s, abs=0.08), kind
        else:
            assert wait_for(lambda pin=pin, peak=peak: pin.state >= peak * 0.999), kind
            states = list(pin.states)
            top = next(i for i, s in enumerate(states) if s.state >= peak * 0.999)
            rising = [s.state for s in states[1 : top + 1]]
            assert rising == sorted(rising), f"{kind} does not fade up"
            took = sum(s.timestamp for s in states[1 : top + 1])
            assert took == pytest.approx(pattern.on_s, abs=0.1), kind


def test_status_next_state_replaces_a_running_pattern(lights, factory):
    for light in lights.values():
        light.show("connecting")  # blink / pulse threads running
    for light in lights.values():
        light.show("listening")
    for kind, light in lights.items():
        assert light.device._blink_thread is None, kind
    pins = [factory.pin(p) for p in (4, 18, 5, 6, 13)]
    for pin in pins:
        pin.clear_states()
    assert not wait_for(lambda: any(len(p.states) > 1 for p in pins), timeout=0.25)
    assert [p.state for p in pins] == pytest.approx([1, 0.5, 0.5, 0.5, 0.5])


def test_status_same_state_again_does_not_restart(lights, factory):
    light = lights["pwm_led"]
    light.show("thinking")
    thread = light.device._blink_thread
    assert thread is not None
    light.show("thinking")
    assert light.device._blink_thread is thread  # a restart would make a new thread


def test_status_show_never_blocks(lights):
    started = time.monotonic()
    for _ in range(20):
        for state in ("connecting", "thinking", "error_network", "ready"):
            for light in lights.values():
                light.show(state)
    assert time.monotonic() - started < 2.0
