"""Tools: YAML -> functionDeclarations -> validated verbs on gpiozero MockFactory pins.

Every call goes through the real ToolRunner thread; pins are gpiozero's
MockPWMPin, so "moved nothing" is checked on the pins themselves.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin
from hypothesis import given, settings
from hypothesis import strategies as st

from pi_agent.config import _VERBS_BY_KIND, GpioSettings, load_config, parse_config, replace
from pi_agent.devices import Devices
from pi_agent.errors import BoundsError, ClosedError, ConfigError, ToolError
from pi_agent.models import MODELS, capabilities, informative, response_fields
from pi_agent.tools import SCHEMA_KEYS, ToolBox, ToolRunner, check_declaration, error_from

TIMEOUT = 5.0
REPORT_KEYS = {"id", "name", "response", "behavior", "scheduling", "willContinue"}
EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "examples" / "gpio.yaml"

DEVICES = {
    "plain": {"kind": "led", "pin": 4, "description": "the plain LED"},
    "dimmer": {"kind": "pwm_led", "pin": 18},
    "rgb": {"kind": "rgb_led", "pins": [5, 6, 13]},
    "beeper": {"kind": "buzzer", "pin": 16},
    "relay": {"kind": "output", "pin": 23, "active_high": False},
    "fan": {"kind": "pwm_output", "pin": 12},
    "arm": {"kind": "servo", "pin": 19, "initial_angle": 0},
    "door": {"kind": "input", "pin": 24, "pull_up": True},
    "talk": {"kind": "button", "pin": 17},
}
PINS = {
    "plain": (4,),
    "dimmer": (18,),
    "rgb": (5, 6, 13),
    "beeper": (16,),
    "relay": (23,),
    "fan": (12,),
    "arm": (19,),
}
ACTIVE_LOW = {"relay"}
SWITCHABLE = ("plain", "dimmer", "rgb", "beeper", "relay", "fan")


def every_verb_tool() -> list[dict]:
    """One tool per (device, allowed verb): ``<device>_<verb>``."""
    tools = []
    for name, dev in DEVICES.items():
        for verb in sorted(_VERBS_BY_KIND[dev["kind"]]):
            tools.append(
                {
                    "name": f"{name}_{verb}",
                    "description": f"{verb} the {name}.",
                    "device": name,
                    "verb": verb,
                }
            )
    return tools


@pytest.fixture(autouse=True)
def factory():
    factory = MockFactory(pin_class=MockPWMPin)
    yield factory
    factory.reset()


class Responses:
    """on_response that records and lets a test wait for a given call id."""

    def __init__(self):
        self.items: list[dict] = []
        self.cond = threading.Condition()

    def __call__(self, response: dict) -> None:
        assert threading.current_thread().name == "pi-agent-tools"
        with self.cond:
            self.items.append(response)
            self.cond.notify_all()

    def wait(self, call_id: str, timeout: float = TIMEOUT) -> dict:
        with self.cond:
            found = self.cond.wait_for(lambda: any(r["id"] == call_id for r in self.items), timeout)
            assert found, f"no response for {call_id}"
            return next(r for r in self.items if r["id"] == call_id)

    def ids(self) -> list[str]:
        with self.cond:
            return [r["id"] for r in self.items]

    def all(self, call_id: str, n: int, timeout: float = TIMEOUT) -> list[dict]:
        """The first ``n`` reports for ``call_id`` (a willContinue call has two)."""
        with self.cond:
            found = self.cond.wait_for(
                lambda: sum(r["id"] == call_id for r in self.items) >= n, timeout
            )
            assert found, f"fewer than {n} reports for {call_id}"
            return [r for r in self.items if r["id"] == call_id][:n]


class FakeClock:
    def __init__(self):
        self.t = 5000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def make_kit(factory):
    """Devices + ToolBox + started ToolRunner; torn down runner first, then devices."""
    made = []
    ids = itertools.count(1)

    def make(tools=None, devices=None, clock=None, start=True):
        config = parse_config(
            {
                "devices": DEVICES if devices is None else devices,
                "tools": every_verb_tool() if tools is None else tools,
            }
        )
        devs = Devices(config, pin_factory=factory)
        box = ToolBox(config.tools, devs)
        responses = Responses()
        kwargs = {"clock": clock} if clock else {}
        runner = ToolRunner(box, responses, **kwargs)
        made.append((runner, devs))
        if start:
            runner.start()

        def call(name: str, args=None) -> dict:
            call_id = f"call-{next(ids)}"
            runner.submit(call_id, name, {} if args is None else args)
            response = responses.wait(call_id)
            assert response["name"] == name
            assert set(response) <= REPORT_KEYS, set(response) - REPORT_KEYS
            result = response["response"]
            assert result["status"] in ("ok", "error"), result
            if result["status"] == "error":
                assert isinstance(result["reason"], str) and isinstance(result["retryable"], bool)
            return result

        return SimpleNamespace(
            devices=devs, box=box, runner=runner, responses=responses, call=call, ids=ids
        )

    yield make
    for runner, devs in made:
        runner.stop()
        devs.close()


def status(result: dict) -> str:
    return result["status"]


def wait_for(predicate, timeout: float = TIMEOUT) -> bool:
    tick = threading.Event()
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        tick.wait(0.002)
    return True


def pin_values(factory, device: str) -> list[float]:
    return [float(factory.pin(p).state) for p in PINS[device]]


def lit(device: str, level: float = 1.0) -> list[float]:
    """Expected pin values for ``device`` at ``level`` (active-low relays inverted)."""
    value = 1.0 - level if device in ACTIVE_LOW else level
    return [value] * len(PINS[device])


def snapshot(factory) -> dict:
    return {
        info.name: (pin.state, len(pin.states), pin.frequency) for info, pin in factory.pins.items()
    }


# --------------------------------------------------------------------------- declarations


def _walk_schema(schema: dict) -> None:
    assert set(schema) <= SCHEMA_KEYS, set(schema) - SCHEMA_KEYS
    assert schema["type"] in {"OBJECT", "BOOLEAN", "NUMBER", "INTEGER", "STRING"}
    for sub in schema.get("properties", {}).values():
        _walk_schema(sub)


def test_tools_declarations_use_only_the_schema_subset(make_kit):
    kit = make_kit(start=False)
    declarations = kit.box.function_declarations()
    assert [d["name"] for d in declarations] == [t["name"] for t in every_verb_tool()]
    for decl in declarations:
        check_declaration(decl)
        assert set(decl) <= {"name", "description", "parameters"}
        verb = decl["name"].split("_", 1)[1]
        if verb in ("on", "off", "toggle", "read"):
            assert "parameters" not in decl  # an empty OBJECT is rejected by the API
        else:
            params = decl["parameters"]
            assert params["type"] == "OBJECT" and params["properties"]
            _walk_schema(params)
    by_name = {d["name"]: d for d in declarations}
    assert by_name["relay_set"]["parameters"] == {
        "type": "OBJECT",
        "properties": {
            "on": {
                "type": "BOOLEAN",
                "description": "true switches relay on, false switches it off.",
            }
        },
        "required": ["on"],
    }
    assert by_name["arm_angle"]["parameters"]["properties"]["angle"]["minimum"] == -90
    blink = by_name["plain_blink"]["parameters"]
    assert "required" not in blink  # count and period_s have defaults
    assert blink["properties"]["count"] == {
        "type": "INTEGER",
        "description": "How many times to blink.",
        "minimum": 1,
        "maximum": 10,
    }
    json.dumps(declarations)  # plain JSON, nothing exotic


def test_tools_yaml_overrides_parameter_text_and_bounds(make_kit):
    tool = {
        "name": "dim",
        "description": "Dim the light.",
        "device": "dimmer",
        "verb": "value",
        "parameter_description": "brightness, 0 to 0.6",
        "min": 0.1,
        "max": 0.6,
    }
    kit = make_kit(tools=[tool], start=False)
    (decl,) = kit.box.function_declarations()
    assert decl["parameters"]["properties"]["value"] == {
        "type": "NUMBER",
        "description": "brightness, 0 to 0.6",
        "minimum": 0.0,  # 0 is off, always allowed; otherwise 0.1 to 0.6
        "maximum": 0.6,
    }
    assert kit.box.tool("dim").signature() == (
        "it takes: value (number 0 (off) or 0.1 to 0.6, required)"
    )


@pytest.mark.parametrize(
    "declaration, problem",
    [
        ({"name": "x", "description": "d", "parameters": {"type": "OBJECT", "properties": {}}},
         "at least one property"),
        ({"name": "x", "description": "d", "parameters": {
            "type": "OBJECT", "properties": {"a": {"type": "STRING"}},
            "additionalProperties": False}}, "additionalProperties"),
        ({"name": "x", "description": "d", "parameters": {
            "type": "OBJECT", "properties": {"a": {"type": "STRING", "readOnly": True}}}},
         "readOnly"),
        ({"name": "x", "description": "d", "parameters": {
            "type": "OBJECT", "properties": {"a": {"type": "float"}}}}, "type"),
        ({"name": "x", "description": "d", "strict": True}, "strict"),
        ({"name": "9 lives", "description": "d"}, "valid function name"),
        ({"name": "x", "description": ""}, "description"),
    ],
)  # fmt: skip
def test_tools_check_declaration_rejects_what_the_api_would(declaration, problem):
    with pytest.raises(ValueError, match=problem):
        check_declaration(declaration)


def test_tools_toolbox_refuses_unknown_device(factory):
    config = parse_config({"devices": {"plain": DEVICES["plain"]}})
    devices = Devices(config, pin_factory=factory)
    try:
        from pi_agent.config import ToolSettings

        bad = ToolSettings(name="x", description="d", device="ghost", verb="on")
        with pytest.raises(ConfigError, match="no device named 'ghost'"):
            ToolBox((bad,), devices)
    finally:
        devices.close()


# --------------------------------------------------------------------------- verbs


def test_tools_on_off_toggle_set_on_every_switchable_kind(make_kit, factory):
    kit = make_kit()
    for dev in SWITCHABLE:
        assert pin_values(factory, dev) == lit(dev, 0), dev
        result = kit.call(f"{dev}_on")
        assert pin_values(factory, dev) == lit(dev, 1), dev
        assert result["device"] == dev and result["on"] is True
        assert kit.call(f"{dev}_off")["on"] is False
        assert pin_values(factory, dev) == lit(dev, 0), dev
        kit.call(f"{dev}_toggle")
        assert pin_values(factory, dev) == lit(dev, 1), dev
        kit.call(f"{dev}_toggle")
        assert pin_values(factory, dev) == lit(dev, 0), dev
        assert kit.call(f"{dev}_set", {"on": True})["on"] is True
        assert pin_values(factory, dev) == lit(dev, 1), dev
        kit.call(f"{dev}_set", {"on": False})
        assert pin_values(factory, dev) == lit(dev, 0), dev
        assert kit.call(f"{dev}_read")["on"] is False


def test_tools_value_on_pwm_kinds(make_kit, factory):
    kit = make_kit()
    for dev in ("dimmer", "fan", "rgb"):
        result = kit.call(f"{dev}_value", {"value": 0.25})
        assert pin_values(factory, dev) == pytest.approx(lit(dev, 0.25)), dev
        if dev == "rgb":
            assert result["color"] == [0.25, 0.25, 0.25]
        else:
            assert result["value"] == 0.25
    kit.call("dimmer_value", {"value": 1})  # an integer is a fine NUMBER
    assert pin_values(factory, "dimmer") == [1.0]


def test_tools_max_caps_value_and_on(make_kit, factory):
    tools = [
        {"name": "dim", "description": "d", "device": "dimmer", "verb": "value", "max": 0.6},
        {"name": "dim_on", "description": "d", "device": "dimmer", "verb": "on", "max": 0.6},
    ]
    kit = make_kit(tools=tools)
    error = kit.call("dim", {"value": 0.7})["reason"]
    assert error == "argument 'value' of dim is 0.7, outside the allowed 0 to 0.6"
    assert pin_values(factory, "dimmer") == [0.0]
    kit.call("dim_on")
    assert pin_values(factory, "dimmer") == [pytest.approx(0.6)]


def test_tools_blink_every_kind_that_blinks(make_kit, factory):
    kit = make_kit()
    blinkers = [d for d in SWITCHABLE if "blink" in _VERBS_BY_KIND[DEVICES[d]["kind"]]]
    for dev in blinkers:
        factory.pin(PINS[dev][0]).clear_states()
    for dev in blinkers:
        result = kit.call(f"{dev}_blink", {"count": 2, "period_s": 0.2})
        assert result["blinking"] is True
        assert result["count"] == 2 and result["duration_s"] == 0.4
    for dev in blinkers:
        pin = factory.pin(PINS[dev][0])
        on, off = (0.0, 1.0) if dev in ACTIVE_LOW else (1.0, 0.0)
        expected = [off, on, off, on, off]
        assert wait_for(lambda pin=pin: len(pin.states) >= 5), dev
        assert [float(s.state) for s in pin.states] == expected, dev
        assert [s.timestamp for s in pin.states[2:]] == pytest.approx([0.1] * 3, abs=0.06)


def test_tools_pulse_fades_up_and_down(make_kit, factory):
    kit = make_kit()
    for dev in ("dimmer", "fan", "rgb"):
        factory.pin(PINS[dev][0]).clear_states()
        result = kit.call(f"{dev}_pulse", {"count": 1, "period_s": 0.4})
        assert result["pulsing"] is True and result["duration_s"] == 0.4
    for dev in ("dimmer", "fan", "rgb"):
        pin = factory.pin(PINS[dev][0])
        device = kit.devices.get(dev)
        assert wait_for(
            lambda device=device: (
                device._blink_thread is None or not device._blink_thread.is_alive()
            )
        )
        values = [float(s.state) for s in pin.states]
        peak = values.index(max(values))
        assert max(values) == 1.0, dev
        assert values[: peak + 1] == sorted(values[: peak + 1]), dev
        assert values[peak:] == sorted(values[peak:], reverse=True), dev
        assert values[-1] == 0.0


def test_tools_angle_moves_the_servo_within_bounds(make_kit, factory):
    kit = make_kit()
    assert kit.call("arm_angle", {"angle": 45}) == {"status": "ok", "device": "arm", "angle": 45.0}
    # 1-2 ms pulses in a 20 ms frame: 45 degrees = 1.75 ms = 8.75 % duty at 50 Hz
    assert factory.pin(19).frequency == 50
    assert factory.pin(19).state == pytest.approx(0.0875)
    assert kit.call("arm_angle", {"angle": -90})["angle"] == -90.0
    assert factory.pin(19).state == pytest.approx(0.05)
    assert kit.call("arm_read") == {"status": "ok", "device": "arm", "angle": -90.0}


def test_tools_read_inputs(make_kit, factory):
    kit = make_kit()
    assert kit.call("door_read") == {"status": "ok", "device": "door", "active": False}
    factory.pin(24).drive_low()
    assert kit.call("door_read") == {"status": "ok", "device": "door", "active": True}
    factory.pin(17).drive_low()
    try:
        assert kit.call("talk_read") == {"status": "ok", "device": "talk", "pressed": True}
    finally:
        factory.pin(17).drive_high()


# --------------------------------------------------------------------------- bad calls


@pytest.mark.parametrize(
    "name, args, error",
    [
        ("fly", {}, "unknown tool 'fly'; available tools: plain_blink, plain_off"),
        ("dimmer_value", [0.5], "the arguments of dimmer_value must be an object; it takes: "
         "value (number 0 to 1, required)"),
        ("dimmer_value", {}, "missing argument 'value' for dimmer_value; it takes: "
         "value (number 0 to 1, required)"),
        ("dimmer_value", {"value": None}, "missing argument 'value'"),
        ("dimmer_value", {"value": 0.5, "speed": 2}, "unexpected argument 'speed' for "
         "dimmer_value; it takes: value (number 0 to 1, required)"),
        ("plain_on", {"x": 1}, "unexpected argument 'x' for plain_on; it takes no arguments"),
        ("relay_set", {"on": "yes"}, "argument 'on' of relay_set must be true or false, not 'yes'"),
        ("relay_set", {"on": 1}, "must be true or false, not 1"),
        ("dimmer_value", {"value": "high"}, "argument 'value' of dimmer_value must be a number, "
         "not 'high'"),
        ("dimmer_value", {"value": True}, "must be a number, not True"),
        ("dimmer_value", {"value": 1.5}, "argument 'value' of dimmer_value is 1.5, outside the "
         "allowed 0 to 1"),
        ("dimmer_value", {"value": -0.1}, "is -0.1, outside the allowed 0 to 1"),
        ("dimmer_value", {"value": float("nan")}, "must be a finite number"),
        ("rgb_value", {"value": 2}, "is 2, outside the allowed 0 to 1"),
        ("arm_angle", {"angle": 120}, "is 120, outside the allowed -90 to 90"),
        ("plain_blink", {"count": 2.5}, "argument 'count' of plain_blink must be a whole number"),
        ("plain_blink", {"count": 0}, "is 0, outside the allowed 1 to 10"),
        ("plain_blink", {"count": 11}, "is 11, outside the allowed 1 to 10"),
        ("plain_blink", {"period_s": 0.05}, "is 0.05, outside the allowed 0.2 to 5"),
        ("plain_blink", {"count": 10, "period_s": 2}, "count × period_s = 10 × 2 s = 20 s is "
         "longer than the 10 s plain_blink allows"),
        ("dimmer_pulse", {"count": "3"}, "must be a whole number, not '3'"),
    ],
)  # fmt: skip
def test_tools_bad_calls_get_precise_errors_and_move_nothing(make_kit, factory, name, args, error):
    kit = make_kit()
    before = snapshot(factory)
    response = kit.call(name, args)
    assert response["status"] == "error" and error in response["reason"]
    assert snapshot(factory) == before
    assert kit.runner.is_alive
    kit.call("door_read")  # and the runner still answers


def test_tools_error_for_unknown_tool_carries_its_id_and_name(make_kit):
    kit = make_kit()
    kit.runner.submit("abc-1", "no_such_tool", {"a": 1})
    response = kit.responses.wait("abc-1")
    assert response["id"] == "abc-1"
    assert response["name"] == "no_such_tool"
    assert response["response"]["reason"].startswith("unknown tool 'no_such_tool'")


@pytest.mark.parametrize(
    "name, args, extra",
    [
        ("fly", {}, {"valid_options": "NAMES"}),
        ("dimmer_value", {"value": 0.5, "speed": 2}, {"valid_options": ["value"]}),
        ("plain_on", {"x": 1}, {"valid_options": []}),
        ("relay_set", {"on": "yes"}, {"valid_options": [True, False]}),
        ("dimmer_value", {"value": 1.5}, {"allowed_range": {"min": 0.0, "max": 1.0}}),
        ("dimmer_value", {"value": "high"}, {"allowed_range": {"min": 0.0, "max": 1.0}}),
        ("arm_angle", {"angle": 120}, {"allowed_range": {"min": -90.0, "max": 90.0,
                                                        "unit": "degrees"}}),
        ("plain_blink", {"count": 11}, {"allowed_range": {"min": 1, "max": 10, "unit": "times"}}),
        ("plain_blink", {"period_s": 9}, {"allowed_range": {"min": 0.2, "max": 5.0,
                                                           "unit": "seconds"}}),
        ("plain_blink", {"count": 10, "period_s": 2},
         {"allowed_range": {"min": 0, "max": 10.0, "unit": "seconds"},
          "hint": "ask for fewer times or a shorter period_s"}),
        ("dimmer_value", {}, {"hint": "it takes: value (number 0 to 1, required)"}),
    ],
)  # fmt: skip
def test_tools_errors_say_what_would_be_accepted(make_kit, name, args, extra):
    kit = make_kit()
    result = kit.call(name, args)
    if extra.get("valid_options") == "NAMES":
        extra = {"valid_options": kit.box.names}
    assert result == {"status": "error", "reason": result["reason"], "retryable": False, **extra}


def test_tools_a_device_bound_becomes_an_allowed_range():
    result = error_from(BoundsError("strip: value 0.9 is outside the allowed 0.1 to 0.8", 0.1, 0.8))
    assert result["allowed_range"] == {"min": 0.1, "max": 0.8} and result["retryable"] is False
    assert error_from(ToolError("nope")) == {
        "status": "error",
        "reason": "nope",
        "retryable": False,
    }


JSON = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
)


def test_tools_every_result_is_informative_whatever_the_model_sends(make_kit):
    """The property 3.8 needs not to call again: a status, and for an error a reason and
    whether a retry can help, for any name and any arguments."""
    kit = make_kit()
    names = [*kit.box.names, "fly"]
    keys = ["on", "value", "angle", "count", "period_s", "x"]

    @settings(max_examples=80)
    @given(
        name=st.sampled_from(names),
        args=st.one_of(st.none(), st.lists(JSON, max_size=2), st.dictionaries(
            st.sampled_from(keys), JSON, max_size=3)),
    )  # fmt: skip
    def check(name, args):
        result = kit.call(name, args)
        assert informative(result), result
        json.dumps(result, allow_nan=False)  # and sendable as it is

    check()


def test_tools_behavior_and_scheduling_per_verb_and_per_model(make_kit):
    tools = [
        *every_verb_tool(),
        {"name": "slow_on", "description": "d", "device": "plain", "verb": "on",
         "behavior": "non_blocking", "scheduling": "silent"},
        {"name": "quick_blink", "description": "d", "device": "plain", "verb": "blink",
         "behavior": "blocking"},
    ]  # fmt: skip
    kit = make_kit(tools=tools, start=False)
    kit.box.add_builtin({"name": "look", "description": "Take a photo."}, lambda a: {})
    kit.box.add_builtin(
        {"name": "watch", "description": "d", "behavior": "NON_BLOCKING"}, lambda a: {}
    )
    for model in (
        None,
        "gemini-3.1-flash-live-preview",
        "gemini-2.5-flash-native-audio-preview-12-2025",
        "my-model",
    ):
        assert all("behavior" not in d for d in kit.box.function_declarations(model)), model
    declared = {
        d["name"]: d["behavior"] for d in kit.box.function_declarations("models/gemini-3.8-live")
    }
    long = {n for n, b in declared.items() if b == "NON_BLOCKING"}
    assert long == {
        n for n in declared if n.endswith(("_blink", "_pulse")) and n != "quick_blink"
    } | {"slow_on", "watch"}
    assert declared["look"] == declared["quick_blink"] == declared["dimmer_value"] == "BLOCKING"
    assert kit.box.scheduling("slow_on") == "SILENT"
    assert kit.box.scheduling("plain_blink") == kit.box.scheduling("look") == "WHEN_IDLE"
    with pytest.raises(ValueError, match="behavior"):
        check_declaration({"name": "x", "description": "d", "behavior": "SOMETIMES"})


def test_tools_reports_carry_scheduling_only_for_non_blocking_calls(make_kit):
    tools = [
        {"name": "quiet_on", "description": "d", "device": "plain", "verb": "set",
         "behavior": "non_blocking", "scheduling": "silent"},
        {"name": "now_on", "description": "d", "device": "plain", "verb": "on",
         "behavior": "non_blocking", "scheduling": "interrupt"},
        {"name": "plain_on", "description": "d", "device": "plain", "verb": "on"},
    ]  # fmt: skip
    kit = make_kit(tools=tools)

    def report(name, args):
        call_id = f"r-{next(kit.ids)}"
        kit.runner.submit(call_id, name, args)
        return kit.responses.wait(call_id)

    ok = report("quiet_on", {"on": True})
    assert (ok["behavior"], ok["scheduling"]) == ("NON_BLOCKING", "SILENT")
    failed = report("quiet_on", {"on": "maybe"})
    assert failed["scheduling"] == "WHEN_IDLE", "a failure is never silent"
    assert report("now_on", {})["scheduling"] == "INTERRUPT"
    blocking = report("plain_on", {})
    assert blocking["behavior"] == "BLOCKING" and "scheduling" not in blocking
    for r in (ok, failed, blocking):
        assert "willContinue" not in r


def test_tools_a_non_blocking_blink_reports_when_it_starts_and_when_it_ends(make_kit, factory):
    kit = make_kit()
    kit.runner.submit("b-1", "relay_blink", {"count": 2, "period_s": 0.2})
    first, final = kit.responses.all("b-1", 2)
    assert first["willContinue"] is True and first["scheduling"] == "SILENT"
    assert first["response"]["blinking"] is True and first["response"]["duration_s"] == 0.4
    assert "willContinue" not in final and final["scheduling"] == "WHEN_IDLE"
    assert final["response"] == {"status": "ok", "device": "relay", "finished": True, "on": False}
    states = [float(s.state) for s in factory.pin(23).states]
    assert states[-4:] == [0.0, 1.0, 0.0, 1.0], states  # on, off twice (active low)


def test_tools_a_blink_cut_short_says_so_and_a_cancelled_one_says_nothing(make_kit):
    kit = make_kit()
    kit.runner.submit("b-1", "relay_blink", {"count": 2, "period_s": 0.5})
    kit.responses.wait("b-1")
    kit.call("relay_off")  # a later command stops it
    _first, final = kit.responses.all("b-1", 2)
    assert final["response"]["finished"] is False
    assert "changed by a later command" in final["response"]["note"]

    kit.runner.submit("c-1", "plain_blink", {"count": 1, "period_s": 0.4})
    kit.responses.wait("c-1")
    kit.runner.submit("d-1", "beeper_blink", {"count": 1, "period_s": 0.4})  # ends right after
    kit.responses.wait("d-1")
    assert kit.runner.cancel(["c-1"]) == ["c-1"]  # stopped (reverted) while it blinks
    kit.responses.all("d-1", 2)  # c-1's final report was due first
    assert kit.responses.ids().count("c-1") == 1


def test_models_table_and_response_fields():
    assert capabilities("models/gemini-3.8-live").non_blocking
    assert capabilities("gemini-3.8-live-extended-thinking").interaction_status
    assert capabilities("gemini-3.1-flash-live-preview").refuses_non_blocking
    assert not capabilities("some-new-model").non_blocking
    assert not capabilities(None).non_blocking
    assert all(m in MODELS for m in ("gemini-3.8-live", "gemini-3.1-flash-live-preview"))
    report = {"behavior": "NON_BLOCKING", "scheduling": "SILENT", "willContinue": True}
    assert response_fields("gemini-3.8-live", report) == {
        "scheduling": "SILENT",
        "willContinue": True,
    }
    assert response_fields("gemini-3.1-flash-live-preview", report) == {}
    assert response_fields("gemini-3.8-live", {**report, "behavior": "BLOCKING"}) == {}
    assert response_fields("gemini-3.8-live", {"behavior": "NON_BLOCKING"}) == {}
    assert informative({"status": "ok"}) and informative(
        {"status": "error", "reason": "r", "retryable": True}
    )
    for bare in ({"result": 1}, {"error": "x"}, {"status": "error", "reason": "r"}, "ok", None):
        assert not informative(bare), bare


# --------------------------------------------------------------------------- safety


def test_tools_rate_limit_per_tool(make_kit, factory):
    clock = FakeClock()
    tools = [
        {"name": "lamp", "description": "d", "device": "relay", "verb": "toggle",
         "rate_limit_per_min": 2},
        {"name": "lamp_read", "description": "d", "device": "relay", "verb": "read"},
    ]  # fmt: skip
    kit = make_kit(tools=tools, clock=clock)
    assert status(kit.call("lamp")) == "ok"
    clock.t += 30
    assert status(kit.call("lamp")) == "ok"
    before = snapshot(factory)
    clock.t += 10
    error = kit.call("lamp")
    assert error["reason"] == "rate limit: lamp may run at most 2 times a minute; try again in 20 s"
    assert error["retryable"] is True and error["retry_after_s"] == 20
    assert snapshot(factory) == before
    assert status(kit.call("lamp_read")) == "ok"  # other tools are not limited
    clock.t += 20
    assert status(kit.call("lamp")) == "ok"


def test_tools_auto_off_fires_without_any_session(make_kit, factory):
    tools = [
        {"name": "lamp_on", "description": "d", "device": "relay", "verb": "on",
         "auto_off_s": 0.2},
        {"name": "lamp_set", "description": "d", "device": "relay", "verb": "set"},
    ]  # fmt: skip
    kit = make_kit(tools=tools)
    started = time.monotonic()
    kit.call("lamp_on")
    assert factory.pin(23).state == 0  # on (active low)
    assert wait_for(lambda: factory.pin(23).state == 1)
    assert time.monotonic() - started >= 0.19
    # the shortest auto_off_s of a device's tools guards every way of switching it on
    started = time.monotonic()
    kit.call("lamp_set", {"on": True})
    assert wait_for(lambda: factory.pin(23).state == 1)
    assert time.monotonic() - started >= 0.19


def test_tools_auto_off_restarts_on_each_on_and_stands_down_on_off(make_kit, factory):
    tools = [
        {"name": "lamp", "description": "d", "device": "relay", "verb": "set",
         "auto_off_s": 0.3},
    ]  # fmt: skip
    kit = make_kit(tools=tools)
    kit.call("lamp", {"on": True})
    kit.call("lamp", {"on": False})
    assert kit.runner._auto_off == {}
    kit.call("lamp", {"on": True})
    assert set(kit.runner._auto_off) == {"relay"}


def test_tools_auto_off_at_stop_and_for_outputs_on_at_startup(make_kit, factory):
    devices = dict(DEVICES, relay={**DEVICES["relay"], "initial": 1})
    tools = [
        {"name": "lamp", "description": "d", "device": "relay", "verb": "set",
         "auto_off_s": 600},
    ]  # fmt: skip
    kit = make_kit(tools=tools, devices=devices)
    assert factory.pin(23).state == 0  # on from start-up...
    assert wait_for(lambda: "relay" in kit.runner._auto_off)  # ...and already guarded
    kit.runner.stop()
    assert factory.pin(23).state == 1  # switched off before its timer was dropped
    assert kit.runner._auto_off == {}
    with pytest.raises(ClosedError):
        kit.runner.submit("late", "lamp", {"on": True})


def test_tools_safe_state_after_runner_stop(make_kit, factory):
    kit = make_kit()
    kit.call("relay_on")
    kit.call("dimmer_pulse", {"count": 5, "period_s": 1})
    kit.runner.stop()
    kit.devices.safe_state()
    assert pin_values(factory, "relay") == lit("relay", 0)
    assert pin_values(factory, "dimmer") == [0.0]
    assert kit.devices.get("dimmer")._blink_thread is None


# --------------------------------------------------------------------------- cancellation


def _pulse_tools(undo: bool) -> list[dict]:
    return [
        {"name": "dim", "description": "d", "device": "dimmer", "verb": "value"},
        {"name": "pulse", "description": "d", "device": "dimmer", "verb": "pulse",
         "undo": undo},
    ]  # fmt: skip


@pytest.mark.parametrize("undo, after", [(True, 0.3), (False, 0.0)])
def test_tools_cancellation_stops_a_pulse(make_kit, factory, undo, after):
    kit = make_kit(tools=_pulse_tools(undo))
    kit.call("dim", {"value": 0.3})
    kit.runner.submit("p-1", "pulse", {"count": 5, "period_s": 1.0})
    assert kit.responses.wait("p-1")["response"]["pulsing"] is True
    device = kit.devices.get("dimmer")
    assert wait_for(lambda: device._blink_thread is not None)
    assert kit.runner.cancel(["p-1", "unknown-id"]) == ["p-1"]
    assert wait_for(lambda: device._blink_thread is None)
    assert factory.pin(18).state == pytest.approx(after)
    pin = factory.pin(18)
    pin.clear_states()
    assert not wait_for(lambda: len(pin.states) > 1, timeout=0.2)  # really stopped


def test_tools_cancellation_undoes_a_finished_call_only_with_undo(make_kit, factory):
    tools = [
        {"name": "lamp", "description": "d", "device": "relay", "verb": "set", "undo": True},
        {"name": "fan", "description": "d", "device": "fan", "verb": "value"},
    ]
    kit = make_kit(tools=tools)
    kit.runner.submit("l-1", "lamp", {"on": True})
    kit.responses.wait("l-1")
    kit.runner.submit("f-1", "fan", {"value": 0.5})
    kit.responses.wait("f-1")
    assert kit.runner.cancel(["l-1", "f-1"]) == ["l-1"]
    assert wait_for(lambda: factory.pin(23).state == 1)  # lamp back off
    kit.call("fan", {"value": 0.5})
    assert factory.pin(12).state == 0.5  # no undo declared: left as the model set it


def test_tools_undo_skipped_when_the_device_changed_since(make_kit, factory):
    tools = [
        {"name": "dim", "description": "d", "device": "dimmer", "verb": "value", "undo": True},
    ]
    kit = make_kit(tools=tools)
    kit.runner.submit("d-1", "dim", {"value": 0.3})
    kit.responses.wait("d-1")
    kit.call("dim", {"value": 0.6})
    assert kit.runner.cancel(["d-1"]) == ["d-1"]
    kit.call("dim", {"value": 0.6})  # the revert job ran before this one
    assert factory.pin(18).state == pytest.approx(0.6)


def test_tools_cancelled_queued_and_running_calls_send_no_response(make_kit, factory):
    kit = make_kit(tools=[{"name": "lamp", "description": "d", "device": "relay", "verb": "on"}])
    entered, release = threading.Event(), threading.Event()

    def slow(args: dict) -> dict:
        entered.set()
        release.wait(TIMEOUT)
        return {"result": {"done": True}}

    kit.box.add_builtin({"name": "slow", "description": "Takes a while."}, slow)
    kit.runner.submit("s-1", "slow", {})
    assert entered.wait(TIMEOUT)
    kit.runner.submit("l-1", "lamp", {})
    assert kit.runner.busy
    assert kit.runner.cancel(["s-1", "l-1"]) == ["s-1", "l-1"]
    release.set()
    kit.runner.submit("probe", "lamp", {})  # answered after everything before it
    kit.responses.wait("probe")
    assert kit.responses.ids() == ["probe"]
    assert wait_for(lambda: not kit.runner.busy)


# --------------------------------------------------------------------------- built-ins, timeouts


def test_tools_builtin_answers_are_shaped_into_the_one_result_shape(make_kit):
    kit = make_kit(tools=[])
    kit.box.add_builtin({"name": "as_is", "description": "d"}, lambda a: {"result": {"x": 1}})
    timer_ok = {"status": "ok", "rings_at": "14:05"}
    timer_refused = {"status": "error", "reason": "no such id", "retryable": False}
    kit.box.add_builtin({"name": "wrapped", "description": "d"}, lambda a: {"result": timer_ok})
    kit.box.add_builtin({"name": "shaped", "description": "d"}, lambda a: timer_refused)
    kit.box.add_builtin({"name": "old_error", "description": "d"}, lambda a: {"error": "nope"})
    kit.box.add_builtin({"name": "bare", "description": "d"}, lambda a: {"x": 2})
    echo = {
        "name": "echo",
        "description": "d",
        "parameters": {"type": "OBJECT", "properties": {"q": {"type": "STRING"}}},
    }
    kit.box.add_builtin(echo, lambda a: {"got": a})

    def refuse(args):
        raise ToolError("the camera is off")

    def crash(args):
        raise RuntimeError("boom")

    kit.box.add_builtin({"name": "refuse", "description": "d"}, refuse)
    kit.box.add_builtin({"name": "crash", "description": "d"}, crash)
    assert kit.call("as_is") == {"status": "ok", "x": 1}
    assert kit.call("wrapped") == timer_ok  # parts.py's {"result": ...} around the timers'
    assert kit.call("shaped") == timer_refused
    assert kit.call("old_error") == {"status": "error", "reason": "nope", "retryable": False}
    assert kit.call("bare") == {"status": "ok", "x": 2}
    assert kit.call("echo", {"q": "hi"}) == {"status": "ok", "got": {"q": "hi"}}
    assert kit.call("echo", ["hi"]) == {
        "status": "error",
        "reason": "the arguments of echo must be an object",
        "retryable": False,
    }
    assert kit.call("refuse") == {
        "status": "error",
        "reason": "the camera is off",
        "retryable": False,
    }
    crashed = {"status": "error", "reason": "crash failed: boom", "retryable": False}
    assert kit.call("crash") == crashed
    names = [d["name"] for d in kit.box.function_declarations()]
    assert names == ["as_is", "wrapped", "shaped", "old_error", "bare", "echo", "refuse", "crash"]


def test_tools_add_builtin_checks_its_declaration(make_kit):
    kit = make_kit(start=False)
    with pytest.raises(ValueError, match="already exists"):
        kit.box.add_builtin({"name": "plain_on", "description": "d"}, lambda a: {})
    with pytest.raises(ValueError, match="unsupported schema keys"):
        kit.box.add_builtin(
            {"name": "x", "description": "d", "parameters": {
                "type": "OBJECT", "properties": {"a": {"type": "STRING", "default": "b"}}}},
            lambda a: {},
        )  # fmt: skip


def test_tools_a_hung_call_times_out_with_an_error(make_kit):
    kit = make_kit(tools=[])
    release = threading.Event()
    kit.box.add_builtin(
        {"name": "hang", "description": "d"},
        lambda a: release.wait(TIMEOUT) and {"result": {}},
        timeout_s=0.2,
    )
    started = time.monotonic()
    try:
        result = kit.call("hang")
        assert result["reason"] == "hang timed out after 0.2 s" and result["retryable"] is True
        assert 0.19 <= time.monotonic() - started < 2
        assert not kit.runner.busy
    finally:
        release.set()


# --------------------------------------------------------------------------- the example


def test_tools_example_yaml_builds_and_declares(factory):
    config = load_config(EXAMPLE)
    config = replace(config, gpio=GpioSettings(pin_factory="mock"))
    with Devices(config, pin_factory=factory) as devices:
        box = ToolBox(config.tools, devices)
        for decl in box.function_declarations():
            check_declaration(decl)
        assert box.auto_off_s("lamp") == 3600
        assert devices.get("pointer").angle is None  # no pulses at boot
    documented = EXAMPLE.read_text()
    for key in ("pin_factory", "pull_up", "bounce_time", "active_high", "initial", "safe",
                "frequency", "min_pulse_ms", "max_pulse_ms", "initial_angle", "safe_angle",
                "mode", "min_press_ms", "long_press_s", "long_press_action", "brightness",
                "parameter_description", "min", "max", "max_count", "max_duration_s",
                "auto_off_s", "rate_limit_per_min", "undo", "timeout_s"):  # fmt: skip
        assert f"{key}:" in documented, key


def test_tools_example_strip_never_exceeds_its_device_max(factory):
    """The example's strip is limited to 0.8 on the device: its blink tool peaks there too."""
    config = replace(load_config(EXAMPLE), gpio=GpioSettings(pin_factory="mock"))
    with Devices(config, pin_factory=factory) as devices:
        box = ToolBox(config.tools, devices)
        strip_decl = next(d for d in box.function_declarations() if d["name"] == "dim_strip")
        assert strip_decl["parameters"]["properties"]["value"]["maximum"] == 0.8  # inherited
        pin = factory.pin(12)
        pin.clear_states()
        box.execute("blink_strip", box.validate("blink_strip", {"count": 3, "period_s": 0.2}))
        device = devices.get("strip")
        assert wait_for(lambda: device._blink_thread is None or not device._blink_thread.is_alive())
        levels = [float(s.state) for s in pin.states]
        assert max(levels) == pytest.approx(0.8)
        assert levels.count(max(levels)) == 3
        with pytest.raises(ToolError, match=r"outside the allowed 0 to 0\.8"):
            box.validate("dim_strip", {"value": 0.9})
        with pytest.raises(ToolError, match="outside the allowed -45 to 45"):
            box.validate("point", {"angle": 50})


def test_tools_every_call_goes_through_devices_apply(make_kit, monkeypatch):
    kit = make_kit()
    seen = []
    real = Devices.apply

    def spy(self, name, verb, args=None, **kw):
        seen.append((name, verb))
        return real(self, name, verb, args, **kw)

    monkeypatch.setattr(Devices, "apply", spy)
    for tool in every_verb_tool():
        args = {"set": {"on": True}, "value": {"value": 0.5}, "angle": {"angle": 10},
                "blink": {"count": 1, "period_s": 0.2},
                "pulse": {"count": 1, "period_s": 0.2}}.get(tool["verb"], {})  # fmt: skip
        assert kit.call(tool["name"], args)["status"] == "ok", tool["name"]
        assert seen[-1] == (tool["device"], tool["verb"])
    assert len(seen) == len(every_verb_tool())


# --------------------------------------------------------------------------- command (MQTT, timers)

COMMAND_TOOLS = [
    {"name": "fan_on", "description": "d", "device": "fan", "verb": "on", "auto_off_s": 0.3,
     "rate_limit_per_min": 5},
    {"name": "fan_value", "description": "d", "device": "fan", "verb": "value",
     "rate_limit_per_min": 3},
    {"name": "dim", "description": "d", "device": "dimmer", "verb": "value", "max": 0.5},
]  # fmt: skip
COMMAND_DEVICES = dict(DEVICES, fan={"kind": "pwm_output", "pin": 12, "max": 0.7})


def test_tools_command_runs_a_device_verb_inside_the_device_bounds(make_kit, factory):
    kit = make_kit(tools=COMMAND_TOOLS, devices=COMMAND_DEVICES)
    assert kit.runner.command("fan", "value", {"value": 0.5}) == {"on": True, "value": 0.5}
    assert factory.pin(12).state == 0.5
    with pytest.raises(BoundsError) as info:
        kit.runner.command("fan", "value", {"value": 0.9})
    assert (info.value.low, info.value.high) == (0.0, 0.7)
    assert "fan: value 0.9 is outside the allowed 0 to 0.7" in str(info.value)
    assert factory.pin(12).state == 0.5
    # the device's range, not a tool's narrower one: dim allows 0.5, the device 1
    assert kit.runner.command("dimmer", "value", {"value": 0.9})["value"] == 0.9
    with pytest.raises(ToolError, match="no device named 'ghost'"):
        kit.runner.command("ghost", "on", {})
    with pytest.raises(ToolError, match="door is a input: it cannot 'on'"):
        kit.runner.command("door", "on", {})
    assert kit.runner.command("door", "read", {}) == {"active": False}
    result = kit.runner.command("fan", "pulse", {"count": 1, "period_s": 0.2})
    assert result["pulsing"] is True and result["duration_s"] == 0.2


def test_tools_command_rate_limit_is_the_devices_tightest(make_kit, factory):
    clock = FakeClock()
    kit = make_kit(tools=COMMAND_TOOLS, devices=COMMAND_DEVICES, clock=clock)
    for level in (0.1, 0.2, 0.3):
        kit.runner.command("fan", "value", {"value": level})
        clock.t += 1
    with pytest.raises(ToolError) as info:
        kit.runner.command("fan", "value", {"value": 0.4})
    assert str(info.value) == (
        "rate limit: fan may be commanded at most 3 times a minute; try again in 57 s"
    )
    assert factory.pin(12).state == pytest.approx(0.3)
    kit.runner.command("fan", "read", {})  # reading moves nothing: never limited
    with pytest.raises(BoundsError):  # a refused value does not use up a slot either...
        kit.runner.command("dimmer", "value", {"value": 2})
    clock.t += 57
    kit.runner.command("fan", "value", {"value": 0.4})
    for _ in range(10):  # no tool on the dimmer has a limit
        kit.runner.command("dimmer", "toggle", {})


def test_tools_command_arms_auto_off_and_refuses_after_stop(make_kit, factory):
    kit = make_kit(tools=COMMAND_TOOLS, devices=COMMAND_DEVICES)
    kit.runner.command("fan", "on", {})
    assert factory.pin(12).state == pytest.approx(0.7)  # "on" is the device's max
    assert wait_for(lambda: factory.pin(12).state == 0)  # auto_off_s 0.3 of fan_on
    kit.runner.stop()
    with pytest.raises(ToolError, match="the tool runner is stopped"):
        kit.runner.command("fan", "on", {})


def test_tools_command_and_undo_share_the_generation(make_kit, factory):
    tools = [{"name": "dim", "description": "d", "device": "dimmer", "verb": "value",
              "undo": True}]  # fmt: skip
    kit = make_kit(tools=tools)
    kit.runner.submit("d-1", "dim", {"value": 0.3})
    kit.responses.wait("d-1")
    kit.runner.command("dimmer", "value", {"value": 0.6})  # a person moved it since
    assert kit.runner.cancel(["d-1"]) == ["d-1"]
    kit.call("dim", {"value": 0.6})  # runs after the revert job
    assert factory.pin(18).state == pytest.approx(0.6)


# --------------------------------------------------------------------------- the fake Live server


def test_tools_declarations_accepted_by_fake_live_server(make_kit, factory):
    fake_live = pytest.importorskip("pi_agent.sim.fake_live")
    websocket = pytest.importorskip("websocket")
    kit = make_kit()
    kit.box.add_builtin({"name": "look", "description": "Take a photo."}, lambda a: {"seen": 1})

    def setup(declarations: list, model: str = "gemini-3.8-live") -> dict:
        return {
            "setup": {
                "model": f"models/{model}",
                "generationConfig": {"responseModalities": ["AUDIO"]},
                "realtimeInputConfig": {"automaticActivityDetection": {"disabled": True}},
                "tools": [{"functionDeclarations": declarations}],
            }
        }

    with fake_live.FakeLiveServer() as server:
        url = server.url + fake_live.LIVE_PATH
        header = [f"x-goog-api-key: {server.api_key}"]

        # The strictness is real: one unknown schema key and the session dies with 1007.
        bad = [{"name": "x", "description": "d", "parameters": {
            "type": "OBJECT", "properties": {"a": {"type": "STRING"}},
            "additionalProperties": False}}]  # fmt: skip
        ws = websocket.create_connection(url, header=header, timeout=TIMEOUT)
        ws.send(json.dumps(setup(bad)))
        opcode, data = ws.recv_data()
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(data[:2], "big") == 1007
        ws.close()

        # 3.1 takes no NON_BLOCKING: its declarations carry no behavior at all.
        ws = websocket.create_connection(url, header=header, timeout=TIMEOUT)
        model = "gemini-3.1-flash-live-preview"
        declarations = kit.box.function_declarations(model)
        assert all("behavior" not in d for d in declarations)
        ws.send(json.dumps(setup(declarations, model)))
        assert json.loads(ws.recv()) == {"setupComplete": {}}
        ws.close()

        ws = websocket.create_connection(url, header=header, timeout=TIMEOUT)
        try:
            declarations = kit.box.function_declarations("gemini-3.8-live")
            behaviors = {d["name"]: d["behavior"] for d in declarations}
            assert behaviors["dimmer_value"] == behaviors["look"] == "BLOCKING"
            assert behaviors["plain_blink"] == behaviors["dimmer_pulse"] == "NON_BLOCKING"
            ws.send(json.dumps(setup(declarations)))
            assert json.loads(ws.recv()) == {"setupComplete": {}}
            call_id = server.call_tool("dimmer_value", {"value": 0.4})
            message = json.loads(ws.recv())
            (call,) = message["toolCall"]["functionCalls"]
            kit.runner.submit(call["id"], call["name"], call["args"])
            report = kit.responses.wait(call["id"])
            response = {k: report[k] for k in ("id", "name", "response")}
            response.update(response_fields("gemini-3.8-live", report))
            ws.send(json.dumps({"toolResponse": {"functionResponses": [response]}}))
            sent = server.wait_tool_response(call_id, TIMEOUT)
            assert sent is not None
            assert sent["response"]["value"] == 0.4
            assert factory.pin(18).state == pytest.approx(0.4)
            assert server.connection().close_code is None
        finally:
            ws.close()
