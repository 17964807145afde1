"""The agent's inbox: one frozen dataclass per kind of event, and the queue they travel in.

Everything that is not the agent thread (the button, the control socket, the
MQTT bridge, the session reader, the connector, the speaker, the tool runner,
the camera, the timers, a signal handler) only *puts* one of these on the
:class:`Inbox`. The agent takes them off one at a time and looks up its
handler by type, so there are no locks around the conversation's state and
every event it can see is listed here.
"""

from __future__ import annotations

import collections
import errno
import os
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------- the user


@dataclass(frozen=True)
class Press:
    """The talk button went down (or ``ctl press``)."""

    source: str = "button"


@dataclass(frozen=True)
class Release:
    """The talk button came up (or ``ctl release``): the user's turn ends."""

    source: str = "button"


@dataclass(frozen=True)
class Cancel:
    """A tap too short to be speech: drop the turn (and stop any answer)."""


@dataclass(frozen=True)
class LongPress:
    """A long press in toggle mode; ``action`` from ``ptt.long_press_action``."""

    action: str


@dataclass(frozen=True)
class Command:
    """A control request (socket, MQTT): ``respond(reply)`` answers it, now or later."""

    request: dict[str, Any]
    respond: Callable[[dict[str, Any]], None]


# --------------------------------------------------------------------------- the link


@dataclass(frozen=True)
class Connected:
    """A session finished setup; the reader starts only after this is queued."""

    session: Any
    handle: str | None
    credentials: Any


@dataclass(frozen=True)
class ConnectFailed:
    """Opening a session failed (a typed SessionError)."""

    error: Any


@dataclass(frozen=True)
class FromServer:
    """One parsed server event (see ``protocol``) or ``SessionEnded``/``MalformedMessage``."""

    session: Any
    event: Any


@dataclass(frozen=True)
class AnswerStarted:
    """The first chunk of an answer went straight to the speaker (``turns.Playback``)."""

    session: Any


# --------------------------------------------------------------------------- the parts


@dataclass(frozen=True)
class ToolFinished:
    """The tool runner's FunctionResponse for one call: ``{"id", "name", "response"}``."""

    response: dict[str, Any]


@dataclass(frozen=True)
class SpeakerStarted:
    """The first audio of an answer reached the device."""


@dataclass(frozen=True)
class SpeakerIdle:
    """An answer finished playing (or was flushed)."""


@dataclass(frozen=True)
class PartState:
    """A part changed state: ``part`` is mic, speaker or camera; ``state`` ok, missing,
    error, fault (mic data arriving at an impossible rate), ..."""

    part: str
    state: str
    detail: str = ""


@dataclass(frozen=True)
class CameraFrame:
    """A JPEG to send (while-talking mode)."""

    jpeg: bytes = field(repr=False)


@dataclass(frozen=True)
class TimerDue:
    """A timer, alarm or reminder is due: ring it and tell the model."""

    timer: Any


@dataclass(frozen=True)
class Reload:
    """SIGHUP: reload the configuration."""


@dataclass(frozen=True)
class Wake:
    """Nothing happened; just look at the clock and the stop flag again."""


# --------------------------------------------------------------------------- the inbox


class Inbox:
    """A queue the agent thread sleeps on, which anyone may feed, signal handlers too.

    ``put`` appends to a deque (atomic in CPython, no Python-level lock) and writes a
    byte to a pipe, so a signal handler that interrupts the agent thread in the middle
    of ``get`` can never deadlock on a lock that thread holds (``queue.Queue`` can).
    ``get`` sleeps in ``select`` on the pipe until an event or the timeout: no ticking.
    """

    def __init__(self) -> None:
        self._items: collections.deque[object] = collections.deque()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._closed = False

    def put(self, event: object) -> None:
        """Queue ``event`` and wake the agent (any thread, or a signal handler)."""
        self._items.append(event)
        if self._closed:
            return
        try:
            os.write(self._write_fd, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the reader is awake anyway
        except OSError as exc:  # closed at shutdown
            if exc.errno != errno.EBADF:
                raise

    def get(self, timeout: float | None) -> object | None:
        """The next event, or None after ``timeout`` seconds (None = wait for ever)."""
        while True:
            try:
                return self._items.popleft()
            except IndexError:
                pass
            if timeout is not None and timeout <= 0:
                return None
            ready, _, _ = select.select([self._read_fd], [], [], timeout)
            try:
                os.read(self._read_fd, 4096)
            except BlockingIOError:
                pass
            if not ready:
                try:
                    return self._items.popleft()
                except IndexError:
                    return None

    def drain(self) -> list[object]:
        """Everything still queued (at shutdown)."""
        out = []
        while self._items:
            out.append(self._items.popleft())
        return out

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for fd in (self._read_fd, self._write_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass


class Signals:
    """Signal handlers that only put events: SIGTERM/SIGINT stop, SIGHUP reloads.

    Installed on the main thread by ``pi-agent run``; ``stop`` must itself be
    signal-safe (``Agent.stop`` only sets a flag and puts on the inbox).
    """

    def __init__(self, stop: Callable[[str], None], reload: Callable[[], None] | None) -> None:
        self._stop = stop
        self._reload = reload
        self._previous: dict[int, Any] = {}
        self.received: list[str] = []

    def install(self) -> None:
        import signal

        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        import signal

        name = signal.Signals(signum).name
        self.received.append(name)
        if signum == signal.SIGHUP and self._reload is not None:
            self._reload()
        else:
            self._stop(name)

    def restore(self) -> None:
        import signal

        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
