"""Run a real Agent in a thread against the fake Live server, with mock GPIO pins."""

from __future__ import annotations

import threading
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPWMPin

from pi_agent.agent import State
from pi_agent.config import parse_config
from pi_agent.parts import build_agent

from .conftest import FAKE_KEY, TIMEOUT

BASE_DEVICES = {
    "talk_button": {"kind": "button", "pin": 17},
    "status_led": {"kind": "pwm_led", "pin": 18},
    "lamp": {"kind": "output", "pin": 23, "active_high": False, "description": "the lamp"},
}
BASE_TOOLS = [
    {"name": "set_lamp", "description": "Switch the lamp.", "device": "lamp", "verb": "set"},
    {"name": "toggle_lamp", "description": "Toggle the lamp.", "device": "lamp", "verb": "toggle"},
]


def agent_config(server, tmp_path, **sections: Any):
    data: dict[str, Any] = {
        "live": {"endpoint": server.url, "setup_timeout_s": 5},
        "audio": {"backend": "none"},
        "gpio": {"pin_factory": "mock"},
        "devices": BASE_DEVICES,
        "ptt": {"device": "talk_button", "min_press_ms": 0},
        "status_light": {"device": "status_led"},
        "tools": BASE_TOOLS,
        "control": {"socket": str(tmp_path / "control.sock")},
        "timers": {"enabled": False, "state_file": str(tmp_path / "timers.json")},
        "agent": {"backoff_initial_s": 0.05, "backoff_max_s": 1, "fatal_retry_s": 30},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_config(data)


def thread_stacks() -> str:
    """Where every thread is (a wait that timed out says what was stuck)."""
    import sys
    import traceback

    names = {t.ident: t.name for t in threading.enumerate()}
    return "\n".join(
        f"--- {names.get(ident, ident)}\n" + "".join(traceback.format_stack(frame)[-4:])
        for ident, frame in sys._current_frames().items()
    )


class RunningAgent:
    """Context manager: agent.run() on a thread; helpers to wait on its state."""

    def __init__(self, config, *, key: str = FAKE_KEY, **kwargs: Any):
        self.factory = MockFactory(pin_class=MockPWMPin)
        self.agent = build_agent(config, api_key=key, pin_factory=self.factory, **kwargs)
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._run, name="test-agent", daemon=True)

    def _run(self) -> None:
        self.exit_code = self.agent.run()

    def __enter__(self) -> RunningAgent:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.agent.stop()
        self.thread.join(5)
        assert not self.thread.is_alive(), "agent did not stop"
        self.factory.reset()

    def wait(self, predicate, timeout: float = TIMEOUT, what: str = "condition") -> None:
        """Wait until the agent, after handling some event, satisfies ``predicate``."""
        if not self.agent.wait_until(predicate, timeout):
            raise AssertionError(
                f"timed out waiting for {what}; state={self.agent.state}\n{thread_stacks()}"
            )

    def wait_state(self, *states: State, timeout: float = TIMEOUT) -> None:
        self.wait(lambda a: a.state in states, timeout, f"state in {states}")

    def status(self) -> dict[str, Any]:
        reply = self.agent.request({"cmd": "status"})
        assert reply["ok"], reply
        return reply["status"]
