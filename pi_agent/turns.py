"""A user turn and the two audio paths that bypass the agent thread.

The agent thread owns the conversation, but audio is the hot path: 25 chunks
a second each way. Handing every chunk through the agent's queue costs a
thread wake-up per chunk (measured: about a fifth of the client's CPU in
``scripts/bench``). So the agent *configures* these two small objects on its
own thread, and the microphone and session reader threads move the audio
through them directly, under one lock each:

* :class:`Uplink`: mic chunks go to the current session and into the pending
  turn (kept for a resend) in one step, so a chunk is never sent after its
  turn's ``activityEnd`` and never missing from a resend;
* :class:`Playback`: model audio goes from the session reader straight to the
  speaker while the agent expects an answer on that session; only the first
  chunk of an answer is reported to the agent (for the state and metrics).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import protocol
from .errors import ClosedError, SessionError

log = logging.getLogger(__name__)

BYTES_PER_S = 16000 * 2


@dataclass
class PendingTurn:
    """The user's words, kept until a resumption handle covers them (for resending)."""

    number: int
    chunks: list[bytes] = field(default_factory=list)
    text: str | None = None
    ended: bool = False  # activityEnd given (button released)
    truncated: bool = False
    completed: bool = False  # turnComplete seen; safe once a newer handle arrives
    ended_at: float | None = None
    bytes: int = 0
    resends: int = 0  # times it was replayed on a new connection
    started_at: float | None = None


@dataclass
class TurnMetrics:
    """Latency figures of one turn, in milliseconds (None = did not happen)."""

    turn: int
    press_to_start_ms: float | None = None
    release_to_first_audio_ms: float | None = None
    first_audio_to_play_ms: float | None = None
    interrupt_to_silence_ms: float | None = None
    speech_bytes: int = 0  # 16 kHz mic audio captured for this turn

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Uplink:
    """Where mic chunks go: the session, and the pending turn.

    ``feed`` runs on the mic thread; everything else on the agent thread.
    All sends happen under one lock, so the order on the wire is the order
    of the calls: ``activityStart``, pre-roll, live chunks, ``activityEnd``.

    Two rules hold by construction, whatever the agent asks: audio reaches a
    session only inside an open push-to-talk turn (or while hands-free
    streaming is on), and ``activityStart``/``activityEnd`` strictly alternate
    on every connection (the uplink remembers whether an activity is open on
    the current session; a new session starts closed).
    """

    def __init__(self, *, manual_activity: bool, max_buffered_s: float):
        self._lock = threading.Lock()
        self._manual = manual_activity
        self._limit = int(max_buffered_s * BYTES_PER_S)
        self._session: Any = None
        self._turn: PendingTurn | None = None
        self._streaming = False  # hands-free: chunks flow without a turn
        self._activity_open = False  # an activityStart without its activityEnd on _session
        self.on_dead: Callable[[Any], None] | None = None  # a send failed on this session

    def feed(self, pcm: bytes) -> None:
        """One mic chunk (mic thread, or the agent thread for the pre-roll)."""
        with self._lock:
            turn = self._turn
            if turn is not None:
                if turn.ended:
                    return
                if turn.bytes + len(pcm) <= self._limit:
                    turn.chunks.append(pcm)
                    turn.bytes += len(pcm)
                elif not turn.truncated:
                    turn.truncated = True
                    log.warning("turn %d is longer than agent.max_buffered_speech_s", turn.number)
            elif not self._streaming:
                return
            if self._manual and not self._activity_open:
                return  # never audio outside an activity with push-to-talk
            self._send_audio(pcm)

    def _send_audio(self, pcm: bytes) -> None:
        session = self._session
        if session is None:
            return
        try:
            session.send_audio(pcm)
        except (ClosedError, SessionError):
            self._lost()  # kept in the turn; resent after reconnecting

    def _send(self, message: dict[str, Any]) -> bool:
        session = self._session
        if session is None:
            return False
        try:
            session.send(message)
        except (ClosedError, SessionError):
            self._lost()
            return False
        return True

    def _lost(self) -> None:
        session, self._session = self._session, None
        self._activity_open = False
        if session is not None and self.on_dead is not None:
            self.on_dead(session)

    def _start_activity(self) -> bool:
        if not self._manual:
            return self._session is not None
        if self._activity_open:  # cannot happen by the agent's rules; keep the wire valid
            self._end_activity()
        if self._send(protocol.activity_start()):
            self._activity_open = True
            return True
        return False

    def _end_activity(self) -> bool:
        if not self._manual:
            return self._session is not None
        if not self._activity_open:
            return False
        self._activity_open = False
        return self._send(protocol.activity_end())

    def begin(self, turn: PendingTurn) -> bool:
        """A push-to-talk turn starts; True if ``activityStart`` went out now."""
        with self._lock:
            self._turn = turn
            return self._start_activity()

    def end(self, ended_at: float) -> bool:
        """The user's turn ends (release, mic fault); True if ``activityEnd`` went out now.

        Recorded in the turn either way, so a resend carries it.
        """
        with self._lock:
            turn = self._turn
            if turn is not None:
                turn.ended = True
                turn.ended_at = ended_at
            return self._end_activity()

    def say(self, turn: PendingTurn) -> bool:
        """A typed turn (wrapped in activity markers with manual VAD); True if sent now."""
        with self._lock:
            self._turn = turn
            return self._send_turn(turn)

    def _send_turn(self, turn: PendingTurn) -> bool:
        if not self._start_activity():
            return False
        for chunk in turn.chunks:
            self._send_audio(chunk)
        if turn.text is not None:
            self._send(protocol.text_input(turn.text))
        if turn.ended:
            self._end_activity()
        return self._session is not None

    def attach(self, session: Any, *, resend: bool) -> PendingTurn | None:
        """Route chunks to a new session; with ``resend``, first replay the unanswered turn.

        Returns the turn that was resent, if any.
        """
        with self._lock:
            self._session = session
            self._activity_open = False
            turn = self._turn
            if not resend or turn is None:
                return None
            # Even a turn without audio (no mic, or released at once) is resent: the user
            # pressed and expects an answer, and activity markers are all it takes.
            turn.resends += 1
            log.info(
                "resending turn %d (%.1f s of speech%s)",
                turn.number,
                turn.bytes / BYTES_PER_S,
                ", text" if turn.text else "",
            )
            return turn if self._send_turn(turn) else None

    def detach(self) -> None:
        """The session is gone: keep chunks in the turn only."""
        with self._lock:
            self._session = None
            self._activity_open = False

    def stream(self, on: bool) -> None:
        """Hands-free: send chunks without a turn."""
        with self._lock:
            self._streaming = on

    def send(self, message: dict[str, Any]) -> bool:
        """Send a control message in order with the audio (e.g. ``audioStreamEnd``)."""
        with self._lock:
            return self._send(message)

    @property
    def turn(self) -> PendingTurn | None:
        return self._turn

    @property
    def activity_open(self) -> bool:
        """An ``activityStart`` without its ``activityEnd`` on the current session."""
        return self._activity_open

    def forget(self) -> PendingTurn | None:
        """Drop the pending turn (answered, cancelled or lost); return it."""
        with self._lock:
            turn, self._turn = self._turn, None
            return turn


class Playback:
    """Model audio from the session reader straight to the speaker.

    Open for one session while the agent expects an answer on it. ``offer``
    runs on the reader thread; it returns None when the audio is not for the
    open playback (the agent then decides), True for the first chunk after
    ``open`` (the agent is told once) and False for the rest.
    """

    def __init__(self, play: Callable[[bytes], None]):
        self._lock = threading.Lock()
        self._play = play
        self._session: Any = None
        self._told = False

    def open(self, session: Any) -> None:
        with self._lock:
            if session is not self._session:
                self._session = session
                self._told = False

    def close(self) -> None:
        """No more direct playback (barge-in, cancel, drop); flush the speaker after this."""
        with self._lock:
            self._session = None
            self._told = False

    def rearm(self) -> None:
        """A new answer is expected on the same session: report its first chunk again."""
        with self._lock:
            self._told = False

    def offer(self, session: Any, pcm: bytes) -> bool | None:
        with self._lock:
            if session is None or session is not self._session:
                return None
            self._play(pcm)
            first = not self._told
            self._told = True
            return first
