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

``--idle SECONDS`` measures the idle agent instead: the mic filling its
pre-roll (not capturing) and the speaker with nothing to play, per thread: CPU
seconds per minute and kernel wakeups per second (voluntary context switches,
from ``/proc``). ``--first-write N`` measures what the speaker's first write of
a reply costs with the device kept open (stopped) while idle, against opening
it again (the device lookup, rate probe and open that a reopen would add).
``--switch N`` measures how long the mic's reopen takes at N presses and N
releases (idle and live periods differ). ``--flood SECONDS`` measures a mic
at end of file (stale audio as fast as it is read) during a turn: process
CPU over the episode, audio delivered, faults.
``--rss`` measures the peak RSS of a fresh process running Microphone and
Speaker through a turn with a chime, per config, and whether numpy got loaded.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if "--rss-child" not in sys.argv:  # a child measuring its footprint imports only what it uses
    import numpy as np

    from pi_agent.sim.speech import tone

from pi_agent.audio import Microphone, Speaker
from pi_agent.audio_backend import find_device, silence_native_noise
from pi_agent.config import AudioSettings
from pi_agent.sim.alsa import SimPcm, SimulatedSoundCard


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


def thread_wakeups(thread: threading.Thread) -> int:
    """Voluntary context switches of a thread: how often it blocked and was woken."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    for line in status.splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    return 0


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


def wait_until(condition, timeout: float = 10.0, poll: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def idle_cost(
    seconds: float, idle_period_ms: int = AudioSettings.idle_period_ms
) -> list[dict[str, float | str]]:
    """Per-thread CPU and wakeups of an idle Microphone (pre-roll only) and Speaker."""
    rows = []
    with SimulatedSoundCard():
        settings = AudioSettings(idle_period_ms=idle_period_ms)
        speaker = Speaker(settings)
        mic = Microphone(settings, lambda chunk: None)
        speaker.start()
        mic.start()
        try:
            if not wait_until(lambda: mic.state == speaker.state == "ok" and mic.chunks >= 10):
                raise SystemExit(f"devices not ready: mic {mic.state}, speaker {speaker.state}")
            speaker.play_chime("connected")  # what a started agent has done
            wait_until(lambda: speaker.idle.is_set())
            time.sleep(0.5)
            workers = {f"mic ({idle_period_ms} ms)": mic, "speaker (idle)": speaker}
            before = {
                k: (thread_cpu(w._thread), thread_wakeups(w._thread)) for k, w in workers.items()
            }
            loops0 = {k: getattr(w, "loops", None) for k, w in workers.items()}
            time.sleep(seconds)
            for name, worker in workers.items():
                cpu0, wake0 = before[name]
                cpu = thread_cpu(worker._thread) - cpu0
                wakeups = thread_wakeups(worker._thread) - wake0
                loops = getattr(worker, "loops", None)
                rows.append(
                    {
                        "thread": name,
                        "cpu_s_per_min": cpu / seconds * 60,
                        "wakeups_per_s": wakeups / seconds,
                        "loops_per_s": (
                            (loops - loops0[name]) / seconds if loops is not None else float("nan")
                        ),
                    }
                )
        finally:
            mic.stop()
            speaker.stop()
    return rows


def switch_cost(repeats: int) -> dict[str, float]:
    """Mic: how long the reopen at a press (and at a release) takes, in ms.

    On hardware the device captures nothing while it is reopened; on the
    simulated card the audio waits in its socket, so only the time is measured.
    """
    times: list[float] = []
    with SimulatedSoundCard():
        mic = Microphone(AudioSettings(), lambda chunk: None)
        mic.start()
        try:
            if not wait_until(lambda: mic.state == "ok" and mic.chunks >= 5):
                raise SystemExit(f"mic not ready: {mic.state}")
            for i in range(repeats * 2):
                switches = mic.switches
                if i % 2 == 0:
                    mic.start_capture()
                else:
                    mic.stop_capture()
                if not wait_until(lambda n=switches: mic.switches > n):
                    raise SystemExit("the mic did not reopen")
                times.append(mic.last_switch_s * 1000)
        finally:
            mic.stop()
    times.sort()
    return {
        "reopens": len(times),
        "median_ms": statistics.median(times),
        "p90_ms": times[int(len(times) * 0.9)],
        "max_ms": times[-1],
    }


def first_write_latency(repeats: int) -> dict[str, float]:
    """Speaker: play() of a reply's first chunk -> first bytes in the device, both ways."""
    keep_open: list[float] = []
    reopen_cost: list[float] = []
    reply = speech_like(24000, 0.2)  # more than the jitter buffer: written at once
    with SimulatedSoundCard() as card:
        settings = AudioSettings()
        idle = threading.Event()
        speaker = Speaker(settings, on_event=lambda e: e == "idle" and idle.set())
        speaker.start()
        try:
            wait_until(lambda: speaker.state == "ok")
            for _ in range(repeats):
                idle.clear()
                time.sleep(0.3)  # idle: the stream is stopped, the thread asleep
                before = card.written_bytes()
                t0 = time.monotonic()
                speaker.play(reply)
                wait_until(lambda b=before: card.written_bytes() > b, poll=0.0001)
                keep_open.append(time.monotonic() - t0)
                speaker.end_turn()
                idle.wait(10)
        finally:
            speaker.stop()
        probe = Speaker(settings)  # not started: its open path is timed on this thread
        probe._hub.acquire()
        try:
            for _ in range(repeats):
                t0 = time.monotonic()
                probe._open()  # device lookup, rate probe, open (what a reopen would redo)
                reopen_cost.append(time.monotonic() - t0)
                probe._close_stream()
        finally:
            probe._hub.release()
    keep = float(np.median(keep_open)) * 1000
    extra = float(np.median(reopen_cost)) * 1000
    return {
        "keep_open_ms_p50": keep,
        "keep_open_ms_max": max(keep_open) * 1000,
        "reopen_adds_ms_p50": extra,
        "reopen_ms_p50": keep + extra,
        "reopen_adds_ms_max": max(reopen_cost) * 1000,
    }


def flood_episode(seconds: float) -> dict[str, float]:
    """A capturing mic whose device hits end of file for ``seconds``, then comes back."""
    delivered: list[bytes] = []
    states: list[str] = []
    with SimulatedSoundCard() as card:
        mic = Microphone(
            AudioSettings(), delivered.append, on_state=lambda s, d=None: states.append(s)
        )
        mic.start()
        try:
            wait_until(lambda: mic.state == "ok" and mic.chunks >= 10)
            mic.start_capture()
            time.sleep(0.5)
            before = len(delivered)
            cpu0, mic0, t0 = time.process_time(), thread_cpu(mic._thread), time.monotonic()
            card.set_eof()
            time.sleep(seconds)
            cpu, mic_cpu = time.process_time() - cpu0, thread_cpu(mic._thread) - mic0
            wall = time.monotonic() - t0
            flooded = len(delivered) - before
            card.clear_eof()
            back = time.monotonic()
            recovered = wait_until(lambda: mic.state == "ok", timeout=seconds + 35)
            return {
                "episode_s": wall,
                "process_cpu_s": cpu,
                "mic_thread_cpu_s": mic_cpu,
                "audio_delivered_s": flooded * mic.chunk_bytes / 32000,
                "faults": getattr(mic, "faults", 0),
                "opens": getattr(mic, "opens", 0),
                "states": " ".join(states),
                "ok_again_after_s": time.monotonic() - back if recovered else float("nan"),
            }
        finally:
            mic.stop()


RSS_CONFIGS = {
    "default (16k mic, 24k speaker, chimes, volume 1)": [],
    "default, numpy imported anyway (as before)": ["--import-numpy"],
    "volume 0.5": ["--volume", "0.5"],
    "48k stereo devices (resampling)": ["--devices48"],
}


def rss_child(args: argparse.Namespace) -> int:
    """In a fresh process: run both workers through a turn with a chime, print the footprint."""
    if args.import_numpy:
        import numpy  # noqa: F401
    extra = []
    settings = AudioSettings(volume=args.volume)
    if args.devices48:
        extra = [
            SimPcm("usbmic48", rate=48000, channels=2, only_rate=True),
            SimPcm("spk48", playback=True, rate=48000, channels=2, only_rate=True),
        ]
        settings = AudioSettings(
            volume=args.volume, input_device="usbmic48", input_channels=2, output_device="spk48"
        )
    got: list[bytes] = []
    idle = threading.Event()
    with SimulatedSoundCard(extra=extra):
        speaker = Speaker(settings, on_event=lambda e: e == "idle" and idle.set())
        mic = Microphone(settings, got.append)
        speaker.start()
        mic.start()
        try:
            wait_until(lambda: mic.state == speaker.state == "ok")
            mic.start_capture()
            speaker.play_chime("connected")
            speaker.play(bytes(48000))
            speaker.play_chime("press")
            speaker.end_turn()
            idle.wait(10)
            wait_until(lambda: len(got) >= 25)
        finally:
            mic.stop()
            speaker.stop()
    status = Path("/proc/self/status").read_text()
    kb = {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in status.splitlines())
          if k in ("VmHWM", "VmRSS")}  # fmt: skip
    print(json.dumps({**kb, "numpy": "numpy" in sys.modules, "soxr": "soxr" in sys.modules}))
    return 0


def rss_table() -> list[dict[str, object]]:
    rows = []
    for name, flags in RSS_CONFIGS.items():
        runs = []
        for _ in range(3):
            done = subprocess.run(
                [sys.executable, __file__, "--rss-child", *flags],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        peak = sorted(r["VmHWM"] for r in runs)[1]  # the median of three
        rows.append({"config": name, "peak_rss_mb": peak / 1024, **{
            k: runs[0][k] for k in ("numpy", "soxr")}})  # fmt: skip
    return rows


def print_figures(figures: dict[str, float], as_json: bool) -> None:
    """One named figure a line (or JSON)."""
    if as_json:
        print(json.dumps(figures, indent=2))
    else:
        print("\n".join(f"{k:20} {v:8.2f}" for k, v in figures.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per path and setup")
    parser.add_argument("--chunk-ms", type=int, default=40)
    parser.add_argument("--json", action="store_true", help="print JSON rows instead")
    parser.add_argument("--idle", type=float, metavar="SECONDS", help="measure idle cost only")
    parser.add_argument("--first-write", type=int, metavar="N", help="speaker first-write only")
    parser.add_argument("--switch", type=int, metavar="N", help="mic reopen at N presses only")
    parser.add_argument("--flood", type=float, metavar="SECONDS", help="mic at end of file only")
    parser.add_argument("--rss", action="store_true", help="peak RSS per config only")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--import-numpy", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--devices48", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--volume", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.rss_child:
        return rss_child(args)
    if args.rss:
        rows = rss_table()
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"{'config':50} {'peak RSS MB':>11} {'numpy':>6} {'soxr':>5}")
        for r in rows:
            print(f"{r['config']:50} {r['peak_rss_mb']:11.1f} {r['numpy']!s:>6} {r['soxr']!s:>5}")
        return 0

    if args.flood:
        result = flood_episode(args.flood)
        print(json.dumps(result, indent=2))
        return 0

    if args.switch:
        print_figures(switch_cost(args.switch), args.json)
        return 0
    if args.idle:
        idle_rows = idle_cost(args.idle) + idle_cost(args.idle, idle_period_ms=0)[:1]
        if args.json:
            print(json.dumps(idle_rows, indent=2))
            return 0
        print(f"idle for {args.idle:g} s (simulated card)")
        print(f"{'thread':16} {'CPU s/min':>9} {'wakeups/s':>9} {'loops/s':>8}")
        for r in idle_rows:
            print(
                f"{r['thread']:16} {r['cpu_s_per_min']:9.4f} {r['wakeups_per_s']:9.1f}"
                f" {r['loops_per_s']:8.1f}"
            )
        return 0
    if args.first_write:
        print_figures(first_write_latency(args.first_write), args.json)
        return 0

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
