"""``pi-agent demo``: the whole agent on any Linux machine, no Pi, no key needed.

The REAL agent, session, tools and status code run your config (``--config``,
else a built-in kitchen) against the embedded fake Live server, or with
``--live`` against the real API. The hardware is simulated the way the tests
do it: the config's own devices on gpiozero mock pins, a simulated ALSA sound
card whose microphone "hears" espeak-ng phrases and whose speaker is written
to a WAV file (``--mic``: this machine's own microphone and speaker), the
synthetic camera if the config has a camera, the control socket in a
temporary directory. The fake model calls the config's own tools with valid
arguments made from their schemas (:mod:`pi_agent.demo_model`).

Interactive: SPACE starts a turn, SPACE sends it, q quits. A terminal reports
no key release, so holding SPACE is one press: its key repeats are ignored
(:class:`KeyRepeatFilter`), never taken for a release. ``--script`` runs
turns with no keyboard and prints plain lines (CI runs it).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import select
import sys
import tempfile
import termios
import threading
import time
import tty
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from .config import Config, load_config, parse_config, resolve_api_key
from .demo_model import KITCHEN, Step, steps_for
from .demo_screen import EventView, Screen, ScreenLogHandler, device_summary, safe_states
from .errors import ConfigError
from .logs import LineFormatter, RedactingFilter, add_secret, escape, sink_of

log = logging.getLogger(__name__)

DEMO_KEY = "demo-key-not-a-secret"
WAV_NAME = "pi-agent-demo.wav"
SPEAKER_RATE = 24000
MIC_RATE = 16000
SPEECH_WPM = 175  # espeak-ng words per minute: clear, and turns do not drag
READY_TIMEOUT_S = 30.0
TURN_TIMEOUT_S = 60.0


from .cli import add_demo_arguments as add_arguments  # noqa: E402,F401  (kept importable)


def kitchen_config() -> Config:
    """The built-in kitchen: the devices and tools of config/pi-agent.yaml."""
    return parse_config(
        {
            "live": {
                "system_instruction": (
                    "You are a voice assistant in a kitchen, running on a Raspberry Pi. Answer in "
                    "one short sentence and use the tools to act."
                ),
            },
            "audio": {"chimes": {"volume": 0.2}},
            "camera": {"backend": "synthetic", "mode": "on_demand", "width": 640, "height": 480},
            "devices": {
                "talk_button": {"kind": "button", "pin": 17},
                "status_led": {"kind": "rgb_led", "pins": [5, 6, 26]},
                "lamp": {"kind": "output", "pin": 23, "description": "the kitchen lamp"},
                "counter_light": {"kind": "pwm_led", "pin": 12, "description": "the counter light"},
                "blind": {"kind": "servo", "pin": 13, "description": "the window blind"},
                "door": {"kind": "input", "pin": 24, "description": "the back door sensor"},
            },
            "ptt": {"device": "talk_button", "mode": "hold"},
            "status_light": {"device": "status_led"},
            "tools": [
                {
                    "name": "set_lamp",
                    "description": "Switch the kitchen lamp on or off.",
                    "device": "lamp",
                    "verb": "set",
                },
                {
                    "name": "dim_counter_light",
                    "description": "Set the counter light brightness.",
                    "device": "counter_light",
                    "verb": "value",
                },
                {
                    "name": "move_blind",
                    "description": "Turn the blind; -90 closed, 90 open.",
                    "device": "blind",
                    "verb": "angle",
                },
                {
                    "name": "is_door_open",
                    "description": "Tell whether the back door is open.",
                    "device": "door",
                    "verb": "read",
                },
            ],
        }
    )


def demo_config(
    base: Config, workdir: Path, *, endpoint: str | None, sim_audio: bool = True
) -> Config:
    """``base`` made safe to run here: mock pins, local audio and camera, private paths.

    ``endpoint`` is the fake server's URL (its key, no token command, no extra
    CA), or None to keep ``base``'s Live settings (``--live``). Push-to-talk
    always (the keyboard is the button), no MQTT, the control socket and the
    timers' state in ``workdir``.
    """
    live = dataclasses.replace(base.live, hands_free=False)
    if endpoint is not None:
        live = dataclasses.replace(
            live, endpoint=endpoint, token_command=None, ca_file=None, api_key_file=None
        )
    audio = base.audio
    if audio.backend != "none":
        audio = dataclasses.replace(
            audio,
            input_device="default",
            output_device="default",
            input_rate=None,
            output_rate=None,
            input_channels=None,
            input_channel=0,
        )
    camera = base.camera
    if camera.backend != "none":
        camera = dataclasses.replace(camera, backend="synthetic")
    return dataclasses.replace(
        base,
        live=live,
        audio=audio,
        camera=camera,
        gpio=dataclasses.replace(base.gpio, pin_factory="mock"),
        timers=dataclasses.replace(base.timers, state_file=str(workdir / "timers.json")),
        control=dataclasses.replace(
            base.control, enabled=True, socket=str(workdir / "control.sock")
        ),
        mqtt=dataclasses.replace(base.mqtt, enabled=False),
    )


def _speech(text: str, rate: int) -> bytes | None:
    """espeak-ng speech, or None (the fake server then answers with a tone)."""
    from .sim.speech import SpeechToolMissing, synthesize

    try:
        return synthesize(text, rate, speed=SPEECH_WPM)
    except (SpeechToolMissing, OSError):
        return None


def machine_has_microphone() -> bool:
    """An ALSA capture device exists on this machine (``/proc/asound/pcm``)."""
    try:
        return "capture" in Path("/proc/asound/pcm").read_text()
    except OSError:
        return False


class KeyRepeatFilter:
    """Which SPACE presses are the user's, and which are a held key's auto-repeat.

    A terminal sends no key-up, only repeats: the first comes after the
    keyboard's repeat delay (250-660 ms on common set-ups), then one every
    ~30-40 ms. A press counts unless it comes less than ``burst_s`` after the
    previous key of a burst, or less than ``hold_s`` after the last press that
    counted. So holding SPACE starts one turn and never ends it; a tap ends it.
    """

    def __init__(self, burst_s: float = 0.2, hold_s: float = 0.7):
        self.burst_s = burst_s
        self.hold_s = hold_s
        self._last_key: float | None = None
        self._last_press: float | None = None

    def press(self, now: float) -> bool:
        """True if a SPACE at ``now`` is a press of its own."""
        repeat = (self._last_key is not None and now - self._last_key < self.burst_s) or (
            self._last_press is not None and now - self._last_press < self.hold_s
        )
        self._last_key = now
        if not repeat:
            self._last_press = now
        return not repeat


class Demo:
    """One run: the agent on its thread, this thread drawing the screen and acting as the user."""

    def __init__(
        self,
        agent: Any,
        view: EventView,
        screen: Screen,
        *,
        steps: Iterator[Step],
        card: Any = None,
        server: Any = None,
        interactive: bool = False,
    ):
        self.agent = agent
        self.view = view
        self.screen = screen
        self.steps = steps
        self.card = card
        self.server = server
        self.interactive = interactive
        self.kinds = {name: s.kind for name, s in agent.config.devices.items()}
        hidden = {agent.config.ptt.device, agent.config.status_light.device}
        self.shown = [name for name in self.kinds if name not in hidden]
        self.talk_started: float | None = None
        self.step: Step | None = None
        self._plain_seen: tuple[str, int] = ("", 0)

    # -- the screen

    def devices(self) -> str:
        states = safe_states(self.agent.devices.states)
        return device_summary({n: states[n] for n in self.shown if n in states}, self.kinds)

    def refresh(self) -> None:
        """Show what came in and redraw the status line (plain mode: a line per state)."""
        self.view.drain()
        devices = self.devices()
        if not self.interactive:  # a line per state, and one after each tool's result
            seen = (self.view.state, len(self.view.tool_results))
            if seen != self._plain_seen:
                self._plain_seen = seen
                self.screen.status(f"[{self.view.state}] {devices}".rstrip())
            return
        if self.agent.talking:
            took = time.monotonic() - (self.talk_started or time.monotonic())
            speaking = self.card is not None and not self.card.wait_spoken(0)
            hint = "the simulated mic is speaking" if speaking else "SPACE to send"
            head = f"● listening — {hint} ({took:.0f} s)"
        else:
            cause = f" ({escape(self.view.cause, 80)})" if self.view.cause else ""
            head = f"○ {self.view.state}{cause} — SPACE to talk, q to quit"
        self.screen.status(f"{head} | {devices}" if devices else head)

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self.refresh()
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            self.view.drain(0.05)

    # -- the user's side of a turn

    def begin_turn(self) -> bool:
        """Press the button: queue the fake model's answer, let the simulated mic speak."""
        self.step = step = next(self.steps)
        if self.server is not None:
            from .sim.fake_live import Reply

            reply = Reply(
                text=step.answer,
                audio=_speech(step.answer, SPEAKER_RATE),
                pace=1.0,
                input_transcription=step.said if self.card is not None else None,
            )
            if step.call is not None:
                reply.tool_calls.append(step.call)
            self.server.replies.append(reply)
        if self.card is not None:
            self.screen.line(f"> (the simulated mic says) {step.said}")
        elif self.server is not None and step.call is not None:
            self.screen.line(f"> speak now; the fake model will answer by calling {step.call[0]}")
        before = self.agent.turn
        reply = self.agent.request({"cmd": "press"})
        if not reply.get("ok") or not self.agent.talking:
            self.screen.line(f"demo: the button press was not taken ({self.view.state})")
            if self.server is not None:
                self.server.replies.pop()
            return False
        self.talk_started = time.monotonic()
        if self.card is not None:
            pcm = _speech(step.said, MIC_RATE)
            if pcm is not None:
                self.card.speak(pcm + bytes(MIC_RATE * 2 // 5))  # and a breath of silence
        return self.agent.turn > before

    def end_turn(self) -> None:
        self.agent.request({"cmd": "release"})
        self.talk_started = None

    # -- the two ways to drive it

    def scripted(self, turns: int) -> bool:
        """Press, speak a phrase into the simulated mic, release, wait for the answer."""
        if not self.wait(lambda: self.view.state == "ready", READY_TIMEOUT_S):
            self.screen.line(f"demo: could not connect ({self.view.cause or self.view.state})")
            return False
        problems: list[str] = []
        for _ in range(turns):
            calls_before = len(self.view.tool_calls)
            if not self.begin_turn():
                problems.append("a turn did not start")
                break
            number = self.agent.turn
            if self.card is not None:
                self.wait(lambda: self.card.wait_spoken(0), 15)
            self.end_turn()
            done = self.wait(
                lambda n=number: n in self.view.turns_done and self.view.state == "ready",
                TURN_TIMEOUT_S,
            )
            if not done:
                problems.append(f"turn {number} did not complete (state {self.view.state})")
                break
            step = self.step
            if self.server is not None and step is not None and step.call is not None:
                called = [c.get("name") for c in self.view.tool_calls[calls_before:]]
                if step.call[0] not in called:
                    problems.append(f"turn {number}: {step.call[0]} was not called")
        self.refresh()
        problems += self.view.failed_tools()
        for problem in problems:
            self.screen.line(f"demo: {problem}")
        calls = len(self.view.tool_calls)
        self.screen.line(
            f"demo: {'FAILED' if problems else 'done'} "
            f"({len(self.view.turns_done)} turns, {calls} tool calls)"
        )
        return not problems

    def interactive_loop(self, stdin: TextIO) -> bool:
        """SPACE (or ENTER) starts a turn and sends it; q quits."""
        if not stdin.isatty():
            self.screen.line("demo: no terminal: use --script for a non-interactive demo")
            return False
        self.screen.line("SPACE starts a turn, SPACE again sends it; q quits.")
        fd = stdin.fileno()
        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        keys = KeyRepeatFilter()
        try:
            while not self.agent.stopped.is_set():
                self.refresh()
                ready, _, _ = select.select([fd], [], [], 0.1)
                if not ready:
                    continue
                for key in os.read(fd, 64):
                    if key in b"qQ\x03\x04":
                        return True
                    if key in b" \n\r" and keys.press(time.monotonic()):
                        if self.agent.talking:
                            self.end_turn()
                        else:
                            self.begin_turn()
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        return True


@contextlib.contextmanager
def _logging_to(screen: Screen, args: argparse.Namespace, out: TextIO) -> Iterator[None]:
    """The agent's log on the screen (warnings by default) or in ``--log-file`` (info)."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    for handler in saved_handlers:
        if getattr(handler, "_pi_agent", False):
            root.removeHandler(handler)
    stream = None
    if args.log_file:
        stream = open(args.log_file, "a", encoding="utf-8")  # noqa: SIM115 - closed below
        handler: logging.Handler = logging.StreamHandler(stream)
        handler.setFormatter(LineFormatter("file"))
        handler.addFilter(RedactingFilter())
        level = (args.log_level or "info").upper()
    else:
        level = (args.log_level or "warning").upper()
        handler = ScreenLogHandler(screen, level, sink_of(out))
    handler.setLevel(level)
    handler._pi_agent = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    sim = logging.getLogger("pi_agent.sim")
    sim_level = sim.level
    sim.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        for old in saved_handlers:
            if old not in root.handlers:
                root.addHandler(old)
        root.setLevel(saved_level)
        sim.setLevel(sim_level)
        if stream is not None:
            stream.close()


def run_demo(
    args: argparse.Namespace,
    *,
    pin_factory: Any = None,
    out: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Entry point of ``pi-agent demo``; returns the exit code.

    ``pin_factory`` (a gpiozero MockFactory) lets a test read the pins afterwards.
    """
    out = out or sys.stdout
    stdin = stdin or sys.stdin
    if args.mic and args.script:
        print("pi-agent demo: --mic is for the interactive demo, not --script", file=sys.stderr)
        return 2
    base = load_config(args.config) if args.config else kitchen_config()
    if args.log_file:
        try:
            Path(args.log_file).open("a", encoding="utf-8").close()
        except OSError as exc:
            print(
                f"pi-agent demo: --log-file: cannot write {args.log_file}: {exc.strerror}",
                file=sys.stderr,
            )
            return 2
    screen = Screen(out, redraw=not args.script and out.isatty())
    screen.line(f"pi-agent demo: starting {args.config or 'the built-in kitchen'}...")
    if base.live.hands_free:
        screen.line("demo: push-to-talk (the config's live.hands_free is not used here)")
    with _logging_to(screen, args, out), contextlib.ExitStack() as stack:
        return _run(args, base, screen, stack, pin_factory=pin_factory, stdin=stdin)


def _run(
    args: argparse.Namespace,
    base: Config,
    screen: Screen,
    stack: contextlib.ExitStack,
    *,
    pin_factory: Any,
    stdin: TextIO,
) -> int:
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from .parts import build_agent

    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pi-agent-demo-")))
    where = args.config or "the built-in kitchen"
    server = None
    if args.live:
        key = None
        if not base.live.token_command:
            try:
                key = resolve_api_key(base.live)
            except ConfigError as exc:
                print(f"pi-agent demo --live needs a Gemini API key: {exc}", file=sys.stderr)
                return 2
            add_secret(key)
        config = demo_config(base, workdir, endpoint=None)
        model_text = f"the real Gemini Live API ({config.live.model})"
    else:
        from .sim.fake_live import DEFAULT_MODELS, FakeLiveServer

        key = DEMO_KEY
        models = (*DEFAULT_MODELS, base.live.model)
        server = stack.enter_context(FakeLiveServer(api_key=key, models=models))
        config = demo_config(base, workdir, endpoint=server.url)
        model_text = "the fake Live server (no key, no network)"

    card = None
    audio_text = "no audio (audio.backend: none)"
    if config.audio.backend != "none":
        if args.mic and machine_has_microphone():
            audio_text = "this machine's default microphone and speaker"
        else:
            if args.mic:
                screen.line("demo: this machine has no microphone; using the simulated sound card")
            from .sim.alsa import SimulatedSoundCard

            card = stack.enter_context(SimulatedSoundCard(workdir / "alsa"))
            audio_text = "the simulated sound card"

    factory = pin_factory or MockFactory(pin_class=MockPWMPin)
    agent = build_agent(config, api_key=key, pin_factory=factory)
    view = EventView(
        screen, model_name="gemini" if args.live else "fake model", show_latency=args.live
    )
    agent.parts.observers.append(view.observe)
    own = {t.name for t in config.tools} | ({"look"} if agent.parts.camera_on else set())
    declarations = [d for d in agent.toolbox.function_declarations() if d["name"] in own]
    if args.config:
        steps, script_turns = steps_for(declarations), max(1, len(declarations))
    else:
        steps, script_turns = _cycle(KITCHEN), len(KITCHEN)

    wav = Path.cwd() / WAV_NAME
    screen.line(
        f"pi-agent demo: {where}: {len(config.devices)} devices on mock pins, "
        f"{len(declarations)} tools, {audio_text}, {model_text}"
    )
    if card is not None:
        screen.line(f"the simulated speaker's output will be written to {wav}")
    if not args.live:
        screen.line("fake server: latency figures are not meaningful, so none are shown")
    screen.line(f"control socket: pi-agent ctl --socket {config.control.socket} status")

    demo = Demo(
        agent,
        view,
        screen,
        steps=steps,
        card=card,
        server=server,
        interactive=not args.script,
    )
    result: dict[str, int] = {}
    runner = threading.Thread(
        target=lambda: result.setdefault("code", agent.run()), name="pi-agent-demo-agent"
    )
    runner.start()
    ok, interrupted = False, False
    try:
        if args.script:
            ok = demo.scripted(args.turns if args.turns is not None else script_turns)
        else:
            ok = demo.interactive_loop(stdin)
    except KeyboardInterrupt:
        interrupted = True
        screen.line("demo: interrupted")
    finally:
        agent.stop()
        runner.join(10)
        view.drain()
        screen.close()
        if card is not None:
            try:
                _write_wav(wav, card.played_bytes(), SPEAKER_RATE)
                screen.line(f"the simulated speaker's output is in {wav}")
            except OSError as exc:
                screen.line(f"demo: could not write {wav}: {exc.strerror or exc}")
    if interrupted:
        return 0 if not args.script else 130
    return 0 if ok and result.get("code") == 0 else 1


def _cycle(steps: tuple[Step, ...]) -> Iterator[Step]:
    while True:
        yield from steps


def _write_wav(path: Path, pcm: bytes, rate: int) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
