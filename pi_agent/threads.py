"""The one thread base every worker uses (after gpiozero's ``GPIOThread``), and OS thread names."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import re
import sys
import threading
from collections.abc import Callable

from .errors import ZombieThread

log = logging.getLogger(__name__)

#: Linux keeps 16 bytes of a thread name (``comm``), the last one a NUL.
OS_NAME_MAX = 15
_PR_SET_NAME = 15
_SHORT = {
    "speaker": "spk",
    "reader": "rd",
    "writer": "wr",
    "connector": "conn",
    "control": "ctl",
    "client": "cli",
    "camera": "cam",
    "timer": "tmr",
    "worker": "wk",
    "tools": "tool",
    "close": "cls",
}
_libc: ctypes.CDLL | bool | None = None  # False: looked for and not usable


def os_thread_name(name: str) -> str:
    """``name`` made to fit the kernel's 15 bytes, keeping its meaning where it can.

    Long words become their usual short forms (``pi-agent-ws-reader-2`` ->
    ``pi-agent-ws-rd2``, ``pi-agent-ws-reader-12`` -> ``pi-agent-wsrd12``), then
    the rest is cut at a character boundary.
    """
    if len(name.encode()) <= OS_NAME_MAX:
        return name
    short = "-".join(_SHORT.get(word, word) for word in name.split("-"))
    short = re.sub(r"-(\d+)$", r"\1", short)  # "rd-2" -> "rd2"
    if len(short.encode()) > OS_NAME_MAX and short.startswith("pi-agent-"):
        short = "pi-agent-" + short[9:].replace("-", "")  # "ws-rd12" -> "wsrd12"
    return short.encode()[:OS_NAME_MAX].decode(errors="ignore")


def name_os_thread(name: str | None = None) -> None:
    """Give the calling thread an OS-visible name (``top -H``, ``ps -L``, ``/proc/.../comm``).

    Python's thread names are invisible outside the process; without this every
    thread of the service shows up as ``pi-agent``. Best-effort: uses the
    interpreter's own call where it has one, else ``prctl(PR_SET_NAME)`` on
    Linux, else does nothing. ``name`` defaults to the Python thread's name.
    """
    text = os_thread_name(name or threading.current_thread().name)
    set_name = getattr(__import__("_thread"), "set_name", None)  # CPython 3.14+
    if set_name is not None:
        with contextlib.suppress(Exception):
            set_name(text)
            return
    libc = _load_libc()
    if libc:
        with contextlib.suppress(Exception):
            libc.prctl(_PR_SET_NAME, ctypes.c_char_p(text.encode()), 0, 0, 0)


_libc_lock = threading.Lock()


def _load_libc() -> ctypes.CDLL | None:
    global _libc
    with _libc_lock:  # two threads naming themselves at once must both find it
        return _find_libc()


def _find_libc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError):
                _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc or None


class Worker:
    """A named daemon thread with a ``stopping`` Event and a joinable ``stop()``.

    Subclasses implement ``_run()`` and loop with ``while not
    self.stopping.wait(dt)`` or blocking calls with short timeouts, so a stop
    is always noticed. Exceptions escaping ``_run`` are logged and stored in
    ``error``; they never vanish silently.
    """

    name = "pi-agent-worker"

    def __init__(self, name: str | None = None):
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if name:
            self.name = name

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        self.stopping.clear()
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        name_os_thread(self.name)
        try:
            self._run()
        except BaseException as exc:  # a worker must report, not vanish
            self.error = exc
            log.exception("%s crashed", self.name)

    def _run(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _wake(self) -> None:
        """Unblock ``_run`` (put a sentinel, close a socket...). Override as needed."""

    def stop(self, timeout: float = 3.0) -> None:
        """Set ``stopping``, wake the thread, join it; raise ZombieThread if it won't die."""
        self.stopping.set()
        self._wake()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        thread.join(timeout)
        if thread.is_alive():
            log.error("%s did not stop within %.1f s", self.name, timeout)
            raise ZombieThread(f"{self.name} did not stop within {timeout:.1f} s")


def call_logged(callback: Callable[..., object], *args: object) -> None:
    """Run a callback so a bug in it is logged and never kills the calling I/O loop."""
    try:
        callback(*args)
    except Exception:
        log.exception("callback %r failed", callback)
