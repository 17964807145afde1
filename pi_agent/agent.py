"""The conversation: one state machine on one thread; everyone else enqueues typed events.

``Agent(config, parts, link, clock=...)`` owns no hardware and opens no socket
itself: :mod:`pi_agent.parts` builds the parts (absent ones are null
objects), :class:`~pi_agent.link.Link` decides when to (re)connect, and every
input arrives as a frozen dataclass from :mod:`pi_agent.events`, dispatched
by type. Tests drive it with fake parts, a fake link and a fake clock, with
no sockets and no threads (tests/test_conversation.py, tests/test_model.py).

The state is a few independent facts (is the user talking, which answers are
still to come and which of them the user still wants, is audio playing, is a
tool running, is the link up and if not why) and what the light, status,
systemd and observers show is *derived* from them after every event
(:meth:`Agent._derive`), so it can never disagree with them. Rules that hold
whatever the order of events:

* a release always ends the user's turn (``activityEnd`` sent, or recorded in
  the pending turn so the resend carries it); no audio while the button is up;
  ``activityStart``/``activityEnd`` alternate on every connection
  (:class:`~pi_agent.turns.Uplink`);
* the user's words are kept until a resumption handle newer than their answer
  arrives, resent after a drop, and only reported lost after
  ``agent.pending_turn_ttl_s`` offline (or at once if the key/model is bad);
* a link that cannot send, or is silent while an answer is awaited, is closed
  and reconnected (:meth:`Link.check`); a stalled or flooding microphone ends
  the turn cleanly and is reported as a mic fault.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from . import events as ev
from . import protocol
from .answers import ModelAnswers
from .commands import Commands
from .config import Config
from .errors import ClosedError, PiAgentError
from .events import Inbox
from .ledger import ToolLedger
from .link import Link
from .linking import LinkEvents
from .logs import escape
from .parts import Parts
from .session import LiveSession, MalformedMessage, SessionEnded
from .status import Display, State, build_status, fix_for, ms
from .turns import PendingTurn, Playback, TurnMetrics, Uplink

log = logging.getLogger(__name__)

_PART_NAMES = frozenset(
    {
        "devices",
        "light",
        "ptt",
        "toolbox",
        "runner",
        "sampler",
        "mic",
        "speaker",
        "control",
        "notifier",
    }
)
MIC_STALL_S = 1.0  # no chunk for this long while the mic should deliver: a mic fault
RING_EVERY_S = 2.5  # a ringing timer chimes this often...
RING_MAX_S = 60.0  # ...until a press, or for this long


class Agent(ModelAnswers, LinkEvents, Display, Commands):
    """The conversation state machine (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        parts: Parts,
        link: Link,
        *,
        clock: Callable[[], float] = time.monotonic,
        inbox: Inbox | None = None,
        uplink: Uplink | None = None,
    ):
        self.config = config
        self.parts = parts
        self.link = link
        self._clock = clock
        self.inbox = inbox if inbox is not None else Inbox()
        self.uplink = (
            uplink
            if uplink is not None
            else Uplink(
                manual_activity=not config.live.hands_free,
                max_buffered_s=config.agent.max_buffered_speech_s,
            )
        )
        self.uplink.on_dead = lambda session: self.inbox.put(ev.Wake())
        self.playback = Playback(parts.speaker.play)
        self.ledger = ToolLedger()
        self._stop_requested = False
        #: Reads the config file again (SIGHUP); None when running on built-in defaults.
        self.load_config: Callable[[], Config] | None = None
        self.stopped = threading.Event()
        self._changed = threading.Condition()
        self._handlers: dict[type, Callable[[Any], None]] = {
            ev.Press: self._on_press,
            ev.Release: self._on_release,
            ev.Cancel: self._on_cancel,
            ev.LongPress: self._on_long_press,
            ev.Command: self._on_command,
            ev.Connected: self._on_connected,
            ev.ConnectFailed: self._on_connect_failed,
            ev.FromServer: self._on_server,
            ev.AnswerStarted: lambda e: self._answer_started(e.session),
            ev.ToolFinished: self._on_tool_finished,
            ev.SpeakerStarted: self._on_speaker_started,
            ev.SpeakerIdle: self._on_speaker_idle,
            ev.PartState: self._on_part_state,
            ev.CameraFrame: self._on_camera_frame,
            ev.TimerDue: self._on_timer_due,
            ev.Reload: self._on_reload,
            ev.Wake: lambda e: None,
        }
        # What the user sees is derived from these facts:
        self.talking = False  # a push-to-talk turn is open (press .. release)
        self.talk_started: float | None = None
        self.answers: collections.deque[bool] = collections.deque()  # answers due; wanted?
        self.awaiting_since: float | None = None  # a wanted answer is due since
        self.speaking = False
        self.working = False  # interactionStatus IN_PROGRESS (extended thinking)
        self.muted = False
        self.ringing: list[Any] = []
        self._ring_started = self._ring_next = 0.0
        self.part_states: dict[str, tuple[str, str]] = {}
        self.turn = 0
        self.last_error: str | None = None
        self.state = State.IDLE
        self.light_state = "starting"
        self.transitions: collections.deque[State] = collections.deque(maxlen=500)
        self._shown: tuple[Any, ...] = ()
        self._connected_once = False
        self._say_waiters: list[tuple[int, Callable[[dict[str, Any]], None]]] = []
        self._transcript: dict[str, list[str]] = {"user": [], "model": []}
        self._tool_log: list[dict[str, Any]] = []
        self.metrics: list[TurnMetrics] = []
        self._metrics: TurnMetrics | None = None
        self._release_t: float | None = None
        self._first_audio_t: float | None = None
        self.counters = dict.fromkeys(
            [
                "reconnects",
                "rollovers",
                "resent_turns",
                "lost_turns",
                "tool_calls",
                "user_requests",
                "malformed",
                "mic_faults",
                "liveness_drops",
                "prompt_tokens",
                "response_tokens",
                "total_tokens",
            ],
            0,
        )
        self.reconnect_durations_ms: list[float] = []

    # ----------------------------------------------------------------- any thread

    def press(self) -> None:
        """Start talking (thread-safe; the button, the keyboard, tests call this)."""
        self.inbox.put(ev.Press("api"))

    def release(self) -> None:
        self.inbox.put(ev.Release("api"))

    def say(self, text: str) -> None:
        self.inbox.put(ev.Command({"cmd": "say", "text": text, "wait": False}, lambda r: None))

    def request(self, request: dict[str, Any], timeout: float = 3.0) -> dict[str, Any]:
        """Run a control command on the agent thread and wait for its answer."""
        if self.stopped.is_set():
            return {"ok": False, "error": "the agent is stopping"}
        done, box = threading.Event(), {}

        def respond(reply: dict[str, Any]) -> None:
            box.setdefault("reply", reply)
            done.set()

        self.inbox.put(ev.Command(dict(request), respond))
        if not done.wait(timeout):
            return {"ok": False, "error": "the agent did not answer in time"}
        return box["reply"]

    def wait_until(self, predicate: Callable[[Agent], bool], timeout: float) -> bool:
        """Block until ``predicate(agent)`` holds after some event (tests and the demo)."""
        deadline = time.monotonic() + timeout
        with self._changed:  # woken after every event; also looks now and then, since
            while not predicate(self):  # what it waits for may change off the agent thread
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.02))
        return True

    def stop(self, reason: str | None = None) -> None:
        """Ask ``run()`` to shut down. Signal-safe: sets a flag and writes to a pipe."""
        self._stop_reason = reason
        self._stop_requested = True
        self.inbox.put(ev.Wake())

    @property
    def stopping(self) -> bool:
        return self._stop_requested

    @property
    def session(self) -> LiveSession | None:
        return self.link.session

    @property
    def handle(self) -> str | None:
        return self.link.handle

    def __getattr__(self, name: str) -> Any:
        """``agent.speaker``, ``agent.mic``...: the parts, for tests and the demo."""
        if name in _PART_NAMES:
            return getattr(self.parts, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def error_kind(self) -> str | None:
        """Why the link is down (auth, model, network...), None while connected."""
        problem = self.link.problem
        return None if problem is None or self.link.is_open else problem.kind

    @property
    def _pending(self) -> PendingTurn | None:
        return self.uplink.turn

    # ----------------------------------------------------------------- the loop

    def start(self) -> None:
        """Begin the first connection, then start the parts (no loop: see ``run``).

        Connecting first lets TCP, TLS and setup overlap opening the audio
        devices and importing the camera's libraries (on their own threads).
        """
        self.link.schedule(0.0)
        self._maybe_connect()
        self.parts.start()
        self._refresh()

    def run(self) -> int:
        """Start, converse until ``stop()``, shut down in order; return the exit code."""
        try:
            self.start()
        except PiAgentError:
            self._shutdown()
            raise
        while not self._stop_requested:
            self.step(self.inbox.get(self._wait_s()))
        return self._shutdown()

    def step(self, event: object | None) -> None:
        """Handle one event (None: time passed), then deadlines, connecting and the display.

        Runs under ``_changed``'s lock (uncontended but for ``wait_until``), so a test or
        the demo waiting on the agent always sees the state between two events, never
        half-way through one.
        """
        with self._changed:
            if event is not None:
                handler = self._handlers.get(type(event))
                try:
                    if handler is None:
                        log.error("no handler for %r", type(event).__name__)
                    else:
                        handler(event)
                except Exception:
                    log.exception("agent failed handling %s; carrying on", type(event).__name__)
            try:
                self._check_deadlines()
                self._maybe_connect()
            except Exception:
                log.exception("agent failed checking its deadlines; carrying on")
            self._refresh()
            self.parts.watchdog.tick()
            self.parts.ready_gate.tick()
            self._changed.notify_all()

    def _wait_s(self) -> float | None:
        """Sleep until the next deadline: none at all when idle and connected."""
        now = self._clock()
        times = [self.link.next_deadline(self.awaiting_since, self.talking)]
        pending = self._pending
        if pending is not None and pending.ended and pending.ended_at is not None:
            if not self.link.is_open:
                times.append(pending.ended_at + self.config.agent.pending_turn_ttl_s)
        if self.talking:
            times.append(now + MIC_STALL_S / 2)
        if self.ringing:
            times.append(min(self._ring_next, self._ring_started + RING_MAX_S))
        times.append(self.parts.watchdog.next_due())
        times.append(self.parts.ready_gate.next_due())
        due = [t for t in times if t is not None]
        return max(0.0, min(due) - now) if due else None

    # ----------------------------------------------------------------- the user

    def _on_press(self, event: ev.Press) -> None:
        if self.ringing:
            self._stop_ringing()
            return
        if self.config.live.hands_free:  # no activity markers: a press only barges in
            self._barge_in()
            return
        if self.talking:
            return
        if self.muted:
            log.info("press ignored: the microphone is muted")
            return
        fatal = self.link.fatal
        if fatal is not None:
            log.error("cannot talk: %s. %s", fatal, fix_for(fatal))
            self.parts.speaker.play_chime("error")
            return
        now = self._clock()
        self._barge_in()
        self.turn += 1
        self.counters["user_requests"] += 1
        self._new_metrics()
        self._drop_previous_turn()
        self.talking, self.talk_started = True, now
        self.parts.ptt.set_talking(True)  # toggle mode: a press from elsewhere counts too
        if self.uplink.begin(PendingTurn(self.turn, started_at=now)) and self._metrics:
            self._metrics.press_to_start_ms = ms(now, self._clock())
        self.parts.speaker.play_chime("press")
        self.parts.mic.start_capture(gated=False, deliver_preroll=True)
        if self.config.camera.mode == "while_talking":
            self.parts.sampler.start_talking()
        self.link.hurry()

    def _on_release(self, event: ev.Release | None = None) -> None:
        """Ends the user's turn, whatever else is going on (the first invariant)."""
        if not self.talking:
            return
        self.talking = False
        now = self._release_t = self._clock()
        self.parts.ptt.set_talking(False)
        if not self.config.live.hands_free:
            self.parts.mic.stop_capture()
        self.parts.sampler.stop_talking()
        sent = self.uplink.end(now)
        pending = self._pending
        if pending is not None and self._metrics is not None:
            self._metrics.speech_bytes = pending.bytes
        self.parts.speaker.play_chime("release")
        fatal = self.link.fatal
        if sent:
            self._expect_answer(now)
        elif fatal is not None:
            self._fail_pending(f"it cannot be delivered: {fatal}")
        else:
            log.info("turn %d kept until the connection is back", self.turn)
            self.link.hurry()

    def _on_cancel(self, event: ev.Cancel | None = None) -> None:
        if self.talking:
            self.talking = False
            self.parts.ptt.set_talking(False)
            self.parts.mic.stop_capture()
            self.parts.sampler.stop_talking()
            if self.uplink.end(self._clock()):  # the activity must be closed all the same
                self.answers.append(False)  # its answer is not wanted
        self._barge_in()
        self.uplink.forget()
        self.ledger.new_turn()

    def _on_long_press(self, event: ev.LongPress) -> None:
        log.info("long press: %s", event.action)
        if event.action == "cancel":
            self._on_cancel()
        elif event.action == "mute":
            self._set_muted(not self.muted)
        elif event.action == "restart_session":
            log.info("restarting the session at the user's request")
            old = self.link.restart()
            self._connection_gone()
            if old is not None:
                old.close()

    def _barge_in(self) -> None:
        """Nothing of the answers due so far may play any more."""
        self.playback.close()
        if self.answers:
            self.answers = collections.deque(False for _ in self.answers)
        self.awaiting_since = None
        if self.speaking or self.parts.speaker.is_playing:
            took = self.parts.speaker.flush()
            log.info("barge-in: playback flushed in %.1f ms", took * 1000)
        self.speaking = False

    def _drop_previous_turn(self) -> None:
        pending = self._pending
        if pending is not None and not pending.completed and not self.link.is_open:
            self._fail_pending("a new turn started before it was delivered")
        self.uplink.forget()
        self.ledger.new_turn()
        self._transcript = {"user": [], "model": []}
        self._tool_log = []

    def _set_muted(self, muted: bool) -> None:
        if muted == self.muted:
            return
        self.muted = muted
        log.info("microphone %s", "muted" if muted else "unmuted")
        self._publish({"event": "muted", "muted": muted})
        if muted:
            self._on_release()
            self.parts.mic.stop_capture()
            if self.config.live.hands_free:
                self.uplink.stream(False)
                self.uplink.send(protocol.audio_stream_end())
        elif self.config.live.hands_free and self.link.is_open:
            self.uplink.stream(True)
            self.parts.mic.start_capture(gated=True)

    def _on_timer_due(self, event: ev.TimerDue) -> None:
        """A timer rings locally (no network needed) until a press or ``RING_MAX_S``."""
        timer = event.timer
        log.info("timer ringing: %s", escape(getattr(timer, "label", timer), 100))
        self.ringing.append(timer)
        self._ring_started = self._ring_next = self._clock()
        self._publish({"event": "timer", "state": "ringing", "label": getattr(timer, "label", "")})

    def _ring(self) -> None:
        now = self._clock()
        if now - self._ring_started > RING_MAX_S:
            log.info("nobody stopped the ringing timer; stopping it after %.0f s", RING_MAX_S)
            self._stop_ringing()
        elif now >= self._ring_next:
            self.parts.speaker.play_chime("timer")
            self._ring_next = now + RING_EVERY_S

    def _stop_ringing(self) -> None:
        """One press stops every ringing timer (and starts no turn); then the model is told."""
        rang, self.ringing = self.ringing, []
        timers = self.parts.timers
        for timer in rang:
            self._publish(
                {"event": "timer", "state": "stopped", "label": getattr(timer, "label", "")}
            )
            if timers is None:
                continue
            try:
                self._say(timers.announcement(timer), source="timer")
            except PiAgentError as exc:
                log.warning("the model could not be told about the timer: %s", exc)

    def _check_deadlines(self) -> None:
        now = self._clock()
        pending = self._pending
        ttl = self.config.agent.pending_turn_ttl_s
        if (
            pending is not None
            and pending.ended
            and not pending.completed
            and not self.link.is_open
            and pending.ended_at is not None
            and now - pending.ended_at > ttl
        ):
            self._fail_pending(f"offline for more than {ttl:.0f} s")
        wanted = self.awaiting_since if self.answers and self.answers[-1] else None
        dead = self.link.check(wanted)
        if dead is not None:
            self.counters["liveness_drops"] += 1
            session = self.link.session
            session.abort(dead)
            self._session_ended(session, dead)
        if self.ringing:
            self._ring()
        if self.talking and self.parts.mic.state == "ok":
            last = max(self.parts.mic.last_chunk_time or 0.0, self.talk_started or 0.0)
            if now - last > MIC_STALL_S:
                self._mic_fault("stalled", f"no audio for {now - last:.1f} s")

    def _mic_fault(self, state: str, detail: str) -> None:
        self.counters["mic_faults"] += 1
        self.part_states["mic"] = (state, detail)
        log.error("microphone fault: %s; ending the turn and reopening the device", detail)
        self.parts.mic.reopen()
        if self.talking:
            self._on_release()
            self.parts.speaker.play_chime("error")

    # ----------------------------------------------------------------- server events

    def on_session_event(self, session: Any, event: object) -> None:
        """Reader thread: model audio for an expected answer goes straight to the speaker."""
        recorder = self.parts.recorder
        if recorder is not None:
            recorder.received(event)
        if type(event) is protocol.AudioChunk:
            first = self.playback.offer(session, event.pcm)
            if first is not None:
                if first:
                    self.inbox.put(ev.AnswerStarted(session))
                return
        self.inbox.put(ev.FromServer(session, event))

    def _on_server(self, event: ev.FromServer) -> None:
        session, item = event.session, event.event
        if isinstance(item, SessionEnded):
            self._session_ended(session, item.error)
        elif isinstance(item, MalformedMessage):
            self.counters["malformed"] += 1
        elif session is not self.link.session:
            return  # an old connection after a roll-over, or a discarded one
        elif isinstance(item, protocol.SessionResumptionUpdate):
            if item.resumable and item.handle and protocol.valid_handle(item.handle):
                self.link.handle = item.handle
                if self._pending is not None and self._pending.completed:
                    self.uplink.forget()  # the handle covers the whole turn now
                    self.ledger.new_turn()
        else:
            self._on_answer_event(session, item)

    def _answer_started(self, session: Any) -> None:
        if session is not self.link.session:
            return
        if self._first_audio_t is None:
            self._first_audio_t = now = self._clock()
            if self._metrics is not None:
                self._metrics.release_to_first_audio_ms = ms(self._release_t, now)
        self.speaking = True

    def _new_metrics(self) -> None:
        self._metrics = TurnMetrics(self.turn)
        if self.parts.recorder is not None:
            self.parts.recorder.begin(self.turn)
        self.metrics = [*self.metrics[-99:], self._metrics]
        self._release_t = self._first_audio_t = None

    def _answer_waiters(self, reply: dict[str, Any], turn: int) -> None:
        waiting, self._say_waiters = self._say_waiters, []
        for number, respond in waiting:
            if number == turn:
                respond(reply)
            else:
                self._say_waiters.append((number, respond))

    # ----------------------------------------------------------------- tools and parts

    def _on_speaker_started(self, event: ev.SpeakerStarted) -> None:
        metrics = self._metrics
        if metrics is not None and self._first_audio_t is not None:
            if metrics.first_audio_to_play_ms is None:
                metrics.first_audio_to_play_ms = ms(self._first_audio_t, self._clock())

    def _on_speaker_idle(self, event: ev.SpeakerIdle) -> None:
        self.speaking = False

    def _on_part_state(self, event: ev.PartState) -> None:
        previous = self.part_states.get(event.part)
        self.part_states[event.part] = (event.state, event.detail)
        if previous is not None and previous[0] == event.state:
            return
        if event.part == "mic" and event.state == "fault":
            self._mic_fault("fault", event.detail)
        elif event.state in ("missing", "error"):
            log.warning("%s unavailable (%s)", event.part, event.state)
            self._publish({"event": "error", "part": event.part, "detail": event.detail})

    def _on_camera_frame(self, event: ev.CameraFrame) -> None:
        session = self.link.session
        if session is not None and session.is_open:
            session.send_video(event.jpeg)

    def status(self) -> dict[str, Any]:
        """A snapshot for ``pi-agent ctl status`` (agent thread only)."""
        return build_status(self)

    # ----------------------------------------------------------------- shutdown

    def _shutdown(self) -> int:
        """Stop producers first, then the link, then consumers, then the pins."""
        reason = getattr(self, "_stop_reason", None)
        log.info("%sshutting down", f"{reason} received; " if reason else "")
        self.parts.notifier.stopping()
        clean = self.parts.stop_producers()
        self.link.close(1.0)
        clean = self.parts.stop_consumers() and clean
        self.stopped.set()
        for event in self.inbox.drain():  # requests that raced with the shutdown get an answer
            if isinstance(event, ev.Command):
                event.respond({"ok": False, "error": "the agent is stopping"})
            elif isinstance(event, ev.Connected):
                event.session.close(1.0)
        for _turn, respond in self._say_waiters:
            respond({"ok": False, "error": "the agent is stopping"})
        self._say_waiters = []
        self.inbox.close()
        with self._changed:
            self._changed.notify_all()
        log.info("stopped")
        return 0 if clean else 1


__all__ = ["Agent", "ClosedError", "State"]
