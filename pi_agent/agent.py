"""The agent: one thread owns the conversation's state; everyone else enqueues.

Inputs (the button, the control socket, the session reader, the speaker, the
tool runner, the camera, the connector thread) only put ``(kind, payload)``
tuples on one queue. :meth:`Agent.run` takes them off one at a time, changes
state, drives the status light, and sends through the current session. So
there are no locks around the state, and every transition is logged at info
level with the turn number.

Keeping the conversation alive:

* ``sessionResumption`` is always on; the newest resumable handle is kept.
* ``goAway``: a new connection is opened with the newest handle while the old
  one still works, and swapped in when no turn is in flight (a busy turn
  finishes on the old connection first, so the new one resumes with its
  handle). The LED shows nothing: roll-over is not an error.
* A drop: capped exponential backoff with jitter, reset only after
  ``setupComplete``; a refused handle falls back to a fresh session; fatal
  errors (bad key, bad model) retry only every ``agent.fatal_retry_s``.
* Nothing lost: the user's turn (its audio, bounded) is kept until it is
  safe, i.e. until a resumption handle newer than the turn's ``turnComplete``
  arrived (handles are only issued between turns, so resuming from an older
  one would lose the turn). If the connection drops first, the whole turn is
  resent inside its own ``activityStart``/``activityEnd`` after reconnecting.
  A tool call of that turn is not run twice: when the model asks for the same
  call again, the result computed earlier (possibly while offline) is
  delivered. If words cannot be delivered, the error chime plays and the
  light shows why.
"""

from __future__ import annotations

import collections
import enum
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import protocol
from .config import Config
from .errors import ClosedError, PiAgentError, SessionError
from .link import Link, Retry
from .session import Credentials, LiveSession, MalformedMessage, SessionEnded, fetch_token
from .turns import PendingTurn, Playback, TurnMetrics, Uplink

log = logging.getLogger(__name__)


class State(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    READY = "ready"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    TOOL_RUNNING = "tool_running"
    RECONNECTING = "reconnecting"
    ERROR = "error"


BUSY_STATES = {State.LISTENING, State.THINKING, State.SPEAKING, State.TOOL_RUNNING}


@dataclass(frozen=True)
class _AnswerStarted:
    """The first chunk of an answer went straight to the speaker (see turns.Playback)."""


@dataclass
class _Reply:
    """A control request waiting for the agent thread's answer."""

    request: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    answer: dict[str, Any] = field(default_factory=dict)


def _ms(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start) * 1000.0, 1)


class Agent:
    """Build every part from the config and run the conversation until stopped.

    Seams for tests and the demo: ``credentials`` (a callable returning
    :class:`Credentials` for each new session), ``pin_factory`` (gpiozero),
    ``notifier`` (systemd), ``sslopt`` (TLS trust). Hardware parts that are
    switched off in the config are simply absent.
    """

    def __init__(
        self,
        config: Config,
        *,
        credentials: Callable[[], Credentials] | None = None,
        api_key: str | None = None,
        pin_factory: Any = None,
        notifier: Any = None,
        sslopt: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self._clock = clock
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
        self.link = Link(
            config.live,
            config.agent,
            credentials=credentials,
            sslopt=sslopt,
            on_event=self._on_session_event,
            report=self._put,
            clock=clock,
        )
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.stopping = threading.Event()
        self.stopped = threading.Event()
        self._changed = threading.Condition()
        self.state = State.IDLE
        self.transitions: collections.deque[State] = collections.deque(maxlen=500)
        self.muted = False
        self.error_kind: str | None = None
        self.last_error: str | None = None
        self.turn = 0
        self._answer_complete = True
        self.uplink = Uplink(
            manual_activity=not config.live.hands_free,
            max_buffered_s=config.agent.max_buffered_speech_s,
        )
        self._calls: dict[str, tuple[LiveSession, str, str]] = {}  # id -> asker, name, key
        self._tool_waiters: dict[str, list[str]] = {}  # call key -> ids asked again meanwhile
        self._transcript_in: list[str] = []
        self._transcript_out: list[str] = []
        self.metrics: list[TurnMetrics] = []
        self._current_metrics: TurnMetrics | None = None
        self._release_t: float | None = None
        self._first_audio_t: float | None = None
        self.counters = {
            "reconnects": 0,
            "rollovers": 0,
            "resent_turns": 0,
            "lost_turns": 0,
            "tool_calls": 0,
            "malformed": 0,
            "prompt_tokens": 0,
            "response_tokens": 0,
            "total_tokens": 0,
        }
        self.reconnect_durations_ms: list[float] = []
        self._build_parts(pin_factory, notifier)
        self.playback = Playback(self.speaker.play) if self.speaker is not None else None

    # ----------------------------------------------------------------- parts

    def _build_parts(self, pin_factory: Any, notifier: Any) -> None:
        cfg = self.config
        from .systemd import Notifier, ReadyGate, Watchdog

        self.notifier = notifier if notifier is not None else Notifier()
        self.ready_gate = ReadyGate(self.notifier, cfg.agent.ready_timeout_s, clock=self._clock)
        self.watchdog = Watchdog(self.notifier, healthy=self._healthy)

        from .devices import Devices, PushToTalk, StatusLight, make_pin_factory

        factory = pin_factory if pin_factory is not None else make_pin_factory(cfg.gpio)
        self.devices = Devices(cfg, pin_factory=factory)
        light_device = (
            self.devices.get(cfg.status_light.device) if cfg.status_light.device else None
        )
        self.light = StatusLight(light_device, cfg.status_light)
        self.ptt = None
        if cfg.ptt.device and not cfg.live.hands_free:
            self.ptt = PushToTalk(self.devices.get(cfg.ptt.device), cfg.ptt, self._emit_button)

        from .tools import ToolBox, ToolRunner

        self.toolbox = ToolBox(cfg.tools, self.devices)
        self.sampler = None
        from .camera import LOOK_DECLARATION, FrameSampler, open_camera

        backend = open_camera(cfg.camera)
        if backend is not None:
            self.sampler = FrameSampler(
                backend,
                cfg.camera,
                lambda jpeg: self._put("frame", jpeg),
                on_state=lambda state, detail=None: self._put("camera_state", (state, detail)),
            )
            if cfg.camera.mode == "on_demand":
                self.toolbox.add_builtin(LOOK_DECLARATION, self.sampler.look)
        self.runner = ToolRunner(self.toolbox, lambda r: self._put("tool_response", r))

        self.speaker = self.mic = None
        if cfg.audio.backend != "none":
            from .audio import HalfDuplexGate, Microphone, Speaker

            self.speaker = Speaker(
                cfg.audio,
                on_event=lambda ev: self._put("speaker", ev),
                on_state=lambda state, detail=None: self._put("audio_state", ("speaker", state)),
            )
            gate = HalfDuplexGate(self.speaker, cfg.audio)
            self.mic = Microphone(
                cfg.audio,
                self.uplink.feed,  # mic thread -> session, without a hop (turns.py)
                on_state=lambda state, detail=None: self._put("audio_state", ("mic", state)),
                gate=gate,
            )
        self.audio_states: dict[str, str] = {}
        self.camera_state: str | None = None

        self.control = None
        if cfg.control.enabled:
            from .control import ControlServer

            self.control = ControlServer(cfg.control.socket, int(cfg.control.mode, 8), self.request)

    # ----------------------------------------------------------------- inputs (any thread)

    def _put(self, kind: str, payload: Any = None) -> None:
        self._events.put((kind, payload))

    def _emit_button(self, event: str) -> None:
        self._put("button", event)

    def press(self) -> None:
        """Start talking (thread-safe; the button, the keyboard, the socket call this)."""
        self._put("button", "press")

    def release(self) -> None:
        """Stop talking: the model answers now."""
        self._put("button", "release")

    def say(self, text: str) -> None:
        """Send typed words as a user turn."""
        self._put("control", _Reply({"cmd": "say", "text": text}))

    def request(self, request: dict[str, Any], timeout: float = 3.0) -> dict[str, Any]:
        """Run a control command on the agent thread and return its answer."""
        if self.stopped.is_set():
            return {"ok": False, "error": "the agent is stopping"}
        reply = _Reply(request)
        self._put("control", reply)
        if not reply.done.wait(timeout):
            return {"ok": False, "error": "the agent did not answer in time"}
        return reply.answer

    def wait_until(self, predicate: Callable[[Agent], bool], timeout: float) -> bool:
        """Block until ``predicate(agent)`` holds after some event (for tests and the demo)."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    def stop(self) -> None:
        """Ask ``run()`` to shut down (safe from a signal handler)."""
        self.stopping.set()
        self._put("wake")

    def _on_session_event(self, session: LiveSession, event: object) -> None:
        """Reader thread: model audio for an expected answer goes straight to the speaker."""
        if type(event) is protocol.AudioChunk and self.playback is not None:
            first = self.playback.offer(session, event.pcm)
            if first is not None:
                if first:
                    self._put("server", (session, _AnswerStarted()))
                return
        self._put("server", (session, event))

    @property
    def _pending(self) -> PendingTurn | None:
        return self.uplink.turn

    @property
    def session(self) -> LiveSession | None:
        """The current connection (None while disconnected)."""
        return self.link.session

    @property
    def handle(self) -> str | None:
        """The newest resumption handle."""
        return self.link.handle

    # ----------------------------------------------------------------- main loop

    def run(self) -> int:
        """Start the parts, converse until ``stop()``, shut down in order; return exit code."""
        try:
            self._start_parts()
        except PiAgentError:
            self._shutdown()
            raise
        self.link.schedule(0.0)
        while not self.stopping.is_set():
            self.watchdog.tick()
            self.ready_gate.tick()
            try:
                kind, payload = self._events.get(timeout=self.link.wait_s(0.25))
            except queue.Empty:
                kind, payload = "tick", None
            try:
                self._handle(kind, payload)
            except Exception:
                log.exception("agent failed handling %s; carrying on", kind)
            self._maybe_connect()
            with self._changed:
                self._changed.notify_all()
        return self._shutdown()

    def _healthy(self) -> bool:
        return not self.stopping.is_set()

    def _start_parts(self) -> None:
        self._set_state(State.IDLE, "starting")
        if self.speaker is not None:
            self.speaker.start()
        if self.mic is not None:
            self.mic.start()
        if self.sampler is not None:
            self.sampler.start()
        self.runner.start()
        if self.control is not None:
            self.control.start()
        self.ready_gate.devices_up()

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "server":
            session, event = payload
            self._on_server(session, event)
        elif kind == "button":
            self._on_button(payload)
        elif kind == "speaker":
            self._on_speaker(payload)
        elif kind == "tool_response":
            self._on_tool_response(payload)
        elif kind == "frame":
            if self.session is not None and self.session.is_open:
                self.session.send_video(payload)
        elif kind == "connected":
            self._on_connected(*payload)
        elif kind == "connect_failed":
            self._on_connection_error(self.link.connect_failed(payload), payload)
        elif kind == "control":
            self._on_control(payload)
        elif kind == "audio_state":
            self._on_audio_state(*payload)
        elif kind == "camera_state":
            self.camera_state = payload[0]
            if payload[0] == "error":
                log.warning("camera disabled: %s", payload[1])
        elif kind in ("tick", "wake"):
            self._check_pending_expiry()

    # ----------------------------------------------------------------- state

    def _set_state(self, state: State, light: str | None = None) -> None:
        changed = state is not self.state
        self.state = state
        pattern = light or self._light_for(state)
        if changed:
            log.info("turn %d: %s", self.turn, state.value)
            self.transitions.append(state)
        try:
            self.light.show(pattern)
        except Exception:
            log.exception("status light failed")
        detail = f" ({self.last_error})" if state is State.ERROR and self.last_error else ""
        self.notifier.status(f"{state.value}{' (muted)' if self.muted else ''}{detail}")

    def _light_for(self, state: State) -> str:
        if state is State.ERROR:
            return {"auth": "error_auth", "config": "error_auth", "audio": "error_audio"}.get(
                self.error_kind or "", "error_network"
            )
        if state is State.READY:
            if "missing" in self.audio_states.values() or "error" in self.audio_states.values():
                return "error_audio"
            return "muted" if self.muted else "ready"
        if state is State.IDLE:
            return "starting"
        return state.value

    def _refresh_light(self) -> None:
        self._set_state(self.state)

    # ----------------------------------------------------------------- connection

    def _maybe_connect(self) -> None:
        if self.stopping.is_set() or not self.link.due():
            return
        if self.state not in BUSY_STATES and not self.link.is_open:
            self._set_state(State.CONNECTING if self.link.attempt == 0 else State.RECONNECTING)
        self.link.open(self._session_setup)

    def _session_setup(self, handle: str | None) -> dict[str, Any]:
        cfg = self.config
        camera_on = self.sampler is not None
        options = protocol.SetupOptions(
            model=cfg.live.model,
            voice=cfg.live.voice,
            system_instruction=cfg.live.system_instruction,
            temperature=cfg.live.temperature,
            function_declarations=self.toolbox.function_declarations(),
            automatic_activity_detection=cfg.live.hands_free,
            input_transcription=cfg.live.input_transcription,
            output_transcription=cfg.live.output_transcription,
            session_resumption=True,
            resumption_handle=handle,
            context_window_compression=cfg.live.context_compression or camera_on,
            media_resolution=cfg.camera.media_resolution if camera_on else None,
        )
        return protocol.build_setup(options)

    def _on_connected(self, session: LiveSession, handle: str | None, creds: Any) -> None:
        if self.stopping.is_set():
            self.link.discard(session)
            return
        if self.link.is_open and self._turn_in_flight():
            # A turn is in flight on the old connection; the new one would resume from a
            # handle older than that turn. Drop it and roll over when the turn is done.
            log.info("roll-over deferred until turn %d is complete", self.turn)
            self.link.discard(session)
            self.link.rollover_pending = True
            return
        old = self.link.adopt(session, handle, creds)
        if old is not None:
            self.counters["rollovers"] += 1
            old.close()
            log.info("rolled over to a new connection (resumed=%s)", self.link.resumed)
        took = self.link.reconnect_took_ms()
        if took is not None:
            self.reconnect_durations_ms.append(took)
            del self.reconnect_durations_ms[:-100]
            log.info("reconnected after %.0f ms (resumed=%s)", took, self.link.resumed)
        first = not self.ready_gate.is_ready
        self.ready_gate.session_ready()
        self.error_kind = None
        self.last_error = None
        if self.state not in BUSY_STATES:
            self._set_state(State.READY)
        if first and self.speaker is not None:
            self.speaker.play_chime("connected")
        if self.config.live.hands_free:
            if self.playback is not None:
                self.playback.open(session)
            if self.mic is not None and not self.muted:
                self.uplink.stream(True)
                self.mic.start_capture(gated=True)
        pending = self._pending
        if pending is not None and pending.completed:
            self.uplink.forget()  # answered already; only its handle was missing
        resent = self.uplink.attach(session, resend=True)
        if resent is not None:
            self.counters["resent_turns"] += 1
            if resent.ended:
                self._expect_answer(session)
                if self.state is not State.LISTENING:
                    self._set_state(State.THINKING)

    def _on_connection_error(self, retry: Retry, error: SessionError) -> None:
        """Show what the link decided after a failed connect or a lost connection."""
        if self.stopping.is_set():
            return
        if retry.reason == "rollover":
            log.warning("roll-over connection failed (%s); trying again", error)
            return
        self.last_error = str(error)
        if retry.reason == "handle":
            log.warning("the server no longer knows our session; starting a fresh one")
            return
        if retry.reason == "fatal":
            self.error_kind = error.kind
            log.error("%s. %s", error, _fix_for(error))
            self._fail_pending("the session cannot be opened")
            self._set_state(State.ERROR)
            return
        self.counters["reconnects"] += 1
        log.warning("connection lost (%s); retrying in %.1f s", error, retry.delay)
        self.error_kind = "network"
        if self.link.attempt >= 4:
            self._set_state(State.ERROR)
        elif self.state not in BUSY_STATES:
            self._set_state(State.RECONNECTING)

    def _session_ended(self, session: LiveSession, error: SessionError | None) -> None:
        if not self.link.lost(session):
            return  # an old connection after a roll-over
        self.uplink.detach()
        if self.playback is not None:
            self.playback.close()
        if self.stopping.is_set():
            return
        if self.speaker is not None and self.state in (State.SPEAKING, State.THINKING):
            self.speaker.end_turn()
        if self.state in (State.THINKING, State.SPEAKING, State.TOOL_RUNNING):
            self._set_state(State.READY if error is None else State.RECONNECTING)
        if self._pending is not None:
            log.info("turn %d not answered yet; keeping its words to resend", self._pending.number)
        error = error or SessionError("the connection closed")
        self._on_connection_error(self.link.failed(error), error)

    def _new_metrics(self) -> None:
        self._current_metrics = TurnMetrics(self.turn)
        self.metrics.append(self._current_metrics)
        del self.metrics[:-100]

    def _turn_in_flight(self) -> bool:
        """The server's side of a turn is open (an answer still playing locally is not)."""
        if self.state is State.SPEAKING:
            return not self._answer_complete
        return self.state in BUSY_STATES

    def _expect_answer(self, session: LiveSession) -> None:
        """The user's turn is on ``session``: its answer may play without a hop."""
        self._answer_complete = False
        if self.playback is not None:
            self.playback.open(session)

    def _fail_pending(self, why: str) -> None:
        pending = self._pending
        if pending is None:
            return
        self.counters["lost_turns"] += 1
        log.error("turn %d could not be delivered (%s); please ask again", pending.number, why)
        self.uplink.forget()
        if self.speaker is not None:
            self.speaker.play_chime("error")

    def _check_pending_expiry(self) -> None:
        pending = self._pending
        if pending is None or not pending.ended:
            return
        if self.session is not None and self.session.is_open:
            return
        if pending.ended_at is not None:
            limit = max(60.0, self.config.agent.max_buffered_speech_s * 2)
            if self._clock() - pending.ended_at > limit:
                self._fail_pending(f"offline for more than {limit:.0f} s")
                self._refresh_light()

    # ----------------------------------------------------------------- user input

    def _on_button(self, event: str) -> None:
        if event == "press":
            self._start_talking()
        elif event == "release":
            self._stop_talking()
        elif event == "cancel":  # a tap shorter than ptt.min_press_ms
            self._cancel_turn()
        elif event.startswith("long_press:"):
            action = event.split(":", 1)[1]
            log.info("long press: %s", action)
            if action == "cancel":
                self._cancel_turn()
            elif action == "mute":
                self._set_muted(not self.muted)
            elif action == "restart_session":
                self._restart_session()

    def _start_talking(self) -> None:
        if self.config.live.hands_free:
            # No activity markers with automatic VAD: a press only barges in.
            if self.speaker is not None and self.state is State.SPEAKING:
                self.speaker.flush()
                self._set_state(State.READY)
            return
        if self.state is State.LISTENING:
            return
        if self.muted:
            log.info("press ignored: the microphone is muted")
            return
        now = self._clock()
        self._release_t = None
        self._first_audio_t = None
        if self.playback is not None:
            self.playback.close()  # nothing of the old answer plays after this
        if self.speaker is not None and self.state in (State.SPEAKING, State.THINKING):
            took = self.speaker.flush()
            log.info("barge-in: playback flushed in %.1f ms", took * 1000)
        self.turn += 1
        self._new_metrics()
        self._forget_pending_if_answered()
        self._transcript_in.clear()
        self._transcript_out.clear()
        self._set_state(State.LISTENING)
        if self.ptt is not None:
            self.ptt.set_talking(True)  # toggle mode: a press from elsewhere counts too
        if self.uplink.begin(PendingTurn(self.turn)):
            self._current_metrics.press_to_start_ms = _ms(now, self._clock())
        if self.speaker is not None:
            self.speaker.play_chime("press")
        if self.mic is not None:
            # The pre-roll goes through the uplink before any live chunk.
            self.mic.start_capture(gated=False, deliver_preroll=True)
        if self.sampler is not None and self.config.camera.mode == "while_talking":
            self.sampler.start_talking()

    def _stop_talking(self) -> None:
        if self.state is not State.LISTENING:
            return
        if self.mic is not None and not self.config.live.hands_free:
            self.mic.stop_capture()
        if self.sampler is not None and self.config.camera.mode == "while_talking":
            self.sampler.stop_talking()
        self._release_t = self._clock()
        if self.ptt is not None:
            self.ptt.set_talking(False)
        sent = self.uplink.end(self._release_t)
        pending = self._pending
        if pending is not None and self._current_metrics is not None:
            self._current_metrics.speech_bytes = pending.bytes
        if self.speaker is not None:
            self.speaker.play_chime("release")
        session = self.session
        if sent and session is not None:
            self._expect_answer(session)
            self._set_state(State.THINKING)
        else:
            self._set_state(State.RECONNECTING if self.link.connect_at else State.THINKING)
            log.info("turn %d kept until the connection is back", self.turn)

    def _cancel_turn(self) -> None:
        if self.state is State.LISTENING:
            if self.mic is not None:
                self.mic.stop_capture()
            if self.ptt is not None:
                self.ptt.set_talking(False)
            self.uplink.end(self._clock())  # the activity must be closed all the same
        if self.playback is not None:
            self.playback.close()
        if self.speaker is not None:
            self.speaker.flush()
        self.uplink.forget()
        self._set_state(State.READY if self.session is not None else State.RECONNECTING)

    def _set_muted(self, muted: bool) -> None:
        if muted == self.muted:
            return
        self.muted = muted
        log.info("microphone %s", "muted" if muted else "unmuted")
        if self.mic is not None:
            if muted:
                if self.state is State.LISTENING:
                    self._stop_talking()
                self.mic.stop_capture()
                if self.config.live.hands_free:
                    self.uplink.stream(False)
                    self.uplink.send(protocol.audio_stream_end())
            elif self.config.live.hands_free and self.session is not None:
                self.uplink.stream(True)
                self.mic.start_capture(gated=True)
        self._refresh_light()

    def _restart_session(self) -> None:
        log.info("restarting the session at the user's request")
        old = self.link.restart()
        self.uplink.detach()
        if self.playback is not None:
            self.playback.close()
        if old is not None:
            old.close()
        self._set_state(State.CONNECTING)

    # ----------------------------------------------------------------- server events

    def _on_server(self, session: LiveSession, event: object) -> None:
        if isinstance(event, SessionEnded):
            self._session_ended(session, event.error)
            return
        if isinstance(event, MalformedMessage):
            self.counters["malformed"] += 1
            return
        if isinstance(event, protocol.GoAway):
            if session is self.session:
                self._on_go_away(event)
            return
        if isinstance(event, protocol.SessionResumptionUpdate):
            if session is self.session and event.resumable and event.handle:
                self.link.handle = event.handle
                if self._pending is not None and self._pending.completed:
                    self.uplink.forget()  # the handle covers the whole turn now
            return
        if session is not self.session:
            return
        if isinstance(event, _AnswerStarted):
            self._on_answer_started()
        elif isinstance(event, protocol.AudioChunk):
            self._on_model_audio(event)
        elif isinstance(event, protocol.InputTranscription):
            self._transcript_in.append(event.text)
        elif isinstance(event, protocol.OutputTranscription):
            self._transcript_out.append(event.text)
        elif isinstance(event, protocol.ModelText):
            if not event.thought:
                self._transcript_out.append(event.text)
        elif isinstance(event, protocol.Interrupted):
            self._on_interrupted()
        elif isinstance(event, protocol.GenerationComplete):
            if self.speaker is not None:
                self.speaker.end_turn()
        elif isinstance(event, protocol.TurnComplete):
            self._on_turn_complete(event)
        elif isinstance(event, protocol.ToolCall):
            self._on_tool_call(session, event)
        elif isinstance(event, protocol.ToolCallCancellation):
            cancelled = self.runner.cancel(list(event.ids))
            for call_id in event.ids:
                self._calls.pop(call_id, None)
            log.info("tool calls cancelled by the server: %s", ", ".join(cancelled) or "none")
            if not self.runner.busy and self.state is State.TOOL_RUNNING:
                self._set_state(State.THINKING)
        elif isinstance(event, protocol.Usage):
            self.counters["prompt_tokens"] += event.prompt_tokens
            self.counters["response_tokens"] += event.response_tokens
            self.counters["total_tokens"] += event.total_tokens

    def _forget_pending_if_answered(self) -> None:
        """A new turn starts: the previous one is dropped (lost only if never answered)."""
        pending = self._pending
        if pending is not None and not pending.completed:
            if self.session is None or not self.session.is_open:
                self._fail_pending("a new turn started before it was delivered")
        self.uplink.forget()

    def _on_model_audio(self, event: protocol.AudioChunk) -> None:
        """Audio nobody asked for on this path (no open playback): the agent decides."""
        if self.state is State.LISTENING and not self.config.live.hands_free:
            return  # the user barged in: the server will send interrupted
        if self.speaker is not None:
            self.speaker.play(event.pcm)
        self._on_answer_started()

    def _on_answer_started(self) -> None:
        if self._first_audio_t is None:
            self._first_audio_t = now = self._clock()
            if self._current_metrics is not None:
                self._current_metrics.release_to_first_audio_ms = _ms(self._release_t, now)
        if self.state is not State.SPEAKING and self.state is not State.LISTENING:
            self._set_state(State.SPEAKING)

    def _on_interrupted(self) -> None:
        self._answer_complete = True
        start = self._clock()
        if self.speaker is not None:
            self.speaker.flush()
        took = _ms(start, self._clock())
        if self.playback is not None:
            self.playback.rearm()
        if self._current_metrics is not None:
            self._current_metrics.interrupt_to_silence_ms = took
        log.info("model interrupted; playback flushed in %s ms", took)
        self._log_transcripts(interrupted=True)
        if self.state in (State.SPEAKING, State.THINKING, State.TOOL_RUNNING):
            self._set_state(State.READY)

    def _on_turn_complete(self, event: protocol.TurnComplete) -> None:
        self._answer_complete = True
        if self._pending is not None and self._pending.ended:
            self._pending.completed = True
        if self.playback is not None:
            self.playback.rearm()  # hands-free: the next answer's first chunk is news again
        if self.speaker is not None:
            self.speaker.end_turn()
        self._log_transcripts()
        metrics = self._current_metrics
        if metrics is not None:
            log.info(
                "turn %d metrics: %s",
                metrics.turn,
                ", ".join(f"{k}={v}" for k, v in metrics.as_dict().items() if k != "turn"),
            )
        if event.reason:
            log.info("turn %d ended: %s", self.turn, event.reason)
        speaking = self.speaker is not None and self.speaker.is_playing
        if self.state in (State.THINKING, State.TOOL_RUNNING) or (
            self.state is State.SPEAKING and not speaking
        ):
            if not self.runner.busy:
                self._set_state(State.READY)
        if self.link.rollover_pending:
            self.link.rollover_pending = False
            self.link.schedule(0.05)  # after the sessionResumptionUpdate that follows

    def _on_go_away(self, event: protocol.GoAway) -> None:
        left = f"{event.time_left_s:.0f} s" if event.time_left_s is not None else "soon"
        log.info("server roll-over announced (goAway, %s left)", left)
        if self._turn_in_flight():
            self.link.rollover_pending = True
        else:
            self.link.schedule(0.0)

    def _log_transcripts(self, interrupted: bool = False) -> None:
        if not self.config.agent.log_transcripts:
            self._transcript_in.clear()
            self._transcript_out.clear()
            return
        if self._transcript_in:
            log.info("turn %d you: %s", self.turn, "".join(self._transcript_in).strip())
            self._transcript_in.clear()
        if self._transcript_out:
            said = "".join(self._transcript_out).strip()
            log.info(
                "turn %d gemini: %s%s", self.turn, said, " [interrupted]" if interrupted else ""
            )
            self._transcript_out.clear()

    # ----------------------------------------------------------------- tools

    def _on_tool_call(self, session: LiveSession, event: protocol.ToolCall) -> None:
        for call in event.calls:
            self.counters["tool_calls"] += 1
            log.info("turn %d tool call %s(%s) id=%s", self.turn, call.name, call.args, call.id)
            key = _call_key(call.name, call.args)
            self._calls[call.id] = (session, call.name, key)
            pending = self._pending
            if pending is not None and key in pending.tool_results:
                # The resent turn asks again: never act twice. A finished call's result is
                # sent under the new id; a call still running answers both ids when done.
                done = pending.tool_results[key]
                if done:
                    log.info("tool %s already ran for this turn; sending its result", call.name)
                    self._send_tool_result(call.id, done["response"])
                else:
                    self._tool_waiters.setdefault(key, []).append(call.id)
                continue
            if pending is not None:
                pending.tool_results[key] = {}  # running
            self.runner.submit(call.id, call.name, call.args)
        if self.state is not State.LISTENING:
            self._set_state(State.TOOL_RUNNING)

    def _on_tool_response(self, response: dict[str, Any]) -> None:
        """A result from the tool runner: log it, keep it for a resend, send it."""
        call_id = response.get("id", "")
        _session, _name, key = self._calls.get(call_id, (None, None, ""))
        pending = self._pending
        if pending is not None and key in pending.tool_results:
            pending.tool_results[key] = response
        result = response.get("response", {})
        if "error" in result:
            log.warning("tool %s failed: %s", response.get("name"), result["error"])
        else:
            log.info("tool %s -> %s", response.get("name"), result.get("result"))
        self._send_tool_result(call_id, result)
        for waiting in self._tool_waiters.pop(key, []):
            self._send_tool_result(waiting, result)
        self._after_tool_response()

    def _send_tool_result(self, call_id: str, result: dict[str, Any]) -> None:
        """Answer ``call_id`` on the connection that asked, if it is still the current one.

        A resumed session does not know calls made after its handle (they would close it
        with 1008); the turn is resent instead and the model asks again.
        """
        asked, name, _key = self._calls.pop(call_id, (None, "", ""))
        session = self.session
        if asked is None or asked is not session or not session.is_open:
            log.info("tool %s finished after its connection ended; kept for the resent turn", name)
            return
        try:
            session.send(
                protocol.tool_response([{"id": call_id, "name": name, "response": result}])
            )
        except (ClosedError, SessionError):
            log.info("tool %s result not sent: the connection just ended", name)

    def _after_tool_response(self) -> None:
        if not self.runner.busy and self.state is State.TOOL_RUNNING:
            self._set_state(State.THINKING)

    # ----------------------------------------------------------------- speaker, audio state

    def _on_speaker(self, event: str) -> None:
        if event == "started":
            now = self._clock()
            if self._current_metrics is not None and self._first_audio_t is not None:
                if self._current_metrics.first_audio_to_play_ms is None:
                    self._current_metrics.first_audio_to_play_ms = _ms(self._first_audio_t, now)
        elif event == "idle":
            if self.state is State.SPEAKING and not self.runner.busy:
                self._set_state(State.READY)

    def _on_audio_state(self, which: str, state: str) -> None:
        previous = self.audio_states.get(which)
        self.audio_states[which] = state
        if previous == state:
            return
        if state in ("missing", "error"):
            log.warning("%s unavailable (%s)", "microphone" if which == "mic" else which, state)
        if self.state in (State.READY, State.IDLE):
            self._refresh_light()

    # ----------------------------------------------------------------- control socket

    def _on_control(self, reply: _Reply) -> None:
        request = reply.request
        cmd = request.get("cmd")
        answer: dict[str, Any] = {"ok": True}
        try:
            if cmd == "press":
                self._start_talking()
            elif cmd == "release":
                self._stop_talking()
            elif cmd == "say":
                self._say(str(request["text"]))
            elif cmd == "mute":
                self._set_muted(True)
            elif cmd == "unmute":
                self._set_muted(False)
            elif cmd == "volume":
                if self.speaker is None:
                    raise PiAgentError("there is no speaker (audio.backend is none)")
                self.speaker.volume = float(request["value"])
                answer["volume"] = self.speaker.volume
            elif cmd == "status":
                answer["status"] = self.status()
            else:
                raise PiAgentError(f"unknown command {cmd!r}")
        except PiAgentError as exc:
            answer = {"ok": False, "error": str(exc)}
        reply.answer = answer
        reply.done.set()

    def _say(self, text: str) -> None:
        if self.state is State.LISTENING:
            raise PiAgentError("the user is talking; release first")
        if self.playback is not None:
            self.playback.close()
        if self.speaker is not None and self.state in (State.SPEAKING, State.THINKING):
            self.speaker.flush()
        self.turn += 1
        self._new_metrics()
        self._release_t = self._clock()
        self._first_audio_t = None
        self._forget_pending_if_answered()
        log.info("turn %d you (typed): %s", self.turn, text)
        turn = PendingTurn(self.turn, text=text, ended=True, ended_at=self._clock())
        session = self.session
        if self.uplink.say(turn) and session is not None:
            self._expect_answer(session)
            self._set_state(State.THINKING)
        else:
            log.info("turn %d kept until the connection is back", self.turn)

    def status(self) -> dict[str, Any]:
        """A snapshot for ``pi-agent ctl status`` (agent thread only)."""
        session = self.session
        return {
            "state": self.state.value,
            "muted": self.muted,
            "turn": self.turn,
            "connection": {
                "connected": session is not None and session.is_open,
                "resumable": self.handle is not None,
                "model": self.config.live.model,
                "reconnecting_in_s": (
                    round(max(0.0, self.link.connect_at - self._clock()), 1)
                    if self.link.connect_at is not None
                    else None
                ),
            },
            "last_error": self.last_error,
            "devices": self.devices.states(),
            "audio": {
                "mic": self.mic.state if self.mic is not None else "off",
                "speaker": self.speaker.state if self.speaker is not None else "off",
                "mic_overflows": self.mic.overflows if self.mic is not None else 0,
                "speaker_underruns": self.speaker.underruns if self.speaker is not None else 0,
                "volume": self.speaker.volume if self.speaker is not None else None,
            },
            "camera": self.camera_state or ("off" if self.sampler is None else "ok"),
            "counters": dict(self.counters),
            "reconnect_durations_ms": self.reconnect_durations_ms[-10:],
            "last_turn": self.metrics[-1].as_dict() if self.metrics else None,
        }

    # ----------------------------------------------------------------- shutdown

    def _shutdown(self) -> int:
        """Stop producers first, then the link, then consumers, then the pins."""
        log.info("shutting down")
        self.notifier.stopping()
        clean = True

        def stop(part: Any, what: str) -> None:
            nonlocal clean
            if part is None:
                return
            try:
                part.stop(1.0)
            except Exception as exc:
                clean = False
                log.error("%s did not stop cleanly: %s", what, exc)

        if self.mic is not None:
            try:
                self.mic.stop_capture()
            except Exception:
                pass
        stop(self.mic, "microphone")
        stop(self.sampler, "camera")
        stop(self.control, "control socket")
        self.link.close(1.0)
        stop(self.runner, "tool runner")
        stop(self.speaker, "speaker")
        try:
            self.devices.safe_state()
            self.light.show("off")
        except Exception:
            log.exception("could not restore safe GPIO state")
            clean = False
        self.devices.close()
        self.stopped.set()
        # Control requests that raced with shutdown get an answer instead of a timeout.
        while True:
            try:
                kind, payload = self._events.get_nowait()
            except queue.Empty:
                break
            if kind == "control":
                payload.answer = {"ok": False, "error": "the agent is stopping"}
                payload.done.set()
            elif kind == "connected":
                payload[0].close(1.0)
        log.info("stopped")
        return 0 if clean else 1


def _call_key(name: str, args: dict[str, Any]) -> str:
    return name + json.dumps(args, sort_keys=True, default=str)


def _fix_for(error: SessionError) -> str:
    """One line telling the user what to do about a fatal error."""
    reason = (error.reason or str(error)).lower()
    if error.kind == "auth":
        return (
            "Check the API key (GEMINI_API_KEY, live.api_key_file or the systemd credential); "
            "retrying every few minutes"
        )
    if "not found" in reason and "model" in reason:
        return "Check live.model (e.g. gemini-3.8-live) and live.api_version; retrying slowly"
    if error.code == 404:
        return "Check live.endpoint and live.api_version; retrying slowly"
    return "The server rejected the session setup; check the config; retrying slowly"
