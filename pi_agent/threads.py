"""The one thread base every worker uses (after gpiozero's ``GPIOThread``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .errors import ZombieThread

log = logging.getLogger(__name__)


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


def name_os_thread(name: str | None = None) -> None:
    """Give the current thread its name in the kernel too (``top -H``, ``ps -L``); best-effort."""
    import ctypes
    import ctypes.util

    text = (name or threading.current_thread().name).encode()[:15]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(15, ctypes.c_char_p(text), 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError, TypeError):
        pass
