"""sd_notify, asserted on real UNIX datagram sockets (nobodd's test_systemd habit)."""

from __future__ import annotations

import ctypes.util
import logging
import os
import platform
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import uuid
from pathlib import Path

import pytest

from pi_agent import logs
from pi_agent.systemd import STATUS_MAX_CHARS, Notifier, ReadyGate, Watchdog

TIMEOUT = 5.0  # for datagrams that must arrive
QUIET = 0.3  # how long "nothing more arrives" is watched


class Listener:
    """A bound SOCK_DGRAM socket standing in for PID 1's notify socket."""

    def __init__(self, address: str):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)

    def recv(self, timeout: float = TIMEOUT) -> str | None:
        """The next datagram, or None if none arrives within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        except TimeoutError:
            return None

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(tmp_path):
    path = tmp_path / "notify.sock"
    if len(str(path)) > 100:  # AF_UNIX paths are limited to 108 bytes
        path = Path(tempfile.mkdtemp(prefix="pa-")) / "n.sock"
    lis = Listener(str(path))
    yield lis
    lis.close()


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


# --------------------------------------------------------------------- Notifier


def test_systemd_notifier_sends_exact_datagrams(listener, clean_env):
    clean_env.setenv("NOTIFY_SOCKET", listener.address)
    notifier = Notifier()
    assert notifier.available and notifier.address == listener.address
    assert notifier.ready()
    assert listener.recv() == "READY=1"
    assert notifier.watchdog()
    assert listener.recv() == "WATCHDOG=1"
    assert notifier.stopping()
    assert listener.recv() == "STOPPING=1"
    assert notifier.notify(READY=True, STATUS="up", ERRNO=0)
    assert listener.recv() == "READY=1\nSTATUS=up\nERRNO=0"
    assert listener.recv(QUIET) is None


def test_systemd_notifier_abstract_address(clean_env):
    name = f"@pi-agent-test-{uuid.uuid4().hex}"
    lis = Listener(name)
    try:
        notifier = Notifier(name)
        assert notifier.available
        assert notifier.ready()
        assert lis.recv() == "READY=1"
    finally:
        lis.close()


def test_systemd_notify_values_cannot_inject_fields(listener, clean_env):
    notifier = Notifier(listener.address)
    notifier.notify(STATUS="fine\nREADY=1")
    assert listener.recv() == "STATUS=fine READY=1"
    with pytest.raises(ValueError):
        notifier.notify(ready=1)
    with pytest.raises(ValueError):
        notifier.notify(**{"STATUS\nREADY": 1})
    assert not notifier.notify()
    assert listener.recv(QUIET) is None


def test_systemd_status_sanitised_and_deduplicated(listener, clean_env, monkeypatch):
    monkeypatch.setattr(logs, "_secrets", set())
    notifier = Notifier(listener.address)
    assert notifier.status("listening\n\tto  you\x1b[0m")
    assert listener.recv() == "STATUS=listening to you [0m"
    assert not notifier.status("listening to you [0m")  # same text after cleaning: not resent
    assert not notifier.status("listening\nto you [0m")
    assert listener.recv(QUIET) is None
    assert notifier.status("offline: retrying in 4 s")
    assert listener.recv() == "STATUS=offline: retrying in 4 s"
    assert notifier.status("listening to you [0m")  # a change back is a change
    assert listener.recv() == "STATUS=listening to you [0m"
    assert notifier.last_status == "listening to you [0m"

    notifier.status("x" * 1000)
    text = listener.recv()
    assert text.startswith("STATUS=xxx") and text.endswith("...")
    assert len(text) == len("STATUS=") + STATUS_MAX_CHARS

    logs.add_secret("AIzaSECRETKEY123")
    notifier.status("error: bad key AIzaSECRETKEY123")
    assert listener.recv() == f"STATUS=error: bad key {logs.REDACTED}"


def test_systemd_no_notify_socket_is_a_silent_no_op(clean_env, caplog):
    caplog.set_level(logging.DEBUG, logger="pi_agent.systemd")
    notifier = Notifier()
    assert not notifier.available
    assert not notifier.ready()
    assert not notifier.status("hello")
    assert not notifier.watchdog()
    assert not notifier.stopping()
    assert caplog.records == []


def test_systemd_unavailable_socket_logs_once_and_never_raises(tmp_path, clean_env, caplog):
    caplog.set_level(logging.DEBUG, logger="pi_agent.systemd")
    clean_env.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    notifier = Notifier()
    assert notifier.available  # a valid address: sends are tried
    for _ in range(3):
        assert not notifier.ready()
        assert not notifier.status("starting")
        assert not notifier.watchdog()
    assert notifier.last_status is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "cannot notify systemd" in warnings[0].getMessage()
    assert "READY" in warnings[0].getMessage()
    assert len([r for r in caplog.records if r.levelno == logging.DEBUG]) == 8


@pytest.mark.parametrize("address", ["relative/path", "@", "vsock:2:1234"])
def test_systemd_unusable_address_is_reported_once(address, clean_env, caplog):
    caplog.set_level(logging.DEBUG, logger="pi_agent.systemd")
    notifier = Notifier(address)
    assert not notifier.available
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert len(caplog.records) == 1
    assert caplog.records[0].levelno == logging.WARNING


# ------------------------------------------------------------ watchdog interval


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("30000000", "other", None),
        ("1000", None, 0.0005),
        ("0", None, None),
        ("-5", None, None),
        ("thirty", None, None),
        ("30000000", "not-a-pid", None),
    ],
)
def test_systemd_watchdog_interval_from_environment(usec, pid, expected, clean_env):
    if usec is not None:
        clean_env.setenv("WATCHDOG_USEC", usec)
    if pid == "self":
        clean_env.setenv("WATCHDOG_PID", str(os.getpid()))
    elif pid == "other":
        clean_env.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    elif pid is not None:
        clean_env.setenv("WATCHDOG_PID", pid)
    assert Notifier("/run/nowhere").watchdog_interval() == expected


# --------------------------------------------------------------------- Watchdog


def test_systemd_watchdog_stops_when_the_loop_stops_ticking(listener, clean_env):
    clean_env.setenv("WATCHDOG_USEC", "2000000")  # WatchdogSec=2 -> ping every 1 s
    clock = FakeClock()
    watchdog = Watchdog(Notifier(listener.address), healthy=lambda: True, clock=clock)
    assert watchdog.interval == 1.0 and watchdog.enabled
    ticks = 12
    hung, release = threading.Event(), threading.Event()

    def agent_loop():
        for _ in range(ticks):
            watchdog.tick()
            clock.advance(0.5)  # two loop iterations per watchdog interval
        hung.set()  # the loop is now stuck in some blocking call ...
        release.wait(TIMEOUT)

    thread = threading.Thread(target=agent_loop, name="pi-agent-test-loop", daemon=True)
    thread.start()
    try:
        for _ in range(ticks // 2):
            assert listener.recv() == "WATCHDOG=1"
        assert hung.wait(TIMEOUT)
        clock.advance(60)  # ... while time goes on: nobody ticks, nobody pings
        assert listener.recv(QUIET) is None
        assert thread.is_alive()
    finally:
        release.set()
        thread.join(TIMEOUT)


def test_systemd_watchdog_withheld_while_unhealthy(listener, clean_env, caplog):
    caplog.set_level(logging.INFO, logger="pi_agent.systemd")
    clock = FakeClock()
    healthy = threading.Event()
    healthy.set()
    watchdog = Watchdog(Notifier(listener.address), healthy.is_set, interval=10, clock=clock)

    assert watchdog.tick()  # the first tick pings at once
    assert listener.recv() == "WATCHDOG=1"
    clock.advance(5)
    assert not watchdog.tick()  # interval not yet over
    healthy.clear()
    for _ in range(5):
        clock.advance(10)
        assert not watchdog.tick()
    assert listener.recv(QUIET) is None
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "agent unhealthy: withholding the watchdog ping "
        "(systemd restarts the service if this lasts)"
    ]
    healthy.set()
    assert watchdog.tick()  # overdue: pings on the first healthy tick
    assert listener.recv() == "WATCHDOG=1"
    assert "watchdog pings resumed" in caplog.records[-1].getMessage()


def test_systemd_watchdog_health_check_that_raises_counts_as_unhealthy(listener, clean_env):
    def broken() -> bool:
        raise RuntimeError("boom")

    watchdog = Watchdog(Notifier(listener.address), broken, interval=1, clock=FakeClock())
    assert not watchdog.tick()
    assert listener.recv(QUIET) is None


def test_systemd_watchdog_off_without_watchdog_usec(listener, clean_env):
    watchdog = Watchdog(Notifier(listener.address), lambda: True, clock=FakeClock())
    assert watchdog.interval is None and not watchdog.enabled
    assert not watchdog.tick()
    assert listener.recv(QUIET) is None


def test_systemd_watchdog_off_without_notify_socket(clean_env):
    clean_env.setenv("WATCHDOG_USEC", "30000000")
    watchdog = Watchdog(Notifier(), lambda: True)
    assert watchdog.interval == 15.0 and not watchdog.enabled
    assert not watchdog.tick()


# -------------------------------------------------------------------- ReadyGate


def test_systemd_ready_only_once_and_only_after_session(listener, clean_env):
    clock = FakeClock()
    gate = ReadyGate(Notifier(listener.address), timeout_s=20, clock=clock)
    assert not gate.tick()  # nothing is up yet
    assert not gate.devices_up()
    clock.advance(5)
    assert not gate.tick()
    assert listener.recv(QUIET) is None
    assert not gate.is_ready

    assert gate.session_ready()
    assert listener.recv() == "READY=1"
    assert gate.is_ready and gate.reason == "session"

    clock.advance(100)  # neither the timeout nor a second setupComplete resends
    assert not gate.tick()
    assert not gate.session_ready()
    assert not gate.devices_up()
    assert listener.recv(QUIET) is None


def test_systemd_ready_waits_for_devices_even_with_a_session(listener, clean_env):
    clock = FakeClock()
    gate = ReadyGate(Notifier(listener.address), timeout_s=20, clock=clock)
    assert not gate.session_ready()
    clock.advance(60)
    assert not gate.tick()  # the timeout only starts when the devices are up
    assert listener.recv(QUIET) is None
    assert gate.devices_up()
    assert listener.recv() == "READY=1"
    assert gate.reason == "session"


def test_systemd_ready_after_timeout_when_offline(listener, clean_env, caplog):
    caplog.set_level(logging.INFO, logger="pi_agent.systemd")
    clock = FakeClock()
    gate = ReadyGate(Notifier(listener.address), timeout_s=20, clock=clock)
    gate.devices_up()
    clock.advance(19.9)
    assert not gate.tick()
    assert listener.recv(QUIET) is None
    clock.advance(0.1)
    assert gate.tick()
    assert listener.recv() == "READY=1"
    assert gate.is_ready and gate.reason == "timeout"
    assert "offline" in caplog.records[-1].getMessage()
    assert not gate.session_ready()  # the late session does not send READY again
    assert listener.recv(QUIET) is None


def test_systemd_ready_gate_is_safe_from_many_threads(listener, clean_env):
    gate = ReadyGate(Notifier(listener.address), timeout_s=0, clock=FakeClock())
    gate.devices_up()
    assert listener.recv() == "READY=1"
    start = threading.Barrier(8)

    def hammer():
        start.wait(TIMEOUT)
        for _ in range(50):
            gate.tick()
            gate.session_ready()

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert listener.recv(QUIET) is None


# ------------------------------------------- MemoryDenyWriteExecute= evidence

_MDWE_PROBE = textwrap.dedent(
    """
    import ctypes, ctypes.util, mmap

    class Cmp(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                    ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

    lib = ctypes.CDLL(ctypes.util.find_library("seccomp"))
    lib.seccomp_init.restype = ctypes.c_void_p
    ctx = ctypes.c_void_p(lib.seccomp_init(ctypes.c_uint32(0x7FFF0000)))  # allow
    EPERM = ctypes.c_uint32(0x00050000 | 1)
    MASKED_EQ, W, X, SHM_EXEC = 7, mmap.PROT_WRITE, mmap.PROT_EXEC, 0o100000
    # The rules systemd (<= 255) installs for MemoryDenyWriteExecute=yes:
    for name, mask, value in [("mmap", W | X, W | X), ("mprotect", X, X),
                              ("pkey_mprotect", X, X), ("shmat", SHM_EXEC, SHM_EXEC)]:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        cmp = Cmp(2, MASKED_EQ, mask, value)
        assert lib.seccomp_rule_add_array(ctx, EPERM, nr, 1, ctypes.byref(cmp)) == 0, name
    assert lib.seccomp_load(ctx) == 0

    try:
        mmap.mmap(-1, 4096, prot=W | X)
        raise SystemExit("the filter did not refuse a W+X mapping")
    except PermissionError:
        pass
    # What pi_agent does to silence ALSA: a ctypes callback (a libffi closure).
    libc = ctypes.CDLL(None)
    CMP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))
    by_value = CMP(lambda a, b: a[0] - b[0])
    values = (ctypes.c_int * 4)(3, 1, 4, 2)
    libc.qsort(values, 4, ctypes.sizeof(ctypes.c_int), by_value)
    assert list(values) == [1, 2, 3, 4], list(values)
    print("ctypes callbacks work under MemoryDenyWriteExecute")
    """
)


@pytest.mark.skipif(
    sys.platform != "linux" or not ctypes.util.find_library("seccomp"),
    reason="needs Linux and libseccomp to reproduce systemd's MemoryDenyWriteExecute filter",
)
def test_systemd_ctypes_callbacks_survive_memory_deny_write_execute():
    """The unit sets MemoryDenyWriteExecute=yes; the ALSA-silencing ctypes callback must live.

    libffi first asks for a W+X page, is refused, and falls back to mapping one
    memfd twice (RW + RX), which the filter allows. Run in a child process:
    a seccomp filter cannot be removed again.
    """
    result = subprocess.run(
        [sys.executable, "-c", _MDWE_PROBE], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, (platform.machine(), result.stdout, result.stderr)
    assert "ctypes callbacks work" in result.stdout
