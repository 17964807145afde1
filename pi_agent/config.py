"""One YAML file -> frozen, validated dataclasses.

Every section is a frozen dataclass whose fields carry a default and a one-line
``doc`` in their metadata, plus optional ``min``/``max`` bounds. The loader
walks the type hints, so adding an option is adding a field: the validation,
the error messages ("``audio.chunk_ms``: 5 is below the minimum 20") and the
"did you mean" hints for unknown keys come for free. All problems are
collected and reported at once, one per line.

The API key never lives in the YAML: see :func:`resolve_api_key`.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import reprlib
import stat
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from .errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/pi-agent/config.yaml"
DEFAULT_MODEL = "gemini-3.8-live"
DEFAULT_ENDPOINT = "wss://generativelanguage.googleapis.com"
MAX_BLINK_COUNT = 100  # the most blink/pulse repetitions any caller may ask for


def opt(default: Any, doc: str, *, min: float | None = None, max: float | None = None) -> Any:
    """A dataclass field with a documented default and optional numeric bounds."""
    meta = {"doc": doc, "min": min, "max": max}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple or a default_factory for mutable defaults")
    if callable(default):  # a class or factory: build a fresh default each time
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------- live


@dataclass(frozen=True)
class LiveSettings:
    """How to reach Gemini Live and what the session asks for."""

    model: str = opt(DEFAULT_MODEL, "Live model id, without the models/ prefix.")
    voice: str | None = opt(None, "Prebuilt voice name (e.g. Kore, Puck); null = the model's.")
    system_instruction: str = opt(
        "You are a friendly voice assistant running on a Raspberry Pi. Keep answers short "
        "and spoken-style.",
        "System instruction sent in setup.",
    )
    input_transcription: bool = opt(True, "Ask for transcripts of what the user said.")
    output_transcription: bool = opt(True, "Ask for transcripts of what the model said.")
    temperature: float | None = opt(
        None, "Sampling temperature; null = model default.", min=0, max=2
    )
    hands_free: bool = opt(
        False, "Automatic voice activity detection, mic always streaming (no button needed)."
    )
    context_compression: bool = opt(
        True, "Sliding-window context compression, so sessions are not cut after 15 (2) min."
    )
    endpoint: str = opt(DEFAULT_ENDPOINT, "Base URL of the Live API (ws:// or wss://).")
    api_version: Literal["v1beta", "v1alpha", "v1"] = opt("v1beta", "API version in the path.")
    api_key_env: str = opt("GEMINI_API_KEY", "Environment variable holding the API key.")
    api_key_file: str | None = opt(None, "File holding the API key (first line).")
    credential_name: str = opt(
        "gemini-api-key", "systemd credential name (LoadCredential=) under $CREDENTIALS_DIRECTORY."
    )
    token_command: str | None = opt(
        None,
        "Command printing a fresh ephemeral token; when set, no API key is used on the Pi.",
    )
    ca_file: str | None = opt(None, "Extra CA bundle to trust (for a TLS test server).")
    setup_timeout_s: float = opt(15.0, "Seconds to wait for setupComplete.", min=1, max=120)
    keepalive_interval_s: float = opt(20.0, "Seconds between WebSocket pings.", min=1, max=300)
    keepalive_timeout_s: float = opt(
        40.0, "Seconds without any frame (pong included) before the link counts as dead.", min=30
    )
    response_timeout_s: float = opt(
        15.0,
        "While an answer is awaited, this long without any server frame means a dead link.",
        min=3,
        max=120,
    )
    outbound_stall_s: float = opt(
        5.0,
        "Outgoing messages stuck this long (socket not draining) mean a dead link.",
        min=1,
        max=60,
    )


# --------------------------------------------------------------------------- audio


@dataclass(frozen=True)
class ChimeSettings:
    """Short local earcons; never sent to the model (the mic gate covers them)."""

    press: bool = opt(True, "Chime when the talk button goes down.")
    release: bool = opt(True, "Chime when the talk button is released.")
    error: bool = opt(True, "Chime when something failed (e.g. words could not be delivered).")
    connected: bool = opt(True, "Chime when the first session is ready.")
    volume: float = opt(0.4, "Chime loudness, 0-1 (times audio.volume).", min=0, max=1)


@dataclass(frozen=True)
class AudioSettings:
    """Microphone and speaker."""

    backend: Literal["pyaudio", "none"] = opt("pyaudio", "pyaudio, or none for text-only use.")
    input_device: str = opt("default", "ALSA device name or a substring of it for the mic.")
    output_device: str = opt("default", "ALSA device name or a substring of it for the speaker.")
    input_rate: int | None = opt(None, "Force the mic's device rate (null = probe).", min=8000)
    output_rate: int | None = opt(
        None, "Force the speaker's device rate, e.g. 16000 for a WM8960 HAT.", min=8000
    )
    input_channels: int | None = opt(None, "Channels to open the mic with (null = auto).", min=1)
    input_channel: int | Literal["mix"] = opt(
        0, "Which mic channel to send (0-based), or mix to average all channels."
    )
    chunk_ms: int = opt(40, "Milliseconds of audio per message to the server.", min=20, max=100)
    mic_gain_db: float = opt(0.0, "Software gain applied to the mic.", min=-20, max=40)
    preroll_ms: int = opt(300, "Mic audio kept from before the button press.", min=0, max=2000)
    volume: float = opt(1.0, "Speaker volume 0-1 (changeable at run time).", min=0, max=1)
    jitter_ms: int = opt(80, "Audio buffered before playback starts.", min=0, max=1000)
    echo_tail_ms: int = opt(
        400, "Half-duplex: mic stays closed this long after the speaker drains.", min=0, max=5000
    )
    full_duplex: bool = opt(
        False, "Send mic audio while the speaker plays (only with an echo canceller!)."
    )
    retry_max_s: float = opt(30.0, "Longest wait between tries to reopen a lost device.", min=1)
    chimes: ChimeSettings = opt(ChimeSettings, "Earcons.")


# --------------------------------------------------------------------------- camera


@dataclass(frozen=True)
class CameraSettings:
    """The Pi's eyes."""

    backend: Literal["none", "picamera2", "synthetic"] = opt(
        "none", "picamera2 on a Pi, synthetic for tests/demo, or none."
    )
    mode: Literal["off", "while_talking", "on_demand"] = opt(
        "on_demand", "When frames are sent: off, while_talking, or on_demand (a 'look' tool)."
    )
    fps: float = opt(1.0, "Frames per second in while_talking mode.", min=0.1, max=2)
    width: int = opt(768, "Frame width in pixels.", min=64, max=1920)
    height: int = opt(576, "Frame height in pixels.", min=64, max=1920)
    jpeg_quality: int = opt(80, "JPEG quality.", min=10, max=95)
    rotation: Literal[0, 90, 180, 270] = opt(0, "Rotate frames by this many degrees.")
    hflip: bool = opt(False, "Mirror frames horizontally.")
    vflip: bool = opt(False, "Flip frames vertically.")
    capture_timeout_s: float = opt(2.0, "A capture slower than this disables the camera.", min=0.1)
    media_resolution: Literal["low", "medium", "high"] | None = opt(
        "low", "How many tokens each frame costs the model (low = 64); null = model default."
    )


# --------------------------------------------------------------------------- gpio


@dataclass(frozen=True)
class GpioSettings:
    """gpiozero's pin factory."""

    pin_factory: str | None = opt(
        None,
        "null = gpiozero's own choice (lgpio on a Pi, or $GPIOZERO_PIN_FACTORY); mock = simulated.",
    )


DeviceKind = Literal[
    "button", "led", "pwm_led", "rgb_led", "buzzer", "output", "pwm_output", "servo", "input"
]


@dataclass(frozen=True)
class DeviceSettings:
    """One gpiozero device; which fields matter depends on ``kind``."""

    kind: DeviceKind = opt("led", "Device kind.")
    pin: int | None = opt(None, "BCM pin number (2-27).")
    pins: tuple[int, ...] = opt((), "BCM pins red, green, blue for an rgb_led.")
    description: str = opt("", "What it is, for people and for tool descriptions.")
    active_high: bool = opt(True, "False when the device is on at a low pin (many relay boards).")
    initial: float = opt(
        0.0, "Value at start-up (0 = off; led/buzzer/output: 0 or 1).", min=0, max=1
    )
    safe: float | None = opt(
        0.0, "Value restored on shutdown (0-1; led/buzzer/output: 0 or 1); null = leave as is."
    )
    pull_up: bool | None = opt(True, "Inputs/buttons: pull-up (true), pull-down (false), none.")
    bounce_time: float | None = opt(None, "Inputs: debounce seconds.", min=0, max=1)
    frequency: int = opt(100, "PWM frequency in Hz.", min=1, max=10000)
    min_pulse_ms: float = opt(1.0, "Servo pulse width at -90 degrees, ms.", min=0.1, max=5)
    max_pulse_ms: float = opt(2.0, "Servo pulse width at +90 degrees, ms.", min=0.1, max=5)
    initial_angle: float | None = opt(
        None, "Servo: angle at start-up; null = no pulses until the first move.", min=-90, max=90
    )
    safe_angle: float | None = opt(
        None, "Servo: angle to return to on shutdown; null = stay where it is.", min=-90, max=90
    )
    min: float | None = opt(
        None,
        "Lowest level that may reach the pin: PWM/RGB 0-1 (0 = off is always allowed), "
        "servo degrees; null = 0 / -90.",
    )
    max: float | None = opt(
        None,
        "Highest level that may ever reach the pin, by any verb, blink step or restore: "
        "PWM/RGB 0-1, servo degrees; null = 1 / 90.",
    )


@dataclass(frozen=True)
class PttSettings:
    """The push-to-talk button."""

    device: str | None = opt(None, "Name of a button device; null = no button.")
    mode: Literal["hold", "toggle"] = opt("hold", "hold: talk while held; toggle: press/press.")
    min_press_ms: int = opt(
        60, "Presses shorter than this are bounces or taps that cancel the turn.", min=0, max=1000
    )
    long_press_s: float = opt(3.0, "A press this long triggers long_press_action.", min=0.3)
    long_press_action: Literal["none", "cancel", "mute", "restart_session"] = opt(
        "cancel", "What a long press does (toggle mode only: in hold mode holding is talking)."
    )


@dataclass(frozen=True)
class StatusLightSettings:
    """The LED that shows the agent's state."""

    device: str | None = opt(None, "Name of an led, pwm_led or rgb_led device; null = none.")
    brightness: float = opt(
        1.0,
        "Scales steady pwm_led levels and every rgb_led colour (pwm blinks/pulses peak at 1).",
        min=0.05,
        max=1,
    )


ToolVerb = Literal["on", "off", "toggle", "set", "value", "blink", "pulse", "angle", "read"]
ToolBehavior = Literal["blocking", "non_blocking"]
ToolScheduling = Literal["silent", "when_idle", "interrupt"]


@dataclass(frozen=True)
class ToolSettings:
    """A function the model may call; it acts on one declared device with one verb."""

    name: str = opt("", "Function name the model sees ([A-Za-z_][A-Za-z0-9_-]*).")
    description: str = opt("", "What it does, for the model.")
    device: str = opt("", "Name of the device it acts on.")
    verb: ToolVerb = opt("toggle", "The only action this tool can perform.")
    parameter_description: str | None = opt(None, "Override the generated parameter text.")
    min: float | None = opt(
        None, "Lowest value/angle the model may ask for (within the device's); null = device's."
    )
    max: float | None = opt(
        None, "Highest value/angle the model may ask for (within the device's); null = device's."
    )
    max_count: int = opt(
        10, "blink/pulse: most repetitions the model may ask for.", min=1, max=MAX_BLINK_COUNT
    )
    max_duration_s: float = opt(10.0, "blink/pulse: longest run the model may ask for.", min=0.1)
    auto_off_s: float | None = opt(None, "Switch the output off this long after any on.", min=0.1)
    rate_limit_per_min: int | None = opt(None, "Most calls per minute.", min=1)
    undo: bool = opt(False, "On toolCallCancellation, restore the state before the call.")
    timeout_s: float = opt(5.0, "Longest a call may take.", min=0.1, max=60)
    behavior: ToolBehavior | None = opt(
        None,
        "blocking: the model waits for the result; non_blocking: it goes on talking (3.8 models "
        "only); null = by verb (blink and pulse non_blocking, the rest blocking).",
    )
    scheduling: ToolScheduling = opt(
        "when_idle",
        "How a non_blocking result enters the conversation: silent, when_idle (after what the "
        "model is saying) or interrupt (at once).",
    )


# --------------------------------------------------------------------------- timers


@dataclass(frozen=True)
class TimerSettings:
    """Timers, alarms and reminders that ring locally (pi_agent.timers)."""

    enabled: bool = opt(True, "Give the model set_timer/set_alarm/set_reminder/list/cancel tools.")
    max_count: int = opt(10, "Most timers, alarms and reminders pending at once.", min=1, max=100)
    max_duration_s: float = opt(
        86400.0, "Longest timer or reminder the model may set, in seconds.", min=60, max=604800
    )
    max_label_chars: int = opt(
        80, "Longest label (or reminder text) in characters.", min=8, max=500
    )
    state_file: str | None = opt(
        None,
        "Where pending timers are kept; null = $STATE_DIRECTORY/timers.json, "
        "else ~/.local/state/pi-agent/timers.json.",
    )


# --------------------------------------------------------------------------- mqtt

_MQTT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MQTT_TOPIC = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")


@dataclass(frozen=True)
class MqttTlsSettings:
    """TLS to the broker (the Mosquitto add-on's port 8883)."""

    enabled: bool = opt(False, "Connect with TLS; usually with port 8883.")
    ca_file: str | None = opt(
        None, "CA bundle (PEM) the broker's certificate must chain to; null = the system's."
    )


@dataclass(frozen=True)
class MqttSettings:
    """Home Assistant over MQTT (docs/home-assistant.md); the password is never in the YAML."""

    enabled: bool = opt(False, "Publish to an MQTT broker with Home Assistant discovery.")
    host: str = opt("homeassistant.local", "Broker host name or address.")
    port: int = opt(1883, "Broker port (1883 plain, 8883 TLS).", min=1, max=65535)
    tls: MqttTlsSettings = opt(MqttTlsSettings, "TLS to the broker.")
    username: str | None = opt(None, "Broker user name; null = anonymous.")
    password_file: str | None = opt(
        None,
        "File holding the broker password (first line); else systemd credential mqtt-password.",
    )
    device_id: str | None = opt(
        None, "This agent's id in topics and Home Assistant ([A-Za-z0-9_-]); null = the hostname."
    )
    name: str | None = opt(None, "Device name shown in Home Assistant; null = the device_id.")
    discovery_prefix: str = opt("homeassistant", "Home Assistant's discovery prefix.")
    base_topic: str = opt(
        "pi-agent", "State and command topics live under <base_topic>/<device_id>/."
    )
    keepalive_s: int = opt(60, "Seconds between keep-alive pings to the broker.", min=5, max=3600)
    backoff_initial_s: float = opt(
        1.0, "First reconnect delay after the broker went away.", min=0.1, max=60
    )
    backoff_max_s: float = opt(
        8.0,
        "Longest reconnect delay (entities are back within ~10 s of the broker).",
        min=1,
        max=600,
    )
    device_poll_s: float | None = opt(
        1.0,
        "Re-read GPIO devices this often to report changes (door inputs); null = events only.",
        min=0.1,
        max=60,
    )

    def __post_init__(self) -> None:
        # Checked here so the rule lives with the section (the loader names the section).
        if self.device_id is not None and not _MQTT_ID.fullmatch(self.device_id):
            raise ValueError(f"device_id {self.device_id!r} may only hold A-Z a-z 0-9 _ - (1-64)")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must not be below backoff_initial_s")
        for key in ("discovery_prefix", "base_topic"):
            value = getattr(self, key)
            if not _MQTT_TOPIC.fullmatch(value):
                raise ValueError(
                    f"{key} {value!r} must be topic levels of A-Z a-z 0-9 _ - separated by /"
                )


# --------------------------------------------------------------------------- agent


@dataclass(frozen=True)
class ControlSettings:
    """The local control socket (UNIX, never TCP)."""

    enabled: bool = opt(True, "Open the control socket.")
    socket: str = opt("/run/pi-agent/control.sock", "Path of the UNIX socket.")
    mode: str = opt("0660", "Socket file permissions (octal string).")


@dataclass(frozen=True)
class AgentSettings:
    """Conversation, reconnect and service behaviour."""

    max_buffered_speech_s: float = opt(
        30.0, "Speech kept while offline, resent after reconnecting.", min=1, max=300
    )
    backoff_initial_s: float = opt(0.5, "First reconnect delay.", min=0.05, max=60)
    backoff_max_s: float = opt(30.0, "Longest reconnect delay.", min=1, max=600)
    pending_turn_ttl_s: float = opt(
        120.0,
        "A turn not yet delivered is kept this long while offline, then reported lost.",
        min=5,
        max=3600,
    )
    pending_backoff_max_s: float = opt(
        1.5,
        "Longest reconnect delay while a turn waits, so it goes out soon after the link is back.",
        min=0.1,
        max=30,
    )
    fatal_retry_s: float = opt(
        300.0, "After a fatal error (bad key/model), try again this rarely.", min=10
    )
    ready_timeout_s: float = opt(
        20.0, "Tell systemd READY after this long even if offline.", min=1, max=600
    )
    log_transcripts: bool = opt(True, "Log what the user and the model said.")
    log_level: Literal["debug", "info", "warning", "error"] = opt("info", "Log level.")


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    live: LiveSettings = opt(LiveSettings, "Gemini Live connection and session.")
    audio: AudioSettings = opt(AudioSettings, "Microphone and speaker.")
    camera: CameraSettings = opt(CameraSettings, "Camera.")
    gpio: GpioSettings = opt(GpioSettings, "GPIO pin factory.")
    devices: dict[str, DeviceSettings] = opt(dict, "GPIO devices by name.")
    ptt: PttSettings = opt(PttSettings, "Push-to-talk button.")
    status_light: StatusLightSettings = opt(StatusLightSettings, "Status LED.")
    tools: tuple[ToolSettings, ...] = opt((), "Functions the model may call.")
    timers: TimerSettings = opt(TimerSettings, "Timers, alarms and reminders.")
    control: ControlSettings = opt(ControlSettings, "Local control socket.")
    agent: AgentSettings = opt(AgentSettings, "Agent behaviour.")
    mqtt: MqttSettings = opt(MqttSettings, "Home Assistant over MQTT.")


# --------------------------------------------------------------------------- loader


MAX_PROBLEMS = 50
MAX_NUMBER = 1e9  # no option needs more; threading timers overflow not far above


class _Problems(list):
    def add(self, path: str, message: str) -> None:
        if len(self) == MAX_PROBLEMS:
            self.append("... more problems not shown: fix these first")
        if len(self) > MAX_PROBLEMS:
            return
        self.append(_printable(f"{path}: {message}" if path else message))


def _printable(text: str) -> str:
    """One line, valid UTF-8: a hostile key cannot forge a log line or break the terminal."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() and not 0xD800 <= ord(ch) <= 0xDFFF else ascii(ch)[1:-1]
        for ch in text
    )


def _short(value: Any) -> str:
    """``repr`` cut to one short line, even for a huge or deeply nested value."""
    return _REPR.repr(value)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 3


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _key_text(key: Any) -> str:
    return key if isinstance(key, str) and len(key) <= 60 else _short(key)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint is type(None):
        return "null"
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is tuple:
        return "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, str(hint)
    )


_FAIL = object()
_SURROGATE = re.compile("[\ud800-\udfff]")


def _convert(value: Any, hint: Any, path: str, problems: _Problems, meta: dict) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None:
            if type(None) in args:
                return None
            problems.add(path, f"must be {_type_name(hint)}, not null")
            return _FAIL
        for arg in args:
            if arg is type(None):
                continue
            trial = _Problems()
            result = _convert(value, arg, path, trial, meta)
            if not trial:
                return result
        non_null = [a for a in args if a is not type(None)]
        if len(non_null) == 1:  # one real type: report its precise problem
            return _convert(value, non_null[0], path, problems, meta)
        problems.add(path, f"must be {_type_name(hint)}, not {_short(value)}")
        return _FAIL
    if origin is Literal:
        choices = typing.get_args(hint)
        if value in choices and type(value) in {type(c) for c in choices}:
            return value
        hint_text = ""
        if isinstance(value, str):
            close = difflib.get_close_matches(value, [str(c) for c in choices], n=1)
            hint_text = f", did you mean {close[0]!r}?" if close else ""
        problems.add(
            path, f"{_short(value)} is not one of {', '.join(map(repr, choices))}{hint_text}"
        )
        return _FAIL
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path, problems)
    if origin is tuple:
        (item_hint, _ellipsis) = typing.get_args(hint)
        if value is None:
            return ()
        if not isinstance(value, list):
            problems.add(path, f"must be a list, not {type(value).__name__}")
            return _FAIL
        items = [_convert(v, item_hint, f"{path}[{i}]", problems, {}) for i, v in enumerate(value)]
        return tuple(items)
    if origin is dict:
        _key_hint, item_hint = typing.get_args(hint)
        if value is None:
            return {}
        if not isinstance(value, dict):
            problems.add(path, f"must be a mapping, not {type(value).__name__}")
            return _FAIL
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
                problems.add(_join(path, _key_text(k)), "names must be letters, digits and _")
                continue
            out[k] = _convert(v, item_hint, _join(path, k), problems, {})
        return out
    if hint is bool:
        if isinstance(value, bool):
            return value
        problems.add(path, f"must be true or false, not {_short(value)}")
        return _FAIL
    if hint in (int, float):
        ok = isinstance(value, int) and not isinstance(value, bool)
        if hint is float:
            ok = ok or isinstance(value, float)
        if not ok:
            problems.add(path, f"must be {_type_name(hint)}, not {_short(value)}")
            return _FAIL
        if isinstance(value, float) and not math.isfinite(value):
            problems.add(path, f"must be a finite number, not {value}")
            return _FAIL
        if abs(value) > MAX_NUMBER:
            shown = f"{value:g}" if isinstance(value, float) else _short(value)
            problems.add(path, f"{shown} is too large (the limit is {MAX_NUMBER:g})")
            return _FAIL
        low, high = meta.get("min"), meta.get("max")
        if low is not None and value < low:
            problems.add(path, f"{value} is below the minimum {low}")
            return _FAIL
        if high is not None and value > high:
            problems.add(path, f"{value} is above the maximum {high}")
            return _FAIL
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            problems.add(path, f"must be a string, not {_short(value)}")
            return _FAIL
        if "\x00" in value or _SURROGATE.search(value):
            problems.add(path, "must be text without NUL characters or lone surrogates")
            return _FAIL
        return value
    raise TypeError(f"unsupported config type {hint!r} at {path}")  # pragma: no cover


def _build(cls: type, data: Any, path: str, problems: _Problems) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.add(path, f"must be a mapping, not {type(data).__name__}")
        return _FAIL
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f", did you mean {close[0]!r}?" if close else ""
            problems.add(_join(path, _key_text(key)), f"unknown key{hint}")
            continue
        result = _convert(value, hints[key], _join(path, key), problems, dict(fields[key].metadata))
        if result is not _FAIL:
            kwargs[key] = result
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # pragma: no cover - defaults always construct
        problems.add(path, str(exc))
        return _FAIL


_FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,62}")
_PIN_KINDS_SINGLE = {"button", "led", "pwm_led", "buzzer", "output", "pwm_output", "servo", "input"}
_PWM_KINDS = {"pwm_led", "pwm_output", "servo", "rgb_led"}
_FIXED_PULL_PINS = {2, 3}  # I2C pins with fixed 1.8 kOhm pull-ups on every Pi
_VERBS_BY_KIND = {
    "led": {"on", "off", "toggle", "set", "blink", "read"},
    "pwm_led": {"on", "off", "toggle", "set", "value", "blink", "pulse", "read"},
    "rgb_led": {"on", "off", "toggle", "set", "value", "blink", "pulse", "read"},
    "buzzer": {"on", "off", "toggle", "set", "blink", "read"},
    "output": {"on", "off", "toggle", "set", "blink", "read"},
    "pwm_output": {"on", "off", "toggle", "set", "value", "blink", "pulse", "read"},
    "servo": {"angle", "read"},
    "input": {"read"},
    "button": {"read"},
}


_LEVEL_KINDS = frozenset({"pwm_led", "pwm_output", "rgb_led"})


def device_range(settings: DeviceSettings) -> tuple[float, float] | None:
    """The (low, high) a device's level may take: PWM duty 0-1 or servo degrees; None = on/off.

    For PWM kinds 0 (off) is always allowed besides ``low..high``.
    """
    if settings.kind in _LEVEL_KINDS:
        full = (0.0, 1.0)
    elif settings.kind == "servo":
        full = (-90.0, 90.0)
    else:
        return None
    low = full[0] if settings.min is None else float(settings.min)
    high = full[1] if settings.max is None else float(settings.max)
    return low, high


def describe_range(kind: str, low: float, high: float) -> str:
    """``0 (off) or 0.2 to 0.8`` / ``0 to 0.8`` / ``-60 to 60 degrees`` for error messages."""
    if kind == "servo":
        return f"{low:g} to {high:g} degrees"
    if low > 0:
        return f"0 (off) or {low:g} to {high:g}"
    return f"0 to {high:g}"


def _check_device_range(path: str, dev: DeviceSettings, problems: _Problems) -> None:
    """min/max fit the kind; initial and safe values lie inside them."""
    span = device_range(dev)
    if span is None:
        for key in ("min", "max"):
            if getattr(dev, key) is not None:
                problems.add(
                    f"{path}.{key}",
                    f"a {dev.kind} is only on or off; min/max apply to pwm_led, pwm_output, "
                    "rgb_led and servo",
                )
        return
    full = (-90.0, 90.0) if dev.kind == "servo" else (0.0, 1.0)
    low, high = span
    bad = False
    for key, value in (("min", dev.min), ("max", dev.max)):
        if value is not None and not full[0] <= value <= full[1]:
            problems.add(f"{path}.{key}", f"{value:g} is outside {full[0]:g}..{full[1]:g}")
            bad = True
    if bad:
        return
    if low > high:
        problems.add(f"{path}.max", f"must not be below min ({low:g})")
        return
    if dev.kind != "servo" and high <= 0:
        problems.add(f"{path}.max", "must be above 0, or the device could never switch on")
        return
    allowed = describe_range(dev.kind, low, high)
    if dev.kind == "servo":
        checks = (("initial_angle", dev.initial_angle), ("safe_angle", dev.safe_angle))
    else:
        checks = (("initial", dev.initial), ("safe", dev.safe))
    for key, value in checks:
        if value is None or (dev.kind != "servo" and value == 0):
            continue
        if not low <= value <= high:
            problems.add(f"{path}.{key}", f"{value:g} is outside the device's range {allowed}")


def _check_tool_range(
    path: str, tool: ToolSettings, name: str, dev: DeviceSettings, problems: _Problems
) -> None:
    """A tool's min/max may only narrow its device's range."""
    span = device_range(dev)
    if span is None:
        for key in ("min", "max"):
            if getattr(tool, key) is not None:
                problems.add(
                    f"{path}.{key}",
                    f"device {name!r} is a {dev.kind}, only on or off: it has no range to limit",
                )
        return
    low, high = span
    for key, bound in (("min", tool.min), ("max", tool.max)):
        if key == "min" and bound == 0 and dev.kind != "servo":
            continue  # 0 = off is always allowed
        if bound is not None and not low <= bound <= high:
            problems.add(
                f"{path}.{key}",
                f"{bound:g} is outside the range of device {name!r} ({low:g} to {high:g}, "
                f"devices.{name}.min/max); a tool may only narrow it",
            )


def _check_endpoint(endpoint: str, problems: _Problems) -> None:
    """ws:// carries the API key in cleartext, so it may only reach this machine."""
    try:
        url = urlsplit(endpoint)
        url.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        problems.add("live.endpoint", f"{endpoint!r} is not a valid URL: {exc}")
        return
    if url.scheme not in ("ws", "wss") or not url.hostname:
        problems.add("live.endpoint", f"{endpoint!r} must be a wss:// (or ws://) URL with a host")
        return
    if url.scheme == "ws" and not _is_loopback(url.hostname):
        problems.add(
            "live.endpoint",
            f"ws:// to {url.hostname} would send the API key in cleartext; use wss://, "
            "or ws:// only to this machine (127.0.0.1, ::1, localhost)",
        )


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check(config: Config, problems: _Problems) -> None:
    """Cross-field rules that a type cannot express."""
    used: dict[int, str] = {}
    for name, dev in config.devices.items():
        path = f"devices.{name}"
        pins = list(dev.pins) if dev.kind == "rgb_led" else [dev.pin]
        if dev.kind == "rgb_led":
            if len(dev.pins) != 3:
                problems.add(f"{path}.pins", "an rgb_led needs exactly 3 pins: [red, green, blue]")
                pins = []
            if dev.pin is not None:
                problems.add(f"{path}.pin", "an rgb_led uses 'pins', not 'pin'")
        elif dev.pin is None:
            problems.add(f"{path}.pin", f"a {dev.kind} needs a pin")
            pins = []
        elif dev.pins:
            problems.add(f"{path}.pins", f"a {dev.kind} uses 'pin', not 'pins'")
        for pin in pins:
            if pin is None:
                continue
            if not 2 <= pin <= 27:
                problems.add(f"{path}.pin", f"{pin} is not a usable BCM GPIO pin (2-27)")
            elif pin in used:
                problems.add(f"{path}.pin", f"GPIO{pin} is already used by '{used[pin]}'")
            else:
                used[pin] = name
            if (
                pin in _FIXED_PULL_PINS
                and dev.kind in ("button", "input")
                and dev.pull_up is not True
            ):
                problems.add(
                    f"{path}.pull_up",
                    f"GPIO{pin} has a fixed pull-up resistor; pull_up must be true",
                )
        if dev.min_pulse_ms >= dev.max_pulse_ms:
            problems.add(f"{path}.max_pulse_ms", "must be greater than min_pulse_ms")
        if dev.kind in ("led", "buzzer", "output"):
            for key, value in (("initial", dev.initial), ("safe", dev.safe)):
                if value not in (None, 0, 1):
                    problems.add(f"{path}.{key}", f"must be 0 (off) or 1 (on) for a {dev.kind}")
        _check_device_range(path, dev, problems)
    for section, ref, kinds in (
        ("ptt.device", config.ptt.device, {"button"}),
        ("status_light.device", config.status_light.device, {"led", "pwm_led", "rgb_led"}),
    ):
        if ref is None:
            continue
        dev = config.devices.get(ref)
        if dev is None:
            problems.add(section, f"no device named {ref!r} in devices{_did_you_mean(ref, config)}")
        elif dev.kind not in kinds:
            problems.add(section, f"device {ref!r} is a {dev.kind}, expected {' or '.join(kinds)}")
    names: set[str] = set()
    for i, tool in enumerate(config.tools):
        path = f"tools[{i}]"
        if not _FUNCTION_NAME.fullmatch(tool.name):
            problems.add(f"{path}.name", f"{tool.name!r} is not a valid function name")
        elif tool.name in names:
            problems.add(f"{path}.name", f"{tool.name!r} is declared twice")
        names.add(tool.name)
        if not tool.description:
            problems.add(f"{path}.description", "tools need a description for the model")
        dev = config.devices.get(tool.device)
        if dev is None:
            problems.add(
                f"{path}.device",
                f"no device named {tool.device!r} in devices{_did_you_mean(tool.device, config)}",
            )
        elif tool.verb not in _VERBS_BY_KIND[dev.kind]:
            allowed = ", ".join(sorted(_VERBS_BY_KIND[dev.kind]))
            problems.add(f"{path}.verb", f"a {dev.kind} cannot {tool.verb!r}; allowed: {allowed}")
        if tool.min is not None and tool.max is not None and tool.min > tool.max:
            problems.add(f"{path}.max", "must not be below min")
        if dev is not None:
            _check_tool_range(path, tool, tool.device, dev, problems)
        if tool.auto_off_s is not None and dev is not None and dev.kind in ("servo", "input"):
            problems.add(f"{path}.auto_off_s", f"a {dev.kind} cannot be switched off")
    if config.control.enabled:
        mode = config.control.mode
        if not re.fullmatch(r"0?[0-7]{3}", mode):
            problems.add("control.mode", f"{mode!r} is not an octal mode like 0660")
        elif int(mode, 8) & ~0o660:
            problems.add(
                "control.mode",
                f"{mode!r} is wider than 0660: anyone outside the pi-agent group (or any "
                "execute bit) could drive the agent; use 0660 or 0600",
            )
    _check_endpoint(config.live.endpoint, problems)
    if config.camera.backend != "none" and config.camera.mode == "on_demand" and "look" in names:
        problems.add("tools", "'look' is the camera's built-in tool name; rename your tool")


def _did_you_mean(name: str, config: Config) -> str:
    close = difflib.get_close_matches(name, list(config.devices), n=1)
    return f", did you mean {close[0]!r}?" if close else ""


def parse_config(data: Any) -> Config:
    """Validate an already-loaded YAML document; raise ConfigError with every problem."""
    problems = _Problems()
    config = _build(Config, data, "", problems)
    if not problems:
        _check(config, problems)
    if problems:
        raise ConfigError(list(problems))
    return config


MAX_CONFIG_BYTES = 256 * 1024
MAX_YAML_NODES = 20_000  # counted with every alias expanded
MAX_YAML_DEPTH = 32


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses a document too deep, or too big once its aliases are expanded.

    PyYAML shares an aliased node, so a "billion laughs" document loads small
    and explodes for whoever walks it; counting each alias as a copy of its
    target while composing stops it before any Python object exists. The depth
    limit keeps PyYAML's recursive composer far from RecursionError.
    """

    def __init__(self, stream: str):
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0

    def _grow(self, count: int, mark: Any) -> None:
        self._nodes += count
        if self._nodes > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_YAML_NODES} values once aliases are expanded", mark
            )

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = getattr(target, "_pi_agent_size", None)
                if size is None:
                    raise yaml.composer.ComposerError(
                        None, None, f"alias *{event.anchor} refers to itself", event.start_mark
                    )
                self._grow(size, event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", event.start_mark
            )
        start = self._nodes
        self._grow(1, event.start_mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        node._pi_agent_size = self._nodes - start
        return node


def _read_text(path: str | os.PathLike, where: str, noun: str, limit: int) -> str:
    """A small UTF-8 file's text; otherwise ConfigError ``"<where>: <noun> is ..."``."""
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {noun}: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. a NUL in the path
        raise ConfigError(f"{where}: cannot read {noun}: {exc}") from None
    if len(raw) > limit:
        raise ConfigError(
            f"{where}: {noun} is larger than {limit // 1024} KiB; is it the right file?"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{where}: {noun} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from None


def load_yaml(text: str, path: str | os.PathLike = "<config>") -> Any:
    """Parse YAML text with the bounded safe loader; ConfigError naming the line otherwise."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # e.g. a date like 2024-13-45, which PyYAML's constructor does not catch
        raise ConfigError(f"{path}: invalid YAML: {type(exc).__name__}: {exc}") from None


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Load and validate a YAML file (``None`` = built-in defaults).

    Every failure is a ConfigError naming the file: unreadable, over
    ``MAX_CONFIG_BYTES``, not UTF-8, bad YAML, too deep or alias-bombed, or
    invalid values.
    """
    if path is None:
        return parse_config({})
    text = _read_text(path, str(path), "config", MAX_CONFIG_BYTES)
    return parse_config(load_yaml(text, path))


def replace(config: Config, **sections: Any) -> Config:
    """Copy ``config`` with some sections replaced (for CLI overrides and tests)."""
    return dataclasses.replace(config, **sections)


# --------------------------------------------------------------------------- secrets


def resolve_api_key(live: LiveSettings, environ: typing.Mapping[str, str] | None = None) -> str:
    """Find the API key: ``live.api_key_file``, then the systemd credential, then the env var.

    The error names every place that was looked at, never a value.
    """
    env = os.environ if environ is None else environ
    if live.api_key_file:
        return _read_secret(Path(live.api_key_file), "live.api_key_file")
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        cred = Path(cred_dir) / live.credential_name
        if cred.exists():
            return _read_secret(cred, f"systemd credential {live.credential_name!r}")
    key = env.get(live.api_key_env, "").strip()
    if key:
        return key
    places = [f"environment variable {live.api_key_env} (live.api_key_env)"]
    places.append("a file named by live.api_key_file")
    places.append(
        f"systemd credential {live.credential_name!r} in $CREDENTIALS_DIRECTORY"
        + ("" if cred_dir else " (not set)")
    )
    raise ConfigError("no Gemini API key found; looked in: " + "; ".join(places))


def _read_secret(path: Path, what: str) -> str:
    text = _read_text(path, what, str(path), 64 * 1024)
    secret = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise ConfigError(f"{what}: {path} is empty")
    return secret


def key_file_problem(live: LiveSettings) -> tuple[str, str] | None:
    """(problem, fix) when ``live.api_key_file`` is open to group or others; else None.

    The key itself is never read here.
    """
    if not live.api_key_file:
        return None
    try:
        mode = stat.S_IMODE(os.stat(live.api_key_file).st_mode)
    except (OSError, ValueError):
        return None  # resolve_api_key reports a missing file
    if not mode & 0o077:
        return None
    return (
        f"live.api_key_file {live.api_key_file} has mode {mode:04o}: other users can read it",
        f"chmod 600 {live.api_key_file}",
    )


def key_file_warning(live: LiveSettings) -> str | None:
    """One line for the start-up log when the key file is readable by others; else None."""
    problem = key_file_problem(live)
    return None if problem is None else f"{problem[0]}; fix: {problem[1]}"


# --------------------------------------------------------------------------- docs


def iter_options(cls: type = Config, prefix: str = "") -> typing.Iterator[tuple[str, Any, str]]:
    """Yield (dotted path, default, doc) for every option; tests use it to keep docs honest."""
    for f in dataclasses.fields(cls):
        path = _join(prefix, f.name)
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            yield from iter_options(hint, path)
            continue
        origin = typing.get_origin(hint)
        item = typing.get_args(hint)[-1] if origin in (dict, tuple) else None
        if origin is tuple:
            item = typing.get_args(hint)[0]
        if item is not None and dataclasses.is_dataclass(item):
            marker = "[]" if origin is tuple else ".*"
            yield from iter_options(item, path + marker)
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        yield path, default, f.metadata.get("doc", "")
