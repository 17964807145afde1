"""Assembly: every part of the agent built from the config, and null objects for absent ones.

:func:`build_parts` is the only place that knows which concrete classes exist
(gpiozero devices, PyAudio workers, the camera sampler, the control socket,
systemd). Each part reports to the agent only by putting typed events on the
inbox. A part switched off in the config is a null object with the same
methods, so the state machine never asks "is there a speaker?".

Start order: consumers before producers (the speaker before the mic), the
control socket last. Stop order: producers first (mic, camera, control, the
bridge), then the link (by the agent), then consumers (tools, speaker), then
the pins (safe values first).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import events as ev
from .config import Config
from .errors import CameraError
from .events import Inbox
from .turns import Uplink

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- null objects


class NullSpeaker:
    """No speaker (``audio.backend: none``): nothing plays, nothing waits."""

    state = "off"
    underruns = 0
    volume = 1.0
    is_playing = False

    def __init__(self) -> None:
        self.idle = threading.Event()
        self.idle.set()

    def start(self) -> None: ...
    def stop(self, timeout: float = 1.0) -> None: ...
    def play(self, pcm: bytes) -> None: ...
    def end_turn(self) -> None: ...
    def play_chime(self, name: str) -> None: ...

    def flush(self) -> float:
        return 0.0


class NullMicrophone:
    """No microphone: turns carry no audio (typed turns and tests still work)."""

    state = "off"
    overflows = 0
    last_chunk_time: float | None = None
    is_capturing = False

    def start(self) -> None: ...
    def stop(self, timeout: float = 1.0) -> None: ...
    def stop_capture(self) -> None: ...
    def reopen(self) -> None: ...

    def start_capture(self, *, gated: bool = False, deliver_preroll: bool = False) -> list[bytes]:
        return []


class NullCamera:
    """No camera: no frames, and ``look`` is not declared."""

    state = "off"

    def start(self) -> None: ...
    def stop(self, timeout: float = 1.0) -> None: ...
    def start_talking(self) -> None: ...
    def stop_talking(self) -> None: ...

    def look(self, args: dict | None = None) -> dict:
        raise CameraError("there is no camera")


class NullPushToTalk:
    """No button (hands-free, or ``ptt.device: null``)."""

    def set_talking(self, talking: bool) -> None: ...
    def close(self) -> None: ...


class NullControl:
    """The control socket is switched off."""

    def start(self) -> None: ...
    def stop(self, timeout: float = 1.0) -> None: ...
    def publish(self, event: dict) -> None: ...


# --------------------------------------------------------------------------- the parts


@dataclass
class Parts:
    """Everything the agent drives. Tests build one from fakes."""

    devices: Any
    light: Any
    ptt: Any
    toolbox: Any
    runner: Any
    sampler: Any
    mic: Any
    speaker: Any
    control: Any
    notifier: Any
    watchdog: Any
    ready_gate: Any
    camera_on: bool = False
    observers: list[Callable[[dict], None]] = field(default_factory=list)
    extras: list[Any] = field(default_factory=list)  # bridges with start()/stop()
    timers: Any = None  # pi_agent.timers.Timers when timers are enabled
    recorder: Any = None  # pi_agent.recorder.TurnRecorder with agent.debug_recording_dir

    def start(self) -> None:
        self.speaker.start()
        self.mic.start()
        self.sampler.start()
        self.runner.start()
        self.control.start()
        for extra in self.extras:
            extra.start()
        self.ready_gate.devices_up()

    def healthy(self) -> bool:
        """Every worker thread that was started still runs (the watchdog asks this).

        A part whose thread died is a bug the agent cannot mend by itself; withholding
        the watchdog ping lets systemd restart the service.
        """
        for part in (self.speaker, self.mic, self.runner, self.control, *self.extras):
            error = getattr(part, "error", None)
            if error is not None:
                log.error("%s died: %r", getattr(part, "name", type(part).__name__), error)
                return False
        return True

    def stop_producers(self) -> bool:
        """Stop everything that makes input; True if all stopped cleanly."""
        clean = True
        try:
            self.mic.stop_capture()
        except Exception:
            pass
        for part, what in (
            (self.mic, "microphone"),
            (self.sampler, "camera"),
            (self.control, "control socket"),
            *((e, type(e).__name__) for e in self.extras),
        ):
            clean = _stop(part, what) and clean
        try:
            self.ptt.close()
        except Exception:
            log.exception("push-to-talk did not close")
        return clean

    def stop_consumers(self) -> bool:
        """Stop tools and the speaker, then make every output safe and release the pins."""
        clean = _stop(self.runner, "tool runner")
        clean = _stop(self.speaker, "speaker") and clean
        try:
            self.devices.safe_state()
            self.light.show("off")
        except Exception:
            log.exception("could not restore safe GPIO state")
            clean = False
        if self.recorder is not None:
            self.recorder.close()
        try:
            self.devices.close()
        except Exception:
            log.exception("could not release the GPIO pins")
            clean = False
        return clean


def _stop(part: Any, what: str) -> bool:
    try:
        part.stop(1.0)
    except Exception as exc:
        log.error("%s did not stop cleanly: %s", what, exc)
        return False
    return True


def build_parts(
    config: Config,
    inbox: Inbox,
    uplink: Uplink,
    *,
    pin_factory: Any = None,
    notifier: Any = None,
) -> Parts:
    """Build every part the config asks for (a failure part-way closes what was built)."""
    from .devices import Devices, PushToTalk, make_pin_factory
    from .light import StatusLight
    from .systemd import Notifier, ReadyGate, Watchdog
    from .tools import ToolBox, ToolRunner

    put = inbox.put
    notifier = notifier if notifier is not None else Notifier()
    factory = pin_factory if pin_factory is not None else make_pin_factory(config.gpio)
    devices = Devices(config, pin_factory=factory)
    try:
        light_device = (
            devices.get(config.status_light.device) if config.status_light.device else None
        )
        light = StatusLight(light_device, config.status_light)
        ptt: Any = NullPushToTalk()
        if config.ptt.device and not config.live.hands_free:
            ptt = PushToTalk(devices.get(config.ptt.device), config.ptt, _button_events(put))
        toolbox = ToolBox(config.tools, devices)
        sampler, camera_on = _build_camera(config, toolbox, put)
        runner = ToolRunner(toolbox, lambda response: put(ev.ToolFinished(response)))
        mic, speaker = _build_audio(config, uplink, put)
        control: Any = NullControl()
        observers: list[Callable[[dict], None]] = []
        extras: list[Any] = []
        timers = _build_timers(config, toolbox, put)
        if timers is not None:
            extras.append(timers)
        if config.mqtt.enabled:
            bridge = _build_mqtt(config, devices, runner, put)
            observers.append(bridge.publish)
            extras.append(bridge)
        if config.control.enabled:
            from .control import ControlServer

            control = ControlServer(
                config.control.socket,
                int(config.control.mode, 8),
                lambda request: put(ev.Command(request.request, request.respond)),
            )
            observers.append(control.publish)
    except BaseException:
        devices.close()
        raise
    parts_ref: list[Parts] = []
    parts = Parts(
        devices=devices,
        light=light,
        ptt=ptt,
        toolbox=toolbox,
        runner=runner,
        sampler=sampler,
        mic=mic,
        speaker=speaker,
        control=control,
        notifier=notifier,
        watchdog=Watchdog(notifier, healthy=lambda: parts_ref[0].healthy()),
        ready_gate=ReadyGate(notifier, config.agent.ready_timeout_s),
        camera_on=camera_on,
        observers=observers,
        extras=extras,
        timers=timers,
    )
    if config.agent.debug_recording_dir:
        from .recorder import TurnRecorder

        parts.recorder = TurnRecorder(
            config.agent.debug_recording_dir, max_turns=config.agent.debug_recording_max_turns
        )
    parts_ref.append(parts)
    return parts


def _build_timers(config: Config, toolbox: Any, put: Callable[[object], None]) -> Any:
    """Timers, alarms and reminders: built-in tools; they ring through a ``TimerDue`` event."""
    if not config.timers.enabled:
        return None
    from .timers import Timers, resolve_state_path

    timers = Timers(
        config.timers,
        state_path=resolve_state_path(config.timers),
        on_due=lambda timer: put(ev.TimerDue(timer)),
    )
    for declaration in timers.declarations():
        name = declaration["name"]
        toolbox.add_builtin(
            declaration, lambda args, name=name: {"result": timers.call(name, args or {})}
        )
    return timers


def _build_mqtt(config: Config, devices: Any, runner: Any, put: Callable[[object], None]) -> Any:
    """The Home Assistant bridge (imported only when enabled; measured in BENCHMARKS.md)."""
    from . import __version__
    from .errors import ConfigError

    try:
        from .mqtt import MqttBridge, mqtt_password
    except ImportError as exc:
        raise ConfigError(
            f"mqtt.enabled needs paho-mqtt ({exc}): pip install 'pi-agent[mqtt]'"
        ) from None
    shown = {
        name: settings
        for name, settings in config.devices.items()
        if name not in (config.status_light.device, config.ptt.device)
    }
    return MqttBridge(
        config.mqtt,
        submit=lambda request: put(ev.Command(request.request, request.respond)),
        command_device=runner.command,
        devices=shown,
        device_states=devices.states,
        password=mqtt_password(config.mqtt),
        version=__version__,
    )


def _button_events(put: Callable[[object], None]) -> Callable[[str], None]:
    """PushToTalk speaks in words; the agent wants typed events."""

    def emit(word: str) -> None:
        if word == "press":
            put(ev.Press())
        elif word == "release":
            put(ev.Release())
        elif word == "cancel":
            put(ev.Cancel())
        elif word.startswith("long_press:"):
            put(ev.LongPress(word.split(":", 1)[1]))

    return emit


def _build_camera(config: Config, toolbox: Any, put: Callable[[object], None]) -> tuple[Any, bool]:
    from .camera import LOOK_DECLARATION, FrameSampler, open_camera

    backend = open_camera(config.camera)
    if backend is None:
        return NullCamera(), False
    sampler = FrameSampler(
        backend,
        config.camera,
        lambda jpeg: put(ev.CameraFrame(jpeg)),
        on_state=lambda state, detail="": put(ev.PartState("camera", state, detail or "")),
    )
    if config.camera.mode == "on_demand":
        toolbox.add_builtin(LOOK_DECLARATION, sampler.look)
    return sampler, True


def _build_audio(config: Config, uplink: Uplink, put: Callable[[object], None]) -> tuple[Any, Any]:
    if config.audio.backend == "none":
        return NullMicrophone(), NullSpeaker()
    from .audio import HalfDuplexGate, Microphone, Speaker

    def speaker_event(name: str) -> None:
        put(ev.SpeakerStarted() if name == "started" else ev.SpeakerIdle())

    speaker = Speaker(
        config.audio,
        on_event=speaker_event,
        on_state=lambda state, detail="": put(ev.PartState("speaker", state, detail or "")),
    )
    mic = Microphone(
        config.audio,
        uplink.feed,  # mic thread -> session, without a hop (turns.py)
        on_state=lambda state, detail="": put(ev.PartState("mic", state, detail or "")),
        gate=HalfDuplexGate(speaker, config.audio),
    )
    return mic, speaker


def build_agent(
    config: Config,
    *,
    api_key: str | None = None,
    credentials: Callable[[], Any] | None = None,
    pin_factory: Any = None,
    notifier: Any = None,
    sslopt: dict[str, Any] | None = None,
) -> Any:
    """The real agent: parts from the config, a link over real WebSockets."""
    from .agent import Agent
    from .errors import PiAgentError
    from .link import Link, ThreadConnector
    from .session import Credentials, fetch_token

    if credentials is None:
        if config.live.token_command:
            command = config.live.token_command
            credentials = lambda: Credentials(token=fetch_token(command))  # noqa: E731
        elif api_key:
            credentials = lambda: Credentials(api_key=api_key)  # noqa: E731
        else:
            raise PiAgentError("no credentials: give api_key= or set live.token_command")
    sslopt = dict(sslopt or {})
    if config.live.ca_file:
        sslopt.setdefault("ca_certs", config.live.ca_file)
    inbox = Inbox()
    uplink = Uplink(
        manual_activity=not config.live.hands_free,
        max_buffered_s=config.agent.max_buffered_speech_s,
    )
    parts = build_parts(config, inbox, uplink, pin_factory=pin_factory, notifier=notifier)
    router: dict[str, Any] = {}
    connector = ThreadConnector(
        config.live,
        credentials=credentials,
        sslopt=sslopt,
        on_event=lambda session, event: router["agent"].on_session_event(session, event),
        emit=inbox.put,
    )
    link = Link(config.live, config.agent, connector)
    agent = Agent(config, parts, link, inbox=inbox, uplink=uplink)
    router["agent"] = agent
    return agent
