"""Microphone, Speaker, gate and device handling, over the REAL PyAudio/PortAudio/ALSA path.

Every device here is an ALSA ``file`` PCM over a FIFO (pi_agent.sim.alsa), paced
in real time, so the code under test is exactly what runs on a Pi.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from pi_agent.audio import (
    CHIMES,
    HalfDuplexGate,
    MicChunk,
    Microphone,
    Speaker,
    measure_input,
    play_test_tone,
    render_chime,
)
from pi_agent.audio_backend import (
    HUB,
    DeviceNotFound,
    Stream,
    find_device,
    list_devices,
)
from pi_agent.config import AudioSettings, ChimeSettings
from pi_agent.errors import AudioDeviceError
from pi_agent.pcm import MicConverter, PaceGuard, mix_np, mix_py
from pi_agent.sim.alsa import SimPcm, SimulatedSoundCard
from pi_agent.sim.speech import synthesize, tone

from .conftest import wait_for

TIMEOUT = 10.0
LOG = "pi_agent.audio"

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"
)


# --------------------------------------------------------------------------- helpers


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, "<i2").astype(np.float64)


def resampled(pcm: bytes, src: int, dst: int) -> np.ndarray:
    return soxr.resample(samples(pcm).astype(np.float32), src, dst).astype(np.float64)


def best_match(got: np.ndarray, ref: np.ndarray) -> tuple[float, int]:
    """Normalized cross-correlation peak of ``ref`` inside ``got``, and its offset."""
    n = len(got) + len(ref)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(got, size) * np.conj(np.fft.rfft(ref, size)), size)
    lag = int(np.argmax(corr[: len(got) - len(ref) + 1]))
    seg = got[lag : lag + len(ref)]
    denom = np.linalg.norm(seg) * np.linalg.norm(ref)
    return (float(np.dot(seg, ref) / denom) if denom else 0.0), lag


class Collector:
    """An on_chunk that records chunks and lets a test wait for a count."""

    def __init__(self):
        self.chunks: list[MicChunk] = []
        self.cond = threading.Condition()

    def __call__(self, chunk: bytes) -> None:
        with self.cond:
            self.chunks.append(chunk)
            self.cond.notify_all()

    def wait(self, count: int, timeout: float = TIMEOUT) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.chunks) >= count, timeout)

    @property
    def pcm(self) -> bytes:
        with self.cond:
            return b"".join(self.chunks)


class Events:
    """An on_event/on_state recorder with per-name Events."""

    def __init__(self):
        self.seen: list = []
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def _event(self, name: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(name, threading.Event())

    def __call__(self, name: str, detail: str | None = None) -> None:
        self.seen.append(name)
        self._event(name).set()

    def wait(self, name: str, timeout: float = TIMEOUT) -> bool:
        return self._event(name).wait(timeout)

    def clear(self, name: str) -> None:
        self._event(name).clear()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def card(tmp_path):
    extra = [
        SimPcm("usbmic48", rate=48000, channels=2, only_rate=True),
        SimPcm("spk48", playback=True, rate=48000, channels=2, only_rate=True),
        SimPcm("spk16", playback=True, rate=16000),
    ]
    with SimulatedSoundCard(tmp_path / "alsa", extra=extra) as sim:
        yield sim


@pytest.fixture
def run(card):
    """Start workers; stop them (before the card closes) at teardown."""
    started = []

    def start(worker):
        worker.retry_initial_s = 0.05
        started.append(worker)
        worker.start()
        return worker

    yield start
    for worker in reversed(started):
        worker.stop(5)
    assert HUB._users == 0 and not HUB._streams, "a worker leaked a PortAudio user or stream"


@pytest.fixture
def phrase():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    return synthesize


def ready_mic(run, settings: AudioSettings, **kwargs) -> tuple[Microphone, Collector]:
    got = Collector()
    mic = run(Microphone(settings, got, **kwargs))
    assert wait_for(lambda: mic.state == "ok" and mic.chunks >= 2), mic.state
    return mic, got


def ready_speaker(run, settings: AudioSettings) -> tuple[Speaker, Events]:
    events = Events()
    speaker = run(Speaker(settings, on_event=events))
    assert wait_for(lambda: speaker.state == "ok"), speaker.state
    return speaker, events


def settle(mic: Microphone, chunks: int = 3) -> None:
    """Let the mic read on until ``chunks`` chunks' time after now: what was spoken before
    has then been read. (Counting chunks is not enough: a long idle read in progress now
    brings many chunks at once, all of audio from before.)"""
    until = time.monotonic() + chunks * mic.settings.chunk_ms / 1000
    assert wait_for(lambda: (mic.last_chunk_time or 0.0) >= until)


# --------------------------------------------------------------------------- microphone


@pytest.mark.parametrize("chunk_ms", [20, 40])
def test_spoken_phrase_arrives_as_exact_16k_chunks(card, run, phrase, chunk_ms):
    words = phrase("turn on the light")
    mic, got = ready_mic(run, AudioSettings(chunk_ms=chunk_ms))
    assert (mic.device_name, mic.device_rate) == ("default", 16000)

    assert mic.start_capture() != []  # the pre-roll
    card.speak(words)
    assert card.wait_spoken(TIMEOUT)
    settle(mic)
    mic.stop_capture()

    size = 16000 * chunk_ms // 1000 * 2
    assert got.chunks and {len(c) for c in got.chunks} == {size}
    assert words in got.pcm  # bit-exact: no resampling on a 16 kHz device
    times = [c.captured_at for c in got.chunks]
    assert times == sorted(times) and mic.last_chunk_time >= times[-1]
    assert all(isinstance(c, MicChunk) for c in got.chunks)
    assert mic.overflows == 0 and card.overruns() == 0


@pytest.mark.parametrize("channel", [0, 1, "mix"])
def test_48k_stereo_only_device_is_resampled_and_channel_picked(card, run, phrase, channel):
    import pyaudio

    pa = pyaudio.PyAudio()  # the device really refuses 16 kHz in ALSA
    try:
        dev = find_device(pa, "usbmic48", input=True)
        with pytest.raises(ValueError):
            pa.is_format_supported(16000, input_device=dev.index, input_channels=2,
                                   input_format=pyaudio.paInt16)  # fmt: skip
        assert pa.is_format_supported(48000, input_device=dev.index, input_channels=2,
                                      input_format=pyaudio.paInt16)  # fmt: skip
    finally:
        pa.terminate()

    left = phrase("light on", 48000)
    right = tone(440, len(left) / 96, 48000, amplitude=0.3)
    stereo = np.stack([samples(left), samples(right)], axis=1).astype("<i2").tobytes()
    settings = AudioSettings(input_device="usbmic", input_channels=2, input_channel=channel)
    mic, got = ready_mic(run, settings)
    assert (mic.device_name, mic.device_rate) == ("usbmic48", 48000)

    mic.start_capture()
    card.speak(stereo, "usbmic48")
    assert card.wait_spoken(TIMEOUT, "usbmic48")
    settle(mic, 6)  # plus the resampler's delay
    mic.stop_capture()

    out = samples(got.pcm)
    ref_l, ref_r = resampled(left, 48000, 16000), resampled(right, 48000, 16000)
    expected = {0: ref_l, 1: ref_r, "mix": (ref_l + ref_r) / 2}[channel]
    score, lag = best_match(out, expected)
    assert score > 0.98, score  # same content, same duration (a time-scale error decorrelates)
    segment = out[lag : lag + len(expected)]
    ratio = np.sqrt(np.mean(segment**2) / np.mean(expected**2))
    assert 0.95 < ratio < 1.05, ratio  # same energy
    if channel == 1:
        assert best_match(out, ref_l)[0] < 0.3  # and not the other channel


def test_preroll_holds_what_was_said_before_the_press(card, run):
    beep = tone(1000, 200)
    mic, got = ready_mic(run, AudioSettings(chunk_ms=40, preroll_ms=300))
    settle(mic, 8)  # the ring is full
    card.speak(beep)
    assert card.wait_spoken(TIMEOUT)  # said, and now the button goes down
    assert got.chunks == []  # nothing is delivered before the press

    preroll = mic.start_capture()
    assert len(preroll) == 8  # ceil(300 / 40)
    assert mic.start_capture() == []  # pre-roll is handed out once
    settle(mic, 6)  # the idle read in progress at the press is delivered after it
    mic.stop_capture()
    assert beep in b"".join(preroll) + got.pcm


def ramp(seconds: float) -> bytes:
    """-32768, -32767, ...: every sample differs from the one before by exactly 1."""
    return (np.arange(int(16000 * seconds)) - 32768).astype("<i2").tobytes()


def assert_contiguous(pcm: bytes, signal: bytes) -> None:
    """``pcm`` is a stretch of ``signal`` (a ramp; maybe silence before and after it)
    without a sample lost or twice."""
    x = np.frombuffer(pcm, "<i2")
    start = int(np.argmax(x != 0))
    offset = int(x[start]) + 32768  # where in the ramp the stream starts
    assert start == 0 or offset == 0, "silence, then the ramp from somewhere in the middle"
    n = min(len(x) - start, len(signal) // 2 - offset)
    assert n > 16000 * 0.5
    assert pcm[start * 2 : (start + n) * 2] == signal[offset * 2 : (offset + n) * 2]
    assert not x[start + n :].any()  # and silence after it


@pytest.mark.parametrize("idle_chunks", [1, 3, 5])
def test_switching_between_idle_and_live_periods_loses_and_repeats_nothing(card, run, idle_chunks):
    """Idle periods are 200 ms, live ones a chunk (40 ms): the device is reopened at each
    switch and the stream stays byte-exact (the simulated card loses nothing in a reopen)."""
    signal = ramp(2.5)
    mic, got = ready_mic(run, AudioSettings(chunk_ms=40, preroll_ms=300, idle_period_ms=200))
    loops, chunks = mic.loops, mic.chunks
    assert wait_for(lambda: mic.loops >= loops + 2)
    assert mic.chunks - chunks >= 5 * (mic.loops - loops - 1)  # idle: 200 ms (5 chunks) a read
    assert mic.switches == 0
    card.speak(signal)
    seen = mic.chunks
    assert wait_for(lambda: mic.chunks >= seen + 3 + idle_chunks)  # somewhere in a read
    first = mic.start_capture()
    assert wait_for(lambda: len(got.chunks) >= 20)
    mic.stop_capture()
    live = len(got.chunks)
    seen = mic.chunks
    assert wait_for(lambda: mic.chunks >= seen + idle_chunks)  # well within the pre-roll
    second = mic.start_capture()
    assert card.wait_spoken(TIMEOUT)
    settle(mic, 6)
    mic.stop_capture()
    assert mic.switches >= 3  # to live, to idle, to live (and maybe idle again)
    assert 0 < mic.last_switch_s < 1

    pcm = got.pcm
    stream = b"".join(first) + pcm[: live * 1280] + b"".join(second) + pcm[live * 1280 :]
    assert_contiguous(stream, signal)


def test_a_switch_after_a_re_enumeration_looks_the_device_up_again(card, run):
    """A device index is only valid for the PortAudio it was looked up in."""
    signal = ramp(1.0)
    mic, got = ready_mic(run, AudioSettings(chunk_ms=40, preroll_ms=300))
    assert mic.opens == 1
    HUB.generation += 1  # as a refresh by another worker would leave it
    card.speak(signal)
    first = mic.start_capture()
    assert card.wait_spoken(TIMEOUT)
    settle(mic, 3)
    mic.stop_capture()
    assert mic.opens == 2 and mic.switches == 0  # opened afresh, not with the old index
    # a fresh open starts a fresh converter (the half chunk it held is gone); after it,
    # capture goes on sample for sample
    assert signal[len(signal) // 2 :] in b"".join(first) + got.pcm


def test_idle_period_zero_keeps_one_period_and_never_reopens(card, run):
    signal = ramp(1.0)
    mic, got = ready_mic(run, AudioSettings(chunk_ms=40, preroll_ms=300, idle_period_ms=0))
    loops, chunks = mic.loops, mic.chunks
    assert wait_for(lambda: mic.loops >= loops + 3)
    assert mic.chunks - chunks <= mic.loops - loops + 1  # one chunk a read while idle too
    card.speak(signal)
    first = mic.start_capture()
    assert card.wait_spoken(TIMEOUT)
    settle(mic, 3)
    mic.stop_capture()
    assert mic.switches == 0 and mic.opens == 1
    assert_contiguous(b"".join(first) + got.pcm, signal)


def test_overflow_is_detected_counted_and_logged_once(card, run, caplog):
    caplog.set_level(logging.INFO, logger=LOG)
    stall = threading.Event()

    def slow_consumer(chunk: bytes) -> None:
        if not stall.is_set():
            stall.set()
            time.sleep(0.6)  # a stuck consumer: the device buffer (200 ms) overruns

    mic = run(Microphone(AudioSettings(), slow_consumer))
    assert wait_for(lambda: mic.state == "ok" and mic.chunks >= 2)
    mic.start_capture()
    assert stall.wait(TIMEOUT)
    assert wait_for(lambda: mic.overflows >= 1)
    assert card.overruns() > 0
    settle(mic, 10)
    assert mic.overflows == 1 and mic.state == "ok" and mic.is_alive
    assert len([r for r in caplog.records if "overflow" in r.getMessage()]) == 1


def test_mic_converter_mixes_gains_clips_and_rechunks_exactly():
    stereo = np.array([[1000, 3000], [-2000, 2000], [30000, 30000]] * 160, dtype="<i2")
    conv = MicConverter(16000, 2, "mix", 6.0, chunk_bytes=320)
    raw = stereo.tobytes()
    out = conv.push(raw[:960]) + conv.push(raw[960:])  # two device reads
    assert [len(c) for c in out] == [320] * 3  # 480 frames -> 3 chunks of 160, exactly
    got = np.frombuffer(b"".join(out), "<i2")
    gain = 10 ** (6 / 20)
    assert got[0] == round(2000 * gain) and got[1] == 0 and got[2] == 32767  # clipped

    picked = MicConverter(16000, 2, 1, 0.0, chunk_bytes=320).push(stereo.tobytes())
    assert np.array_equal(np.frombuffer(b"".join(picked), "<i2"), stereo[:, 1])


# --------------------------------------------------------------------------- speaker


@pytest.mark.parametrize("volume", [1.0, 0.5])
def test_speaker_plays_exactly_the_24k_input_after_volume(card, run, phrase, volume):
    words = phrase("hello there", 24000)
    speaker, events = ready_speaker(run, AudioSettings())
    speaker.volume = volume
    for i in range(0, len(words), 1920):  # 40 ms pieces, as the server sends them
        speaker.play(words[i : i + 1920])
    assert speaker.is_playing and not speaker.idle.is_set()
    speaker.end_turn()
    assert events.wait("idle")
    assert events.seen == ["started", "idle"]
    assert speaker.idle.is_set() and time.monotonic() - speaker.last_drained < 1
    assert card.wait_played(len(words), TIMEOUT)

    played = card.played_bytes()
    if volume == 1.0:
        assert played == words
    else:
        scaled = np.rint(np.frombuffer(words, "<i2").astype(np.float32) * np.float32(volume))
        assert played == scaled.astype("<i2").tobytes()


def test_speaker_resamples_for_a_16k_device(card, run, phrase):
    words = phrase("hello there", 24000)
    speaker, events = ready_speaker(run, AudioSettings(output_device="spk16", output_rate=16000))
    assert speaker.device_rate == 16000
    speaker.play(words)
    speaker.end_turn()
    assert events.wait("idle")
    expected = resampled(words, 24000, 16000)
    assert card.wait_played(len(expected) * 2 - 200, TIMEOUT, "spk16")
    score, _lag = best_match(samples(card.played_bytes("spk16")), expected[200:-200])
    assert score > 0.99, score


def test_flush_cuts_playback_within_one_period(card, run, phrase, monkeypatch):
    words = phrase("this is a long answer that the user interrupts halfway through", 24000)
    writes: list[tuple[float, int]] = []
    real_write = Stream.write

    def spy(self, pcm):
        writes.append((time.monotonic(), len(pcm)))
        return real_write(self, pcm)

    monkeypatch.setattr(Stream, "write", spy)
    speaker, events = ready_speaker(run, AudioSettings(output_device="spk48"))
    assert (speaker.device_rate, speaker.state) == (48000, "ok")
    speaker.play(words)
    assert card.wait_played(48000 * 4 // 2, TIMEOUT, "spk48")  # 0.5 s played

    called = time.monotonic()
    took = speaker.flush()
    returned = time.monotonic()
    assert took <= 0.05, took
    period = 48000 * 20 // 1000 * 2  # one 20 ms write, mono into the plug
    after_call = sum(n for t, n in writes if t >= called)
    assert after_call <= period  # at most the write that was already starting
    assert not [t for t, _n in writes if t >= returned]  # nothing after flush() returned
    assert events.wait("idle") and speaker.idle.is_set()
    assert events.seen == ["started", "idle"]

    # the rest of the answer is gone: the device got only what it already held
    total = len(card.played_bytes("spk48"))
    assert card.written_bytes("spk48") < total + period * 4
    assert total < len(words) * 4  # 24 kHz mono -> 48 kHz stereo is x4

    speaker.play(words[:4800])  # and it plays again afterwards, as a new turn
    speaker.end_turn()
    events.clear("idle")
    assert events.wait("idle")
    assert events.seen == ["started", "idle", "started", "idle"]


def test_speaker_underrun_end_turn_below_jitter_and_bounded_buffer(card, run):
    speaker, events = ready_speaker(run, AudioSettings(jitter_ms=60))
    speaker.play(bytes(4800))  # 100 ms, then nothing: the network stalls
    assert events.wait("started")
    assert wait_for(lambda: speaker.underruns == 1)
    speaker.play(bytes(960))  # 20 ms: below the jitter mark...
    speaker.end_turn()  # ...but the end of the turn plays it anyway
    assert events.wait("idle")
    assert speaker.underruns == 1

    idle = Speaker(AudioSettings())  # never started: buffers, and refuses past the bound
    idle.play(b"\x01")
    idle.play(b"\x00" * 3)  # odd bytes are carried, not misaligned
    assert idle._queued == 4
    idle.play(bytes(60 * 48000))
    assert idle.dropped_bytes == 60 * 48000


def thread_wakeups(worker) -> int:
    """How often the kernel woke a worker's thread (voluntary context switches)."""
    status = Path(f"/proc/self/task/{worker._thread.native_id}/status").read_text()
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


def _settled(worker) -> bool:
    """No wakeup of the worker's thread over 50 ms."""
    before = thread_wakeups(worker)
    threading.Event().wait(0.05)
    return thread_wakeups(worker) == before


def test_first_reply_after_a_long_idle_is_played_whole(card, run):
    """Idle, the speaker thread sleeps without a timeout: how long it idles cannot matter."""
    rng = np.random.default_rng(7)
    reply = rng.integers(-8000, 8000, 24000 * 6 // 10, dtype="<i2").tobytes()  # 0.6 s, no repeats
    speaker, events = ready_speaker(run, AudioSettings())
    speaker.play(bytes(4800))  # an earlier turn: the stream has been started and stopped
    speaker.end_turn()
    assert events.wait("idle")
    speaker.play_chime("connected")  # and a chime, as a started agent has played
    assert wait_for(speaker.idle.is_set)
    events.clear("idle")

    # Let the thread reach its wait (going idle still takes a switch or two), then watch it.
    assert wait_for(lambda: _settled(speaker)), "the speaker thread never settled"
    loops, wakeups = speaker.loops, thread_wakeups(speaker)
    threading.Event().wait(0.5)  # the idle window: nothing is played in it
    assert speaker.loops == loops, "the idle speaker thread ran"
    assert thread_wakeups(speaker) == wakeups, "the kernel woke the idle speaker thread"

    before = len(card.played_bytes())
    for i in range(0, len(reply), 1920):  # 40 ms pieces, as the server sends them
        speaker.play(reply[i : i + 1920])
    speaker.end_turn()
    assert events.wait("idle")
    assert card.wait_played(before + len(reply), TIMEOUT)
    assert card.played_bytes()[before:] == reply  # whole: not a sample clipped


# --------------------------------------------------------------------------- gate and chimes


def test_gate_holds_the_mic_while_playing_and_for_the_echo_tail(card, run):
    settings = AudioSettings(echo_tail_ms=300)
    speaker, events = ready_speaker(run, settings)
    gate = HalfDuplexGate(speaker, settings)
    mic, got = ready_mic(run, settings, gate=gate)
    assert gate.is_open()
    mic.start_capture(gated=True)
    assert got.wait(2)

    began = time.monotonic()
    speaker.play(bytes(24000))  # 0.5 s
    assert not gate.is_open()
    speaker.end_turn()
    assert events.wait("idle")
    drained = speaker.last_drained
    assert not gate.is_open()  # the room still echoes
    assert wait_for(gate.is_open)
    assert time.monotonic() - drained >= 0.3
    reopened = len(got.chunks)
    assert got.wait(reopened + 2)
    mic.stop_capture()

    held = [c for c in got.chunks if began + 0.05 < c.captured_at < drained + 0.3]
    assert held == [] and mic.skipped >= 10

    open_gate = HalfDuplexGate(Speaker(settings), AudioSettings(full_duplex=True))
    open_gate.speaker.play(bytes(960))  # an unstarted speaker buffers: it counts as playing
    assert open_gate.speaker.is_playing and open_gate.is_open()


def test_chimes_play_locally_and_never_reach_the_model(card, run):
    for name in CHIMES:
        pcm = render_chime(name, 24000)
        assert 0.1 < len(pcm) / 2 / 24000 < 0.4 and max(samples(pcm)) > 10000
        assert render_chime(name, 24000) is pcm  # rendered once
    with pytest.raises(ValueError):
        render_chime("fanfare")

    settings = AudioSettings(chimes=ChimeSettings(release=False))
    speaker, events = ready_speaker(run, settings)
    mic, got = ready_mic(run, settings, gate=HalfDuplexGate(speaker, settings))
    card.speak(tone(300, 2000, amplitude=0.3))  # the user keeps talking throughout
    settle(mic, 5)  # two idle reads: the one in progress now holds only the tone
    mic.start_capture(gated=False)  # push-to-talk: ungated
    assert got.wait(2)

    speaker.play_chime("release")  # switched off: nothing happens
    assert speaker.idle.is_set()
    speaker.play_chime("press")
    assert speaker.is_playing  # the gate closes for chimes too
    assert wait_for(speaker.idle.is_set)
    assert card.wait_played(4000, TIMEOUT)
    settle(mic, 4)
    mic.stop_capture()

    assert events.seen == []  # chimes are not turns
    assert mic.blanked >= 3
    silent = [c for c in got.chunks if not any(c)]
    assert len(silent) == mic.blanked  # blanked chunks are silence, the rest is the user
    assert all(any(c) for c in got.chunks[:2])
    with pytest.raises(ValueError):
        speaker.play_chime("fanfare")


@settings(max_examples=50)
@given(
    turn=st.lists(st.integers(-32768, 32767), max_size=60),
    chime=st.lists(st.integers(-32768, 32767), max_size=60),
)
def test_chime_mixing_without_numpy_matches_numpy(turn, chime):
    a = np.array(turn, dtype="<i2").tobytes()
    b = np.array(chime, dtype="<i2").tobytes()
    expected = np.clip(
        np.pad(np.array(turn), (0, max(0, len(chime) - len(turn))))
        + np.pad(np.array(chime), (0, max(0, len(turn) - len(chime)))),
        -32768,
        32767,
    )
    assert mix_py(a, b) == mix_np(a, b, 1.0) == expected.astype("<i2").tobytes()


def test_a_chime_during_a_reply_is_mixed_in_exactly(card, run):
    speaker, events = ready_speaker(run, AudioSettings())
    reply = np.full(24000, 1000, dtype="<i2").tobytes()  # 0.5 s, flat: the chime shows
    speaker.play(reply)
    assert events.wait("started")
    speaker.play_chime("press")
    speaker.end_turn()
    assert events.wait("idle")
    assert card.wait_played(len(reply), TIMEOUT)
    played = samples(card.played_bytes())
    assert len(played) == len(reply) // 2  # mixed in, not appended
    added = played - 1000
    chime = samples(render_chime("press", 24000, ChimeSettings().volume))
    start = int(np.argmax(added != 0)) - int(np.argmax(chime != 0))
    assert start > 0 and np.array_equal(added[start : start + len(chime)], chime)
    assert not added[start + len(chime) :].any()


def test_the_default_config_never_loads_numpy(tmp_path):
    """numpy is ~15 MB of RSS: a 16 kHz mic, a 24 kHz speaker, chimes and volume 1 need none."""
    script = """
import sys, threading
from pi_agent.audio import Microphone, Speaker
from pi_agent.config import AudioSettings
from pi_agent.sim.alsa import SimulatedSoundCard
with SimulatedSoundCard(sys.argv[1]) as card:
    got, idle = [], threading.Event()
    settings = AudioSettings()
    speaker = Speaker(settings, on_event=lambda e: e == "idle" and idle.set())
    mic = Microphone(settings, got.append)
    speaker.start(); mic.start()
    card.speak(bytes(6400))
    mic.start_capture()
    speaker.play(bytes(9600)); speaker.play_chime("press"); speaker.end_turn()
    assert idle.wait(10)
    threading.Event().wait(0.3)
    mic.stop_capture(); mic.stop(); speaker.stop()
    assert got and speaker.state == mic.state == "ok", (len(got), speaker.state, mic.state)
print("numpy" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "alsa")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


# --------------------------------------------------------------------------- robustness


def test_missing_mic_is_retried_and_recovers_when_it_appears(card, run, caplog):
    caplog.set_level(logging.INFO, logger=LOG)
    speaker, events = ready_speaker(run, AudioSettings())  # a live stream the refresh must close
    states = Events()
    settings = AudioSettings(input_device="seeed", retry_max_s=1)
    got = Collector()
    mic = run(Microphone(settings, got, on_state=states))
    assert states.wait("missing")
    generation = HUB.generation
    assert wait_for(lambda: HUB.generation >= generation + 2)  # retried, PortAudio re-made

    card.add_pcm(SimPcm("seeed-2mic"))
    assert states.wait("ok")
    assert states.seen == ["missing", "ok"] and mic.device_name == "seeed-2mic"
    mic_logs = [r for r in caplog.records if r.getMessage().startswith("microphone")]
    assert [r.levelname for r in mic_logs] == ["WARNING", "INFO"]  # once per change
    assert "'seeed' not found" in mic_logs[0].getMessage()

    mic.start_capture()
    beep = tone(800, 100)
    card.speak(beep, "seeed-2mic")
    assert card.wait_spoken(TIMEOUT, "seeed-2mic")
    settle(mic)
    assert beep in got.pcm

    speaker.play(bytes(4800))  # the speaker survived the re-initialisation
    speaker.end_turn()
    assert events.wait("idle") and speaker.state == "ok"


def test_mic_that_fails_mid_stream_is_reopened(card, run, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger=LOG)
    real_read = Stream.read
    failed = threading.Event()

    def flaky(self, frames):
        if not failed.is_set():
            failed.set()
            raise OSError(-9999, "Unanticipated host error")  # what an unplug looks like
        return real_read(self, frames)

    states = Events()
    mic, _got = ready_mic(run, AudioSettings(), on_state=states)
    monkeypatch.setattr(Stream, "read", flaky)
    assert states.wait("missing") and states.wait("ok")
    settle(mic)
    assert states.seen == ["ok", "missing", "ok"] and mic.is_alive and mic.error is None
    assert len([r for r in caplog.records if "stopped working" in r.getMessage()]) == 1


@settings(max_examples=60)
@given(
    reads=st.lists(
        st.tuples(st.sampled_from([320, 3200]), st.sampled_from([0.0, 0.0, 0.03, 0.15, 0.3])),
        min_size=10,
        max_size=60,
    ),
    backlog_s=st.sampled_from([0.0, 0.1, 0.3]),
)
def test_pace_guard_never_flags_a_device_that_keeps_real_time(reads, backlog_s):
    """Reads of any size, a thread that is sometimes late, a backlog at the start: no fault."""
    guard = PaceGuard(16000)
    clock = 0.0
    produced = backlog_s  # what the device holds when the stream opens
    for frames, lag in reads:
        began = clock
        need = frames / 16000
        clock = max(began, began + need - produced)  # a read waits for what is missing
        produced = max(0.0, produced - need)
        assert not guard.update(frames, began, clock)
        produced = min(0.3, produced + lag)  # late: it waits (a buffer holds 0.3 s at most)
        clock += lag


@settings(max_examples=30)
@given(factor=st.floats(2.0, 1000.0), frames=st.sampled_from([320, 1600]))
def test_pace_guard_flags_a_flood_after_half_a_second_of_extra_audio(factor, frames):
    guard = PaceGuard(16000)
    clock, audio = 0.0, 0.0
    while not guard.update(frames, clock, clock + frames / 16000 / factor):
        clock += frames / 16000 / factor
        audio += frames / 16000
        assert audio - clock <= 0.5 + frames / 16000, "flagged too late"
    assert guard.audio_s - guard.wall_s > 0.5


def test_mic_faster_than_real_time_is_a_fault_then_recovers(card, run, caplog):
    """A mic at end of file: stale audio as fast as it is read. Reported once, not sent on,
    reopened with backoff, fine again once the device is."""
    caplog.set_level(logging.INFO, logger=LOG)
    states = Events()
    mic, got = ready_mic(run, AudioSettings(chunk_ms=40), on_state=states)
    mic.start_capture()  # a turn in progress: the worst case, every chunk goes to the link
    assert got.wait(5)
    sane = len(got.chunks)
    flood_began = time.monotonic()
    card.set_eof()
    assert states.wait("fault")
    flagged = time.monotonic()
    assert mic.faults == 1 and mic.state == "fault"
    extra_s = (len(got.chunks) - sane) * 0.04 - (flagged - flood_began)
    assert extra_s <= 0.5 + 0.1, f"{extra_s:.2f} s of stale audio went out"  # + a read, a chunk

    delivered = len(got.chunks)
    opens = mic.opens
    assert wait_for(lambda: mic.opens >= opens + 2)  # reopened, still flooding, twice
    assert states.seen == ["ok", "fault"] and mic.faults == 1  # reported once
    assert len(got.chunks) == delivered  # and nothing more went out
    faults = [r for r in caplog.records if "microphone fault" in r.getMessage()]
    assert len(faults) == 1 and "faster than real time" in faults[0].getMessage()

    states.clear("ok")
    card.clear_eof()  # the device works again
    assert states.wait("ok", TIMEOUT) and states.seen == ["ok", "fault", "ok"]
    beep = tone(700, 200)
    card.speak(beep)
    assert card.wait_spoken(TIMEOUT)
    settle(mic)
    mic.stop_capture()
    assert beep in got.pcm[delivered * 1280 :]  # byte-exact again
    assert mic.faults == 1 and mic.overflows == 0


def test_reopen_closes_and_reopens_the_device_at_its_next_chance(card, run):
    states = Events()
    mic, got = ready_mic(run, AudioSettings(), on_state=states)
    mic.start_capture()
    opens = mic.opens
    mic.reopen()
    assert wait_for(lambda: mic.opens == opens + 1)
    beep = tone(900, 200)
    card.speak(beep)
    assert card.wait_spoken(TIMEOUT)
    settle(mic)
    mic.stop_capture()
    assert beep in got.pcm and states.seen == ["ok"] and mic.is_alive

    lost = run(Microphone(AudioSettings(input_device="seeed"), Collector(), on_state=states))
    lost.retry_initial_s = 60.0  # a long backoff that reopen() cuts short
    assert states.wait("missing")
    card.add_pcm(SimPcm("seeed-2mic"))
    lost.reopen()
    assert wait_for(lambda: lost.state == "ok") and lost.device_name == "seeed-2mic"


def test_missing_speaker_drops_audio_and_never_holds_the_gate(card, run):
    settings = AudioSettings(output_device="bluetooth")
    states = Events()
    speaker = Speaker(settings, on_state=states)
    speaker.play(bytes(9600))  # queued while still 'starting'...
    speaker.play_chime("press")
    assert speaker.is_playing
    run(speaker)
    assert states.wait("missing")
    assert wait_for(speaker.idle.is_set)  # ...and let go when the device is not there
    gate = HalfDuplexGate(speaker, AudioSettings(echo_tail_ms=0))
    assert gate.is_open()
    speaker.play(bytes(960))
    assert speaker.dropped_bytes == 960 and not speaker.is_playing
    assert speaker.flush() < 0.05


def test_self_test_helpers_for_pi_agent_check(card):
    card.speak(tone(440, 3000, amplitude=0.1))
    level = measure_input(AudioSettings(), 0.3)
    assert (level.device, level.rate) == ("default", 16000)
    assert -30 < level.dbfs < -20  # a 0.1 sine is -23 dBFS
    assert play_test_tone(AudioSettings()) == "default"
    assert len(card.played_bytes()) > 4800
    with pytest.raises(AudioDeviceError, match="'nothere' not found"):
        measure_input(AudioSettings(input_device="nothere"), 0.1)
    assert HUB._users == 0


# --------------------------------------------------------------------------- device listing


def test_list_devices_marks_the_picks_and_explains_a_miss(card):
    report = list_devices(AudioSettings(input_device="usbmic48", output_device="spk"))
    lines = report.splitlines()
    usb = next(line for line in lines if line.strip().startswith("'usbmic48'"))
    assert "rates 48000 (default 48000)" in usb and usb.endswith("<- input")
    assert next(line for line in lines if line.strip().startswith("'spk'")).endswith("<- output")
    assert "matches nothing" not in report

    report = list_devices(AudioSettings(input_device="respeaker", output_device="plughw:1,0"))
    assert "audio.input_device 'respeaker' matches nothing" in report
    assert "'mic'" in report and "'usbmic48'" in report  # says what exists
    assert "(hw:1,0)" in report  # and how PortAudio names cards
    assert "<- input" not in report

    report = list_devices(AudioSettings(input_device="MIC"))
    assert "matches 2 input devices ('mic', 'usbmic48'); using the first" in report


def test_a_child_process_can_use_the_simulated_card(card):
    """What a benchmark of the real ``pi-agent run`` needs: the card's inputs passed down."""
    signal = ramp(1.0)
    script = """
import sys
from pi_agent.audio_backend import silence_native_noise
silence_native_noise()
import pyaudio
pa = pyaudio.PyAudio()
s = pa.open(format=pyaudio.paInt16, channels=1, rate=16000, input=True, frames_per_buffer=320)
print("reading", flush=True)
sys.stdout.buffer.write(s.read(16000 * 2, exception_on_overflow=False))  # 2 s in one read
s.close(); pa.terminate()
"""
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
        pass_fds=card.pass_fds,
    )
    assert child.stdout.readline() == b"reading\n"
    card.speak(signal)
    out, _ = child.communicate(timeout=30)
    assert child.returncode == 0
    assert signal in out  # exact, through the child's own PortAudio


def test_find_device_prefers_exact_then_substring():
    class FakePa:
        names = [("USB PnP: Audio (hw:1,0)", 1, 0), ("usb", 0, 2), ("Mic Array (hw:2,0)", 4, 0)]

        def get_device_count(self):
            return len(self.names)

        def get_device_info_by_index(self, i):
            name, ins, outs = self.names[i]
            return dict(name=name, maxInputChannels=ins, maxOutputChannels=outs,
                        defaultSampleRate=48000.0)  # fmt: skip

    pa = FakePa()
    assert find_device(pa, "usb", input=False).name == "usb"  # exact
    dev = find_device(pa, "usb", input=True)  # substring, and only inputs
    assert (dev.name, dev.index, dev.note) == ("USB PnP: Audio (hw:1,0)", 0, "")
    assert find_device(pa, "HW:", input=True).note.startswith("'HW:' matches 2 input devices")
    with pytest.raises(DeviceNotFound, match="inputs are: 'USB PnP: Audio"):
        find_device(pa, "respeaker", input=True)
