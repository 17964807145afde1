"""The service as systemd runs it: `pi-agent run` in a process, sd_notify on a real
datagram socket, a real SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from pi_agent.sim.fake_live import FakeLiveServer

from .conftest import FAKE_KEY, TIMEOUT


@pytest.fixture
def server():
    with FakeLiveServer(api_key=FAKE_KEY) as srv:
        yield srv


def read_notifications(sock, until, timeout=TIMEOUT):
    """Collect sd_notify datagrams until one contains ``until``."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            break
        got.append(data)
        if until in data:
            return got
    raise AssertionError(f"no {until!r} in {got}")


def test_service_ready_status_watchdog_and_sigterm(server, tmp_path):
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    config = tmp_path / "config.yaml"
    config.write_text(
        f"live: {{endpoint: '{server.url}'}}\n"
        "audio: {backend: none}\n"
        "gpio: {pin_factory: mock}\n"
        "devices: {lamp: {kind: led, pin: 27}, led: {kind: pwm_led, pin: 18}}\n"
        "status_light: {device: led}\n"
        f"control: {{socket: '{tmp_path / 'control.sock'}'}}\n"
    )
    env = {
        **os.environ,
        "GEMINI_API_KEY": FAKE_KEY,
        "NOTIFY_SOCKET": str(notify),
        "WATCHDOG_USEC": "400000",  # ping every 0.2 s
    }
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pi_agent", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        before_ready = read_notifications(sock, "READY=1", timeout=30)
        assert server.connections, "READY only after the session was set up"
        assert any("STATUS=" in d for d in before_ready)
        watchdogs = read_notifications(sock, "WATCHDOG=1")
        assert watchdogs
        # The control socket works in the real process, too.
        assert _ctl_status(tmp_path, env)["state"] == "ready"
        sent_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        read_notifications(sock, "STOPPING=1")
        code = proc.wait(timeout=TIMEOUT)
        took = time.monotonic() - sent_at
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    out, err = proc.communicate()
    assert code == 0, err
    assert took < 3.0, f"shutdown took {took:.1f} s"
    assert "SIGTERM received" in err and "stopped" in err
    assert FAKE_KEY not in err + out


def test_service_config_error_exits_2_with_the_key_path(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("audio:\n  chunk_ms: 7\n  volum: 1\n")
    done = subprocess.run(
        [sys.executable, "-m", "pi_agent", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 2
    assert "pi-agent: config: audio.chunk_ms: 7 is below the minimum 20" in done.stderr
    assert "audio.volum: unknown key, did you mean 'volume'?" in done.stderr


def test_service_missing_key_is_one_line(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("audio: {backend: none}\n")
    env = {
        k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "CREDENTIALS_DIRECTORY")
    }
    done = subprocess.run(
        [sys.executable, "-m", "pi_agent", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "no Gemini API key found" in done.stderr


def _ctl_status(tmp_path, env) -> dict:
    import json

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pi_agent",
            "ctl",
            "--socket",
            str(tmp_path / "control.sock"),
            "status",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT])
def test_service_sighup_reloads_and_signals_stop_in_order(server, tmp_path, stop_with):
    """SIGHUP: a bad file keeps the running config; a good one applies live (volume, and
    the Live settings on a resumed connection). SIGTERM/SIGINT: safe values, exit 0."""
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    config = tmp_path / "config.yaml"
    base = (
        f"live: {{endpoint: '{server.url}', system_instruction: 'first'}}\n"
        "audio: {backend: none}\n"
        "gpio: {pin_factory: mock}\n"
        "devices: {lamp: {kind: led, pin: 27, initial: 1, safe: 0}}\n"
        f"control: {{socket: '{tmp_path / 'control.sock'}'}}\n"
    )
    config.write_text(base)
    env = {**os.environ, "GEMINI_API_KEY": FAKE_KEY, "NOTIFY_SOCKET": str(notify)}
    env.pop("WATCHDOG_USEC", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pi_agent", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        read_notifications(sock, "READY=1", timeout=30)
        config.write_text(base + "agent: {backoff_initial_s: -1}\n")  # invalid
        proc.send_signal(signal.SIGHUP)
        try:
            read_notifications(sock, "READY=1")  # the reload is over (refused)
        except AssertionError:
            proc.kill()
            raise AssertionError(proc.stderr.read()) from None
        assert _ctl_status(tmp_path, env)["state"] == "ready", "still running on the old config"
        config.write_text(base.replace("'first'", "'second'"))
        proc.send_signal(signal.SIGHUP)
        read_notifications(sock, "READY=1")
        assert server.wait_for(
            lambda s: (
                len(s.connections) >= 2
                and s.connections[-1].setup is not None
                and s.connections[-1].setup["systemInstruction"]["parts"][0]["text"] == "second"
            ),
            TIMEOUT,
        ), "the new Live settings go out on a new connection"
        proc.send_signal(stop_with)
        read_notifications(sock, "STOPPING=1")
        code = proc.wait(TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    err = proc.stderr.read()
    assert code == 0, err
    assert "reload refused, keeping the running config: agent.backoff_initial_s" in err
    assert "config reloaded (live)" in err
    assert "pi-agent " in err and "starting: config" in err  # the start-up summary
