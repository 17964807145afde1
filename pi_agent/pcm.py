"""Audio samples without devices: mic conversion, resampling, chimes, mixing, pace.

Everything here works on s16le bytes. numpy (and soxr, which needs it) is
imported only where a config needs it: resampling, channel picking or mixing,
mic gain, a volume below 1. The default config (a 16 kHz mic, a 24 kHz
speaker, chimes, volume 1) never loads it, which saves about 10 MB of RSS
(docs/audio.md, "Footprint").
"""

from __future__ import annotations

import math
import sys
from array import array
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

MIC_RATE = 16000  #: what Gemini Live takes
SPEAKER_RATE = 24000  #: what Gemini Live sends


# --------------------------------------------------------------------------- mic conversion


class MicChunk(bytes):
    """16 kHz s16le mono; ``captured_at`` = ``time.monotonic()`` when its last frame was read.

    A ``bytes`` subclass, so ``on_chunk(pcm)`` stays a one-argument callback and
    anything that takes bytes takes it; latency metrics read the attribute.
    """

    captured_at: float = 0.0

    @classmethod
    def at(cls, pcm: bytes, t: float) -> MicChunk:
        chunk = cls(pcm)
        chunk.captured_at = t
        return chunk


def make_resampler(in_rate: int, out_rate: int, dtype: str = "int16"):
    """A streaming soxr resampler.

    Why soxr: it is maintained, fast (SIMD), ships wheels for aarch64 and armv7
    (Pi OS 64- and 32-bit), keeps state across chunks (no clicks at chunk
    edges) and low-pass filters properly before decimating, so 48 kHz -> 16 kHz
    does not alias. Dropping samples would.
    """
    import soxr

    return soxr.ResampleStream(in_rate, out_rate, 1, dtype=dtype, quality="HQ")


def to_int16(x: np.ndarray) -> bytes:
    import numpy as np

    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


class MicConverter:
    """Device blocks -> exact 16 kHz mono chunks: pick/mix a channel, resample, gain, rechunk.

    Device audio is processed once per chunk, not per 20 ms read, and stays
    int16 unless mixing or gain needs floats: each numpy call costs a few
    microseconds on a cold cache, which matters on a Pi Zero.
    """

    def __init__(self, rate: int, channels: int, pick: int | str, gain_db: float, chunk_bytes: int):
        self.channels = channels
        self.pick = pick
        self.gain = 10 ** (gain_db / 20)
        self.floats = (pick == "mix" and channels > 1) or gain_db != 0
        dtype = "float32" if self.floats else "int16"
        self.resampler = make_resampler(rate, MIC_RATE, dtype) if rate != MIC_RATE else None
        self.passthrough = rate == MIC_RATE and channels == 1 and gain_db == 0
        if not self.passthrough:
            import numpy  # noqa: F401  - now, not during the first read
        self.chunk_bytes = chunk_bytes
        # device bytes per output chunk: below that, wait for the next read
        self.batch = chunk_bytes * rate // MIC_RATE * channels
        self._raw = bytearray()
        self._buf = bytearray()

    def push(self, data: bytes) -> list[bytes]:
        if not self.passthrough:
            self._raw += data
            if len(self._raw) < self.batch:
                return []
            data = self._convert(bytes(self._raw))
            self._raw.clear()
        self._buf += data
        size = self.chunk_bytes
        if len(self._buf) < size:
            return []
        n = len(self._buf) // size * size
        block = bytes(self._buf[:n])
        del self._buf[:n]
        return [block[i : i + size] for i in range(0, n, size)]

    def _convert(self, data: bytes) -> bytes:
        import numpy as np  # only a device that needs converting gets here

        x = np.frombuffer(data, "<i2")
        if self.channels > 1:
            x = x.reshape(-1, self.channels)
            if self.pick == "mix":
                x = x.mean(axis=1, dtype=np.float32)
            else:
                x = np.ascontiguousarray(x[:, int(self.pick)])
        if not self.floats:  # soxr takes and returns int16, clipping properly
            return (self.resampler.resample_chunk(x) if self.resampler else x).tobytes()
        x = x.astype(np.float32, copy=False)
        if self.resampler is not None:
            x = self.resampler.resample_chunk(x)
        if self.gain != 1:
            x = x * self.gain
        return to_int16(x)


class LossDetector:
    """Counts overflows by frame accounting, since PyAudio hides them when not raising.

    After a read that had to wait for the device (we are caught up), frames
    produced minus frames read is the audio lost so far plus clock drift. A
    jump of more than ~50 ms that is still there at the next caught-up read is
    an overflow (a device that was merely late catches up, lost audio never
    comes back); slow drift is tracked.
    """

    def __init__(self, rate: int, frames: int):
        self.rate = rate
        self.resize(frames)
        self.t0: float | None = None
        self.total = 0
        self.base: float | None = None
        self.suspect = False

    def resize(self, frames: int) -> None:
        """A new read size on the same stream of audio (the accounting goes on)."""
        self.period = frames / self.rate
        self.threshold = max(2 * frames, 0.05 * self.rate)

    def update(self, frames: int, began: float, now: float) -> bool:
        if self.t0 is None:
            self.t0 = now
            return False
        self.total += frames
        if now - began < frames / self.rate / 2:
            return False  # returned at once: still catching up, the lag means nothing yet
        lag = (now - self.t0) * self.rate - self.total
        if self.base is None or lag < self.base:
            self.base, self.suspect = lag, False
            return False
        if lag - self.base > self.threshold:
            if not self.suspect:
                self.suspect = True
                return False
            self.base, self.suspect = lag, False
            return True
        self.suspect = False
        self.base += (lag - self.base) * 0.05
        return False


class PaceGuard:
    """Notices a device that delivers audio much faster than real time.

    A capture stream at end of file (a driver gone wrong, a resampler bug)
    returns stale audio as fast as it is asked for: sent on, it floods the
    link; kept, it burns a core. Audio read is compared with wall time in
    windows of ``window_s``: more than ``excess_s`` ahead of the clock is a
    fault, so at most that much stale audio gets out, and within one window
    only a device at 1.5x real time or more can get there. What a device's
    buffer holds for a late reader (well under ``excess_s``) never is.
    """

    def __init__(self, rate: int, excess_s: float = 0.5, window_s: float = 1.0):
        self.rate = rate
        self.excess_s = excess_s
        self.window_s = window_s
        self.t0: float | None = None
        self.audio_s = 0.0
        self.windows = 0  #: whole windows that passed at real-time pace
        self.wall_s = 0.0  #: the window's wall time when the fault was found

    @property
    def report(self) -> str:
        return f"{self.audio_s:.2f} s of audio in {self.wall_s:.2f} s"

    def update(self, frames: int, began: float, now: float) -> bool:
        """Count one read; True when the device runs too far ahead of the clock."""
        if self.t0 is None:
            self.t0 = began
        self.audio_s += frames / self.rate
        wall = now - self.t0
        if self.audio_s - wall > self.excess_s:
            self.wall_s = wall
            return True
        if wall >= self.window_s:
            self.t0, self.audio_s = now, 0.0
            self.windows += 1
        return False


# --------------------------------------------------------------------------- chimes

#: name -> notes as (frequency Hz or 0 for a rest, milliseconds)
CHIMES: dict[str, tuple[tuple[float, float], ...]] = {
    "press": ((660.0, 60), (990.0, 90)),
    "release": ((990.0, 60), (660.0, 90)),
    "error": ((330.0, 110), (0.0, 50), (330.0, 110)),
    "connected": ((523.25, 80), (659.25, 80), (783.99, 120)),
    "timer": ((880.0, 100), (0.0, 50), (880.0, 100), (1174.66, 120)),
}


_chime_cache: dict[tuple[str, int, float], bytes] = {}


def render_chime(name: str, rate: int = SPEAKER_RATE, volume: float = 1.0) -> bytes:
    """A chime as s16le mono at ``rate``, generated (no files to ship) and cached.

    Plain Python, not numpy: with the default config the chimes are the only
    thing that would load numpy (see docs/audio.md, "Footprint").
    """
    if name not in CHIMES:
        raise ValueError(f"unknown chime {name!r}; expected one of {', '.join(CHIMES)}")
    key = (name, rate, volume)
    pcm = _chime_cache.get(key)
    if pcm is None:
        out = array("h")
        fade = int(rate * 0.005)
        scale = 0.45 * 32767 * volume
        for freq, ms in CHIMES[name]:
            n = int(rate * ms / 1000)
            if not freq:
                out.extend(array("h", bytes(2 * n)))
                continue
            w = 2 * math.pi * freq / rate
            for i in range(n):
                x = math.sin(w * i) + 0.25 * math.sin(3 * w * i)
                edge = min(i, n - 1 - i)  # a 5 ms linear fade in and out: no click
                if edge < fade:
                    x *= edge / (fade - 1)
                out.append(max(-32768, min(32767, round(x * scale))))
        if sys.byteorder != "little":
            out.byteswap()
        pcm = _chime_cache[key] = out.tobytes()
    return pcm


def spread(pcm: bytes, channels: int) -> bytes:
    """Mono s16le -> the same samples on every channel (interleaved)."""
    np = sys.modules.get("numpy")
    if np is not None:  # loaded anyway (a resampler): twice as fast
        return np.repeat(np.frombuffer(pcm, "<i2"), channels).tobytes()
    mono = array("h", pcm)
    out = array("h", bytes(len(pcm) * channels))
    for ch in range(channels):
        out[ch::channels] = mono
    return out.tobytes()


def mix(turn: bytes, chime: bytes, volume: float) -> bytes:
    """Turn audio plus a chime (either may be empty or shorter), times volume, clipped.

    numpy when it is loaded anyway (a volume below 1 loads it), else plain
    Python: a chime over a reply is rare and lasts a few writes.
    """
    if volume == 1.0 and "numpy" not in sys.modules:
        return mix_py(turn, chime)
    return mix_np(turn, chime, volume)


def mix_py(turn: bytes, chime: bytes) -> bytes:
    a, b = array("h", turn), array("h", chime)
    if sys.byteorder != "little":
        a.byteswap()
        b.byteswap()
    if len(a) < len(b):
        a, b = b, a
    for i, v in enumerate(b):
        a[i] = max(-32768, min(32767, a[i] + v))
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def mix_np(turn: bytes, chime: bytes, volume: float) -> bytes:
    import numpy as np

    n = max(len(turn), len(chime)) // 2
    x = np.zeros(n, dtype=np.float32)
    x[: len(turn) // 2] += np.frombuffer(turn, "<i2")
    x[: len(chime) // 2] += np.frombuffer(chime, "<i2")
    if volume != 1.0:
        x *= volume
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


def level_dbfs(pcm: bytes) -> float:
    """RMS level of s16le audio in dBFS (-120 for silence or nothing)."""
    x = array("h", pcm)
    if sys.byteorder != "little":
        x.byteswap()
    rms = math.sqrt(sum(v * v for v in x) / len(x)) if len(x) else 0.0
    return 20 * math.log10(rms / 32768) if rms > 0 else -120.0
