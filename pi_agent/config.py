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

import re
from dataclasses import dataclass, field
from typing import Any, Literal

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
    timer: bool = opt(True, "Chime of a ringing timer (repeats until a press).")
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
    idle_period_ms: int = opt(
        300,
        "Mic device period while only the pre-roll is kept (fewer wakeups); the mic is reopened"
        " with chunk_ms periods at the press. 0 = one period, never reopened.",
        min=0,
        max=1000,
    )
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
        "Scales steady pwm_led levels and every rgb_led colour (blinks/pulses peak at max).",
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
    debug_recording_dir: str | None = opt(
        None,
        "Save each turn's sent and received audio (WAV) and messages (JSON) here; null = off.",
    )
    debug_recording_max_turns: int = opt(
        20, "Most turns kept in debug_recording_dir; the oldest go first.", min=1, max=10000
    )


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


# --------------------------------------------------------------------------- loading
# The loader lives in config_loader.py; its public names are re-exported here.

from .config_loader import (  # noqa: E402
    _VERBS_BY_KIND,
    _read_secret,
    describe_range,
    device_range,
    iter_options,
    key_file_problem,
    key_file_warning,
    load_config,
    load_yaml,
    parse_config,
    replace,
    resolve_api_key,
)
from .errors import ConfigError  # noqa: E402  (re-exported: callers catch it from here)
from .safe_yaml import MAX_CONFIG_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES  # noqa: E402

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "MAX_CONFIG_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "_VERBS_BY_KIND",
    "Config",
    "ConfigError",
    "_read_secret",
    "describe_range",
    "device_range",
    "iter_options",
    "key_file_problem",
    "key_file_warning",
    "load_config",
    "load_yaml",
    "parse_config",
    "replace",
    "resolve_api_key",
]
