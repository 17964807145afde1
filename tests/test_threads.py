"""Worker threads carry OS-visible names (what ``top -H`` and ``ps -L`` show)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from pi_agent.threads import OS_NAME_MAX, Worker, name_os_thread, os_thread_name

TIMEOUT = 10.0

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")


def comm(native_id: int) -> str:
    return Path(f"/proc/self/task/{native_id}/comm").read_text().rstrip("\n")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pi-agent-mic", "pi-agent-mic"),
        ("pi-agent-speaker", "pi-agent-spk"),
        ("pi-agent-ws-reader-3", "pi-agent-ws-rd3"),
        ("pi-agent-ws-writer-12", "pi-agent-wswr12"),
        ("pi-agent-connector", "pi-agent-conn"),
        ("pi-agent-control", "pi-agent-ctl"),
        ("pi-agent-camera-io", "pi-agent-cam-io"),
        ("somebody-elses-very-long-name", "somebody-elses-"),
        ("pi-agent-ééééééé", "pi-agent-ééé"),  # cut at a character, not inside one
    ],
)
def test_names_are_shortened_meaningfully_to_15_bytes(name, expected):
    short = os_thread_name(name)
    assert short == expected
    assert len(short.encode()) <= OS_NAME_MAX


class _Parked(Worker):
    """A worker that reports its kernel thread id, then waits to be stopped."""

    def __init__(self, name: str):
        super().__init__(name)
        self.native_id: int | None = None
        self.ready = threading.Event()

    def _run(self) -> None:
        self.native_id = threading.get_native_id()
        self.ready.set()
        self.stopping.wait()


@linux_only
def test_every_worker_names_its_os_thread():
    worker = _Parked("pi-agent-speaker")
    worker.start()
    try:
        assert worker.ready.wait(TIMEOUT)
        assert comm(worker.native_id) == "pi-agent-spk"
    finally:
        worker.stop()


@linux_only
def test_any_thread_can_name_itself():
    seen: dict[str, str] = {}

    def body() -> None:
        name_os_thread()  # the Python name by default
        seen["default"] = comm(threading.get_native_id())
        name_os_thread("pi-agent-ws-reader-1")
        seen["given"] = comm(threading.get_native_id())

    thread = threading.Thread(target=body, name="pi-agent-connector")
    thread.start()
    thread.join(TIMEOUT)
    assert seen == {"default": "pi-agent-conn", "given": "pi-agent-ws-rd1"}
    assert comm(threading.get_native_id()) != "pi-agent-ws-rd1"  # only that thread
