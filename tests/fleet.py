"""Agents as processes: ``python -m pi_agent run --config FILE``, as systemd runs them.

Each agent has its own directory (config, control socket, log), its own
``mqtt.device_id``, mock GPIO pins, no audio and no timers; all of them talk to
one fake Live server and one broker owned by the caller. Shared by
tests/test_mqtt_agent.py and scripts/bench_fleet.py (which measures with it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pi_agent.control import send_command

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "fleet-key-0123456789abcdef"  # the fake server's; never a real one
CLOCK_TICK = os.sysconf("SC_CLK_TCK")

DEVICES = {
    "talk_button": {"kind": "button", "pin": 17},
    "status_led": {"kind": "pwm_led", "pin": 18},
    "lamp": {"kind": "output", "pin": 23, "active_high": False, "description": "the lamp"},
    "counter_light": {"kind": "pwm_led", "pin": 12, "max": 0.5},
    "door": {"kind": "input", "pin": 24},
}
TOOLS = [
    {"name": "set_lamp", "description": "Switch the lamp.", "device": "lamp", "verb": "set"},
]


def agent_settings(
    directory: Path, device_id: str, live_url: str, broker_port: int | None, **mqtt: Any
) -> dict[str, Any]:
    """The config of one agent; ``broker_port`` None leaves MQTT off."""
    data: dict[str, Any] = {
        "live": {"endpoint": live_url, "setup_timeout_s": 5},
        "audio": {"backend": "none"},
        "gpio": {"pin_factory": "mock"},
        "devices": DEVICES,
        "ptt": {"device": "talk_button", "min_press_ms": 0},
        "status_light": {"device": "status_led"},
        "tools": TOOLS,
        "control": {"socket": str(directory / "control.sock")},
        "timers": {"enabled": False, "state_file": str(directory / "timers.json")},
        "agent": {"backoff_initial_s": 0.05, "backoff_max_s": 1},
    }
    if broker_port is not None:
        data["mqtt"] = {
            "enabled": True,
            "host": "127.0.0.1",
            "port": broker_port,
            "device_id": device_id,
            "name": device_id.capitalize(),
            **mqtt,
        }
    return data


class AgentProcess:
    """One ``pi-agent run`` process; ``start()`` returns at once (see :meth:`wait_ready`)."""

    def __init__(
        self,
        directory: Path,
        device_id: str,
        live_url: str,
        broker_port: int | None,
        **mqtt: Any,
    ):
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.device_id = device_id
        self.config = directory / "config.yaml"
        self.socket = str(directory / "control.sock")
        self.log = directory / "agent.log"
        settings = agent_settings(directory, device_id, live_url, broker_port, **mqtt)
        self.config.write_text(json.dumps(settings, indent=2))  # JSON is YAML
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self) -> AgentProcess:
        env = {**os.environ, "GEMINI_API_KEY": API_KEY, "PYTHONUNBUFFERED": "1"}
        env.pop("PI_AGENT_CONFIG", None)
        env.pop("CREDENTIALS_DIRECTORY", None)
        with open(self.log, "ab") as log:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pi_agent", "run", "--config", str(self.config)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def request(self, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """One control-socket command (ConnectionError/OSError while it is not up yet)."""
        if not self.alive():
            raise AssertionError(f"{self.device_id} exited: {self.tail()}")
        return send_command(self.socket, request, timeout)

    def status(self) -> dict[str, Any] | None:
        """The agent's status, or None while its control socket is not there yet."""
        try:
            reply = self.request({"cmd": "status"})
        except OSError:
            return None
        return reply.get("status") if reply.get("ok") else None

    def ready(self) -> bool:
        status = self.status()
        return status is not None and status["state"] == "ready"

    def cpu_seconds(self) -> float:
        """User + system CPU of the process so far (from /proc, 10 ms ticks)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICK  # utime, stime

    def run_seconds(self) -> float:
        """CPU time of its live threads in nanoseconds' precision (/proc/PID/task/*/schedstat).

        Finer than :meth:`cpu_seconds` for an idle process; threads that ended are not
        counted, so compare it only over a window where none do.
        """
        total = 0
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # the thread just ended
        return total / 1e9

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS for {self.pid}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def stop(self, timeout: float = 10.0, *, signalled: bool = False) -> int | None:
        """SIGTERM (a clean shutdown: ``offline`` said), SIGKILL if it hangs; the exit code.

        ``signalled``: SIGTERM was sent already; only wait (a second one during the
        shutdown would find Python's default handler back and end it with -15).
        """
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if not signalled:
                self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class Fleet:
    """N agent processes ``room0..roomN-1``, started together (in parallel)."""

    def __init__(
        self,
        directory: Path,
        count: int,
        live_url: str,
        broker_port: int | None,
        *,
        prefix: str = "room",
        **mqtt: Any,
    ):
        self.agents = [
            AgentProcess(directory / f"{prefix}{i}", f"{prefix}{i}", live_url, broker_port, **mqtt)
            for i in range(count)
        ]

    def __iter__(self):
        return iter(self.agents)

    def __getitem__(self, device_id: str) -> AgentProcess:
        return next(a for a in self.agents if a.device_id == device_id)

    @property
    def ids(self) -> list[str]:
        return [a.device_id for a in self.agents]

    def start(self) -> Fleet:
        for agent in self.agents:
            agent.start()
        return self

    def stop(self) -> list[int | None]:
        for agent in self.agents:  # all at once, then wait for each
            if agent.alive():
                assert agent.proc is not None
                agent.proc.terminate()
        return [agent.stop(signalled=True) for agent in self.agents]

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def median(values: Iterable[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
