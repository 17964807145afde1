"""Microphone and speaker workers, and the half-duplex gate (samples: ``pcm.py``).

* :class:`Microphone` (thread ``pi-agent-mic``, in ``microphone.py``) reads the device one chunk
  (``audio.chunk_ms``) at a time while capturing and in long periods
  (``audio.idle_period_ms``) while idle, turns it into 16 kHz s16le mono
  chunks and keeps the last ``audio.preroll_ms`` so the first syllable is
  never lost. A device that delivers far faster than real time is a 'fault':
  nothing is delivered, and it is reopened.
* :class:`Speaker` (thread ``pi-agent-speaker``) plays the server's 24 kHz
  audio in 20 ms writes behind a small jitter buffer; :meth:`Speaker.flush`
  stops it within one write for barge-in.
* :class:`HalfDuplexGate` keeps the mic closed while the speaker (or a chime)
  sounds and for ``audio.echo_tail_ms`` after, unless ``audio.full_duplex``.

Both workers survive their device: a missing or vanished device is retried
with capped exponential backoff and reported once per state change through
``on_state(state, detail)`` ('starting', 'ok', 'missing', 'error', 'fault').
Idle, both sleep: the speaker until there is something to play, the mic in
long device periods.
Full duplex with an echo canceller is described in ``docs/audio.md``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .audio_backend import (
    HUB,
    OUTPUT_RATES,
    DeviceWorker,
    OnState,
    PortAudioHub,
    Stream,
    find_device,
    list_devices,
)
from .config import AudioSettings
from .errors import AudioDeviceError
from .microphone import Microphone
from .pcm import (
    CHIMES,
    SPEAKER_RATE,
    MicChunk,
    level_dbfs,
    make_resampler,
    mix,
    render_chime,
    spread,
)
from .threads import call_logged

__all__ = [
    "CHIMES",
    "HalfDuplexGate",
    "InputLevel",
    "MicChunk",
    "Microphone",
    "Speaker",
    "find_device",
    "list_devices",
    "measure_input",
    "play_test_tone",
    "render_chime",
]

log = logging.getLogger("pi_agent.audio")

PERIOD_MS = 20  #: speaker write size: flush() waits for at most one of these
MAX_BUFFER_S = 60.0  #: speaker buffer bound: replies arrive faster than real time
CHIME_GUARD_S = 0.1  #: mic chunks this close to a chime are blanked


# --------------------------------------------------------------------------- speaker


class Speaker(DeviceWorker):
    """The speaker thread: a jitter buffer, 20 ms writes, volume, flush, chimes.

    Events (``on_event``, called on the speaker thread): ``"started"`` when the
    first audio of a turn has gone to the device, ``"idle"`` when a turn has
    really finished (``end_turn()`` was called, the buffer ran empty and the
    device drained) or was flushed. Chimes alone send no events, but they do
    clear :attr:`idle` while they sound, which closes the gate.
    """

    role = "speaker"

    def __init__(
        self,
        settings: AudioSettings,
        *,
        on_event: Callable[[str], None] | None = None,
        on_state: OnState | None = None,
        hub: PortAudioHub | None = None,
    ):
        super().__init__(settings, on_state, "pi-agent-speaker", hub or HUB)
        self._on_event = on_event
        self._cond = threading.Condition()
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._carry = b""
        self._max_bytes = int(MAX_BUFFER_S * SPEAKER_RATE) * 2
        self._jitter_bytes = SPEAKER_RATE * settings.jitter_ms // 1000 * 2
        self._period_bytes = SPEAKER_RATE * PERIOD_MS // 1000 * 2
        self._turn = False  # a turn has been given audio and has not finished
        self._ended = False  # end_turn() was called for it
        self._primed = False  # the jitter buffer filled: writing
        self._started_sent = False
        self._play_end = -math.inf  # when the device will have played all we wrote (estimate)
        self._drop_logged = False
        self._chimes: deque[str] = deque()
        self._chime = bytearray()  # device-rate s16le chime still to mix (at chime volume)
        self._out = bytearray()  # device-rate s16le turn audio ready to write
        self._tail_done = False
        self._chime_start = -math.inf
        self._chime_until = -math.inf
        self._flush_seq = 0
        self._flush_ack = 0
        self._flushed_turn = False
        self._turn_id = 0  # which turn the samples in _out belong to, vs the current one
        self._out_turn = 0
        self._volume = float(settings.volume)
        self._resampler = None
        #: Set when nothing is playing (no turn audio, no chime).
        self.idle = threading.Event()
        self.idle.set()
        self._last_drained = -math.inf
        self._underruns = 0
        self.dropped_bytes = 0  #: audio refused because the buffer was full or the device gone
        self._wait_s: float | None = None
        #: Turns of the thread's loop: it stays still while there is nothing to play.
        self.loops = 0

    # -- called from other threads
    def play(self, pcm24: bytes) -> None:
        """Queue 24 kHz s16le mono from the server (session reader thread; never blocks long)."""
        if not pcm24:
            return
        with self._cond:
            if self._carry:
                pcm24, self._carry = self._carry + pcm24, b""
            if len(pcm24) % 2:
                pcm24, self._carry = pcm24[:-1], pcm24[-1:]
            if self._state not in ("starting", "ok") or self._queued + len(pcm24) > self._max_bytes:
                self.dropped_bytes += len(pcm24)
                if not self._drop_logged:
                    self._drop_logged = True
                    why = "the device is " + self._state if self._state != "ok" else "it is full"
                    log.warning("speaker: dropping audio because %s", why)
                return
            if not self._turn or self._ended:  # a new turn (perhaps before the last drained)
                self._turn, self._ended, self._started_sent = True, False, False
                self._tail_done = False
                self._turn_id += 1
            self._queue.append(pcm24)
            self._queued += len(pcm24)
            self.idle.clear()
            self._cond.notify_all()

    def end_turn(self) -> None:
        """Mark the turn's end: play what is buffered (even below the jitter mark), then idle."""
        with self._cond:
            if self._turn:
                self._ended = True
                self._cond.notify_all()

    def flush(self) -> float:
        """Drop everything and silence the device; return the seconds it took.

        The speaker thread stops after its current 20 ms write at most, then
        aborts the stream, which drops what the device still buffers. Audio
        played after this returns starts a new turn.
        """
        began = time.monotonic()
        with self._cond:
            self._queue.clear()
            self._queued = 0
            self._carry = b""
            self._chimes.clear()
            self._flushed_turn = self._flushed_turn or self._turn
            self._turn = self._ended = self._primed = False
            self._started_sent = False
            self._turn_id += 1  # a write still in flight belongs to no turn now
            self._flush_seq += 1
            seq = self._flush_seq
            self._cond.notify_all()
            if self._stream is None or not self.is_alive:
                self._flush_ack = seq
                self._after_flush_locked()
            else:
                while self._flush_ack < seq and time.monotonic() - began < 0.5:
                    self._cond.wait(0.005)
        return time.monotonic() - began

    def play_chime(self, name: str) -> None:
        """Play an earcon locally ('press', 'release', 'error', 'connected'), if enabled."""
        if name not in CHIMES:
            raise ValueError(f"unknown chime {name!r}; expected one of {', '.join(CHIMES)}")
        if not getattr(self.settings.chimes, name, True):
            return
        with self._cond:
            if self._state not in ("starting", "ok"):
                return
            now = time.monotonic()
            duration = sum(ms for _f, ms in CHIMES[name]) / 1000
            if self._chime_until < now:
                self._chime_start = now
            self._chime_until = max(self._chime_until, now) + duration + 0.1
            self._chimes.append(name)
            self.idle.clear()
            self._cond.notify_all()

    @property
    def volume(self) -> float:
        return self._volume

    @volume.setter
    def volume(self, value: float) -> None:
        """0-1, applied from the next 20 ms write (a float store is atomic)."""
        value = min(1.0, max(0.0, float(value)))
        if value != 1.0:
            import numpy  # noqa: F401  - here, not mid-reply on the speaker thread
        self._volume = value

    @property
    def is_playing(self) -> bool:
        return not self.idle.is_set()

    @property
    def underruns(self) -> int:
        """Times playback ran dry in the middle of a turn (network gaps, a slow Pi)."""
        return self._underruns

    @property
    def last_drained(self) -> float:
        """``time.monotonic()`` when the speaker last went idle (-inf if never)."""
        return self._last_drained

    def chime_overlaps(self, t0: float, t1: float) -> bool:
        """Whether a chime sounded (or echoed, ``CHIME_GUARD_S``) between t0 and t1."""
        return t1 >= self._chime_start and t0 <= self._chime_until + CHIME_GUARD_S

    def _nudge(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _set_state(self, state: str, detail: str) -> None:
        super()._set_state(state, detail)
        if state in ("missing", "error"):  # nothing will play: don't hold the gate shut
            with self._cond:
                self._queue.clear()
                self._queued = 0
                self._chimes.clear()
                if self._turn:
                    self._flushed_turn = True
                self._turn = self._ended = self._primed = False
                self._turn_id += 1
                self._after_flush_locked()

    # -- the thread's side
    def _open(self) -> str:
        s = self.settings
        self._out = bytearray()  # a new stream: nothing half-written
        self._chime = bytearray()
        self._play_end = -math.inf
        dev = self._hub.find(s.output_device, input=False)
        rates = (s.output_rate,) if s.output_rate else OUTPUT_RATES
        # A hardware-like stereo device (<= 8 ch) gets both channels (PortAudio would leave
        # the second one silent); a plugin device (default, plughw) takes mono and spreads it.
        widths = (2, 1) if 2 <= dev.max_output_channels <= 8 else (1, 2)
        choice = next(
            (
                (r, ch)
                for r in rates
                for ch in widths
                if ch <= dev.max_output_channels and self._hub.supports(dev.index, r, ch, False)
            ),
            None,
        )
        if choice is None:
            raise AudioDeviceError(
                f"output device {dev.name!r} supports none of {', '.join(map(str, rates))} Hz"
            )
        rate, channels = choice
        frames = rate * PERIOD_MS // 1000
        self._stream = self._hub.open(
            dev.index, rate=rate, channels=channels, frames=frames, input=False, start=False
        )
        self.device_name, self.device_rate = dev.name, rate
        self._resampler = make_resampler(SPEAKER_RATE, rate) if rate != SPEAKER_RATE else None
        if self._volume != 1.0:
            import numpy  # noqa: F401  - now, not in the middle of the first reply
        for name in CHIMES:  # rendered now, not when the button goes down
            if getattr(s.chimes, name):
                render_chime(name, rate, s.chimes.volume)
        how = "" if rate == SPEAKER_RATE else f", resampled from {SPEAKER_RATE} Hz"
        note = f" ({dev.note})" if dev.note else ""
        return f"using {dev.name!r} at {rate} Hz, {channels} ch{how}{note}"

    def _serve(self) -> None:
        stream = self._stream
        assert stream is not None
        while True:
            self.loops += 1
            block: bytes | None = None
            with self._cond:
                if self._flush_ack < self._flush_seq:
                    self._flush_ack = self._flush_seq
                    self._cond.notify_all()  # flush() returns now; the abort follows at once
                    action = "abort"
                elif self.stopping.is_set():
                    return
                elif self._hub.reinit_pending and self._is_quiet(stream):
                    return  # close the stream so another worker can re-enumerate devices
                else:
                    while self._chimes:
                        name = self._chimes.popleft()
                        self._chime += render_chime(name, stream.rate, self.settings.chimes.volume)
                    action = self._next_action(stream)
                    if action == "take":
                        block = self._take_block()
                    elif action == "tail":
                        self._tail_done = True
                    elif action is None:  # asleep until there is news (no tick)
                        self._cond.wait(self._wait_s)
                        continue
            if action == "abort":
                stream.abort()
                self._out = bytearray()
                self._chime = bytearray()
                if self._resampler is not None:
                    self._resampler.clear()
                with self._cond:
                    self._after_flush_locked()
            elif action == "take":
                self._resample(block)
            elif action == "tail":
                self._resample(None)
            elif action == "write":
                self._write(stream)
            elif action == "drain":
                self._drain(stream)
            elif action == "finish":
                with self._cond:
                    self._finish_locked()

    def _next_action(self, stream: Stream) -> str | None:
        """Decide (lock held) what to do next; None means wait for news.

        Turn audio goes input queue -> (resampler) -> ``_out`` at the device
        rate -> 20 ms writes, so every write is one period even though soxr
        returns its output in bursts. With None, ``_wait_s`` is how long to
        wait: None (no timeout) unless a gap in a turn must be noticed.
        """
        self._wait_s = None
        period = stream.frames * 2
        ready = self._primed or self._ended or self._queued >= self._jitter_bytes
        if self._queued and ready and len(self._out) < period:
            return "take"
        draining = self._ended and not self._queued
        if draining and self._resampler is not None and not self._tail_done:
            return "tail"
        if len(self._out) >= period or (draining and self._out) or self._chime:
            return "write"
        if self._turn and not self._queued and self._primed and not self._ended:
            now = time.monotonic()
            if now > self._play_end:  # the device ran dry mid-turn: a gap
                self._primed = False  # rebuild the jitter cushion before going on
                self._underruns += 1
                log.debug("speaker underrun (%d so far)", self._underruns)
            else:
                self._wait_s = self._play_end - now + 0.001  # look again when it runs dry
            return None
        if stream.is_running and not self._queued and (self._ended or not self._turn):
            return "drain"
        if self._turn and self._ended and not self._queued:
            return "finish"
        if not self._turn and not self.idle.is_set():
            return "finish"
        return None

    def _take_block(self) -> bytes:
        """One period of turn audio off the input queue (lock held)."""
        parts, size = [], 0
        while self._queue and size < self._period_bytes:
            head = self._queue[0]
            need = self._period_bytes - size
            if len(head) <= need:
                parts.append(self._queue.popleft())
                size += len(head)
            else:
                parts.append(head[:need])
                self._queue[0] = head[need:]
                size += need
        self._queued -= size
        self._primed = True
        self._out_turn = self._turn_id
        return b"".join(parts)

    def _resample(self, block: bytes | None) -> None:
        """Append a block (or, with None, the resampler's tail) to ``_out`` at the device rate."""
        if self._resampler is None:
            self._out += block or b""  # the common case: the server's bytes as they are
            return
        import numpy as np  # loaded with the resampler

        if block is None:
            x = self._resampler.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
            self._resampler.clear()
        else:
            x = self._resampler.resample_chunk(np.frombuffer(block, "<i2"))
        self._out += x.astype("<i2", copy=False).tobytes()

    def _write(self, stream: Stream) -> None:
        """One period: turn audio (or silence under a lone chime), chime mixed, volume, write."""
        period = stream.frames * 2
        turn = bytes(self._out[:period])
        del self._out[:period]
        volume = self._volume
        if self._chime:
            chime = bytes(self._chime[: len(turn) or period])
            del self._chime[: len(chime)]
            with self._cond:
                left = len(self._chime) / 2 / stream.rate + stream.latency
                self._chime_until = max(self._chime_until, time.monotonic() + left)
            out = mix(turn, chime, volume) if turn or volume != 1.0 else chime
        elif volume != 1.0:
            out = mix(turn, b"", volume)
        else:
            out = turn  # the common case: the server's bytes, untouched
        if stream.channels > 1:
            out = spread(out, stream.channels)
        if not stream.is_running:
            stream.start()
            self._play_end = -math.inf
        now = time.monotonic()
        expected_dry = now > self._play_end
        self._play_end = max(self._play_end, now) + len(out) / 2 / stream.channels / stream.rate
        if stream.write(out) and not expected_dry:
            self._underruns += 1  # the device reports a gap our estimate did not see
        if len(turn) and not self._started_sent:
            with self._cond:
                first = self._out_turn == self._turn_id and not self._started_sent
                self._started_sent = self._started_sent or first
            if first and self._on_event is not None:
                call_logged(self._on_event, "started")

    def _drain(self, stream: Stream) -> None:
        stream.drain()  # returns once the device has played what it holds
        with self._cond:
            if self._queued or self._chimes or self._chime or self._out:
                return  # new audio arrived meanwhile: keep going
            self._finish_locked()

    def _finish_locked(self) -> None:
        """Nothing left to play (lock held): go idle and tell the agent if a turn ended."""
        was_turn = self._turn
        self._turn = self._ended = self._primed = False
        self._started_sent = False
        self._drop_logged = False
        self._go_idle_locked()
        if was_turn and self._on_event is not None:
            call_logged(self._on_event, "idle")

    def _after_flush_locked(self) -> None:
        """The device is silent after a flush (lock held); audio or chimes queued since stay."""
        was_turn, self._flushed_turn = self._flushed_turn, False
        self._drop_logged = False
        if not (self._turn or self._queued or self._chimes):
            self._chime_until = min(self._chime_until, time.monotonic())
            self._go_idle_locked()
        if was_turn and self._on_event is not None:
            call_logged(self._on_event, "idle")

    def _go_idle_locked(self) -> None:
        if not self.idle.is_set():
            self._last_drained = time.monotonic()  # before idle.set(): the gate reads both
            self.idle.set()

    def _is_quiet(self, stream: Stream) -> bool:
        busy = self._turn or self._chimes or self._chime or self._out
        return not busy and not stream.is_running


# --------------------------------------------------------------------------- the gate


class HalfDuplexGate:
    """Keeps the mic from hearing the speaker: closed while it plays and ``echo_tail_ms`` after.

    Without an echo canceller, what the speaker says comes back through the mic
    and the model answers itself. The gate closes for chimes too (they clear
    ``speaker.idle``), and :class:`Microphone` blanks ungated chunks that overlap
    a chime, so an earcon never reaches the model. ``audio.full_duplex: true``
    opens it for good (only with an echo canceller, see docs/audio.md).
    """

    def __init__(self, speaker: Speaker, settings: AudioSettings):
        self.speaker = speaker
        self.full_duplex = settings.full_duplex
        self.tail_s = settings.echo_tail_ms / 1000

    def is_open(self) -> bool:
        if self.full_duplex:
            return True
        if self.speaker.is_playing:
            return False
        return time.monotonic() - self.speaker.last_drained >= self.tail_s

    def chime_overlaps(self, t0: float, t1: float) -> bool:
        """Whether a chunk captured between t0 and t1 may contain a chime."""
        return self.speaker.chime_overlaps(t0, t1)


# --------------------------------------------------------------------------- self-test


@dataclass(frozen=True)
class InputLevel:
    """What :func:`measure_input` heard."""

    device: str
    rate: int
    dbfs: float
    overflows: int


def _wait_ok(worker: DeviceWorker, states: list[str], details: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while worker.state != "ok" and time.monotonic() < deadline:
        if worker.state in ("missing", "error"):
            break
        time.sleep(0.02)
    if worker.state != "ok":
        detail = details[-1].removesuffix("; retrying") if details else f"still {worker.state}"
        raise AudioDeviceError(f"{worker.role} {worker.state}: {detail}")


def measure_input(settings: AudioSettings, seconds: float = 2.0) -> InputLevel:
    """Record ``seconds`` from the configured mic and return its level (``pi-agent check``).

    Raises AudioDeviceError when the device is missing or cannot be opened.
    """
    chunks: list[bytes] = []
    states: list[str] = []
    details: list[str] = []

    def on_state(state: str, detail: str | None = None) -> None:
        states.append(state)
        details.append(detail or "")

    mic = Microphone(settings, chunks.append, on_state=on_state)
    mic.start()
    try:
        _wait_ok(mic, states, details, 5.0)
        mic.start_capture()
        mic.stopping.wait(seconds)
        mic.stop_capture()
    finally:
        mic.stop()
    dbfs = level_dbfs(b"".join(chunks))
    return InputLevel(mic.device_name or "?", mic.device_rate or 0, dbfs, mic.overflows)


def play_test_tone(settings: AudioSettings) -> str:
    """Play the 'connected' chime through the configured speaker; return the device name.

    Played as a turn, so it sounds even with chimes switched off. Raises
    AudioDeviceError when the device is missing or cannot be opened.
    """
    states: list[str] = []
    details: list[str] = []
    done = threading.Event()

    def on_state(state: str, detail: str | None = None) -> None:
        states.append(state)
        details.append(detail or "")

    speaker = Speaker(settings, on_state=on_state, on_event=lambda e: e == "idle" and done.set())
    speaker.start()
    try:
        _wait_ok(speaker, states, details, 5.0)
        speaker.play(render_chime("connected", SPEAKER_RATE, 0.6))
        speaker.end_turn()
        if not done.wait(5.0):
            raise AudioDeviceError(f"speaker {speaker.device_name!r} did not finish playing")
    finally:
        speaker.stop()
    return speaker.device_name or "?"
