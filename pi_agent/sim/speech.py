"""Test speech and tones: real spoken words for the simulated microphone.

espeak-ng output is byte-identical across runs; sox is called with ``-R``
(repeatable dither), so a phrase is the same bytes every time. Without sox the
22.05 kHz espeak output is resampled with soxr, also deterministic.
"""

from __future__ import annotations

import functools
import io
import math
import shutil
import subprocess
import wave

import numpy as np


class SpeechToolMissing(FileNotFoundError):
    """espeak-ng (or sox) is not installed."""


@functools.lru_cache(maxsize=64)
def synthesize(text: str, rate: int = 16000, *, voice: str = "en-us", speed: int = 150) -> bytes:
    """Speak ``text`` with espeak-ng; return raw s16le mono at ``rate`` (cached)."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SpeechToolMissing(
            "espeak-ng is not installed; `apt-get install espeak-ng sox` to make test speech"
        )
    wav = subprocess.run(
        [espeak, "-v", voice, "-s", str(speed), "--stdout", text],
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout
    sox = shutil.which("sox")
    if sox is not None:
        return subprocess.run(
            [
                sox,
                "-R",
                "-t",
                "wav",
                "-",
                "-r",
                str(rate),
                "-c",
                "1",
                "-b",
                "16",
                "-e",
                "signed-integer",
                "-t",
                "raw",
                "-",
            ],
            input=wav,
            check=True,
            capture_output=True,
            timeout=30,
        ).stdout
    with wave.open(io.BytesIO(wav)) as w:
        src_rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    if src_rate == rate:
        return pcm.tobytes()
    import soxr

    out = soxr.resample(pcm.astype(np.float32), src_rate, rate)
    return np.clip(np.rint(out), -32768, 32767).astype("<i2").tobytes()


def tone(freq: float, ms: float, rate: int = 16000, *, amplitude: float = 0.5) -> bytes:
    """A sine tone as raw s16le mono, with 5 ms fades so it does not click."""
    n = round(rate * ms / 1000)
    t = np.arange(n) / rate
    x = np.sin(2 * math.pi * freq * t) * amplitude * 32767
    fade = min(n // 2, int(rate * 0.005))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        x[:fade] *= ramp
        x[n - fade :] *= ramp[::-1]
    return np.rint(x).astype("<i2").tobytes()
