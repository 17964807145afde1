"""`pi-agent demo` in a real pseudo-terminal: ENTER toggles the button, q quits."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from .conftest import TIMEOUT


def read_until(fd: int, text: str, timeout: float = 30) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while text not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{text!r} not shown; screen so far:\n{seen[-2000:]}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                seen += os.read(fd, 4096).decode("utf-8", "replace")
            except OSError:
                break
    return seen


def test_demo_interactive_keyboard_turn_switches_the_lamp(tmp_path):
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pi_agent", "demo"],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        cwd=tmp_path,
        close_fds=True,
    )
    os.close(secondary)
    try:
        read_until(primary, "Hold SPACE to talk")
        read_until(primary, "[    ready    ]")
        os.write(primary, b"\n")  # ENTER: start talking; the simulated mic says a phrase
        read_until(primary, "[  listening  ]")
        os.write(primary, b"\n")  # ENTER again: stop; the fake model switches the lamp
        screen = read_until(primary, "lamp ON")
        os.write(primary, b"q")
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(primary)
    assert "tool call set_lamp" in screen
    assert (tmp_path / "pi-agent-demo.wav").stat().st_size > 44
