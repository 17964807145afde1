"""The microphone worker (thread ``pi-agent-mic``): chunks, the pre-roll, the capture switch.

Split from ``audio.py`` (which re-exports :class:`Microphone`); the speaker and
the half-duplex gate are there, the sample code in ``pcm.py``. Log lines go to
the ``pi_agent.audio`` logger, like the rest of the audio workers'.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .audio_backend import (
    HUB,
    INPUT_RATES,
    DeviceFault,
    DeviceInfo,
    DeviceWorker,
    OnState,
    PortAudioHub,
    StaleDevice,
    Stream,
)
from .config import AudioSettings
from .errors import AudioDeviceError
from .pcm import MIC_RATE, LossDetector, MicChunk, MicConverter, PaceGuard
from .threads import call_logged

if TYPE_CHECKING:
    from .audio import HalfDuplexGate

__all__ = ["Microphone"]

log = logging.getLogger("pi_agent.audio")

_OVERFLOW_LOG_EVERY_S = 60.0


class Microphone(DeviceWorker):
    """The mic thread: 16 kHz s16le mono chunks, a pre-roll ring, and a capture switch.

    ``on_chunk(chunk)`` is called ON THE MIC THREAD, with :attr:`capture_lock`
    held, for every chunk after :meth:`start_capture`; it must only enqueue.
    Chunks are :class:`MicChunk` (bytes with ``captured_at``).

    The device period (and read size) is one chunk while capturing. While
    idle it is ``audio.idle_period_ms`` (300 ms: about 3 wakeups a second
    instead of 25; on hardware the period is also how often the device interrupts),
    so the stream is reopened when capture starts and when it stops. The read
    in progress at :meth:`start_capture` finishes at its full length and its
    chunks are delivered after the pre-roll: the first live chunk is up to one
    idle period late, never lost. What the device captures while it is being
    reopened (:attr:`last_switch_s`, a few ms) is not read on hardware; with
    ``audio.idle_period_ms: 0`` the mic keeps one period and never reopens.
    """

    role = "microphone"

    def __init__(
        self,
        settings: AudioSettings,
        on_chunk: Callable[[bytes], None],
        *,
        on_state: OnState | None = None,
        gate: HalfDuplexGate | None = None,
        hub: PortAudioHub | None = None,
    ):
        super().__init__(settings, on_state, "pi-agent-mic", hub or HUB)
        self._on_chunk = on_chunk
        self.gate = gate
        self.chunk_bytes = MIC_RATE * settings.chunk_ms // 1000 * 2
        self._chunk_s = settings.chunk_ms / 1000
        # plain chunks, the newest read at last_chunk_time: stamped only when handed out
        self._preroll: deque[bytes] = deque(
            maxlen=math.ceil(settings.preroll_ms / settings.chunk_ms)
        )
        #: Held while a chunk is handed out; hold it to order work against new chunks.
        self.capture_lock = threading.RLock()
        self._capturing = False
        self._gated = False
        self._conv: MicConverter | None = None
        self._overflows = 0
        self._chunks = 0
        self.skipped = 0  #: chunks dropped by the closed gate during gated capture
        self.blanked = 0  #: chunks replaced by silence because a chime sounded
        self._last_chunk_time: float | None = None
        self._overflow_logged = -math.inf
        self._reopen_asked = False
        self._trusted = True  # False after a fault, until the device keeps real time again
        self._ok_detail = ""
        #: Device reads so far (the thread's loop turns).
        self.loops = 0
        #: Reopens to change the device period (capture started or stopped).
        self.switches = 0
        #: Seconds the last such reopen took: on hardware, audio not captured.
        self.last_switch_s = 0.0
        self._device_index = -1
        self._generation = -1

    # -- the agent's side
    def start_capture(self, *, gated: bool = False, deliver_preroll: bool = False) -> list[bytes]:
        """Return the pre-roll and, from now on, pass every new chunk to ``on_chunk``.

        Atomic: each chunk is either in the returned list or delivered later,
        never both, never neither. With ``deliver_preroll`` the pre-roll goes
        to ``on_chunk`` instead (on the caller's thread, before any live chunk)
        and the list is empty. With ``gated`` (hands-free), chunks are skipped
        while the gate is closed. A second call only changes ``gated``.
        """
        with self.capture_lock:
            preroll = self._stamped_preroll()
            self._preroll.clear()
            if deliver_preroll:
                for chunk in preroll:
                    self._on_chunk(chunk)
                preroll = []
            self._capturing = True
            self._gated = gated
        return preroll

    def _stamped_preroll(self) -> list[bytes]:
        """The ring as :class:`MicChunk` objects, the newest ending at the last read."""
        end, step, n = self._last_chunk_time or 0.0, self._chunk_s, len(self._preroll)
        return [MicChunk.at(pcm, end - (n - 1 - i) * step) for i, pcm in enumerate(self._preroll)]

    def stop_capture(self) -> None:
        """Stop delivering; chunks go to the pre-roll ring again."""
        with self.capture_lock:
            self._capturing = False
            self._gated = False

    @property
    def is_capturing(self) -> bool:
        return self._capturing

    @property
    def overflows(self) -> int:
        """Times the device lost audio because we read too late."""
        return self._overflows

    @property
    def chunks(self) -> int:
        """Chunks produced since start (delivered or not)."""
        return self._chunks

    @property
    def last_chunk_time(self) -> float | None:
        """``time.monotonic()`` when the newest chunk was read."""
        return self._last_chunk_time

    def reopen(self) -> None:
        """Ask the mic thread to close and reopen its device at its next chance (thread-safe).

        For a mic that stalled (no chunk for a while although it should run).
        The next chance is the end of the read in progress (a read that never
        returns cannot be interrupted: a PortAudio stream belongs to one
        thread), or now if the device is being retried after a loss. A mic in
        'fault' keeps its backoff: reopening a flooding device at once would
        burn the CPU the backoff saves.
        """
        self._reopen_asked = True
        if self._state in ("missing", "error"):
            self._retry_now.set()

    # -- the thread's side
    def _open(self) -> str:
        s = self.settings
        self._generation = self._hub.generation  # the index below is valid for this one
        dev = self._hub.find(s.input_device, input=True)
        channels = self._channels_for(dev)
        candidates = (s.input_rate,) if s.input_rate else INPUT_RATES
        rate = next((r for r in candidates if self._hub.supports(dev.index, r, channels, True)), 0)
        if not rate:
            raise AudioDeviceError(
                f"input device {dev.name!r} supports none of {', '.join(map(str, candidates))} Hz"
                f" with {channels} channel(s)"
            )
        frames = self._period_frames(rate)
        # the converter first: it may load numpy and soxr, which must not delay the first read
        self._conv = MicConverter(rate, channels, s.input_channel, s.mic_gain_db, self.chunk_bytes)
        self._device_index = dev.index
        self._stream = self._open_stream(rate, channels, frames)
        self.device_name, self.device_rate = dev.name, rate
        how = "" if rate == MIC_RATE else f", resampled to {MIC_RATE} Hz"
        pick = "" if channels == 1 else f", channel {s.input_channel}"
        note = f" ({dev.note})" if dev.note else ""
        return f"using {dev.name!r} at {rate} Hz, {channels} ch{pick}{how}{note}"

    def _channels_for(self, dev: DeviceInfo) -> int:
        """Open a hardware-like device (<= 8 ch) with all its channels and pick ourselves;
        a plugin device (default, plughw: 128 ch) converts for us, so ask for what we need."""
        pick = self.settings.input_channel
        if self.settings.input_channels:
            n = self.settings.input_channels
        elif dev.max_input_channels <= 8:
            n = dev.max_input_channels
        else:
            n = 1 if pick in (0, "mix") else int(pick) + 1
        if n > dev.max_input_channels:
            raise AudioDeviceError(f"{dev.name!r} has only {dev.max_input_channels} input channels")
        if pick != "mix" and int(pick) >= n:
            raise AudioDeviceError(
                f"audio.input_channel is {pick} but {dev.name!r} is opened with {n} channel(s)"
            )
        return n

    def _opened(self, detail: str) -> None:
        self._trusted = self._state != "fault"  # after a fault: 'ok' once it keeps real time
        self._ok_detail = detail
        if self._trusted:
            self._set_state("ok", detail)

    def _period_frames(self, rate: int) -> int:
        """Frames per device period (and per read) for the present capture state."""
        idle_ms = self.settings.idle_period_ms
        ms = idle_ms if idle_ms and not self._capturing else self.settings.chunk_ms
        return rate * ms // 1000

    def _open_stream(self, rate: int, channels: int, frames: int) -> Stream:
        """Open the looked-up device, started; StaleDevice if PortAudio was re-made since."""
        return self._hub.open(
            self._device_index,
            rate=rate,
            channels=channels,
            frames=frames,
            input=True,
            start=True,
            generation=self._generation,
        )

    def _switch(self, stream: Stream, frames: int) -> Stream | None:
        """Reopen the device with another period, at once (capture started or stopped).

        None when PortAudio was re-initialised meanwhile: the device must be looked up
        again, which the supervisor's ``_open`` does at once.
        """
        began = time.monotonic()
        rate, channels = stream.rate, stream.channels
        self._close_stream()
        try:
            self._stream = self._open_stream(rate, channels, frames)
        except StaleDevice:
            return None
        self.switches += 1
        self.last_switch_s = time.monotonic() - began
        log.debug(
            "microphone: %d ms periods (reopened in %.1f ms)",
            frames * 1000 // rate,
            self.last_switch_s * 1000,
        )
        return self._stream

    def _serve(self) -> None:
        stream, conv = self._stream, self._conv
        assert stream is not None and conv is not None
        detector = LossDetector(stream.rate, stream.frames)
        pace = PaceGuard(stream.rate)
        self._reopen_asked = False
        while not (self.stopping.is_set() or self._hub.reinit_pending or self._reopen_asked):
            self.loops += 1
            frames = self._period_frames(stream.rate)
            if frames != stream.frames:
                switched = self._switch(stream, frames)
                if switched is None:
                    return  # reopened from scratch by the supervisor
                stream = switched
                detector.resize(frames)  # the same audio goes on: keep counting
            began = time.monotonic()
            data = stream.read(frames)
            now = time.monotonic()
            if pace.update(frames, began, now):
                raise DeviceFault(
                    f"{self.device_name!r} delivered {pace.report}: far faster than real time"
                )
            if not self._trusted and pace.windows:
                self._trusted = True
                self._set_state("ok", self._ok_detail)
            if detector.update(frames, began, now):
                self._count_overflow(now)
            chunks = conv.push(data)
            if chunks:
                self._deliver(chunks, now)

    def _count_overflow(self, now: float) -> None:
        self._overflows += 1
        if now - self._overflow_logged >= _OVERFLOW_LOG_EVERY_S:
            self._overflow_logged = now
            log.warning(
                "microphone overflow: audio was lost because the mic thread fell behind"
                " (%d so far; next report in %.0f s at most)",
                self._overflows,
                _OVERFLOW_LOG_EVERY_S,
            )

    def _deliver(self, chunks: list[bytes], now: float) -> None:
        """Chunks of one read, the last ending ``now``: to the pre-roll ring, or out."""
        self._chunks += len(chunks)
        with self.capture_lock:
            if not self._capturing or not self._trusted:
                self._preroll.extend(chunks)  # idle: one call per read, no stamping
                self._last_chunk_time = max(now, self._last_chunk_time or 0.0)
                return
            for i, pcm in enumerate(chunks, 1 - len(chunks)):  # the last one ends now
                self._emit(pcm, max(now + i * self._chunk_s, self._last_chunk_time or 0.0))

    def _emit(self, pcm: bytes, now: float) -> None:
        """One live chunk (lock held): skipped or blanked by the gate, else passed on."""
        self._last_chunk_time = now
        chunk = MicChunk.at(pcm, now)
        gate = self.gate
        if gate is not None:
            if self._gated and not gate.is_open():
                self.skipped += 1
                return
            if gate.chime_overlaps(now - self._chunk_s, now):
                self.blanked += 1
                chunk = MicChunk.at(bytes(len(pcm)), now)
        call_logged(self._on_chunk, chunk)
