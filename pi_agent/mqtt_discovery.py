"""Home Assistant's side of the MQTT bridge: topics, the discovery payload, payloads, commands.

Pure functions of the settings and the declared devices; :mod:`pi_agent.mqtt` does
the I/O. One retained device-based discovery message (``<prefix>/device/<id>/config``,
Home Assistant 2024.11 or later) announces every entity; its ``cmps`` name every
command topic, and those are the only topics the bridge accepts commands on.

Entities follow what Home Assistant users expect of each GPIO kind: a relay or
plain LED is a switch, a dimmable output a light with brightness, an RGB LED a
light with colour, a servo a number in degrees, inputs and buttons binary
sensors. Commands are parsed here into a control request (``{"cmd": "mute"}``)
or a device verb (``("value", {"value": 0.5})``); anything malformed raises
:class:`CommandError` naming the topic, and nothing is applied.
"""

from __future__ import annotations

import json
import math
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import control
from .config import DeviceSettings, MqttSettings

# The states the light shows (observations: {"event": "state", ...}).
AGENT_STATES = (
    "starting",
    "connecting",
    "ready",
    "listening",
    "thinking",
    "speaking",
    "tool_running",
    "working",
    "reconnecting",
    "ringing",
    "error",
)
PROJECT_URL: str | None = None  # the origin's support link, once the project has a public home
MAX_SAY_BYTES = 4 * 4000  # control.parse_command allows 4000 characters of at most 4 bytes
MAX_PAYLOAD = 1024  # every other command is a word, a number or a small JSON object
SAY_MAX_CHARS = 255  # Home Assistant's text entity holds at most 255 characters
SWITCH_KINDS = frozenset({"led", "buzzer", "output"})
LIGHT_KINDS = frozenset({"pwm_led", "pwm_output", "rgb_led"})
COMMANDABLE = SWITCH_KINDS | LIGHT_KINDS | {"servo"}
_ICONS = {
    "led": "mdi:led-on",
    "buzzer": "mdi:bullhorn",
    "output": "mdi:power-socket-eu",
    "pwm_output": "mdi:sine-wave",
    "servo": "mdi:rotate-3d-variant",
    "button": "mdi:gesture-tap-button",
    "input": "mdi:electric-switch",
}


class CommandError(ValueError):
    """A command payload that is refused; the message names the topic and what is allowed."""


def device_id(settings: MqttSettings, hostname: str | None = None) -> str:
    """``mqtt.device_id``, or the hostname cut down to what topics and HA ids allow."""
    if settings.device_id:
        return settings.device_id
    name = (hostname if hostname is not None else socket.gethostname()).split(".")[0]
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:64]
    return cleaned or "pi-agent"


def human(name: str) -> str:
    """``counter_light`` -> ``Counter light`` (the entity name Home Assistant shows)."""
    words = name.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


class Topics:
    """Every topic of one agent; state and commands all live under ``<base_topic>/<id>/``."""

    def __init__(self, settings: MqttSettings, dev_id: str):
        self.device_id = dev_id
        self.prefix = settings.discovery_prefix
        self.base = base = f"{settings.base_topic}/{dev_id}"
        self.config = f"{self.prefix}/device/{dev_id}/config"
        self.ha_status = f"{self.prefix}/status"  # Home Assistant's birth and last will
        self.availability = f"{base}/availability"
        self.state = f"{base}/state"
        self.problem = f"{base}/problem"
        self.connected = f"{base}/connected"
        self.mute = f"{base}/mute"
        self.volume = f"{base}/volume"
        self.turn = f"{base}/turn"
        self.transcript = f"{base}/transcript"
        self.tool = f"{base}/tool"

    def set(self, name: str) -> str:
        """The command topic of an agent entity: ``<base>/<name>/set``."""
        return f"{self.base}/{name}/set"

    def gpio(self, name: str) -> str:
        return f"{self.base}/gpio/{name}"


@dataclass(frozen=True)
class Command:
    """What a command topic drives: an agent control (mute, volume, talk, say) or a device."""

    target: str  # "mute" | "volume" | "talk" | "say" | "gpio"
    device: str = ""
    kind: str = ""


class Discovery:
    """The discovery payload of one agent and the table of the topics it accepts."""

    def __init__(self, settings: MqttSettings, devices: Mapping[str, DeviceSettings], version: str):
        self.device_id = device_id(settings)
        self.topics = t = Topics(settings, self.device_id)
        self.devices = dict(devices)
        self.device = {
            "ids": [f"pi_agent_{self.device_id}"],
            "name": settings.name or self.device_id,
            "mf": "pi-agent",
            "mdl": "pi-agent voice agent",
            "sw": version,
        }
        self.origin = {"name": "pi-agent", "sw": version}
        if PROJECT_URL:
            self.origin["url"] = PROJECT_URL
        self.commands: dict[str, Command] = {
            t.set("mute"): Command("mute"),
            t.set("volume"): Command("volume"),
            t.set("talk"): Command("talk"),
            t.set("say"): Command("say"),
        }
        self.components = self._agent_components()
        for name, dev in self.devices.items():
            self.components[f"gpio_{name}"] = self._device_component(name, dev)
            if dev.kind in COMMANDABLE:
                self.commands[t.gpio(name) + "/set"] = Command("gpio", name, dev.kind)

    def _uid(self, component: str) -> str:
        return f"pi_agent_{self.device_id}_{component}"

    def _agent_components(self) -> dict[str, dict[str, Any]]:
        t = self.topics
        diag = {"entity_category": "diagnostic"}
        comps: dict[str, dict[str, Any]] = {
            "state": {
                "p": "sensor",
                "name": "State",
                "device_class": "enum",
                "options": list(AGENT_STATES),
                "state_topic": t.state,
                "value_template": "{{ value_json.state }}",
                "json_attributes_topic": t.state,
                "icon": "mdi:robot",
            },
            "connected": {
                "p": "binary_sensor",
                "name": "Connected",
                "device_class": "connectivity",
                "state_topic": t.connected,
                **diag,
            },
            "problem": {
                "p": "binary_sensor",
                "name": "Problem",
                "device_class": "problem",
                "state_topic": t.problem,
                "value_template": "{{ value_json.problem }}",
                "json_attributes_topic": t.problem,
            },
            "cause": {
                "p": "sensor",
                "name": "Problem cause",
                "state_topic": t.problem,
                "value_template": "{{ value_json.cause }}",
                "icon": "mdi:alert-circle-outline",
                **diag,
            },
            "mute": {
                "p": "switch",
                "name": "Mute",
                "state_topic": t.mute,
                "command_topic": t.set("mute"),
                "icon": "mdi:microphone-off",
            },
            "volume": {
                "p": "number",
                "name": "Volume",
                "state_topic": t.volume,
                "command_topic": t.set("volume"),
                "min": 0,
                "max": 100,
                "step": 1,
                "mode": "slider",
                "unit_of_measurement": "%",
                "icon": "mdi:volume-high",
            },
            "talk": {
                "p": "button",
                "name": "Talk",
                "command_topic": t.set("talk"),
                "payload_press": "PRESS",
                "icon": "mdi:account-voice",
            },
            "say": {
                "p": "text",
                "name": "Say",
                "command_topic": t.set("say"),
                "max": SAY_MAX_CHARS,
                "mode": "text",
                "icon": "mdi:message-text",
            },
            "latency": {
                "p": "sensor",
                "name": "Last turn latency",
                "state_topic": t.turn,
                "value_template": "{{ value_json.latency_ms }}",
                "json_attributes_topic": t.turn,
                "device_class": "duration",
                "unit_of_measurement": "ms",
                "state_class": "measurement",
                **diag,
            },
            "tokens": {
                "p": "sensor",
                "name": "Last turn tokens",
                "state_topic": t.turn,
                "value_template": "{{ value_json.total_tokens }}",
                "unit_of_measurement": "tokens",
                "state_class": "measurement",
                "icon": "mdi:counter",
                **diag,
            },
            "transcript": {
                "p": "event",
                "name": "Transcript",
                "state_topic": t.transcript,
                "event_types": ["user", "model"],
                "icon": "mdi:message-text-outline",
            },
            "tool": {
                "p": "event",
                "name": "Tool call",
                "state_topic": t.tool,
                "event_types": ["call", "result"],
                "icon": "mdi:tools",
            },
        }
        for cid, comp in comps.items():
            comp["unique_id"] = self._uid(cid)
        return comps

    def _device_component(self, name: str, dev: DeviceSettings) -> dict[str, Any]:
        state, command = self.topics.gpio(name), self.topics.gpio(name) + "/set"
        comp: dict[str, Any] = {"name": human(name), "unique_id": self._uid(f"gpio_{name}")}
        if dev.kind in SWITCH_KINDS:
            comp.update(p="switch", state_topic=state, command_topic=command)
        elif dev.kind in LIGHT_KINDS:
            mode = "rgb" if dev.kind == "rgb_led" else "brightness"
            comp.update(
                p="light",
                schema="json",
                supported_color_modes=[mode],
                state_topic=state,
                command_topic=command,
            )
        elif dev.kind == "servo":
            comp.update(
                p="number",
                state_topic=state,
                command_topic=command,
                min=-90,
                max=90,
                step=1,
                mode="slider",
                unit_of_measurement="°",
            )
        else:  # button, input
            comp.update(p="binary_sensor", state_topic=state)
        if dev.kind in _ICONS:
            comp["icon"] = _ICONS[dev.kind]
        return comp

    # -- the payload

    def payload(self, stale: Mapping[str, str] | None = None) -> bytes:
        """The retained discovery message; ``stale`` components (id -> platform) are removed.

        Home Assistant drops a component of a device when an update carries it
        with nothing but its platform, so a device that left the YAML goes away.
        """
        cmps = dict(self.components)
        for cid, platform in (stale or {}).items():
            cmps.setdefault(cid, {"p": platform})
        message = {
            "dev": self.device,
            "o": self.origin,
            "availability_topic": self.topics.availability,
            "payload_available": "online",
            "payload_not_available": "offline",
            "qos": 1,
            "cmps": cmps,
        }
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()

    def stale(self, old: bytes) -> dict[str, str]:
        """Components of an earlier payload that this one lacks (and that are not stubs yet)."""
        try:
            cmps = json.loads(old.decode()).get("cmps", {})
        except (ValueError, AttributeError):
            return {}
        if not isinstance(cmps, dict):
            return {}
        return {
            cid: comp["p"]
            for cid, comp in cmps.items()
            if cid not in self.components
            and isinstance(comp, dict)
            and isinstance(comp.get("p"), str)
            and set(comp) != {"p"}
        }


# --------------------------------------------------------------------------- state payloads


def state_payload(event: Mapping[str, Any]) -> dict[str, Any]:
    """The agent-state sensor: the state, with the light, cause and problems as attributes."""
    return {
        "state": event.get("state"),
        "light": event.get("light"),
        "cause": event.get("cause"),
        "problems": list(event.get("problems") or ()),
    }


def problem_payload(event: Mapping[str, Any]) -> dict[str, Any]:
    """The problem sensor: ON with the cause while anything is wrong."""
    problems = list(event.get("problems") or ())
    cause = event.get("cause") or ""
    if not cause and problems:
        first = problems[0] if isinstance(problems[0], dict) else {}
        cause = " ".join(str(first.get(k, "")) for k in ("part", "problem", "detail")).strip()
    on = bool(problems) or event.get("state") == "error" or bool(event.get("cause"))
    return {"problem": "ON" if on else "OFF", "cause": str(cause)[:255], "problems": problems}


def turn_payload(event: Mapping[str, Any]) -> dict[str, Any]:
    """Last-turn sensors: latency (release to first audio) and tokens, all metrics attached."""
    metrics = event.get("metrics") if isinstance(event.get("metrics"), dict) else {}
    usage = event.get("usage") if isinstance(event.get("usage"), dict) else {}
    latency = metrics.get("release_to_first_audio_ms")
    return {
        "turn": event.get("turn"),
        "latency_ms": round(latency) if isinstance(latency, (int, float)) else None,
        **{k: usage.get(k) for k in ("prompt_tokens", "response_tokens", "total_tokens")},
        "metrics": metrics,
    }


def on_off(value: Any) -> str:
    return "ON" if value else "OFF"


def device_state(kind: str, state: Mapping[str, Any]) -> str:
    """A device's state as its entity reads it (``Devices.state()`` -> MQTT payload)."""
    if kind in SWITCH_KINDS:
        return on_off(state.get("on"))
    if kind == "button":
        return on_off(state.get("pressed"))
    if kind == "input":
        return on_off(state.get("active"))
    if kind == "servo":
        angle = state.get("angle")
        return "None" if angle is None else f"{float(angle):g}"
    if kind == "rgb_led":
        color = [float(c) for c in state.get("color") or (0, 0, 0)]
        level = max(color)
        if level <= 0:
            return json.dumps({"state": "OFF", "color_mode": "rgb"})
        rgb = dict(zip("rgb", (round(c / level * 255) for c in color), strict=True))
        body = {"state": "ON", "brightness": round(level * 255), "color_mode": "rgb", "color": rgb}
        return json.dumps(body)
    value = float(state.get("value") or 0.0)  # pwm_led, pwm_output
    if value <= 0:
        return json.dumps({"state": "OFF", "color_mode": "brightness"})
    return json.dumps({"state": "ON", "brightness": round(value * 255), "color_mode": "brightness"})


# --------------------------------------------------------------------------- commands


def decode(topic: str, payload: bytes, limit: int = MAX_PAYLOAD) -> str:
    """Bytes -> text: valid UTF-8 and short enough, or CommandError."""
    if len(payload) > limit:
        raise CommandError(f"{topic}: payload of {len(payload)} bytes is over the {limit} limit")
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(f"{topic}: payload is not valid UTF-8") from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def number(topic: str, text: str, low: float, high: float) -> float:
    """A finite JSON number within ``low..high`` (no NaN, no Infinity, no 1_000)."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        value = None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        shown = text if len(text) <= 20 else text[:17] + "..."
        raise CommandError(f"{topic}: {shown!r} is not a number")
    if not low <= value <= high:
        raise CommandError(f"{topic}: {value:g} is outside {low:g}..{high:g}")
    return float(value)


def agent_request(command: Command, topic: str, payload: bytes) -> dict[str, Any]:
    """A control request for mute/volume/talk/say, validated like the control socket's input."""
    text = decode(topic, payload, MAX_SAY_BYTES if command.target == "say" else MAX_PAYLOAD)
    if command.target == "mute":
        if text not in ("ON", "OFF"):
            raise CommandError(f"{topic}: expected ON or OFF")
        request: dict[str, Any] = {"cmd": "mute" if text == "ON" else "unmute"}
    elif command.target == "volume":
        request = {"cmd": "volume", "value": round(number(topic, text, 0, 100) / 100, 4)}
    elif command.target == "talk":
        if text != "PRESS":
            raise CommandError(f"{topic}: expected PRESS")
        request = {"cmd": "talk"}
    else:
        request = {"cmd": "say", "text": text, "wait": False}
    if request["cmd"] not in control.COMMANDS:  # "talk" before the control socket knows it
        return request
    try:  # the very rules of the control socket
        checked = control.parse_command(json.dumps(request))
    except ValueError as exc:
        raise CommandError(f"{topic}: {exc}") from None
    return {**request, **checked}


def _light(topic: str, text: str) -> tuple[bool, float | None, tuple[float, ...] | None]:
    """Home Assistant's JSON light command -> (on, brightness 0-1 or None, rgb 0-1 or None)."""
    try:
        body = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        raise CommandError(f'{topic}: expected a JSON object like {{"state": "ON"}}') from None
    if not isinstance(body, dict) or body.get("state") not in ("ON", "OFF"):
        raise CommandError(f"{topic}: expected a JSON object with state ON or OFF")
    brightness = color = None
    if "brightness" in body:
        brightness = number(topic, json.dumps(body["brightness"]), 0, 255) / 255
    if "color" in body:
        rgb = body["color"]
        if not isinstance(rgb, dict) or not {"r", "g", "b"} <= set(rgb):
            raise CommandError(f"{topic}: color must be an object with r, g and b")
        color = tuple(number(topic, json.dumps(rgb[k]), 0, 255) / 255 for k in "rgb")
    return body["state"] == "ON", brightness, color


def device_command(
    command: Command, topic: str, payload: bytes, current: Mapping[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The device verb and arguments a command asks for; ``current`` is the device's state."""
    text = decode(topic, payload)
    kind = command.kind
    if kind in SWITCH_KINDS:
        if text not in ("ON", "OFF"):
            raise CommandError(f"{topic}: expected ON or OFF")
        return ("on" if text == "ON" else "off"), {}
    if kind == "servo":
        return "angle", {"angle": number(topic, text, -90, 90)}
    on, brightness, color = _light(topic, text)
    if not on:
        return "off", {}
    if kind != "rgb_led":
        return ("on", {}) if brightness is None else ("value", {"value": round(brightness, 4)})
    if brightness is None and color is None:
        return "on", {}
    now = [float(c) for c in current.get("color") or (0.0, 0.0, 0.0)]
    if color is None:  # keep the hue, change the level
        color = tuple(now) if max(now) > 0 else (1.0, 1.0, 1.0)
    if brightness is None:  # keep the level, change the hue
        brightness = max(now) if max(now) > 0 else 1.0
    peak = max(color)
    scale = brightness / peak if peak > 0 else 0.0
    return "color", {"color": [round(c * scale, 4) for c in color]}
