"""Soak test: hundreds of turns against the fake Live server on a bad network, watching for leaks.

One process holds a :class:`FakeLiveServer` (plain ws) that sends ``goAway`` to every
connection every few seconds, a :class:`FaultProxy` in front of it, and a real :class:`Agent`
(gpiozero mock pins, control socket in a temporary directory, ``audio.backend: none`` unless
``--audio``) that connects through the proxy. Turns alternate between
typed words (``agent.say``), ``press``/``release`` on the control socket and the mock talk
button (with ``--audio`` the simulated microphone hears a tone meanwhile; without it the agent
is handed 120 ms of mic chunks, as its Microphone would). Replies are a mix of plain answers,
answers spoken in real time and answers with a tool call on the mock lamp; some connections are
dropped at chosen or random moments, some get a malformed message. Between an answer and the
next turn the "user" pauses ~0.15 s (``--think``).

Some turns (``--fault-rate``) meet a network fault, played by the proxy on real sockets and
chosen by a second RNG from the same ``--seed``: every connection reset between turns or at a
random moment of a turn; an outage (connections reset, new ones refused) of 1-5 s that begins
before the turn or during it, so the question waits for the link; a black hole of 2-4 s while
the answer is awaited (``live.response_timeout_s`` is 3 s here, so the dead link is noticed
quickly); 50-300 ms of delay each way for a few turns. A turn kept across a fault must still be
answered: the server must answer it (its turn count moves) and the agent must get the answer.

Every few turns the process's RSS (VmRSS), thread count and open file descriptors are sampled.
The run passes ("flat, nothing lost", exit code 0) when, after a warm-up, RSS grew less than a
threshold and the thread and descriptor counts stayed within a small band; when every turn was
answered by the server and the agent, no turn was lost, the agent never showed ERROR for a
network fault while a question waited nor a key/model error at all (an idle outage longer than
four failed attempts shows the designed "network error"; it is counted and reported), no client
message was rejected by the server, every black hole was noticed by the liveness check, each
tool ran once per turn, and after the agent stopped every thread it started ended and every
descriptor it opened was closed. Otherwise it exits 1.

    scripts/soak [--turns 300] [--go-away-every 3] [--fault-rate 0.12] [--seed 1] [--audio]

``tests/test_soak.py`` runs the same :class:`Soak` in its short form.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pi_agent.agent import Agent, State
from pi_agent.config import parse_config
from pi_agent.control import send_command
from pi_agent.parts import build_agent
from pi_agent.sim.fake_live import FakeLiveServer, Reply
from pi_agent.sim.netproxy import FaultProxy
from pi_agent.systemd import Notifier

log = logging.getLogger("pi_agent.soak")

KEY = "soak-key-not-a-secret"
BUTTON_PIN = 17
LAMP_PIN = 23
MIB = 1024 * 1024

# Moments at which a connection is dropped (server.drop(): TCP cut, no close frame).
DROP_MOMENTS = (
    "idle",  # between turns
    "before_answer",  # the server got the whole turn but has not answered yet
    "mid_reply",  # while the answer is being spoken (paced in real time)
    "mid_tool",  # right after the tool response arrived, before the spoken answer
    "random",  # 0-200 ms after the turn started, whatever is going on then
)
TURN_KINDS = ("typed", "control", "button")
# Network faults the proxy plays (a turn has at most one, and then no drop).
FAULTS = (
    "reset_idle",  # every connection reset between turns
    "reset_turn",  # every connection reset 0-400 ms after the turn started
    "refuse",  # an outage: connections reset and new ones refused, before or during the turn
    "blackhole",  # a dead link while the answer is awaited: nothing passes, no RST, no FIN
    "delay",  # each chunk held 50-300 ms each way, for this and the next few turns
)


# --------------------------------------------------------------------------- options, results


@dataclass
class SoakOptions:
    turns: int = 300
    go_away_every: float = 3.0
    go_away_time_left: float = 1.0
    go_away_close_after: float = 1.0
    audio: bool = False
    seed: int = 1
    tool_rate: float = 0.3  # share of replies that call a tool first
    drop_rate: float = 0.06  # share of turns with a dropped connection
    malformed_rate: float = 0.04  # share of turns preceded by a malformed server message
    fault_rate: float = 0.12  # share of turns with a network fault from the proxy
    refuse_s: tuple[float, float] = (1.0, 5.0)  # how long an outage lasts
    blackhole_s: tuple[float, float] = (2.0, 4.0)  # how long a black hole lasts
    delay_s: tuple[float, float] = (0.05, 0.3)  # delay each way while a delay lasts
    delay_turns: tuple[int, int] = (2, 6)  # for this many turns
    response_timeout_s: float = 3.0  # live.response_timeout_s: a black hole is noticed soon
    setup_timeout_s: float = 3.0  # live.setup_timeout_s: a connect into a black hole gives up
    paced_rate: float = 0.5  # share of replies spoken in real time (0.4 s; the rest at once)
    think_s: float = 0.15  # the user's pause between an answer and the next turn (mean)
    turn_timeout: float = 30.0  # one turn must be answered within this
    max_seconds: float | None = None  # whole run; default from turns
    sample_every: int | None = None  # default: about 20 samples
    warmup: float = 0.1  # share of turns before the flatness baseline
    rss_limit_mib: float = 5.0  # RSS may grow this much after the warm-up...
    rss_limit_pct: float = 10.0  # ...or this many percent, whichever is larger
    # Thread and descriptor counts stay within first-post-warm-up + these. A connection
    # through the proxy holds ~3 threads and ~6 descriptors (the agent's socket, the proxy's
    # two and its wake-up pair, the server's) until all sides have closed it, and a fault can
    # leave two or three closing at once; a leak grows with the turns and shows all the same.
    thread_band: int = 12
    fd_band: int = 20
    end_tolerance: int = 0  # threads/fds left over after stopping
    work_dir: str | None = None

    def resolved_sample_every(self) -> int:
        return self.sample_every or max(1, self.turns // 20)

    def resolved_max_seconds(self) -> float:
        if self.max_seconds is not None:
            return self.max_seconds
        return 120.0 + self.turns * (3.0 if self.audio else 2.0)


@dataclass
class Sample:
    turn: int
    t: float
    rss_kib: int
    threads: int
    os_threads: int
    fds: int
    connections: int
    expired: int  # connections the server had to close (goAway's time ran out) while in use
    rollovers: int
    reconnects: int
    resent_turns: int
    faults: int = 0  # network faults injected so far
    liveness_drops: int = 0


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class SoakResult:
    options: dict[str, Any]
    turns_sent: int = 0
    turns_answered: int = 0
    turns_server_answered: int = 0  # turns after which the server's answer count had moved
    elapsed_s: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    baseline: dict[str, int] = field(default_factory=dict)
    end: dict[str, int] = field(default_factory=dict)
    leftover_threads: list[str] = field(default_factory=list)
    leftover_fds: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    server: dict[str, int] = field(default_factory=dict)
    harness: dict[str, int] = field(default_factory=dict)
    states_seen: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)  # injected, by kind
    proxy: dict[str, int] = field(default_factory=dict)  # the proxy's counters
    errors_shown: dict[str, int] = field(default_factory=dict)  # ERROR episodes, by light
    slowest: dict[str, float] = field(default_factory=dict)  # longest turn (s) by fault
    failures: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    exit_code: int | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["ok"] = self.ok
        return data


# --------------------------------------------------------------------------- measurements


def rss_kib() -> int:
    """Resident set size of this process (VmRSS, KiB)."""
    return _proc_status("VmRSS")


def os_thread_count() -> int:
    """Kernel threads of this process (includes native ones, e.g. PortAudio's)."""
    return _proc_status("Threads")


def _proc_status(name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise LookupError(name)


def open_fds() -> set[int]:
    """Open file descriptors (the listing's own descriptor is not among them)."""
    fds = {int(fd) for fd in os.listdir("/proc/self/fd")}
    return {fd for fd in fds if os.path.exists(f"/proc/self/fd/{fd}")}


def _fd_names(fds: set[int]) -> list[str]:
    names = []
    for fd in sorted(fds):
        try:
            names.append(f"{fd}->{os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            names.append(f"{fd}->?")
    return names


def tone(ms: int, rate: int = 24000, freq: float = 440.0) -> bytes:
    """A quiet s16le sine, used as the fake model's voice and the user's 'speech'."""
    n = rate * ms // 1000
    wave = 0.2 * np.sin(2 * np.pi * freq * np.arange(n) / rate)
    return (wave * 32767).astype("<i2").tobytes()


class StateRecorder(Notifier):
    """A systemd notifier that talks to nobody and counts the agent's states.

    ``Agent`` reports every state change through ``notifier.status()`` on its own thread,
    so this sees every ERROR, however briefly, without racing the agent.
    """

    def __init__(self) -> None:
        super().__init__(address="")
        self.seen: dict[str, int] = {}
        self._seen_lock = threading.Lock()

    def status(self, text: object) -> bool:
        state = str(text).split(" ", 1)[0]
        with self._seen_lock:
            self.seen[state] = self.seen.get(state, 0) + 1
        return super().status(text)


# --------------------------------------------------------------------------- the plan


@dataclass
class TurnPlan:
    number: int
    kind: str  # typed, control, button
    tool: tuple[str, dict[str, Any]] | None
    paced: bool
    drop: str | None
    malformed: bool
    fault: str | None = None  # one of FAULTS
    fault_at: float = 0.0  # seconds into the turn (reset_turn, refuse); 0: just before it
    fault_s: float = 0.0  # how long (refuse, blackhole) or how much (delay)
    fault_turns: int = 0  # delay: for this many turns, this one included

    def reply(self) -> Reply:
        paced = self.paced or self.drop in ("mid_reply", "mid_tool")
        reply = Reply(
            text=f"Answer {self.number}.",
            audio=tone(400 if paced else 120),
            pace=1.0 if paced else 0.0,
        )
        if self.tool is not None:
            reply.tool_calls.append(self.tool)
        return reply


def make_plan(options: SoakOptions) -> list[TurnPlan]:
    """The turns, their replies and their trouble, all from ``options.seed``.

    Network faults come from a second RNG, so the rest of a seed's plan is what it was
    before the proxy came; a turn with a fault has no drop.
    """
    rng = random.Random(options.seed)
    faults = random.Random(f"faults-{options.seed}")
    plan = []
    for n in range(1, options.turns + 1):
        tool = None
        kind = rng.choice(TURN_KINDS)
        drop = rng.choice(DROP_MOMENTS) if rng.random() < options.drop_rate else None
        if drop == "mid_tool" or rng.random() < options.tool_rate:
            tool = ("toggle_lamp", {}) if rng.random() < 0.5 else ("set_lamp", {"on": n % 3 != 0})
        turn = TurnPlan(
            number=n,
            kind=kind,
            tool=tool,
            paced=rng.random() < options.paced_rate,
            drop=drop,
            malformed=rng.random() < options.malformed_rate,
        )
        if faults.random() < options.fault_rate:
            _plan_fault(turn, faults.choice(FAULTS), faults, options)
        plan.append(turn)
    return plan


def _plan_fault(turn: TurnPlan, fault: str, rng: random.Random, options: SoakOptions) -> None:
    turn.fault, turn.drop = fault, None
    if fault == "reset_turn":
        turn.fault_at = rng.uniform(0.0, 0.4)
    elif fault == "refuse":
        turn.fault_at = 0.0 if rng.random() < 0.5 else rng.uniform(0.0, 0.3)
        turn.fault_s = rng.uniform(*options.refuse_s)
    elif fault == "blackhole":
        turn.fault_s = rng.uniform(*options.blackhole_s)
    elif fault == "delay":
        turn.fault_s = rng.uniform(*options.delay_s)
        turn.fault_turns = rng.randint(*options.delay_turns)


# --------------------------------------------------------------------------- the soak


class Soak:
    """One soak run; :meth:`run` returns a :class:`SoakResult` (never raises for a failure)."""

    def __init__(self, options: SoakOptions, out=None) -> None:
        self.options = options
        self.out = out
        self.result = SoakResult(options=dataclasses.asdict(options))
        self.plan = make_plan(options)
        self.server: FakeLiveServer | None = None
        self.proxy: FaultProxy | None = None
        self.agent: Agent | None = None
        self.card: Any = None
        self.factory: Any = None
        self.recorder = StateRecorder()
        self._rng = random.Random(options.seed + 1)
        self._agent_thread: threading.Thread | None = None
        self._timers: list[threading.Timer] = []
        self._started = 0.0
        self._socket = ""
        self.lamp: tuple[bool, bool] | None = None  # (the lamp, what the tool calls imply)
        # What the server said and heard, harvested turn by turn (its records are then cleared
        # so that the soak's own bookkeeping does not grow with the number of turns).
        self.totals = {
            "turn_complete": 0,
            "interrupted": 0,
            "handles": 0,
            "activity_end": 0,
            "tool_calls_sent": 0,
        }
        self.harness = {"drops": 0, "malformed_sent": 0, "control_errors": 0}
        self.faults = dict.fromkeys(FAULTS, 0)
        self.faults["connections_reset"] = 0
        self._delay_left = 0  # turns the current delay still lasts
        self._errors: dict[str, int] = {}  # ERROR episodes by light (agent thread)

    # ----------------------------------------------------------------- lifecycle

    def run(self) -> SoakResult:
        opts = self.options
        result = self.result
        base_threads = set(threading.enumerate())
        base_fds = open_fds()
        result.baseline = {
            "threads": len(base_threads),
            "os_threads": os_thread_count(),
            "fds": len(base_fds),
            "rss_kib": rss_kib(),
        }
        own_dir = opts.work_dir is None
        work = Path(opts.work_dir or tempfile.mkdtemp(prefix="pi-agent-soak-"))
        self._started = time.monotonic()
        try:
            with contextlib.ExitStack() as stack:
                stack.callback(self._stop_everything)
                self._start(work)
                self._turns()
        except Exception as exc:  # a harness bug or a product crash: report, do not hang
            log.exception("soak aborted")
            result.failures.append(f"soak aborted: {type(exc).__name__}: {exc}")
        except KeyboardInterrupt:
            result.failures.append("interrupted (Ctrl-C)")
        finally:
            if own_dir:
                shutil.rmtree(work, ignore_errors=True)
        result.elapsed_s = round(time.monotonic() - self._started, 1)
        self._measure_end(base_threads, base_fds)
        self._judge()
        return result

    def _start(self, work: Path) -> None:
        opts = self.options
        self.server = FakeLiveServer(api_key=KEY, tool_timeout=10.0)
        self.server.start()
        self.server.go_away_every(
            opts.go_away_every, opts.go_away_time_left, opts.go_away_close_after
        )
        self.proxy = FaultProxy(("127.0.0.1", self.server.port)).start()
        audio: dict[str, Any] = {"backend": "none"}
        if opts.audio:
            from pi_agent.sim.alsa import SimulatedSoundCard

            self.card = SimulatedSoundCard(work / "alsa")
            self.card.start()
            audio = {"backend": "pyaudio", "chimes": {"volume": 0.05}, "echo_tail_ms": 0}
        self._socket = str(work / "control.sock")
        config = parse_config(
            {
                "live": {
                    "endpoint": self.proxy.url,
                    "setup_timeout_s": opts.setup_timeout_s,
                    "response_timeout_s": opts.response_timeout_s,
                },
                "audio": audio,
                "gpio": {"pin_factory": "mock"},
                "devices": {
                    "talk_button": {"kind": "button", "pin": BUTTON_PIN},
                    "status_led": {"kind": "pwm_led", "pin": 18},
                    "lamp": {"kind": "output", "pin": LAMP_PIN, "description": "the lamp"},
                },
                "ptt": {"device": "talk_button", "min_press_ms": 0},
                "status_light": {"device": "status_led"},
                "tools": [
                    {"name": "set_lamp", "description": "Switch the lamp.", "device": "lamp",
                     "verb": "set"},
                    {"name": "toggle_lamp", "description": "Toggle the lamp.", "device": "lamp",
                     "verb": "toggle"},
                ],
                "control": {"socket": self._socket},
                "agent": {"backoff_initial_s": 0.05, "backoff_max_s": 1, "fatal_retry_s": 30},
            }
        )  # fmt: skip
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        self.factory = MockFactory(pin_class=MockPWMPin)
        self.agent = build_agent(
            config, api_key=KEY, pin_factory=self.factory, notifier=self.recorder
        )
        self.agent.parts.observers.append(self._observe)
        self._agent_thread = threading.Thread(
            target=self._run_agent, name="soak-agent", daemon=True
        )
        self._agent_thread.start()
        if not self.agent.wait_until(
            lambda a: a.state is State.READY or a.stopped.is_set(), opts.turn_timeout
        ):
            raise RuntimeError(f"the agent did not connect (state {self.agent.state.value})")
        if self.agent.state is not State.READY:
            raise RuntimeError("the agent stopped before it was ready")
        self._sample(0)
        self._print_header()
        self._print_sample(self.result.samples[-1])

    def _run_agent(self) -> None:
        assert self.agent is not None
        try:
            self.result.exit_code = self.agent.run()
        except Exception as exc:
            self.result.failures.append(f"agent.run() raised {type(exc).__name__}: {exc}")
            self.result.exit_code = -1

    def _stop_everything(self) -> None:
        result = self.result
        for timer in self._timers:  # an outage still on ends before the proxy stops
            timer.join(self.options.turn_timeout)
        if self.agent is not None:
            try:
                result.counters = dict(self._status()["counters"])
            except Exception as exc:
                result.failures.append(f"no final status: {exc}")
            self.agent.stop()
        if self._agent_thread is not None:
            self._agent_thread.join(15)
            if self._agent_thread.is_alive():
                result.failures.append("the agent did not stop within 15 s")
        if self.factory is not None:
            self.factory.reset()
        if self.proxy is not None:
            self.proxy.stop()
            result.proxy = {k: int(v) for k, v in sorted(self.proxy.counters.items())}
        if self.server is not None:
            self.server.stop()
            self._harvest()
            result.server = {k: int(v) for k, v in sorted(self.server.counters.items())}
            result.server["connections_total"] = len(self.server.connections)
            result.server["expired_in_use"] = self._expired()
        if self.card is not None:
            self.card.close()
        result.harness = {**self.harness, **self.totals}
        result.states_seen = dict(self.recorder.seen)
        result.faults = dict(self.faults)
        result.errors_shown = dict(self._errors)

    def _observe(self, event: dict[str, Any]) -> None:
        """An observer of the agent (its thread): each ERROR shown, and what it says."""
        if event.get("event") != "state" or event.get("state") != "error":
            return
        agent = self.agent
        assert agent is not None
        turn = agent.uplink.turn
        waiting = agent.talking or (turn is not None and not turn.completed)
        key = str(event.get("light")) + (" while a question waited" if waiting else "")
        self._errors[key] = self._errors.get(key, 0) + 1
        log.warning("soak: ERROR shown (%s): %s", key, event.get("cause"))

    # ----------------------------------------------------------------- turns

    def _turns(self) -> None:
        opts = self.options
        agent, server = self.agent, self.server
        assert agent is not None and server is not None
        every = opts.resolved_sample_every()
        deadline = self._started + opts.resolved_max_seconds()
        lamp_expected = False
        for turn in self.plan:
            if time.monotonic() > deadline:
                self.result.failures.append(
                    f"time limit of {opts.resolved_max_seconds():.0f} s reached after "
                    f"{self.result.turns_answered} turns"
                )
                return
            if turn.number > 1 and opts.think_s > 0:
                time.sleep(self._rng.uniform(0.5, 1.5) * opts.think_s)  # pacing, not syncing
            if not self._one_turn(turn):
                return
            if turn.tool is not None:
                name, args = turn.tool
                lamp_expected = (not lamp_expected) if name == "toggle_lamp" else args["on"]
            if turn.number % every == 0 or turn.number == len(self.plan):
                self._sample(turn.number)
                self._print_sample(self.result.samples[-1])
        lamp = bool(self._status()["devices"]["lamp"]["on"])
        self.lamp = (lamp, lamp_expected)

    def _one_turn(self, turn: TurnPlan) -> bool:
        """Send one turn, cause its trouble, wait for the answer; False to abort the run."""
        agent, server = self.agent, self.server
        assert agent is not None and server is not None
        opts = self.options
        server.default_reply = turn.reply()  # an answer and any re-answer after a resend
        before = agent.handle
        answers_before = server.counters["turns"]
        started = time.monotonic()
        if turn.malformed:
            self._send_malformed()
        if turn.drop == "idle":
            self._drop()
        if turn.drop == "before_answer" or turn.fault == "blackhole":
            server.pause_replies()
        if turn.drop == "random":
            self._later(self._rng.uniform(0.0, 0.2), self._drop)
        self._fault_before(turn)
        tool_responses = server.counters["tool_responses"]
        moments = {
            "before_answer": lambda s: _count_sub(s, "activityEnd") > 0,
            "mid_reply": _model_audio_sent,
            "mid_tool": lambda s: s.counters["tool_responses"] > tool_responses,
        }
        self.result.turns_sent += 1
        try:
            if not self._send_turn(turn):
                return False
            moment = moments.get(turn.drop or "")
            # The moment comes once the turn reaches the server (after a reconnect if the
            # agent was offline); a turn answered without it just goes without its drop.
            if moment is not None:
                server.wait_for(lambda s: moment(s) or agent.handle != before, opts.turn_timeout)
                if server.wait_for(moment, 0):
                    self._drop()
            if turn.fault == "blackhole":  # the whole turn is at the server, its answer held
                server.wait_for(lambda s: _count_sub(s, "activityEnd") > 0, opts.turn_timeout)
                self._outage("blackhole", turn.fault_s)
        finally:
            if turn.drop == "before_answer" or turn.fault == "blackhole":
                server.resume_replies()  # into the black hole, if there is one
            # A random drop or fault lands within its own turn, and every outage ends in it.
            for timer in self._timers:
                timer.join(opts.turn_timeout)
        answered = agent.wait_until(
            lambda a: (a.handle != before and a.state is State.READY) or a.stopped.is_set(),
            opts.turn_timeout,
        )
        self._timers = []
        took = time.monotonic() - started
        log.info(
            "soak: turn %d (%s, drop=%s, fault=%s) %s in %.2f s",
            turn.number, turn.kind, turn.drop, turn.fault,
            "answered" if answered else "NOT answered", took,
        )  # fmt: skip
        self._fault_after(turn, took)
        server_answered = server.counters["turns"] > answers_before
        self.result.turns_server_answered += server_answered
        self._harvest()
        if not answered or agent.stopped.is_set() or not server_answered:
            self.result.failures.append(
                f"turn {turn.number} ({turn.kind}, drop={turn.drop}, fault={turn.fault}, "
                f"tool={bool(turn.tool)}) not answered within {opts.turn_timeout:.0f} s "
                f"(by the server: {'yes' if server_answered else 'no'}); agent state "
                f"{agent.state.value}, last error {agent.last_error!r}"
            )
            return False
        self.result.turns_answered += 1
        return True

    def _send_turn(self, turn: TurnPlan) -> bool:
        agent = self.agent
        assert agent is not None
        timeout = self.options.turn_timeout
        if turn.kind == "typed":
            agent.say(f"Question {turn.number}?")
            return True
        if turn.kind == "control":
            if not self._control({"cmd": "press"}):
                return self._not_listening(turn)
        else:
            self.factory.pin(BUTTON_PIN).drive_low()
        if not agent.wait_until(lambda a: a.state is State.LISTENING, timeout):
            return self._not_listening(turn)
        if self.card is not None:
            self.card.speak(tone(300, rate=16000, freq=300.0))
            self.card.wait_spoken(timeout)
        else:
            # No microphone (audio.backend none): hand the agent what its Microphone would,
            # 120 ms of 16 kHz speech in 40 ms chunks.
            speech = tone(120, rate=16000, freq=300.0)
            for i in range(0, len(speech), 1280):
                feed_mic(agent, speech[i : i + 1280])
        if turn.kind == "control":
            self._control({"cmd": "release"})
        else:
            self.factory.pin(BUTTON_PIN).drive_high()
        return True

    def _not_listening(self, turn: TurnPlan) -> bool:
        assert self.agent is not None
        self.result.failures.append(
            f"turn {turn.number} ({turn.kind}): the agent did not start listening "
            f"(state {self.agent.state.value})"
        )
        return False

    def _control(self, request: dict[str, Any]) -> bool:
        try:
            reply = send_command(self._socket, request, timeout=self.options.turn_timeout)
        except OSError as exc:
            reply = {"ok": False, "error": str(exc)}
        if not reply.get("ok"):
            self.harness["control_errors"] += 1
            log.warning("control %s failed: %s", request["cmd"], reply.get("error"))
            return False
        return True

    def _status(self) -> dict[str, Any]:
        assert self.agent is not None
        reply = self.agent.request({"cmd": "status"}, timeout=self.options.turn_timeout)
        if not reply.get("ok"):
            raise RuntimeError(f"status request failed: {reply.get('error')}")
        return reply["status"]

    # ----------------------------------------------------------------- trouble

    def _later(self, seconds: float, fn, *args: Any) -> None:
        """Run ``fn`` on a timer that the turn joins before it waits for its answer."""
        timer = threading.Timer(seconds, fn, args)
        timer.name = "soak-fault-timer"
        self._timers.append(timer)  # before start: the turn's join loop must see it
        timer.start()

    def _fault_before(self, turn: TurnPlan) -> None:
        """Start the turn's network fault, now or on a timer within the turn."""
        proxy = self.proxy
        assert proxy is not None
        if turn.fault == "reset_idle":
            self._reset("reset_idle")
        elif turn.fault == "reset_turn":
            self._later(turn.fault_at, self._reset, "reset_turn")
        elif turn.fault == "refuse" and turn.fault_at == 0:
            self._outage("refuse", turn.fault_s)
        elif turn.fault == "refuse":
            self._later(turn.fault_at, self._outage, "refuse", turn.fault_s)
        elif turn.fault == "delay":
            self.faults["delay"] += 1
            proxy.delay(turn.fault_s)
            self._delay_left = turn.fault_turns
            log.info("soak: turn %d: %.0f ms delay each way", turn.number, turn.fault_s * 1000)

    def _fault_after(self, turn: TurnPlan, took: float) -> None:
        """End a delay whose turns are over; note the slowest turn of each kind of fault."""
        assert self.proxy is not None
        key = turn.fault or ("delayed" if self._delay_left else "none")
        self.result.slowest[key] = round(max(self.result.slowest.get(key, 0.0), took), 2)
        if self._delay_left:
            self._delay_left -= 1
            if not self._delay_left:
                self.proxy.delay(0.0)
        if self.proxy.mode != "forward":  # cannot happen: every outage ends within its turn
            self.result.failures.append(f"turn {turn.number}: proxy left in {self.proxy.mode}")
            self.proxy.set_mode("forward")

    def _reset(self, kind: str) -> None:
        assert self.proxy is not None
        self.faults[kind] += 1
        reset = self.proxy.reset_all()
        self.faults["connections_reset"] += reset
        log.info("soak: %s: %d connections reset", kind, reset)

    def _outage(self, mode: str, seconds: float) -> None:
        """Refuse (after resetting what is open) or black-hole for ``seconds``, then forward."""
        assert self.proxy is not None
        self.faults[mode] += 1
        log.info("soak: %s for %.1f s", mode, seconds)
        self.proxy.set_mode(mode)  # type: ignore[arg-type]
        if mode == "refuse":
            self.faults["connections_reset"] += self.proxy.reset_all()
        self._later(seconds, self.proxy.set_mode, "forward")

    def _drop(self) -> None:
        assert self.server is not None
        try:
            self.server.drop()
        except (LookupError, OSError):
            return  # no open connection at this moment (the agent is reconnecting)
        self.harness["drops"] += 1

    def _send_malformed(self) -> None:
        assert self.server is not None
        try:
            self.server.send_malformed()
        except (LookupError, ConnectionError):
            return
        self.harness["malformed_sent"] += 1

    # ----------------------------------------------------------------- bookkeeping

    def _harvest(self) -> None:
        """Count what the server sent and heard since the last call, then forget it.

        The fake server, the mock pins and the simulated sound card record everything for
        tests' assertions; left alone, those records would be the biggest growth here.
        """
        server = self.server
        assert server is not None
        with server._cond:  # the server's one lock; its record lists are plain lists
            for sent in server.sent:
                content = (sent.message or {}).get("serverContent") or {}
                if content.get("turnComplete"):
                    self.totals["turn_complete"] += 1
                if content.get("interrupted"):
                    self.totals["interrupted"] += 1
                if sent.kind == "sessionResumptionUpdate":
                    self.totals["handles"] += 1
                if sent.kind == "toolCall":
                    self.totals["tool_calls_sent"] += 1
            self.totals["activity_end"] += sum(1 for r in server.received if r.sub == "activityEnd")
            server.sent.clear()
            server.received.clear()
            server.usage.clear()
            for record in server.connections:  # keep the records, not their setup copies
                if record.closed_at is not None:
                    record.setup, record.headers = None, {}
        if self.factory is not None:  # mock pins log every change; real pins do not
            for pin in list(self.factory.pins.values()):
                pin.clear_states()
        if self.card is not None:  # the simulated speaker keeps all it played (48 KB/s)
            with self.card._cond:
                for device in self.card._devices.values():
                    device.played.clear()

    def _sample(self, turn: int) -> None:
        assert self.server is not None
        counters = self._status()["counters"]
        self.result.samples.append(
            Sample(
                turn=turn,
                t=round(time.monotonic() - self._started, 1),
                rss_kib=rss_kib(),
                threads=threading.active_count(),
                os_threads=os_thread_count(),
                fds=len(open_fds()),
                connections=len(self.server.connections),
                expired=self._expired(),
                rollovers=counters["rollovers"],
                reconnects=counters["reconnects"],
                resent_turns=counters["resent_turns"],
                faults=sum(self.faults[kind] for kind in FAULTS),
                liveness_drops=counters["liveness_drops"],
            )
        )

    def _expired(self) -> int:
        assert self.server is not None
        with self.server._cond:
            return sum(1 for c in self.server.connections if c.close_code == 1011)

    def _measure_end(self, base_threads: set[threading.Thread], base_fds: set[int]) -> None:
        """After everything stopped: join what is left of ours, then count."""
        deadline = time.monotonic() + 10.0
        for thread in set(threading.enumerate()) - base_threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        gc.collect()
        left = [t for t in set(threading.enumerate()) - base_threads if t.is_alive()]
        fds = open_fds()
        self.result.leftover_threads = sorted(t.name for t in left)
        self.result.end = {
            "threads": threading.active_count(),
            "os_threads": os_thread_count(),
            "fds": len(fds),
            "rss_kib": rss_kib(),
            "new_threads": len(left),
            "new_fds": len(fds - base_fds),
        }
        if fds - base_fds:
            log.warning("descriptors left open: %s", ", ".join(_fd_names(fds - base_fds)))
            self.result.leftover_fds = _fd_names(fds - base_fds)

    # ----------------------------------------------------------------- verdict

    def _judge(self) -> None:
        opts, result = self.options, self.result
        checks = result.checks
        counters = result.counters
        resent = counters.get("resent_turns", 0)
        turns = result.turns_answered

        def add(name: str, ok: bool, detail: str) -> None:
            checks.append(Check(name, bool(ok), detail))

        add("no harness failure", not result.failures, "; ".join(result.failures) or "none")
        add(
            "every turn answered",
            result.turns_answered == opts.turns,
            f"{result.turns_answered}/{opts.turns} answered",
        )
        lost = result.turns_sent - result.turns_server_answered
        add(
            "no turn lost",
            counters.get("lost_turns", -1) == 0 and lost == 0,
            f"lost_turns={counters.get('lost_turns')}; the server answered "
            f"{result.turns_server_answered} of {result.turns_sent} turns made",
        )
        shown = result.errors_shown
        bad = {k: v for k, v in shown.items() if k != "error_network"}
        idle = shown.get("error_network", 0)
        add(
            "never in ERROR for a network fault",
            not bad,
            ", ".join(f"{k}: {v}" for k, v in bad.items())
            or f"none while a question waited, no key/model error; {idle} idle outages "
            "showed 'network error' after 4 failed attempts (by design)",
        )
        blackholes = self.faults["blackhole"]
        drops = counters.get("liveness_drops", 0)
        add(
            "every black hole noticed",
            drops >= blackholes,
            f"{drops} liveness drops for {blackholes} black holes while an answer was awaited",
        )
        completes = self.totals["turn_complete"]
        add(
            "answers match turns",
            turns <= completes <= turns + resent,
            f"{completes} turnComplete for {turns} turns, {resent} resent",
        )
        ends = self.totals["activity_end"]
        add(
            "each turn sent once (plus resends)",
            turns <= ends <= turns + resent,
            f"{ends} activityEnd received for {turns} turns, {resent} resent",
        )
        if self.lamp is not None:
            lamp, expected = self.lamp
            add(
                "each tool call ran once",
                lamp == expected,
                f"the lamp is {'on' if lamp else 'off'}, the {self.totals['tool_calls_sent']} "
                f"tool calls imply {'on' if expected else 'off'}",
            )
        rejected = {k: v for k, v in result.server.items() if k.startswith("close_")}
        add(
            "no client message rejected",
            not rejected,
            ", ".join(f"{k}={v}" for k, v in rejected.items()) or "none",
        )
        if result.elapsed_s > 3 * opts.go_away_every:
            add(
                "rolled over",
                counters.get("rollovers", 0) > 0,
                f"rollovers={counters.get('rollovers')}, goAways={result.server.get('go_aways')}",
            )
        add("agent exited cleanly", result.exit_code == 0, f"exit code {result.exit_code}")

        post = self._post_warmup()
        if len(post) >= 2:
            first, last = post[0], post[-1]
            growth = last.rss_kib - first.rss_kib
            limit = max(opts.rss_limit_mib * 1024, first.rss_kib * opts.rss_limit_pct / 100)
            add(
                "RSS flat",
                growth <= limit,
                f"{growth / 1024:+.1f} MiB from turn {first.turn} to {last.turn} "
                f"(limit {limit / 1024:.1f} MiB)",
            )
            for what, band in (("threads", opts.thread_band), ("fds", opts.fd_band)):
                values = [getattr(s, what) for s in post]
                add(
                    f"{what} flat",
                    max(values) <= getattr(first, what) + band,
                    f"{min(values)}..{max(values)} after turn {first.turn} "
                    f"(first {getattr(first, what)}, band +{band})",
                )
        else:
            add("RSS flat", False, "too few samples after the warm-up")
        base, end = result.baseline, result.end
        add(
            "threads back to baseline",
            end["new_threads"] <= opts.end_tolerance,
            f"{base['threads']} before, {end['threads']} after"
            + (f"; left: {', '.join(result.leftover_threads)}" if end["new_threads"] else ""),
        )
        add(
            "fds back to baseline",
            end["new_fds"] <= opts.end_tolerance and end["fds"] <= base["fds"] + opts.end_tolerance,
            f"{base['fds']} before, {end['fds']} after ({end['new_fds']} new)",
        )

    def _post_warmup(self) -> list[Sample]:
        start = math.ceil(self.options.turns * self.options.warmup)
        return [s for s in self.result.samples if s.turn >= max(1, start)]

    # ----------------------------------------------------------------- output

    def _print(self, text: str) -> None:
        if self.out is not None:
            print(text, file=self.out, flush=True)

    def _print_header(self) -> None:
        self._print(
            f"{'turn':>5} {'time s':>7} {'RSS MiB':>8} {'threads':>7} {'os thr':>6} "
            f"{'fds':>4} {'conns':>5} {'expired':>7} {'rollovers':>9} {'reconnects':>10} "
            f"{'resent':>6} {'faults':>6} {'liveness':>8}"
        )

    def _print_sample(self, s: Sample) -> None:
        self._print(
            f"{s.turn:>5} {s.t:>7.1f} {s.rss_kib / 1024:>8.1f} {s.threads:>7} {s.os_threads:>6} "
            f"{s.fds:>4} {s.connections:>5} {s.expired:>7} {s.rollovers:>9} {s.reconnects:>10} "
            f"{s.resent_turns:>6} {s.faults:>6} {s.liveness_drops:>8}"
        )


def feed_mic(agent: Agent, pcm: bytes) -> None:
    """Give the agent one chunk of 16 kHz mic audio the way its Microphone does."""
    uplink = getattr(agent, "uplink", None)
    if uplink is not None:
        uplink.feed(pcm)  # the microphone's callback since pi_agent/turns.py
    else:
        agent._put("mic", pcm)  # the older agent: mic chunks are agent events


def _count_sub(server: FakeLiveServer, sub: str) -> int:
    return sum(1 for r in server.received if r.sub == sub)


def _model_audio_sent(server: FakeLiveServer) -> bool:
    return any("modelTurn" in ((s.message or {}).get("serverContent") or {}) for s in server.sent)


def report(result: SoakResult, out) -> None:
    """The verdict, counters and checks, after the table."""
    counters = result.counters
    print(
        f"\n{result.turns_answered}/{result.options['turns']} turns in {result.elapsed_s:.1f} s; "
        + ", ".join(
            f"{k}={counters.get(k)}"
            for k in ("rollovers", "reconnects", "resent_turns", "lost_turns", "tool_calls")
        ),
        file=out,
    )
    harness = result.harness
    print(
        f"server: {result.server.get('connections_total')} connections, "
        f"{result.server.get('go_aways', 0)} goAways "
        f"({result.server.get('expired_in_use', 0)} ran out while in use), "
        f"{harness.get('drops')} drops, "
        f"{harness.get('malformed_sent')} malformed messages, "
        f"{harness.get('turn_complete')} turnComplete, {harness.get('handles')} handles",
        file=out,
    )
    faults, proxy = result.faults, result.proxy
    print(
        "faults: "
        + ", ".join(f"{k}={faults.get(k, 0)}" for k in FAULTS)
        + f"; proxy: {proxy.get('accepted', 0)} connections, "
        f"{faults.get('connections_reset', 0)} reset, {proxy.get('blackholed', 0)} black-holed, "
        f"{proxy.get('target_failed', 0)} could not reach the server; agent: "
        f"{counters.get('liveness_drops')} liveness drops, {counters.get('malformed')} malformed",
        file=out,
    )
    print(
        "slowest turn (s): " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(result.slowest.items())),
        file=out,
    )
    base, end = result.baseline, result.end
    if base and end:
        print(
            f"process: RSS {base['rss_kib'] / 1024:.1f} MiB before, "
            f"{end['rss_kib'] / 1024:.1f} MiB after; threads {base['threads']} -> "
            f"{end['threads']}; fds {base['fds']} -> {end['fds']}",
            file=out,
        )
    for check in result.checks:
        print(f"  [{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}", file=out)
    print("soak: PASS (flat, nothing lost)" if result.ok else "soak: FAIL", file=out)


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/soak", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--turns", type=int, default=300, help="turns to run (default 300)")
    parser.add_argument(
        "--go-away-every", type=float, default=3.0, metavar="S",
        help="goAway to every connection S seconds after its setup (default 3)",
    )  # fmt: skip
    parser.add_argument(
        "--audio", action="store_true",
        help="real PyAudio microphone and speaker on a simulated ALSA sound card",
    )  # fmt: skip
    parser.add_argument("--json", metavar="PATH", help="write the samples and verdict here")
    parser.add_argument("--seed", type=int, default=1, help="the turn plan's random seed")
    parser.add_argument(
        "--fault-rate", type=float, default=0.12, metavar="P",
        help="share of turns with a network fault from the proxy (default 0.12; 0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--sample-every", type=int, metavar="K", help="sample every K turns (default: turns/20)"
    )
    parser.add_argument("--drop-rate", type=float, default=0.06, help="share of turns with a drop")
    parser.add_argument(
        "--think", type=float, default=0.15, metavar="S",
        help="mean pause between an answer and the next turn (default 0.15)",
    )  # fmt: skip
    parser.add_argument("--turn-timeout", type=float, default=30.0, metavar="S")
    parser.add_argument(
        "--log", metavar="PATH",
        help="the agent's and server's log (info level); default: kept only if the soak fails",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.turns < 1:
        parser.error("--turns must be at least 1")
    for name in ("drop_rate", "fault_rate"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            parser.error(f"--{name.replace('_', '-')} must be between 0 and 1")

    log_path = Path(args.log) if args.log else Path(tempfile.mkstemp(prefix="pi-agent-soak-")[1])
    handler = logging.FileHandler(log_path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("websocket").setLevel(logging.WARNING)

    options = SoakOptions(
        turns=args.turns,
        go_away_every=args.go_away_every,
        audio=args.audio,
        seed=args.seed,
        sample_every=args.sample_every,
        drop_rate=args.drop_rate,
        fault_rate=args.fault_rate,
        turn_timeout=args.turn_timeout,
        think_s=args.think,
    )
    print(
        f"soak: {options.turns} turns, goAway every {options.go_away_every:g} s, "
        f"audio {'on (simulated ALSA)' if options.audio else 'off'}, "
        f"network faults in {options.fault_rate:.0%} of turns, seed {options.seed}",
        flush=True,
    )
    result = Soak(options, out=sys.stdout).run()
    report(result, sys.stdout)
    logging.getLogger().removeHandler(handler)
    handler.close()
    if args.json:
        Path(args.json).write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    if args.log or not result.ok:
        print(f"log: {log_path}")
    else:
        log_path.unlink(missing_ok=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
