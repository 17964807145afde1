"""`pi-agent demo`: a given config on mock pins, SPACE to talk in a real pty, a clean screen."""

from __future__ import annotations

import argparse
import io
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin
from hypothesis import given, settings
from hypothesis import strategies as st

from pi_agent.config import parse_config
from pi_agent.demo import KeyRepeatFilter, demo_config, kitchen_config, run_demo
from pi_agent.demo_model import KITCHEN, example_args, steps_for
from pi_agent.demo_screen import ERASE_LINE, Screen, device_summary
from pi_agent.devices import Devices
from pi_agent.tools import ToolBox

from .conftest import TIMEOUT

ROOT = Path(__file__).resolve().parent.parent
GPIO_EXAMPLE = ROOT / "config" / "examples" / "gpio.yaml"


def read_until(fd: int, text: str, seen: str = "", timeout: float = 30) -> str:
    """Read the terminal until ``text`` shows up in ``seen`` plus what arrives."""
    deadline = time.monotonic() + timeout
    while text not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk.decode("utf-8", "replace")
    if text not in seen:
        raise AssertionError(f"{text!r} not shown; screen so far:\n{seen[-2000:]}")
    return seen


class Terminal:
    """``pi-agent demo`` on a real pseudo-terminal, the way a person runs it."""

    def __init__(self, cwd: Path, *args: str):
        self.primary, secondary = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pi_agent", "demo", *args],
            stdin=secondary,
            stdout=secondary,
            stderr=secondary,
            cwd=cwd,
            close_fds=True,
        )
        os.close(secondary)
        self.screen = ""

    def until(self, text: str, timeout: float = 30) -> str:
        """Wait for ``text`` to appear after what was already read; return the screen."""
        start = len(self.screen)
        self.screen = self.screen[:start] + read_until(
            self.primary, text, self.screen[start:], timeout
        )
        return self.screen

    def type(self, keys: bytes) -> None:
        os.write(self.primary, keys)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.primary)


@pytest.fixture
def terminal(tmp_path):
    made: list[Terminal] = []

    def start(*args: str) -> Terminal:
        made.append(Terminal(tmp_path, *args))
        return made[-1]

    yield start
    for t in made:
        t.close()


def test_demo_space_starts_and_sends_a_turn_in_a_pty(terminal, tmp_path):
    term = terminal()
    wav = tmp_path / "pi-agent-demo.wav"
    term.until(f"output will be written to {wav}")  # the WAV path comes first
    term.until("○ ready — SPACE to talk")
    term.type(b" ")  # SPACE: the turn starts; the simulated mic says its phrase
    term.until("● listening — the simulated mic is speaking")
    screen = term.until("● listening — SPACE to send")  # still listening once it is said
    assert "thinking" not in screen.rsplit("● listening", 1)[-1]
    term.type(b" ")  # SPACE again: sent; the fake model switches the lamp
    term.until("tool call set_lamp")
    term.until("lamp ON")
    term.until("○ ready")
    term.type(b"q")
    screen = term.until(f"output is in {wav}")
    assert term.proc.wait(timeout=TIMEOUT) == 0
    assert wav.stat().st_size > 44
    # Log and transcript lines never land inside the status line: each starts a fresh line.
    for piece in screen.split(ERASE_LINE)[1:]:
        assert "\r" not in piece.split("\n", 1)[0].removesuffix("\r")  # the pty's CRLF
    assert " ms after release" not in screen  # the fake server's latency is not shown


def test_demo_held_space_is_one_press_and_ctrl_c_still_saves_the_wav(terminal, tmp_path):
    term = terminal()
    term.until("○ ready — SPACE to talk")
    # A held key: the press, then the auto-repeats a terminal sends instead of a release.
    term.type(b" ")
    for _ in range(8):
        time.sleep(0.03)  # pacing the key repeats, not waiting for a result
        term.type(b" ")
    screen = term.until("● listening — SPACE to send")  # one turn, still open
    assert "thinking" not in screen
    term.proc.send_signal(signal.SIGINT)
    screen = term.until("output is in")
    assert term.proc.wait(timeout=TIMEOUT) == 0
    assert (tmp_path / "pi-agent-demo.wav").exists()
    assert "Traceback" not in screen


def _args(**overrides) -> argparse.Namespace:
    values = dict(
        config=None, script=True, live=False, mic=False, turns=None, log_level=None, log_file=None
    )
    values.update(overrides)
    return argparse.Namespace(**values)


def test_demo_runs_the_given_config_and_its_tools_move_the_mock_pins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    factory = MockFactory(pin_class=MockPWMPin)
    out = io.StringIO()
    code = run_demo(_args(config=str(GPIO_EXAMPLE), turns=2), pin_factory=factory, out=out)
    text = out.getvalue()
    assert code == 0, text
    assert "config/examples/gpio.yaml: 6 devices on mock pins, 5 tools" in text
    assert "\r" not in text and "\x1b" not in text  # --script: plain lines only
    # ITS tools (not the kitchen's), called with arguments from their schemas
    assert 'tool call set_lamp {"on": true}' in text
    assert 'tool call dim_strip {"value": 0.8}' in text  # the top of its 0..0.8
    assert "set_lamp" in text and "kitchen" not in text
    assert "demo: done (2 turns, 2 tool calls)" in text
    # the pins moved: the relay (active_high: false) went low, the strip's PWM to 0.8
    lamp, strip = factory.pin(23), factory.pin(12)
    # off (high) at start, on (low) by set_lamp, off again (safe: 0) when the demo stops
    assert [float(s.state) for s in lamp.states[1:4]] == [1.0, 0.0, 1.0], lamp.states
    assert any(abs(state.state - 0.8) < 1e-6 for state in strip.states), strip.states
    assert (tmp_path / "pi-agent-demo.wav").stat().st_size > 44
    assert text.index("will be written to") < text.index("[ready]")
    assert "latency figures are not meaningful" in text and "ms after release" not in text


def test_demo_log_file_keeps_the_screen_to_the_conversation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log_file = tmp_path / "demo.log"
    out = io.StringIO()
    code = run_demo(_args(turns=1, log_file=str(log_file)), out=out)
    assert code == 0, out.getvalue()
    logged = log_file.read_text()
    assert "INFO pi_agent.agent: turn 1 you: Turn on the kitchen lamp." in logged
    assert "INFO" not in out.getvalue()
    assert "tool call set_lamp" in out.getvalue()


def test_demo_live_without_a_key_says_what_is_missing(monkeypatch, capsys):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert run_demo(_args(live=True), out=io.StringIO()) == 2
    assert "--live needs a Gemini API key" in capsys.readouterr().err


def test_demo_log_file_it_cannot_write_is_named(tmp_path, capsys):
    target = tmp_path / "missing-dir" / "demo.log"
    assert run_demo(_args(log_file=str(target)), out=io.StringIO()) == 2
    assert f"--log-file: cannot write {target}" in capsys.readouterr().err


def test_demo_mic_is_for_the_interactive_demo(capsys):
    assert run_demo(_args(mic=True), out=io.StringIO()) == 2
    assert "--mic is for the interactive demo" in capsys.readouterr().err


def test_demo_config_is_made_safe_to_run_here(tmp_path):
    base = parse_config(
        {
            "live": {"hands_free": True, "token_command": "get-token", "ca_file": "/x.pem"},
            "audio": {"input_device": "seeed", "output_rate": 16000},
            "camera": {"backend": "picamera2"},
            "gpio": {"pin_factory": "lgpio"},
            "mqtt": {"enabled": True, "host": "broker"},
            "control": {"enabled": False},
        }
    )
    config = demo_config(base, tmp_path, endpoint="ws://127.0.0.1:1")
    assert config.live.endpoint == "ws://127.0.0.1:1" and not config.live.hands_free
    assert config.live.token_command is None and config.live.ca_file is None
    assert (config.audio.input_device, config.audio.output_rate) == ("default", None)
    assert config.camera.backend == "synthetic"
    assert config.gpio.pin_factory == "mock"
    assert not config.mqtt.enabled
    assert config.control.enabled and config.control.socket == str(tmp_path / "control.sock")
    assert config.timers.state_file == str(tmp_path / "timers.json")
    live = demo_config(base, tmp_path, endpoint=None)  # --live keeps the real endpoint
    assert live.live.endpoint == base.live.endpoint and live.live.token_command == "get-token"


# ------------------------------------------------------------------ the keyboard


def test_key_repeat_filter_tap_hold_and_double_tap():
    keys = KeyRepeatFilter(burst_s=0.2, hold_s=0.7)
    assert keys.press(10.0)  # a tap starts
    assert keys.press(12.0)  # a later tap ends
    # held for 2 s: a 500 ms repeat delay, then every 33 ms; none of it is a press
    assert keys.press(20.0)
    assert not any(keys.press(20.5 + i * 0.033) for i in range(45))
    assert keys.press(24.0)  # after letting go, the next tap counts
    assert not keys.press(24.3)  # too soon after a press to be a new one


@settings(max_examples=40)
@given(
    st.floats(0.0, 5.0),
    st.lists(st.floats(0.005, 3.0), min_size=1, max_size=60),
)
def test_key_repeat_filter_never_counts_a_repeat_burst(start, gaps):
    """Keys closer together than the burst gap are never presses, whatever came before."""
    keys = KeyRepeatFilter(burst_s=0.2, hold_s=0.7)
    now = start
    keys.press(now)
    for gap in gaps:
        now += gap
        counted = keys.press(now)
        if gap < 0.2:
            assert not counted


# ------------------------------------------------------------- the fake model


def _toolbox(tools: list[dict]) -> ToolBox:
    config = parse_config(
        {
            "gpio": {"pin_factory": "mock"},
            "devices": {
                "relay": {"kind": "output", "pin": 23},
                "strip": {"kind": "pwm_led", "pin": 12},
                "rgb": {"kind": "rgb_led", "pins": [5, 6, 26]},
                "arm": {"kind": "servo", "pin": 13},
                "door": {"kind": "input", "pin": 24},
            },
            "tools": tools,
        }
    )
    devices = Devices(config, pin_factory=MockFactory(pin_class=MockPWMPin))
    return ToolBox(config.tools, devices)


_BOUNDS = st.one_of(st.none(), st.floats(-90, 90, allow_nan=False).map(lambda x: round(x, 3)))


@st.composite
def tool_specs(draw):
    verb, device = draw(
        st.sampled_from(
            [
                ("set", "relay"),
                ("toggle", "relay"),
                ("value", "strip"),
                ("blink", "strip"),
                ("pulse", "rgb"),
                ("angle", "arm"),
                ("read", "door"),
            ]
        )
    )
    spec = {"name": f"t_{verb}", "description": "a tool", "device": device, "verb": verb}
    if verb in ("value", "angle"):
        low, high = sorted([draw(st.floats(-90, 90)), draw(st.floats(-90, 90))])
        if verb == "value":
            low, high = sorted([abs(low) / 90, abs(high) / 90])
        spec.update(min=round(low, 3), max=round(high, 3))
        if spec["min"] > spec["max"]:
            spec["max"] = spec["min"]
    if verb in ("blink", "pulse"):
        # below 0.2 s (the shortest blink period) no call at all is valid: tools.py refuses
        # even the defaults it declares, so such configs are left out here
        spec.update(max_count=draw(st.integers(1, 50)), max_duration_s=draw(st.floats(0.2, 60)))
    return spec


@settings(max_examples=60)
@given(tool_specs(), st.integers(0, 20))
def test_example_args_are_accepted_by_the_tool_layer(spec, n):
    box = _toolbox([spec])
    (declaration,) = box.function_declarations()
    args = example_args(declaration.get("parameters"), n)
    box.validate(spec["name"], args)  # raises ToolError if out of bounds or mistyped


def test_example_args_booleans_alternate_and_numbers_stay_inside():
    schema = {
        "type": "OBJECT",
        "properties": {
            "on": {"type": "BOOLEAN"},
            "level": {"type": "NUMBER", "minimum": 0.25, "maximum": 0.75},
            "count": {"type": "INTEGER", "minimum": 1, "maximum": 3},
            "mode": {"type": "STRING", "enum": ["slow", "fast"]},
            "extra": {"type": "NUMBER", "minimum": 2, "maximum": 9},
        },
        "required": ["on", "level", "count", "mode"],
    }
    runs = [example_args(schema, n) for n in range(6)]
    assert [r["on"] for r in runs] == [True, False] * 3
    assert all(0.25 <= r["level"] <= 0.75 and 1 <= r["count"] <= 3 for r in runs)
    assert {r["mode"] for r in runs} == {"slow", "fast"}
    assert "extra" not in runs[0] and runs[1]["extra"] == 2  # optional: odd rounds, lowest
    with pytest.raises(ValueError, match=r"no whole number between 0\.2 and 0\.8"):
        example_args(
            {
                "type": "OBJECT",
                "properties": {"x": {"type": "INTEGER", "minimum": 0.2, "maximum": 0.8}},
                "required": ["x"],
            },
        )


def test_steps_call_every_declared_tool_in_turn():
    declarations = [
        {
            "name": "set_lamp",
            "description": "d",
            "parameters": {
                "type": "OBJECT",
                "properties": {"on": {"type": "BOOLEAN"}},
                "required": ["on"],
            },
        },
        {"name": "is_door_open", "description": "d"},
    ]
    steps = steps_for(declarations)
    first = [next(steps) for _ in range(4)]
    assert [s.call for s in first] == [
        ("set_lamp", {"on": True}),
        ("is_door_open", {}),
        ("set_lamp", {"on": False}),
        ("is_door_open", {}),
    ]
    assert first[0].said == "Please use set lamp with on true."
    impossible = {
        "name": "odd",
        "description": "d",
        "parameters": {
            "type": "OBJECT",
            "properties": {"n": {"type": "INTEGER", "minimum": 0.2, "maximum": 0.8}},
            "required": ["n"],
        },
    }
    step = next(steps_for([impossible]))
    assert step.call is None and "no whole number" in step.answer


def test_kitchen_script_only_calls_the_kitchen_tools():
    names = {t.name for t in kitchen_config().tools} | {"look"}
    assert {s.call[0] for s in KITCHEN if s.call} <= names


# ------------------------------------------------------------------- the screen


def test_screen_lines_never_land_inside_each_other():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    screen = Screen(out, redraw=True)

    def writer(k: int) -> None:
        for i in range(200):
            screen.line(f"line {k}-{i} end")
            screen.status(f"status {k}-{i}")

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    screen.close()
    lines = [piece.split("\n")[0] for piece in out.getvalue().split(ERASE_LINE)]
    logged = [line for line in lines if line.startswith("line ")]
    assert len(logged) == 6 * 200
    assert all(re.fullmatch(r"line \d-\d+ end", line) for line in logged)
    assert out.getvalue().endswith("\n")


def test_screen_plain_mode_prints_status_only_when_it_changes():
    out = io.StringIO()
    screen = Screen(out, redraw=False)
    screen.status("[ready]")
    screen.status("[ready]")
    screen.line("  you: hello")
    screen.status("[listening]")
    assert out.getvalue() == "[ready]\n  you: hello\n[listening]\n"


def test_device_summary_shows_each_kind_shortly():
    states = {
        "lamp": {"on": True},
        "strip": {"on": True, "value": 0.4},
        "rgb": {"on": True, "color": [1.0, 0.5, 0.0]},
        "arm": {"angle": -30.0},
        "door": {"active": False},
        "bell": {"pressed": True},
    }
    kinds = {
        "lamp": "output",
        "strip": "pwm_led",
        "rgb": "rgb_led",
        "arm": "servo",
        "door": "input",
        "bell": "button",
    }
    assert device_summary(states, kinds) == (
        "lamp ON | strip 40% | rgb #ff8000 | arm -30° | door inactive | bell pressed"
    )
