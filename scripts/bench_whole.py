#!/usr/bin/env python3
"""The whole pi-agent process against a cookbook-style agent: conversation, idle, start, memory.

One run, one fake Gemini Live server (``FakeLiveServer(tls=True)`` in this process), one
simulated ALSA card per agent (its clock runs in this process too), and two agents, one after
the other, each in its own process:

* ``pi-agent``: the real ``python -m pi_agent run --config FILE``: PyAudio on the simulated
  card, mock GPIO with a push-to-talk button, a lamp (the tool) and a PWM status light, the
  synthetic camera sending frames while the button is held, the control socket, timers on (the
  shipped default), log level info;
* ``cookbook``: ``scripts/bench_cookbook.py``, written like Google's Live API starter
  (google-genai SDK, asyncio, PyAudio through ``asyncio.to_thread``), with the same button,
  lamp, status light, frames and tool.

Both are driven the same way from here, through their UNIX control sockets: N push-to-talk
turns (``press``, speech played into the simulated mic for S seconds, ``release``); the server
answers each with an input transcription, one ``toolCall`` (which switches the lamp) and S
seconds of 24 kHz audio at real-time pace; in turn N/2 the user presses again 1 s into the
answer (a barge-in). Then the agent sits connected with nobody talking (the idle phase).

The harness sends only those presses and releases: it never polls the agents. It knows
everything else from the fake server's records and the simulated card, and it reads CPU from
``/proc/PID/stat`` (utime + stime) and ``/proc/PID/task/*/schedstat`` (per thread, with the
OS thread names), memory from ``/proc/PID/status`` (VmHWM): nothing it does wakes an agent or
is counted against one.

    scripts/bench --whole [--turns 6] [--seconds-per-turn 3] [--idle-s 60] [--json PATH]

Every figure is defined in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench import _loadavg, machine  # noqa: E402  (scripts/bench.py, stdlib only at import)

AGENTS = ("pi-agent", "cookbook")
MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"
API_KEY = "bench-key"
SYSTEM = "You are a helpful Raspberry Pi voice assistant."
VOICE = "Kore"
REPLY_TEXT = "Okay, I switched the lamp on for you. Anything else I can do?"
IN_RATE, OUT_RATE = 16000, 24000
CHUNK_MS = 40
CAMERA = {"width": 640, "height": 480, "jpeg_quality": 80, "fps": 1.0}
PINS = {"button": 17, "status": 18, "lamp": 23}
# What pi-agent declares for its set_lamp tool (verb "set"), declared the same by the cookbook.
TOOL: dict[str, Any] = {
    "name": "set_lamp",
    "description": "Switch the kitchen lamp on or off.",
    "parameters": {
        "type": "OBJECT",
        "properties": {
            "on": {
                "type": "BOOLEAN",
                "description": "true switches lamp on, false switches it off.",
            }
        },
        "required": ["on"],
    },
}
WAIT = 30.0  # no single wait may take longer
CLK_TCK = os.sysconf("SC_CLK_TCK")

GOALS = {
    "cpu_per_min_vs_cookbook": 0.5,
    "idle_cpu_s_per_min": 0.1,
    "peak_rss_vs_cookbook": 0.75,
    "start_to_setup_vs_cookbook": 0.5,
}


# ================================================================================ /proc


@dataclass
class ThreadStat:
    comm: str
    cpu_s: float  # time on a CPU (schedstat, ns resolution)
    switches: int  # voluntary + involuntary context switches: how often it ran


@dataclass
class Snapshot:
    t: float
    cpu_s: float  # the whole process (utime + stime), threads that ended included
    threads: dict[int, ThreadStat] = field(default_factory=dict)


def _stat_cpu(text: str) -> float:
    """utime + stime (s) from a /proc stat line (after comm, which may hold spaces)."""
    rest = text[text.rindex(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK  # fields 14 and 15


def _thread(base: str) -> ThreadStat:
    with open(f"{base}/comm") as f:
        comm = f.read().strip()
    with open(f"{base}/schedstat") as f:
        cpu = int(f.read().split()[0]) / 1e9
    switches = 0
    with open(f"{base}/status") as f:
        for line in f:
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                switches += int(line.split()[1])
    return ThreadStat(comm, cpu, switches)


def snapshot(pid: int) -> Snapshot:
    """CPU of a process and of each of its threads, read from outside (nothing wakes it).

    A thread without a name of its own (its ``comm`` is the process's) is labelled with the
    kernel function it sleeps in (``wchan``), which tells the mic (reading the capture
    socket) from threads parked on a futex.
    """
    t = time.monotonic()
    with open(f"/proc/{pid}/stat") as f:
        snap = Snapshot(t, _stat_cpu(f.read()))
    with open(f"/proc/{pid}/comm") as f:
        process_comm = f.read().strip()
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{tid}"
        with contextlib.suppress(OSError, ValueError, IndexError):  # a thread that just ended
            thread = _thread(base)
            if int(tid) == pid:
                thread.comm = f"main ({thread.comm})"
            elif thread.comm == process_comm:
                with open(f"{base}/wchan") as f:
                    wchan = f.read().strip()
                thread.comm += f" [{wchan if wchan not in ('', '0') else 'running'}]"
            snap.threads[int(tid)] = thread
    return snap


def status_kb(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def phase(a: Snapshot, b: Snapshot) -> dict[str, Any]:
    """CPU s/min of the process and of each thread name between two snapshots."""
    wall = b.t - a.t
    per_min = 60.0 / wall
    by_name: dict[str, dict[str, float]] = {}
    accounted = 0.0
    for tid, after in b.threads.items():
        before = a.threads.get(tid)
        cpu = after.cpu_s - (before.cpu_s if before else 0.0)
        runs = after.switches - (before.switches if before else 0)
        accounted += cpu
        label = after.comm
        if label.endswith("[running]") and before is not None:
            label = before.comm
        row = by_name.setdefault(label, {"threads": 0, "cpu_s": 0.0, "runs": 0})
        row["threads"] += 1
        row["cpu_s"] += cpu
        row["runs"] += runs
    total = b.cpu_s - a.cpu_s
    gone = total - accounted  # threads that ended during the phase
    if abs(gone) >= 1 / CLK_TCK:  # the process total counts in clock ticks
        by_name["(ended threads, rounding)"] = {"threads": 0, "cpu_s": gone, "runs": 0}
    threads = {
        name: {
            "threads": int(row["threads"]),
            "cpu_s_per_min": row["cpu_s"] * per_min,
            "wakeups_per_s": row["runs"] / wall,
        }
        for name, row in sorted(by_name.items(), key=lambda kv: -kv[1]["cpu_s"])
    }
    return {
        "wall_s": wall,
        "cpu_s": total,
        "cpu_s_per_min": total * per_min,
        "threads_cpu_s_per_min": accounted * per_min,  # live threads, ns resolution
        "threads": threads,
    }


# ================================================================================ driving


def ctl(path: str, cmd: str) -> dict[str, Any]:
    """One control request on its own connection, as ``pi-agent ctl`` sends it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(WAIT)
        sock.connect(path)
        sock.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
        line = b""
        while not line.endswith(b"\n"):
            data = sock.recv(4096)
            if not data:
                break
            line += data
    reply = json.loads(line or b"{}")
    if not reply.get("ok"):
        raise RuntimeError(f"{cmd} refused: {reply}")
    return reply


def sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def wait_for(server: Any, what: str, predicate: Callable[[Any], bool]) -> None:
    if not server.wait_for(predicate, WAIT):
        raise RuntimeError(f"timed out waiting for {what}")


def make_audio(seconds: float) -> tuple[bytes, bytes]:
    """The user's speech (16 kHz: a modulated tone with noise) and the model's answer (24 kHz)."""
    import numpy as np

    rng = np.random.default_rng(8)
    n_in = round(seconds * IN_RATE)
    t = np.arange(n_in) / IN_RATE
    voice = 0.25 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    voice += 0.02 * rng.standard_normal(n_in)
    speech = (np.clip(voice, -1, 1) * 32767).astype("<i2").tobytes()
    t = np.arange(round(seconds * OUT_RATE)) / OUT_RATE
    answer = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes()
    return speech, answer


def pi_agent_config(work: Path, server: Any) -> tuple[list[str], str]:
    socket_path = str(work / "control.sock")
    text = f"""\
live:
  model: {MODEL}
  endpoint: '{server.url}'
  ca_file: '{server.ca_file}'
  system_instruction: '{SYSTEM}'
  voice: {VOICE}
audio:
  backend: pyaudio
  chunk_ms: {CHUNK_MS}
camera:
  backend: synthetic
  mode: while_talking
  fps: {CAMERA["fps"]}
  width: {CAMERA["width"]}
  height: {CAMERA["height"]}
  jpeg_quality: {CAMERA["jpeg_quality"]}
gpio:
  pin_factory: mock
devices:
  talk_button: {{kind: button, pin: {PINS["button"]}, pull_up: true}}
  status_led: {{kind: pwm_led, pin: {PINS["status"]}}}
  lamp: {{kind: output, pin: {PINS["lamp"]}, description: lamp, active_high: false,
          initial: 0, safe: 0}}
ptt:
  device: talk_button
status_light:
  device: status_led
tools:
  - name: set_lamp
    description: {TOOL["description"]}
    device: lamp
    verb: set
timers:
  enabled: true
  state_file: '{work / "timers.json"}'
control:
  socket: '{socket_path}'
"""
    path = work / "pi-agent.yaml"
    path.write_text(text)
    return [sys.executable, "-m", "pi_agent", "run", "--config", str(path)], socket_path


def cookbook_config(work: Path, server: Any) -> tuple[list[str], str]:
    socket_path = str(work / "cookbook.sock")
    cfg = {
        "url": server.url,
        "ca": server.ca_file,
        "api_key": API_KEY,
        "model": MODEL,
        "system": SYSTEM,
        "voice": VOICE,
        "tool": TOOL,
        "chunk_ms": CHUNK_MS,
        "camera_width": CAMERA["width"],
        "camera_height": CAMERA["height"],
        "jpeg_quality": CAMERA["jpeg_quality"],
        "camera_fps": CAMERA["fps"],
        "lamp_pin": PINS["lamp"],
        "status_pin": PINS["status"],
        "button_pin": PINS["button"],
        "control_socket": socket_path,
    }
    path = work / "cookbook.json"
    path.write_text(json.dumps(cfg))
    return [sys.executable, str(ROOT / "scripts" / "bench_cookbook.py"), str(path)], socket_path


WARM_UP = {
    "pi-agent": "import pi_agent.cli, pi_agent.parts, pi_agent.agent, pi_agent.audio,"
    " pi_agent.camera_backends, pyaudio, numpy, simplejpeg, gpiozero, websocket, yaml",
    "cookbook": "import asyncio, google.genai, google.genai.types, pyaudio, numpy, simplejpeg,"
    " gpiozero, websockets",
}


def installed_env() -> dict[str, str]:
    """The environment of an installed agent: bytecode is cached (``pip install`` compiles
    it; a shell or CI may set PYTHONDONTWRITEBYTECODE, which would make every start of an
    editable checkout compile its own modules again)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def warm_up(name: str) -> None:
    """Import the agent's modules once in a throwaway process: both start from a warm cache
    (page cache and bytecode)."""
    subprocess.run(
        [sys.executable, "-c", WARM_UP[name]],
        cwd=ROOT,
        env=installed_env(),
        check=True,
        timeout=120,
    )


MIC_FLOOR = """
import sys, pyaudio
pa = pyaudio.PyAudio()
s = pa.open(format=pyaudio.paInt16, channels=1, rate=16000, input=True, frames_per_buffer={period})
print("open", flush=True)
while True:
    s.read({read}, exception_on_overflow=False)
"""
#: (device period, read size) of the bare mic loops, in frames at 16 kHz: pi-agent's idle
#: period (audio.idle_period_ms, 300 ms) read whole, and 20 ms periods read 100 ms at a time
#: (what pi-agent did before it reopened the mic with long periods while idle).
FLOOR_PERIODS = ((4800, 4800), (320, 1600))


def mic_floor(opts: argparse.Namespace, period: int, read: int) -> dict[str, Any]:
    """What a process keeping the mic open spends here with no work: bare PyAudio.

    Same simulated card, same /proc measurement as the idle phase of the agents.
    """
    from pi_agent.sim.alsa import SimulatedSoundCard

    with (
        tempfile.TemporaryDirectory(prefix="bench-whole-floor-") as tmp,
        SimulatedSoundCard(Path(tmp) / "alsa") as card,
    ):
        proc = subprocess.Popen(
            [sys.executable, "-c", MIC_FLOOR.format(period=period, read=read)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            pass_fds=card.pass_fds,
            text=True,
        )
        try:
            if proc.stdout is None or proc.stdout.readline().strip() != "open":
                return {"error": f"the bare mic loop did not start ({proc.poll()})"}
            time.sleep(opts.idle_settle_s)
            a = snapshot(proc.pid)
            time.sleep(opts.idle_s)
            b = snapshot(proc.pid)
            ms = {"period_ms": period * 1000 // IN_RATE, "read_ms": read * 1000 // IN_RATE}
            return {**ms, "idle": phase(a, b)}
        finally:
            _stop(proc)


@dataclass
class Running:
    """One agent process on its own simulated card."""

    name: str
    proc: subprocess.Popen
    card: Any
    control: str  # its control socket
    spawn_t: float  # time.monotonic() just before Popen
    conns_before: int  # server connections before it started

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")

    def wait_setup(self, server: Any) -> Any:
        """The server's record of the setupComplete it sent this agent."""

        def mine() -> list[Any]:
            return [
                m for m in server.sent_messages("setupComplete") if m.conn_id > self.conns_before
            ]

        wait_for(
            server, f"{self.name}: setupComplete", lambda s: mine() or self.proc.poll() is not None
        )
        self.alive()
        return mine()[0]


def run_agent(
    name: str, server: Any, opts: argparse.Namespace, drive: Callable[[Running], dict[str, Any]]
) -> dict[str, Any]:
    """Start one agent on a fresh simulated card, ``drive`` it (it measures), stop it."""
    from pi_agent.sim.alsa import SimulatedSoundCard

    work = Path(tempfile.mkdtemp(prefix=f"bench-whole-{name}-"))
    make = pi_agent_config if name == "pi-agent" else cookbook_config
    argv, control = make(work, server)
    log_path = work / "agent.log"
    with SimulatedSoundCard(work / "alsa") as card, open(log_path, "w") as log:
        env = {**installed_env(), "GEMINI_API_KEY": API_KEY, "PYTHONUNBUFFERED": "1"}
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "PI_AGENT_CONFIG"):
            env.pop(var, None)
        conns_before = len(server.connections)
        spawn_t = time.monotonic()
        proc = subprocess.Popen(
            argv,
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=card.pass_fds,
            start_new_session=True,
        )
        try:
            return drive(Running(name, proc, card, control, spawn_t, conns_before))
        except Exception as exc:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
            return {"error": f"{type(exc).__name__}: {exc}", "log_tail": tail}
        finally:
            _stop(proc)
            if not opts.keep:
                shutil.rmtree(work, ignore_errors=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def start_only(agent: Running, server: Any) -> dict[str, Any]:
    """One more start -> setupComplete sample (the figure is a single, noisy event)."""
    return {"start_to_setup_s": agent.wait_setup(server).t - agent.spawn_t}


def converse(agent: Running, server: Any, opts: argparse.Namespace, speech: bytes) -> dict:
    """The measured run: ready, N turns, idle; CPU, memory, counts."""
    name, proc, card, control = agent.name, agent.proc, agent.card, agent.control
    pid = proc.pid
    alive = agent.alive
    ready = agent.wait_setup(server)
    conn = ready.conn_id
    deadline = time.monotonic() + WAIT
    while not os.path.exists(control):  # the harness's own cost, never the agent's
        alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: no control socket {control}")
        time.sleep(0.05)
    time.sleep(opts.settle_s)  # the connected chime, streams opened
    alive()

    counters = server.counters
    seconds = opts.seconds_per_turn
    barge_turn = opts.turns // 2 if opts.turns >= 2 else 0  # 1-based; 0 = none
    barge_bytes = int(min(1.0, seconds / 3) * OUT_RATE * 2)
    turns_before = counters["turns"]
    played_before = len(card.played_bytes())
    overruns_before = card.overruns()
    start = snapshot(pid)
    for turn in range(1, opts.turns + 1):
        pressed = time.monotonic()
        ctl(control, "press")
        card.speak(speech)
        sleep_until(pressed + seconds)
        audio_before = counters["audio_out_bytes"]
        ctl(control, "release")
        if turn == barge_turn and turn < opts.turns:
            wait_for(
                server,
                f"{name}: answer {turn} to reach the barge-in point",
                lambda s, b=audio_before: s.counters["audio_out_bytes"] >= b + barge_bytes,
            )
            continue  # the next press interrupts the answer
        wait_for(
            server,
            f"{name}: turnComplete {turn}",
            lambda s, n=turns_before + turn: s.counters["turns"] >= n,
        )
        time.sleep(opts.gap_s)  # the answer plays out (jitter buffer, echo tail)
    end = snapshot(pid)
    alive()
    conversation = phase(start, end)
    played = len(card.played_bytes()) - played_before
    overruns = card.overruns() - overruns_before

    time.sleep(opts.idle_settle_s)
    idle_start = snapshot(pid)
    time.sleep(opts.idle_s)
    idle_end = snapshot(pid)
    alive()
    idle = phase(idle_start, idle_end)
    hwm_kb = status_kb(pid, "VmHWM")
    rss_kb = status_kb(pid, "VmRSS")

    def msgs(kind: str, sub: str | None = None) -> int:
        return len(server.messages(kind, sub, conn_id=conn))

    counts = {
        "activity_starts": msgs("realtimeInput", "activityStart"),
        "activity_ends": msgs("realtimeInput", "activityEnd"),
        "audio_chunks_sent": msgs("realtimeInput", "audio"),
        "video_frames_sent": msgs("realtimeInput", "video"),
        "tool_responses": msgs("toolResponse"),
        "answers": counters["turns"] - turns_before,
        "interrupted": sum(
            1
            for m in server.sent_messages("serverContent", conn_id=conn)
            if m.message and m.message["serverContent"].get("interrupted")
        ),
        "played_s": played / (OUT_RATE * 2),
        "connections": len(server.connections) - agent.conns_before,
        "mic_overruns": overruns,  # capture pieces the agent read too late, while talking
    }
    record = server.connection(conn)
    tools = [
        d["name"]
        for tool in (record.setup or {}).get("tools", [])
        for d in tool.get("functionDeclarations", tool.get("function_declarations", []))
    ]
    return {
        "pid": pid,
        "start_to_setup_s": ready.t - agent.spawn_t,
        "start_to_upgrade_s": record.opened_at - agent.spawn_t,  # WebSocket accepted: imports + TLS
        "setup_bytes": len(json.dumps(record.setup or {})),
        "declared_tools": tools,
        "conversation": conversation,
        "idle": idle,
        "peak_rss_mb": hwm_kb / 1024,
        "rss_end_mb": rss_kb / 1024,
        "threads_at_end": len(idle_end.threads),
        "counts": counts,
    }


# ================================================================================ report


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def compare(agents: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    rows = {
        "cpu_s_per_min": lambda r: r["conversation"]["cpu_s_per_min"],
        "idle_cpu_s_per_min": lambda r: r["idle"]["cpu_s_per_min"],
        "peak_rss_mb": lambda r: r["peak_rss_mb"],
        "start_to_setup_s": lambda r: r["start_to_setup_median_s"],
    }
    table: dict[str, dict[str, float | None]] = {}
    for key, get in rows.items():
        values = {name: get(r) for name, r in agents.items() if "error" not in r}
        row: dict[str, float | None] = {name: values.get(name) for name in AGENTS}
        row["ratio"] = _ratio(values.get("pi-agent"), values.get("cookbook"))
        table[key] = row
    return table


def goals(table: dict[str, dict[str, float | None]]) -> list[dict[str, Any]]:
    checks = [
        ("CPU per minute of conversation <= 0.5x cookbook", "cpu_s_per_min", "ratio",
         GOALS["cpu_per_min_vs_cookbook"]),
        ("idle CPU <= 0.1 s/min", "idle_cpu_s_per_min", "pi-agent", GOALS["idle_cpu_s_per_min"]),
        ("peak RSS <= 0.75x cookbook", "peak_rss_mb", "ratio", GOALS["peak_rss_vs_cookbook"]),
        ("start -> setupComplete <= 0.5x cookbook", "start_to_setup_s", "ratio",
         GOALS["start_to_setup_vs_cookbook"]),
    ]  # fmt: skip
    out = []
    for text, key, column, limit in checks:
        value = table[key][column]
        out.append({"goal": text, "value": value, "limit": limit,
                    "met": None if value is None else value <= limit})  # fmt: skip
    return out


def _fmt(value: float | None, ratio: bool = False) -> str:
    if value is None:
        return "-"
    if ratio:
        return f"{value:.2f}x"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def print_report(result: dict[str, Any]) -> None:
    w, m = result["workload"], result["machine"]
    print(
        f"\nwhole-agent benchmark: {w['turns']} push-to-talk turns x {w['seconds_per_turn']:g} s"
        f" + answers, 1 tool call/turn, frames at {CAMERA['fps']:g}/s while talking,"
        f" barge-in in turn {w['barge_turn'] or '-'}; idle {w['idle_s']:g} s"
    )
    print(
        f"machine: {m['nproc']} x {m['cpu_model']}, Python {m['python']}, "
        f"load {m.get('loadavg_start')} -> {m.get('loadavg_end')}"
    )
    for name in AGENTS:
        r = result["agents"].get(name, {})
        if "error" in r:
            print(f"  {name}: FAILED: {r['error']}\n{r.get('log_tail', '')}")
    head = f"{'metric':36} {'pi-agent':>9} {'cookbook':>9} {'ratio':>7}"
    print("\n" + head + "\n" + "-" * len(head))
    labels = {
        "cpu_s_per_min": "CPU s per min of conversation",
        "idle_cpu_s_per_min": "idle CPU s per min",
        "peak_rss_mb": "own peak RSS MB (VmHWM)",
        "start_to_setup_s": "start -> setupComplete s (median)",
    }
    for key, label in labels.items():
        row = result["table"][key]
        print(
            f"{label:36} {_fmt(row['pi-agent']):>9} {_fmt(row['cookbook']):>9}"
            f" {_fmt(row['ratio'], True):>7}"
        )
    for name in AGENTS:
        r = result["agents"].get(name, {})
        if not r or "error" in r:
            continue
        c = r["counts"]
        print(
            f"\n{name}: sent {c['audio_chunks_sent']} audio chunks, {c['video_frames_sent']}"
            f" frames, {c['activity_starts']} turns, {c['tool_responses']} tool responses;"
            f" {c['answers']} answers ({c['interrupted']} interrupted), {c['played_s']:.1f} s"
            f" played; {r['threads_at_end']} threads"
        )
        for label in ("conversation", "idle"):
            ph = r[label]
            rows = ", ".join(
                f"{t} {v['cpu_s_per_min']:.3f} ({v['wakeups_per_s']:.1f}/s)"
                + (f" x{v['threads']}" if v["threads"] > 1 else "")
                for t, v in ph["threads"].items()
            )
            print(
                f"  {label}: {ph['cpu_s_per_min']:.3f} s/min (threads alive at both ends:"
                f" {ph['threads_cpu_s_per_min']:.3f}); by thread, s/min (runs/s): {rows}"
            )
    print()
    for floor in result.get("mic_floor") or []:
        if "error" in floor:
            print(f"bare mic loop: FAILED: {floor['error']}")
            continue
        print(
            f"idle floor: a bare PyAudio mic loop, {floor['period_ms']} ms device periods,"
            f" {floor['read_ms']} ms reads: {floor['idle']['threads_cpu_s_per_min']:.3f} s/min"
            f" ({floor['idle']['cpu_s_per_min']:.2f} in clock ticks)"
        )
    print(f"harness (fake server + card clocks) CPU: {result['harness_cpu_s']:.1f} s")
    print("\ngoals:")
    for g in result["goals"]:
        state = "n/a " if g["met"] is None else ("met " if g["met"] else "MISS")
        print(f"  [{state}] {g['goal']:46} value {_fmt(g['value'])} (limit {g['limit']:g})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--seconds-per-turn", type=float, default=3.0, help="speech = answer")
    parser.add_argument("--idle-s", type=float, default=60.0, help="length of the idle phase")
    parser.add_argument("--settle-s", type=float, default=3.0, help="after setup, before turn 1")
    parser.add_argument("--idle-settle-s", type=float, default=5.0, help="before the idle phase")
    parser.add_argument("--gap-s", type=float, default=1.0, help="after each turnComplete")
    parser.add_argument(
        "--starts", type=int, default=4, help="extra start -> setupComplete samples per agent"
    )
    parser.add_argument("--agents", default=",".join(AGENTS), help="comma-separated subset")
    parser.add_argument(
        "--no-mic-floor",
        dest="mic_floor",
        action="store_false",
        help="skip the idle floor (a bare PyAudio loop keeping the mic open)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the agents' logs and configs")
    parser.add_argument("--json", default=str(ROOT / "bench-results" / "whole.json"))
    opts = parser.parse_args(argv)
    names = [n.strip() for n in opts.agents.split(",") if n.strip()]
    for n in names:
        if n not in AGENTS:
            parser.error(f"unknown agent {n!r}; choose from {', '.join(AGENTS)}")
    opts.turns = max(1, opts.turns)

    from pi_agent.sim.fake_live import FakeLiveServer, Reply

    speech, answer = make_audio(opts.seconds_per_turn)
    workload = {
        "turns": opts.turns,
        "seconds_per_turn": opts.seconds_per_turn,
        "barge_turn": opts.turns // 2 if opts.turns >= 2 else 0,
        "idle_s": opts.idle_s,
        "settle_s": opts.settle_s,
        "idle_settle_s": opts.idle_settle_s,
        "gap_s": opts.gap_s,
        "chunk_ms": CHUNK_MS,
        "camera": CAMERA,
        "timers": "on",
    }
    result: dict[str, Any] = {"machine": machine(), "workload": workload, "agents": {}}
    started, cpu0 = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
    reply = Reply(
        text=REPLY_TEXT,
        audio=answer,
        chunk_ms=CHUNK_MS,
        pace=1.0,
        tool_calls=[("set_lamp", {"on": True})],
    )
    with FakeLiveServer(tls=True, api_key=API_KEY, default_reply=reply) as server:
        for name in names:
            warm_up(name)
        starts: dict[str, list[float]] = {name: [] for name in names}
        if opts.starts:
            print(
                f"bench-whole: {opts.starts} starts of each agent ...", file=sys.stderr, flush=True
            )
        for _ in range(opts.starts):  # alternating, so both see the same conditions
            for name in names:
                r = run_agent(name, server, opts, lambda a: start_only(a, server))
                if "error" in r:
                    print(f"bench-whole: {name} start failed: {r['error']}", file=sys.stderr)
                else:
                    starts[name].append(r["start_to_setup_s"])
        for name in names:
            print(f"bench-whole: running {name} ...", file=sys.stderr, flush=True)
            r = run_agent(name, server, opts, lambda a: converse(a, server, opts, speech))
            if "error" not in r:
                r["start_samples_s"] = [r["start_to_setup_s"], *starts[name]]
                r["start_to_setup_median_s"] = statistics.median(r["start_samples_s"])
            result["agents"][name] = r
            if "error" in r:
                print(f"bench-whole: {name} failed: {r['error']}", file=sys.stderr, flush=True)
    if opts.mic_floor:
        print("bench-whole: running the bare mic loop ...", file=sys.stderr, flush=True)
        result["mic_floor"] = [mic_floor(opts, *floor) for floor in FLOOR_PERIODS]
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    result["harness_cpu_s"] = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    result["total_s"] = time.monotonic() - started
    result["machine"]["loadavg_end"] = _loadavg()
    ok = {n: r for n, r in result["agents"].items() if "error" not in r}
    result["table"] = compare(ok)
    result["goals"] = goals(result["table"])
    print_report(result)
    out = Path(opts.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nJSON: {out}  (total {result['total_s']:.0f} s)")
    return 0 if len(ok) == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
