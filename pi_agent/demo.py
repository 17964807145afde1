"""``pi-agent demo``: the whole agent on any Linux machine, no Pi, no key needed.

The REAL agent, session, tools and status code run against the embedded fake
Live server (or, with ``--live`` and ``GEMINI_API_KEY``, the real API). The
hardware is simulated the same way the tests do it: gpiozero mock pins, a
simulated ALSA sound card whose microphone "hears" espeak-ng phrases and whose
speaker is written to a WAV file, and the synthetic camera. A one-line view of
the devices is redrawn whenever something changes.

Interactive: hold SPACE to talk (or press ENTER to start/stop), q to quit.
``--script`` runs a fixed conversation with no keyboard (CI runs it).
"""

from __future__ import annotations

import argparse
import contextlib
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
from pathlib import Path
from typing import Any

from .agent import Agent, State
from .config import parse_config
from .parts import build_agent

log = logging.getLogger(__name__)

DEMO_KEY = "demo-key-not-a-secret"

# (what the user says, the tool the fake model calls, what it answers)
SCRIPT: list[tuple[str, tuple[str, dict[str, Any]] | None, str]] = [
    ("Turn on the kitchen lamp.", ("set_lamp", {"on": True}), "Done, the kitchen lamp is on."),
    ("What do you see?", ("look", {}), "I see coloured bars and a clock."),
    ("Dim the counter light to half.", ("dim_counter_light", {"value": 0.5}), "Dimmed to half."),
    ("Open the blind.", ("move_blind", {"angle": 90}), "The blind is open."),
    ("Is the back door open?", ("is_door_open", {}), "No, the back door is closed."),
    ("Turn the lamp off again.", ("set_lamp", {"on": False}), "The lamp is off."),
]


def demo_config(endpoint: str, control_socket: str, *, live: bool) -> Any:
    """The simulated kitchen: the same devices as config/pi-agent.yaml, on mock pins."""
    return parse_config(
        {
            "live": {
                "endpoint": endpoint,
                "system_instruction": (
                    "You are a voice assistant in a kitchen, running on a Raspberry Pi. Answer in "
                    "one short sentence and use the tools to act."
                ),
            },
            "audio": {"chimes": {"volume": 0.2}},
            "camera": {"backend": "synthetic", "mode": "on_demand", "width": 640, "height": 480},
            "gpio": {"pin_factory": "mock"},
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
            "control": {"socket": control_socket},
            "agent": {"log_level": "info"},
        }
    )


def _speech(text: str, rate: int) -> bytes | None:
    """espeak-ng speech, or None (the fake server then answers with a tone)."""
    from .sim.speech import SpeechToolMissing, synthesize

    try:
        return synthesize(text, rate)
    except (SpeechToolMissing, OSError):
        return None


class DeviceView:
    """Redraws one line whenever the status light, a device or the state changes."""

    def __init__(self, agent: Agent, out=None):
        self.agent = agent
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self._last = ""

    def line(self) -> str:
        states = self.agent.devices.states()
        lamp = "ON " if states["lamp"]["on"] else "off"
        light = states["counter_light"]["value"]
        angle = states["blind"]["angle"]
        door = "open" if states["door"]["active"] else "closed"
        status = self.agent.light.state or "-"
        blind = "?" if angle is None else f"{angle:+.0f}°"
        return (
            f"[{status:^13}] lamp {lamp} | counter light {light:4.0%} | blind {blind:>5} | "
            f"door {door} | turn {self.agent.turn}"
        )

    def update(self) -> None:
        text = self.line()
        if text == self._last:
            return
        self._last = text
        if self.tty:
            self.out.write("\r\x1b[2K" + text)
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def say(self, text: str) -> None:
        if self.tty:
            self.out.write("\r\x1b[2K" + text + "\n" + self._last)
        else:
            self.out.write(text + "\n")
        self.out.flush()


class _TranscriptHandler(logging.Handler):
    """Shows what was said and done above the device line in interactive mode."""

    def __init__(self, view: DeviceView):
        super().__init__(logging.INFO)
        self.view = view

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if " you: " in text or " gemini: " in text or " tool call " in text:
            self.view.say("  " + text.split(" ", 2)[-1])


def _has_sound_card() -> bool:
    try:
        cards = Path("/proc/asound/cards").read_text()
    except OSError:
        return False
    return bool(cards.strip()) and "no soundcards" not in cards


def run_demo(args: argparse.Namespace) -> int:
    """Entry point of ``pi-agent demo``; returns the exit code."""
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from .logs import add_secret, setup_logging

    level = args.log_level or ("info" if args.script else "warning")
    handler = setup_logging("info" if level == "warning" else level)
    handler.setLevel(level.upper())
    logging.getLogger("pi_agent.sim").setLevel(logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="pi-agent-demo-"))
    stack = contextlib.ExitStack()
    try:
        if args.live:
            key = os.environ.get("GEMINI_API_KEY", "").strip()
            if not key:
                print(
                    "pi-agent demo --live needs GEMINI_API_KEY in the environment", file=sys.stderr
                )
                return 2
            add_secret(key)
            endpoint = "wss://generativelanguage.googleapis.com"
            server = None
        else:
            from .sim.fake_live import FakeLiveServer, Reply

            key = DEMO_KEY
            server = stack.enter_context(FakeLiveServer(api_key=key))
            endpoint = server.url
            for said, tool, answer in SCRIPT * 3:
                reply = Reply(
                    text=answer,
                    audio=_speech(answer, 24000),
                    pace=1.0,
                    input_transcription=said,
                )
                if tool is not None:
                    reply.tool_calls.append(tool)
                server.replies.append(reply)
        card = None
        if args.script or not _has_sound_card():
            from .sim.alsa import SimulatedSoundCard

            card = stack.enter_context(SimulatedSoundCard(workdir / "alsa"))
        config = demo_config(endpoint, str(workdir / "control.sock"), live=args.live)
        factory = MockFactory(pin_class=MockPWMPin)
        agent = build_agent(config, api_key=key, pin_factory=factory)
        view = DeviceView(agent)
        if not args.script:
            transcript = _TranscriptHandler(view)
            logging.getLogger("pi_agent.agent").addHandler(transcript)
            stack.callback(logging.getLogger("pi_agent.agent").removeHandler, transcript)
        result: dict[str, int] = {}
        runner = threading.Thread(
            target=lambda: result.setdefault("code", agent.run()), name="pi-agent-demo-agent"
        )
        runner.start()
        try:
            if args.script:
                ok = _scripted(agent, card, view, args.turns)
            else:
                ok = _interactive(agent, card, view, factory)
        finally:
            agent.stop()
            runner.join(10)
        if card is not None:
            wav = Path.cwd() / "pi-agent-demo.wav"
            try:
                _write_wav(wav, card.played_bytes(), 24000)
                view.say(f"the simulated speaker's output is in {wav}")
            except OSError:
                pass
        return 0 if ok and result.get("code") == 0 else 1
    finally:
        stack.close()


def _write_wav(path: Path, pcm: bytes, rate: int) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)


def _wait(agent: Agent, view: DeviceView, predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if agent.wait_until(predicate, 0.1):
            view.update()
            return True
        view.update()
    return False


def _scripted(agent: Agent, card, view: DeviceView, turns: int) -> bool:
    """Press, speak a phrase into the simulated mic, release, wait for the answer."""
    if not _wait(agent, view, lambda a: a.state is State.READY, 30):
        view.say(f"demo: could not connect ({agent.last_error})")
        return False
    ok = True
    for n, (said, tool, _answer) in enumerate(SCRIPT[: max(1, turns)], 1):
        view.say(f"> (holding the button) {said}")
        handle_before = agent.handle
        agent.press()
        if card is not None:
            pcm = _speech(said, 16000)
            if pcm is not None:
                card.speak(pcm)
                card.wait_spoken(15)
        agent.release()
        done = _wait(
            agent,
            view,
            lambda a, h=handle_before: a.handle != h and a.state is State.READY,
            60,
        )
        if not done:
            view.say(f"demo: turn {n} did not complete (state {agent.state.value})")
            ok = False
            break
        metrics = agent.metrics[-1] if agent.metrics else None
        if metrics is not None and metrics.release_to_first_audio_ms is not None:
            view.say(f"  answered {metrics.release_to_first_audio_ms:.0f} ms after release")
        if tool and tool[0] == "set_lamp" and n == 1 and not agent.devices.states()["lamp"]["on"]:
            view.say("demo: the lamp did not switch on")
            ok = False
    view.update()
    view.say("demo: done" if ok else "demo: FAILED")
    return ok


def _interactive(agent: Agent, card, view: DeviceView, factory) -> bool:
    """Keyboard as the button: hold SPACE (key repeat) or ENTER to toggle; q quits."""
    if not sys.stdin.isatty():
        view.say("no terminal: use --script for a non-interactive demo")
        return False
    view.say(
        "Hold SPACE to talk (or ENTER to start/stop), q to quit. "
        + ("The simulated mic says the next demo phrase." if card is not None else "")
    )
    phrases = [s for s, _t, _a in SCRIPT]
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    talking = False
    last_space = 0.0
    n = 0
    try:
        while not agent.stopped.is_set():
            view.update()
            ready, _, _ = select.select([sys.stdin], [], [], 0.05)
            now = time.monotonic()
            if ready:
                key = os.read(fd, 1)
                if key in (b"q", b"Q", b"\x03"):
                    break
                if key == b" ":
                    last_space = now
                if key in (b" ", b"\n", b"\r") and not talking:
                    talking = True
                    agent.press()
                    if card is not None:
                        pcm = _speech(phrases[n % len(phrases)], 16000)
                        view.say(f"> {phrases[n % len(phrases)]}")
                        n += 1
                        if pcm is not None:
                            card.speak(pcm)
                elif key in (b"\n", b"\r") and talking:
                    talking = False
                    agent.release()
            # Terminals send no key-up: SPACE counts as released when its repeats stop.
            if talking and last_space and now - last_space > 0.6:
                talking = False
                last_space = 0.0
                agent.release()
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        print()
    return True
