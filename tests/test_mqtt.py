"""Home Assistant over MQTT against a real mosquitto, with a paho client playing Home Assistant.

GPIO devices are real gpiozero devices on the MockFactory; ``command_device`` is a
small stand-in for the agent's device layer with the same contract (bounds refused
with a ToolError, new state returned).
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin
from hypothesis import given, settings
from hypothesis import strategies as st

from pi_agent import control
from pi_agent.config import DeviceSettings, MqttSettings, MqttTlsSettings, parse_config
from pi_agent.devices import Devices
from pi_agent.errors import ConfigError, ToolError
from pi_agent.mqtt import (
    ControlRequest,
    MqttBridge,
    check_broker,
    clear_discovery,
    mqtt_password,
)
from pi_agent.mqtt_discovery import (
    AGENT_STATES,
    Command,
    CommandError,
    agent_request,
    device_command,
    device_id,
)

from .broker import Broker, HomeAssistant, retained, wait_until
from .conftest import TIMEOUT

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "broker-pass-7f3a9c"  # a throwaway for the test broker

DEVICES = {
    "lamp": {"kind": "led", "pin": 5, "description": "the kitchen lamp"},
    "counter_light": {"kind": "pwm_led", "pin": 12},
    "strip": {"kind": "rgb_led", "pins": [16, 20, 21]},
    "blind": {"kind": "servo", "pin": 13},
    "door": {"kind": "input", "pin": 24},
    "talk_button": {"kind": "button", "pin": 17},
}
MAX_LEVEL = {"counter_light": 0.8, "strip": 0.8}  # like a tool's max
ANGLES = (-45.0, 45.0)  # like move_blind's min/max


class Agent:
    """What the bridge talks to: submit, the device layer on mock pins, the device states."""

    def __init__(self) -> None:
        config = parse_config({"devices": DEVICES})
        self.config = config
        self.factory = MockFactory(pin_class=MockPWMPin)
        self.devices = Devices(config, pin_factory=self.factory)
        self.requests: queue.Queue[ControlRequest] = queue.Queue()
        self.applied: list[tuple[str, str, dict]] = []
        self.threads: set[str] = set()  # where submit and command_device were called

    def submit(self, request: ControlRequest) -> None:
        self.threads.add(threading.current_thread().name)
        if request.request["cmd"] == "status":
            request.respond({"ok": True, "status": STATUS})
            return
        self.requests.put(request)

    def next_request(self) -> ControlRequest:
        return self.requests.get(timeout=TIMEOUT)

    def command_device(self, name: str, verb: str, args: dict) -> dict:
        self.threads.add(threading.current_thread().name)
        device, kind = self.devices.get(name), self.devices.kind(name)
        peak = MAX_LEVEL.get(name, 1.0)
        if verb == "on":
            if kind == "pwm_led":
                device.value = peak
            elif kind == "rgb_led":
                device.value = (peak,) * 3
            else:
                device.on()
        elif verb == "off":
            device.off()
        elif verb == "value":
            if args["value"] > peak:
                raise ToolError(f"{name}: {args['value']:g} is above the maximum {peak:g}")
            device.value = args["value"]
        elif verb == "color":
            if max(args["color"]) > peak:
                raise ToolError(f"{name}: a colour above the maximum {peak:g}")
            device.value = tuple(args["color"])
        elif verb == "angle":
            low, high = ANGLES
            if not low <= args["angle"] <= high:
                raise ToolError(f"{name}: {args['angle']:g} is outside {low:g}..{high:g}")
            device.angle = args["angle"]
        else:
            raise ToolError(f"{name} cannot {verb}")
        self.applied.append((name, verb, args))
        return self.devices.state(name)

    def pin(self, name: str, index: int = 0):
        """The mock pin itself (for an rgb_led: red, green, blue by index)."""
        spec = DEVICES[name]
        return self.factory.pin(spec["pins"][index] if "pins" in spec else spec["pin"])

    def close(self) -> None:
        self.devices.close()


STATUS = {
    "state": "ready",
    "light": "ready",
    "cause": None,
    "problems": [],
    "muted": False,
    "connection": {"connected": True},
    "audio": {"volume": 0.5},
    "devices": {},
}


def settings_for(port: int, dev_id: str, **kw) -> MqttSettings:
    kw.setdefault("backoff_initial_s", 0.1)
    kw.setdefault("backoff_max_s", 1.0)
    return MqttSettings(enabled=True, host="127.0.0.1", port=port, device_id=dev_id, **kw)


@pytest.fixture
def agent():
    a = Agent()
    yield a
    a.close()


@pytest.fixture
def make_bridge(agent):
    bridges: list[MqttBridge] = []

    def make(port: int, dev_id: str, *, devices=None, password=None, **kw) -> MqttBridge:
        chosen = agent.config.devices if devices is None else devices
        bridge = MqttBridge(
            settings_for(port, dev_id, **kw),
            submit=agent.submit,
            command_device=agent.command_device,
            devices=chosen,
            device_states=lambda: {n: s for n, s in agent.devices.states().items() if n in chosen},
            password=password,
            version="9.9.9",
        )
        bridges.append(bridge)
        return bridge

    yield make
    for bridge in bridges:
        bridge.stop()


def discovered(ha: HomeAssistant, dev_id: str, *, after: float = 0.0) -> dict:
    return ha.wait_for(f"homeassistant/device/{dev_id}/config", after=after).json()


# --------------------------------------------------------------------------- discovery

REQUIRED = {  # what Home Assistant refuses a component without, per platform
    "sensor": {"state_topic"},
    "binary_sensor": {"state_topic"},
    "switch": {"command_topic", "state_topic"},
    "number": {"command_topic", "state_topic", "min", "max"},
    "button": {"command_topic"},
    "text": {"command_topic"},
    "event": {"state_topic", "event_types"},
    "light": {"command_topic", "state_topic", "schema", "supported_color_modes"},
}


def test_discovery_payload_names_every_entity_under_the_base_topic(broker, ha, make_bridge):
    bridge = make_bridge(broker.port, "kitchen", name="Kitchen")
    started = time.monotonic()
    bridge.start()
    payload = discovered(ha, "kitchen")
    seen = ha.last["homeassistant/device/kitchen/config"].at - started
    logging.getLogger(__name__).info("discovery seen %.0f ms after start()", seen * 1000)

    assert payload["dev"]["ids"] == ["pi_agent_kitchen"] and payload["dev"]["name"] == "Kitchen"
    assert payload["dev"]["sw"] == "9.9.9"
    assert payload["o"]["name"] == "pi-agent" and payload["o"]["sw"] == "9.9.9"
    assert payload["availability_topic"] == "pi-agent/kitchen/availability"
    cmps = payload["cmps"]
    expected = {"state", "connected", "problem", "cause", "mute", "volume", "talk", "say"}
    expected |= {"latency", "tokens", "transcript", "tool"}
    expected |= {f"gpio_{name}" for name in DEVICES}
    assert set(cmps) == expected
    unique_ids = [c["unique_id"] for c in cmps.values()]
    assert len(set(unique_ids)) == len(unique_ids)
    assert all(uid.startswith("pi_agent_kitchen_") for uid in unique_ids)
    command_topics = set()
    for cid, comp in cmps.items():
        assert REQUIRED[comp["p"]] <= set(comp), f"{cid} lacks {REQUIRED[comp['p']] - set(comp)}"
        assert comp["name"], cid
        for key, topic in comp.items():
            if key.endswith("_topic"):
                assert topic.startswith("pi-agent/kitchen/"), (cid, key, topic)
        if "command_topic" in comp:
            command_topics.add(comp["command_topic"])
            assert comp["command_topic"] != comp.get("state_topic")
    assert command_topics == set(bridge.discovery.commands)  # the only topics it listens to
    platforms = {cid: comp["p"] for cid, comp in cmps.items()}
    assert platforms["gpio_lamp"] == "switch"
    assert platforms["gpio_counter_light"] == "light"
    assert cmps["gpio_counter_light"]["supported_color_modes"] == ["brightness"]
    assert cmps["gpio_strip"]["supported_color_modes"] == ["rgb"]
    assert platforms["gpio_blind"] == "number"
    assert (cmps["gpio_blind"]["min"], cmps["gpio_blind"]["max"]) == (-90, 90)
    assert platforms["gpio_door"] == platforms["gpio_talk_button"] == "binary_sensor"
    assert cmps["state"]["device_class"] == "enum"
    assert cmps["state"]["options"] == list(AGENT_STATES)
    assert cmps["connected"]["device_class"] == "connectivity"
    assert cmps["problem"]["device_class"] == "problem"
    assert cmps["transcript"]["event_types"] == ["user", "model"]
    assert (cmps["volume"]["min"], cmps["volume"]["max"]) == (0, 100)

    # Retained: what Home Assistant gets when it subscribes later (or restarts).
    ha.wait_for("pi-agent/kitchen/gpio/blind")
    ha.wait_for("pi-agent/kitchen/volume", lambda m: m.text == "50")  # from the agent's status
    kept = retained(broker.port, "#")
    assert json.loads(kept["homeassistant/device/kitchen/config"].payload) == payload
    assert kept["pi-agent/kitchen/availability"].text == "online"
    assert kept["pi-agent/kitchen/gpio/lamp"].text == "OFF"
    assert json.loads(kept["pi-agent/kitchen/gpio/counter_light"].payload)["state"] == "OFF"
    assert kept["pi-agent/kitchen/gpio/door"].text == "OFF"
    assert kept["pi-agent/kitchen/gpio/blind"].text == "None"  # no pulses yet
    assert json.loads(kept["pi-agent/kitchen/state"].payload)["state"] == "ready"
    assert kept["pi-agent/kitchen/connected"].text == "ON"
    assert kept["pi-agent/kitchen/mute"].text == "OFF"


def test_device_id_defaults_to_the_hostname_made_safe():
    s = MqttSettings()
    assert device_id(s, "kitchen-pi.local") == "kitchen-pi"
    assert device_id(s, "Küche Pi #2") == "K-che-Pi-2"
    assert device_id(s, "...") == "pi-agent"
    assert device_id(MqttSettings(device_id="den"), "ignored") == "den"


def test_mqtt_config_is_validated():
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "mqtt": {
                    "device_id": "a/b",
                    "port": 0,
                }
            }
        )
    assert "mqtt.port: 0 is below the minimum 1" in info.value.problems
    with pytest.raises(ConfigError) as info:
        parse_config({"mqtt": {"device_id": "a/b"}})
    assert any("device_id 'a/b'" in p and p.startswith("mqtt") for p in info.value.problems)
    with pytest.raises(ConfigError) as info:
        parse_config({"mqtt": {"base_topic": "pi-agent/#"}})
    assert any("base_topic" in p for p in info.value.problems)
    with pytest.raises(ConfigError) as info:
        parse_config({"mqtt": {"backoff_initial_s": 10, "backoff_max_s": 2}})
    assert any("backoff_max_s" in p for p in info.value.problems)
    with pytest.raises(ConfigError) as info:
        parse_config({"mqtt": {"password": "hunter2"}})
    assert info.value.problems == ["mqtt.password: unknown key, did you mean 'password_file'?"]
    assert parse_config({}).mqtt.enabled is False


# --------------------------------------------------------------------------- commands


def test_mute_volume_talk_say_arrive_as_control_requests(broker, ha, make_bridge, agent, caplog):
    caplog.set_level(logging.INFO, logger="pi_agent.mqtt")
    make_bridge(broker.port, "den").start()
    discovered(ha, "den")
    base = "pi-agent/den"
    cases = [
        ("mute/set", "ON", {"cmd": "mute"}),
        ("mute/set", "OFF", {"cmd": "unmute"}),
        ("volume/set", "60", {"cmd": "volume", "value": 0.6}),
        ("volume/set", "0", {"cmd": "volume", "value": 0.0}),
        ("talk/set", "PRESS", {"cmd": "talk"}),
        ("say/set", "the door is open", {"cmd": "say", "text": "the door is open", "wait": False}),
    ]
    for topic, payload, expected in cases:
        ha.publish(f"{base}/{topic}", payload)
        request = agent.next_request()
        assert request.request == expected
    # The respond callable works from any thread, and only the first answer counts.
    done = threading.Thread(target=request.respond, args=({"ok": True, "turn": 4},))
    done.start()
    done.join(TIMEOUT)
    request.respond({"ok": False, "error": "too late"})
    wait_until(lambda: "mqtt: say done" in caplog.text, what="the bridge to log the reply")
    ha.publish(f"{base}/mute/set", "ON")
    refused = agent.next_request()
    refused.respond({"ok": False, "error": "the microphone is missing"})
    wait_until(lambda: "the microphone is missing" in caplog.text, what="the refusal logged")
    assert "too late" not in caplog.text
    assert agent.threads == {"pi-agent-mqtt"}  # never paho's network thread


BAD_COMMANDS = [
    ("volume/set", b"nan"),
    ("volume/set", b"NaN"),
    ("volume/set", b"Infinity"),
    ("volume/set", b"1e400"),
    ("volume/set", b"101"),
    ("volume/set", b"-1"),
    ("volume/set", b"true"),
    ("volume/set", b"1_0"),
    ("volume/set", b"loud"),
    ("mute/set", b"on"),
    ("mute/set", b"ON\x00"),
    ("talk/set", b"press"),
    ("say/set", b""),
    ("say/set", b"   "),
    ("say/set", b"\xff\xfe not utf-8"),
    ("say/set", ("x" * 4001).encode()),
    ("say/set", b"x" * 20_000),
    ("gpio/lamp/set", b"1"),
    ("gpio/counter_light/set", b'{"state": "ON", "brightness": 300}'),
    ("gpio/counter_light/set", b'{"state": "ON", "brightness": NaN}'),
    ("gpio/counter_light/set", b"ON"),
    ("gpio/strip/set", b'{"state": "ON", "color": {"r": 1, "g": 2}}'),
    ("gpio/blind/set", b"91"),
    ("gpio/door/set", b"ON"),  # an input: no command topic in the discovery payload
    ("state/set", b"ready"),
    ("set", b"ON"),
]


def test_malformed_commands_are_refused_and_nothing_is_applied(
    broker, ha, make_bridge, agent, caplog
):
    caplog.set_level(logging.WARNING, logger="pi_agent.mqtt")
    make_bridge(broker.port, "attic").start()
    discovered(ha, "attic")
    for topic, payload in BAD_COMMANDS:
        ha.publish(f"pi-agent/attic/{topic}", payload)
    ha.publish("pi-agent/attic/mute/set", "ON")  # handled after every bad one: a barrier
    assert agent.next_request().request == {"cmd": "mute"}
    assert agent.requests.empty()
    assert agent.applied == []
    assert not agent.devices.get("lamp").is_active
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == len(BAD_COMMANDS) - 3  # the last three are not even subscribed


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=30), st.binary(max_size=30), st.floats().map(str)))
def test_volume_and_say_follow_the_control_socket_rules(raw):
    payload = raw if isinstance(raw, bytes) else raw.encode()
    for target in ("volume", "say"):
        topic = f"pi-agent/x/{target}/set"
        try:
            request = agent_request(Command(target), topic, payload)
        except CommandError as exc:
            assert str(exc).startswith(topic)
            continue
        # Whatever is accepted, the control socket accepts too, unchanged.
        assert control.parse_command(json.dumps(request)) == request
        if target == "volume":
            assert 0 <= request["value"] <= 1


@settings(max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from(["state", "brightness", "color", "transition"]),
        st.one_of(
            st.sampled_from(["ON", "OFF"]),
            st.integers(-10, 300),
            st.floats(allow_nan=True, allow_infinity=True),
            st.fixed_dictionaries(
                {"r": st.integers(-5, 260), "g": st.integers(0, 255), "b": st.none()}
            ),
            st.fixed_dictionaries(
                {"r": st.integers(0, 255), "g": st.integers(0, 255), "b": st.integers(0, 255)}
            ),
        ),
    ),
    st.sampled_from(["pwm_led", "rgb_led"]),
    st.lists(st.floats(0, 1), min_size=3, max_size=3),
)
def test_light_commands_parse_to_bounded_verbs_or_a_clear_refusal(body, kind, now):
    topic = "pi-agent/x/gpio/l/set"
    try:
        verb, args = device_command(
            Command("gpio", "l", kind), topic, json.dumps(body).encode(), {"color": now}
        )
    except CommandError as exc:
        assert str(exc).startswith(topic)
        return
    assert verb in ("on", "off", "value", "color")
    values = [args["value"]] if verb == "value" else args.get("color", [])
    assert all(0 <= v <= 1 for v in values)


# --------------------------------------------------------------------------- devices


def test_lamp_switches_through_the_device_layer_and_bounds_hold(
    broker, ha, make_bridge, agent, caplog
):
    caplog.set_level(logging.WARNING, logger="pi_agent.mqtt")
    make_bridge(broker.port, "hall").start()
    discovered(ha, "hall")
    base = "pi-agent/hall/gpio"

    sent = time.monotonic()
    ha.publish(f"{base}/lamp/set", "ON")
    ha.wait_for(f"{base}/lamp", lambda m: m.text == "ON", after=sent)
    assert agent.pin("lamp").state == 1
    sent = time.monotonic()  # the lamp's first retained "OFF" came before this
    ha.publish(f"{base}/lamp/set", "OFF")
    ha.wait_for(f"{base}/lamp", lambda m: m.text == "OFF", after=sent)
    assert agent.pin("lamp").state == 0

    ha.publish(f"{base}/counter_light/set", json.dumps({"state": "ON", "brightness": 128}))
    ha.wait_for(f"{base}/counter_light", lambda m: m.json().get("brightness") == 128)
    assert agent.pin("counter_light").state == pytest.approx(128 / 255, abs=0.002)

    # Above the device's max (0.8): refused and logged, never applied; HA gets the truth back.
    mark = time.monotonic()
    ha.publish(f"{base}/counter_light/set", json.dumps({"state": "ON", "brightness": 255}))
    again = ha.wait_for(f"{base}/counter_light", after=mark)
    assert again.json()["brightness"] == 128
    assert agent.pin("counter_light").state == pytest.approx(128 / 255, abs=0.002)
    assert "above the maximum 0.8" in caplog.text

    ha.publish(
        f"{base}/strip/set",
        json.dumps({"state": "ON", "color": {"r": 255, "g": 0, "b": 0}, "brightness": 102}),
    )
    strip = ha.wait_for(f"{base}/strip", lambda m: m.json()["state"] == "ON").json()
    assert strip["color"] == {"r": 255, "g": 0, "b": 0} and strip["brightness"] == 102
    assert agent.pin("strip", 0).state == pytest.approx(0.4, abs=0.002)
    assert agent.pin("strip", 1).state == 0
    # Brightness alone keeps the hue.
    ha.publish(f"{base}/strip/set", json.dumps({"state": "ON", "brightness": 51}))
    ha.wait_for(f"{base}/strip", lambda m: m.json().get("brightness") == 51)
    assert agent.pin("strip", 0).state == pytest.approx(0.2, abs=0.002)

    ha.publish(f"{base}/blind/set", "30")
    ha.wait_for(f"{base}/blind", lambda m: m.text == "30")
    assert agent.devices.get("blind").angle == pytest.approx(30)
    mark = time.monotonic()
    ha.publish(f"{base}/blind/set", "80")  # within -90..90, outside the tool's -45..45
    assert ha.wait_for(f"{base}/blind", after=mark).text == "30"
    assert agent.devices.get("blind").angle == pytest.approx(30)
    assert agent.threads == {"pi-agent-mqtt"}


def test_inputs_and_observed_device_changes_are_published(broker, ha, make_bridge, agent):
    bridge = make_bridge(broker.port, "porch", device_poll_s=0.1)
    bridge.start()
    discovered(ha, "porch")
    base = "pi-agent/porch/gpio"
    ha.wait_for(f"{base}/door", lambda m: m.text == "OFF")
    agent.pin("door").drive_low()  # pull_up: low is active (the reed switch closes)
    ha.wait_for(f"{base}/door", lambda m: m.text == "ON")
    agent.pin("talk_button").drive_low()
    ha.wait_for(f"{base}/talk_button", lambda m: m.text == "ON")
    # A change the agent reports (a tool call) comes through the observation too.
    bridge.publish({"event": "device", "name": "lamp", "state": {"on": True}})
    ha.wait_for(f"{base}/lamp", lambda m: m.text == "ON")


# --------------------------------------------------------------------------- observations


def test_observations_reach_their_state_topics(broker, ha, make_bridge):
    bridge = make_bridge(broker.port, "study", devices={})
    bridge.start()
    discovered(ha, "study")
    base = "pi-agent/study"
    ha.wait_for(f"{base}/state", lambda m: m.json()["state"] == "ready")

    bridge.publish(
        {
            "event": "state",
            "state": "listening",
            "light": "listening",
            "cause": None,
            "problems": [],
        }
    )
    state = ha.wait_for(f"{base}/state", lambda m: m.json()["state"] == "listening").json()
    assert state["problems"] == [] and state["light"] == "listening"
    assert ha.wait_for(f"{base}/problem").json()["problem"] == "OFF"
    problem = {"part": "mic", "problem": "missing", "detail": "no USB microphone"}
    bridge.publish(
        {
            "event": "state",
            "state": "error",
            "light": "error",
            "cause": "the microphone is missing",
            "problems": [problem],
        }
    )
    bad = ha.wait_for(f"{base}/problem", lambda m: m.json()["problem"] == "ON").json()
    assert bad["cause"] == "the microphone is missing" and bad["problems"] == [problem]

    bridge.publish({"event": "connection", "connected": False})
    ha.wait_for(f"{base}/connected", lambda m: m.text == "OFF")
    bridge.publish({"event": "muted", "muted": True})
    ha.wait_for(f"{base}/mute", lambda m: m.text == "ON")
    bridge.publish({"event": "volume", "volume": 0.6})
    ha.wait_for(f"{base}/volume", lambda m: m.text == "60")
    bridge.publish(
        {
            "event": "turn",
            "turn": 3,
            "metrics": {"release_to_first_audio_ms": 412.4, "weird": float("nan")},
            "usage": {"prompt_tokens": 10, "response_tokens": 5, "total_tokens": 15},
        }
    )
    turn = ha.wait_for(f"{base}/turn").json()
    assert (
        turn["latency_ms"] == 412
        and turn["total_tokens"] == 15
        and turn["metrics"]["weird"] is None
    )

    bridge.publish({"event": "transcript", "turn": 3, "who": "user", "text": "lights on"})
    bridge.publish({"event": "transcript", "turn": 3, "who": "model", "text": "Done."})
    said = [
        m.json()
        for m in (ha.wait_for(f"{base}/transcript", lambda m: m.json()["event_type"] == "model"),)
    ]
    heard = ha.messages(f"{base}/transcript")
    assert [m.json()["event_type"] for m in heard] == ["user", "model"]
    assert said[0] == {"event_type": "model", "turn": 3, "text": "Done."}
    bridge.publish(
        {"event": "tool_call", "turn": 3, "id": "c1", "name": "set_lamp", "args": {"on": True}}
    )
    bridge.publish(
        {"event": "tool_result", "turn": 3, "id": "c1", "name": "set_lamp", "result": {"on": True}}
    )
    result = ha.wait_for(f"{base}/tool", lambda m: m.json()["event_type"] == "result").json()
    assert result["args"] == {"on": True} and result["result"] == {"on": True}
    assert ha.messages(f"{base}/tool")[0].json()["event_type"] == "call"

    kept = retained(broker.port, f"{base}/#")
    assert f"{base}/transcript" not in kept and f"{base}/tool" not in kept  # events: not replayed
    assert kept[f"{base}/mute"].text == "ON"


# --------------------------------------------------------------------------- availability


BRIDGE_PROCESS = """
import sys, threading
from pi_agent.config import MqttSettings
from pi_agent.mqtt import MqttBridge
port, dev_id = int(sys.argv[1]), sys.argv[2]
settings = MqttSettings(enabled=True, host="127.0.0.1", port=port, device_id=dev_id)
bridge = MqttBridge(settings, submit=lambda r: None, command_device=lambda n, v, a: {},
                    devices={}, device_states=dict, password=None, version="test")
bridge.start()
print("started", flush=True)
threading.Event().wait()
"""


def test_sigkill_of_the_agent_leaves_offline_by_last_will(broker, ha):
    proc = subprocess.Popen(
        [sys.executable, "-c", BRIDGE_PROCESS, str(broker.port), "garage"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        ha.wait_for("pi-agent/garage/availability", lambda m: m.text == "online")
        mark = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(TIMEOUT)
        ha.wait_for("pi-agent/garage/availability", lambda m: m.text == "offline", after=mark)
        assert (
            retained(broker.port, "pi-agent/garage/#")["pi-agent/garage/availability"].text
            == "offline"
        )
    finally:
        proc.kill()
        proc.wait(TIMEOUT)


def test_stop_says_offline_and_home_assistant_status_triggers_a_republish(broker, ha, make_bridge):
    bridge = make_bridge(broker.port, "shed", devices={})
    bridge.start()
    discovered(ha, "shed")
    ha.wait_for("pi-agent/shed/availability", lambda m: m.text == "online")
    mark = time.monotonic()
    ha.publish("homeassistant/status", "online")  # Home Assistant restarted
    discovered(ha, "shed", after=mark)
    ha.wait_for("pi-agent/shed/availability", lambda m: m.text == "online", after=mark)
    ha.wait_for("pi-agent/shed/state", after=mark)
    mark = time.monotonic()
    ha.publish("homeassistant/status", "offline")  # Home Assistant's last will: nothing to do
    bridge.stop()
    ha.wait_for("pi-agent/shed/availability", lambda m: m.text == "offline", after=mark)
    assert len(ha.messages("homeassistant/device/shed/config")) == 2
    assert not bridge.is_alive


def test_broker_down_at_start_then_killed_and_restarted(tmp_path, make_bridge, agent):
    own = Broker(tmp_path)  # not started yet: the agent comes up first
    bridge = make_bridge(own.port, "cellar")
    bridge.start()  # must not raise or block
    bridge.publish({"event": "muted", "muted": False})
    assert not bridge.connected
    own.start()
    ha = HomeAssistant(own.port).start()
    try:
        discovered(ha, "cellar")
        ha.wait_for("pi-agent/cellar/gpio/lamp")
        own.kill()  # every retained message is gone with it
        wait_until(lambda: not bridge.connected, what="the bridge to notice")
        bridge.publish({"event": "muted", "muted": True})  # happens while the broker is away
        agent.pin("door").drive_low()
        back = time.monotonic()
        own.start()
        # Within 10 s of the broker's return: discovery, online and fresh states again.
        discovered(ha, "cellar", after=back)
        ha.wait_for(
            "pi-agent/cellar/availability", lambda m: m.text == "online", after=back, timeout=10
        )
        ha.wait_for("pi-agent/cellar/mute", lambda m: m.text == "ON", after=back, timeout=10)
        ha.wait_for("pi-agent/cellar/gpio/door", lambda m: m.text == "ON", after=back, timeout=10)
        kept = retained(own.port, "#")
        assert "homeassistant/device/cellar/config" in kept
        assert kept["pi-agent/cellar/state"].json()["state"] == "ready"
        assert kept["pi-agent/cellar/gpio/lamp"].text == "OFF"
    finally:
        ha.stop()
        bridge.stop()
        own.stop()


# --------------------------------------------------------------------------- removal


def test_a_device_that_left_the_config_is_dropped_and_clear_removes_everything(
    broker, ha, make_bridge, agent
):
    first = make_bridge(broker.port, "loft")
    first.start()
    discovered(ha, "loft")
    ha.wait_for("pi-agent/loft/gpio/door")
    first.stop()
    fewer = {k: v for k, v in agent.config.devices.items() if k not in ("door", "strip")}
    mark = time.monotonic()
    second = make_bridge(broker.port, "loft", devices=fewer)
    second.start()
    stubbed = ha.wait_for(
        "homeassistant/device/loft/config",
        lambda m: "gpio_door" in m.json()["cmps"],
        after=mark,
    ).json()
    assert stubbed["cmps"]["gpio_door"] == {"p": "binary_sensor"}
    assert stubbed["cmps"]["gpio_strip"] == {"p": "light"}
    assert stubbed["cmps"]["gpio_lamp"]["p"] == "switch"

    cleared = second.remove()  # stop, then clear_discovery()
    assert cleared >= 3  # discovery, availability, states
    assert retained(broker.port, "pi-agent/loft/#") == {}
    assert "homeassistant/device/loft/config" not in retained(broker.port, "homeassistant/#")
    assert (
        ha.wait_for("homeassistant/device/loft/config", lambda m: m.payload == b"").retain is False
    )


# --------------------------------------------------------------------------- credentials


def test_password_comes_from_the_file_then_the_credential(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    assert mqtt_password(MqttSettings(password_file=str(secret)), {}) == PASSWORD
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text("from-systemd\n")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert mqtt_password(MqttSettings(), env) == "from-systemd"
    assert mqtt_password(MqttSettings(password_file=str(secret)), env) == PASSWORD
    assert mqtt_password(MqttSettings(), {}) is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=r"mqtt\.password_file"):
        mqtt_password(MqttSettings(password_file=str(tmp_path / "empty")), {})
    with pytest.raises(ConfigError, match=r"mqtt\.password_file") as info:
        mqtt_password(MqttSettings(password_file=str(tmp_path / "missing")), {})
    assert PASSWORD not in str(info.value)


def test_a_broker_with_a_password_and_credentials_never_logged(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    secure = Broker(tmp_path, users={"agent": PASSWORD, "ha": "ha-pass-0000"}).start()
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text(PASSWORD + "\n")
    ha = HomeAssistant(secure.port, user=("ha", "ha-pass-0000")).start()
    s = settings_for(secure.port, "vault", username="agent")
    password = mqtt_password(s, {"CREDENTIALS_DIRECTORY": str(creds)})
    bridge = MqttBridge(
        s,
        submit=lambda r: None,
        command_device=lambda n, v, a: {},
        devices={},
        device_states=dict,
        password=password,
        version="1",
    )
    wrong = MqttBridge(
        settings_for(secure.port, "intruder", username="agent"),
        submit=lambda r: None,
        command_device=lambda n, v, a: {},
        devices={},
        device_states=dict,
        password="not-the-" + PASSWORD,
        version="1",
    )
    try:
        bridge.start()
        wrong.start()
        discovered(ha, "vault")
        wait_until(lambda: "refused the login" in caplog.text, what="the refusal to be logged")
        assert check_broker(s, password, timeout=TIMEOUT) == (
            True,
            f"logged in to 127.0.0.1:{secure.port} as agent; device id vault",
        )
        ok, detail = check_broker(s, "wrong-" + PASSWORD, timeout=TIMEOUT)
        assert not ok and "refused the login" in detail and "mqtt.password_file" in detail
        ok, detail = check_broker(s, None, timeout=TIMEOUT)
        assert not ok and "refused the login" in detail
    finally:
        wrong.stop()
        bridge.stop()
        ha.stop()
        secure.stop()
    assert not wrong.connected
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert PASSWORD not in text


def test_check_broker_says_what_is_wrong(tmp_path):
    from .broker import free_port

    port = free_port()
    ok, detail = check_broker(settings_for(port, "x"), None, timeout=TIMEOUT)
    assert not ok and f"cannot reach 127.0.0.1:{port}" in detail and "mqtt.host" in detail
    with pytest.raises(ConnectionError, match="cannot reach the MQTT broker"):
        clear_discovery(settings_for(port, "x"), None, timeout=TIMEOUT)
    missing = str(tmp_path / "none.pem")
    bad_ca = settings_for(port, "x", tls=MqttTlsSettings(enabled=True, ca_file=missing))
    ok, detail = check_broker(bad_ca, None)
    assert not ok and "mqtt.tls.ca_file" in detail


def test_tls_with_the_brokers_ca(tmp_path):
    from pi_agent.sim.certs import make_certificates as _make_certificates

    ca, cert, key = _make_certificates(str(tmp_path))
    secure = Broker(tmp_path, tls=(ca, cert, key)).start()
    try:
        s = settings_for(secure.port, "tls", tls=MqttTlsSettings(enabled=True, ca_file=ca))
        ok, detail = check_broker(s, None, timeout=TIMEOUT)
        assert ok and "with TLS" in detail
        untrusted = settings_for(secure.port, "tls", tls=MqttTlsSettings(enabled=True))
        ok, detail = check_broker(untrusted, None, timeout=TIMEOUT)
        assert not ok and "not trusted" in detail and "mqtt.tls.ca_file" in detail
        plain = settings_for(secure.port, "tls")
        ok, detail = check_broker(plain, None, timeout=0.5)
        assert not ok and "mqtt.tls.enabled" in detail
        ha = HomeAssistant(secure.port, tls_ca=ca).start()
        bridge = MqttBridge(
            s,
            submit=lambda r: None,
            command_device=lambda n, v, a: {},
            devices={},
            device_states=dict,
            password=None,
            version="1",
        )
        try:
            bridge.start()
            discovered(ha, "tls")
        finally:
            bridge.stop()
            ha.stop()
    finally:
        secure.stop()


def test_a_disabled_bridge_does_nothing(agent):
    bridge = MqttBridge(
        MqttSettings(enabled=False),
        submit=agent.submit,
        command_device=agent.command_device,
        devices={},
        device_states=dict,
        password=None,
        version="1",
    )
    bridge.start()
    bridge.publish({"event": "muted", "muted": True})
    assert not bridge.is_alive and not bridge.connected
    bridge.stop()


def test_device_settings_kinds_all_have_an_entity():
    from pi_agent.mqtt_discovery import Discovery

    every = {k: DeviceSettings(kind=k, pin=5) for k in DEVICES_KINDS}
    cmps = Discovery(MqttSettings(device_id="all"), every, "1").components
    assert {cmps[f"gpio_{k}"]["p"] for k in DEVICES_KINDS} == {
        "switch",
        "light",
        "number",
        "binary_sensor",
    }


DEVICES_KINDS = (
    "button",
    "led",
    "pwm_led",
    "rgb_led",
    "buzzer",
    "output",
    "pwm_output",
    "servo",
    "input",
)


def test_a_fleet_of_ten_on_one_broker(tmp_path):
    """Ten agents, one broker: all discovered, a command reaches only its own, all come back."""
    own = Broker(tmp_path).start()
    ha = HomeAssistant(own.port).start()
    got: dict[str, queue.Queue] = {f"room{i}": queue.Queue() for i in range(10)}
    fleet = [
        MqttBridge(
            settings_for(own.port, dev_id),
            submit=inbox.put,
            command_device=lambda n, v, a: {},
            devices={},
            device_states=dict,
            password=None,
            version="1",
        )
        for dev_id, inbox in got.items()
    ]
    try:
        for bridge in fleet:
            bridge.start()
        for dev_id in got:
            discovered(ha, dev_id)
            ha.wait_for(f"pi-agent/{dev_id}/availability", lambda m: m.text == "online")
        for inbox in got.values():  # each asked its agent for a status on connecting
            assert inbox.get(timeout=TIMEOUT).request == {"cmd": "status"}
        ha.publish("pi-agent/room7/mute/set", "ON")
        assert got["room7"].get(timeout=TIMEOUT).request == {"cmd": "mute"}
        ha.publish("pi-agent/room3/mute/set", "OFF")  # a barrier for room3 and the broker
        assert got["room3"].get(timeout=TIMEOUT).request == {"cmd": "unmute"}
        assert all(q.empty() for q in got.values())
        own.kill()
        wait_until(lambda: not any(b.connected for b in fleet), what="all to notice")
        back = time.monotonic()
        own.start()
        for dev_id in got:
            ha.wait_for(f"homeassistant/device/{dev_id}/config", after=back, timeout=10)
            ha.wait_for(f"pi-agent/{dev_id}/availability", after=back, timeout=10)
    finally:
        for bridge in fleet:
            bridge.stop()
        ha.stop()
        own.stop()
