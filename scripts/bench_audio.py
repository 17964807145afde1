#!/usr/bin/env python3
"""CPU cost of capture + playback, and mic chunk-to-queue latency, against bare PyAudio loops.

Runs on the simulated sound card (real PyAudio/PortAudio/ALSA, paced in real
time). For each device setup it runs, for ``--seconds`` each:

* baseline: one thread reading the mic in 20 ms blocks into a queue and one
  writing 20 ms blocks of speech to the speaker, with bare PyAudio;
* pi-agent: :class:`Microphone` (capturing) and :class:`Speaker` (fed 40 ms
  pieces in real time, as the session reader does).

CPU is the per-thread CPU time of those two threads (the simulated card's
clock and the feeder are not counted), as seconds per minute of audio, with the
ratio to the baseline of the same run. Latency is from the moment a device read
returned to the moment its chunk was queued (``MicChunk.captured_at``).

    .venv/bin/python scripts/bench_audio.py [--seconds 10] [--chunk-ms 40] [--json]
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from pi_agent.audio import Microphone, Speaker
from pi_agent.audio_backend import find_device, silence_native_noise
from pi_agent.config import AudioSettings
from pi_agent.sim.alsa import SimPcm, SimulatedSoundCard
from pi_agent.sim.speech import tone


@dataclass
class Row:
    setup: str
    path: str
    cpu_s_per_min: float
    ratio: float
    latency_p50_ms: float
    latency_p99_ms: float
    chunks: int
    overflows: int
    underruns: int


def thread_cpu(thread: threading.Thread) -> float:
    """CPU seconds a (running) thread has used so far."""
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def speech_like(rate: int, seconds: float) -> bytes:
    """Tones at speech-ish pitches: deterministic, no espeak needed."""
    parts = [tone(f, 250, rate, amplitude=0.3) for f in (220, 330, 262, 392)]
    block = b"".join(parts)
    return (block * (int(seconds / 1.0) + 1))[: int(rate * seconds) * 2]


def percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    arr = np.array(values) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def bare_loops(mic: SimPcm, speaker: SimPcm, seconds: float) -> tuple[float, list[float], int]:
    """Baseline: bare PyAudio read and write loops on the same devices."""
    import pyaudio

    silence_native_noise()
    pa = pyaudio.PyAudio()
    stop = threading.Event()
    latencies: list[float] = []
    out: queue.Queue[bytes] = queue.Queue()
    mic_dev = find_device(pa, mic.name, input=True)
    spk_dev = find_device(pa, speaker.name, input=False)
    frames_in = mic.rate // 50
    frames_out = speaker.rate // 50
    audio = speech_like(speaker.rate, 2.0)
    period = frames_out * 2

    def reader() -> None:
        stream = pa.open(
            format=pyaudio.paInt16,
            channels=mic.channels,
            rate=mic.rate,
            input=True,
            input_device_index=mic_dev.index,
            frames_per_buffer=frames_in,
        )
        while not stop.is_set():
            data = stream.read(frames_in, exception_on_overflow=False)
            read_at = time.monotonic()
            out.put(data)
            latencies.append(time.monotonic() - read_at)
        stream.close()

    def writer() -> None:
        stream = pa.open(
            format=pyaudio.paInt16,
            channels=1,
            rate=speaker.rate,
            output=True,
            output_device_index=spk_dev.index,
            frames_per_buffer=frames_out,
        )
        i = 0
        while not stop.is_set():
            stream.write(audio[i : i + period])
            i = (i + period) % (len(audio) - period)
        stream.close()

    threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # warm-up: streams open
    cpu0 = sum(thread_cpu(t) for t in threads)
    latencies.clear()
    time.sleep(seconds)
    cpu = sum(thread_cpu(t) for t in threads) - cpu0
    stop.set()
    for t in threads:
        t.join(5)
    pa.terminate()
    return cpu, latencies, out.qsize()


def pi_agent_workers(
    settings: AudioSettings, seconds: float
) -> tuple[float, list[float], int, int, int]:
    """Microphone (capturing) + Speaker (fed in real time) on the same devices."""
    latencies: list[float] = []
    out: queue.Queue[bytes] = queue.Queue()

    def on_chunk(chunk: bytes) -> None:
        out.put(chunk)
        latencies.append(time.monotonic() - chunk.captured_at)

    speaker = Speaker(settings)
    mic = Microphone(settings, on_chunk)
    speaker.start()
    mic.start()
    stop = threading.Event()
    audio = speech_like(24000, 2.0)

    def feeder() -> None:  # the session reader: 40 ms pieces, a little ahead of real time
        piece, i, t0, n = 1920, 0, time.monotonic(), 0
        while not stop.is_set():
            speaker.play(audio[i : i + piece])
            i = (i + piece) % (len(audio) - piece)
            n += 1
            stop.wait(max(0.0, t0 + n * 0.04 - 0.1 - time.monotonic()))

    feed = threading.Thread(target=feeder)
    deadline = time.monotonic() + 10
    while (mic.state != "ok" or speaker.state != "ok") and time.monotonic() < deadline:
        time.sleep(0.01)
    if mic.state != "ok" or speaker.state != "ok":
        raise SystemExit(f"devices not ready: mic {mic.state}, speaker {speaker.state}")
    mic.start_capture()
    feed.start()
    time.sleep(0.3)
    threads = [mic._thread, speaker._thread]
    cpu0 = sum(thread_cpu(t) for t in threads)
    latencies.clear()
    time.sleep(seconds)
    cpu = sum(thread_cpu(t) for t in threads) - cpu0
    stop.set()
    feed.join(5)
    mic.stop()
    speaker.stop()
    return cpu, latencies, out.qsize(), mic.overflows, speaker.underruns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per path and setup")
    parser.add_argument("--chunk-ms", type=int, default=40)
    parser.add_argument("--json", action="store_true", help="print JSON rows instead")
    args = parser.parse_args(argv)

    setups = [
        (
            "16k mic, 24k speaker",
            SimPcm("mic", rate=16000),
            SimPcm("spk", playback=True, rate=24000),
            AudioSettings(chunk_ms=args.chunk_ms),
        ),
        (
            "48k stereo mic+speaker",
            SimPcm("usbmic48", rate=48000, channels=2, only_rate=True),
            SimPcm("spk48", playback=True, rate=48000, channels=2, only_rate=True),
            AudioSettings(
                chunk_ms=args.chunk_ms,
                input_device="usbmic48",
                input_channels=2,
                output_device="spk48",
            ),
        ),
    ]
    rows: list[Row] = []
    for name, mic, spk, settings in setups:
        with SimulatedSoundCard(extra=[mic, spk] if mic.name != "mic" else []):
            cpu, lat, chunks = bare_loops(mic, spk, args.seconds)
            base = cpu / args.seconds * 60
            p50, p99 = percentiles(lat)
            path = "bare PyAudio loops (baseline)"
            rows.append(Row(name, path, base, 1.0, p50, p99, chunks, 0, 0))
            cpu, lat, chunks, overflows, underruns = pi_agent_workers(settings, args.seconds)
            ours = cpu / args.seconds * 60
            p50, p99 = percentiles(lat)
            ratio = ours / base if base else float("nan")
            path = "pi-agent Microphone + Speaker"
            rows.append(Row(name, path, ours, ratio, p50, p99, chunks, overflows, underruns))

    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return 0
    print(f"{args.seconds:g} s per row, mic chunks of {args.chunk_ms} ms (pi-agent) / 20 ms (bare)")
    print(
        f"{'setup':24} {'path':32} {'CPU s/min':>9} {'x base':>7} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'chunks':>6} {'ovf':>4} {'und':>4}"
    )
    for r in rows:
        print(
            f"{r.setup:24} {r.path:32} {r.cpu_s_per_min:9.3f} {r.ratio:7.2f}"
            f" {r.latency_p50_ms:7.3f} {r.latency_p99_ms:7.3f} {r.chunks:6d}"
            f" {r.overflows:4d} {r.underruns:4d}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
