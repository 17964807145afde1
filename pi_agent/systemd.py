"""Talk to systemd with no dependency: READY, STATUS, WATCHDOG, STOPPING.

The sd_notify protocol is one datagram of ``NAME=value`` lines sent to the UNIX
socket named in ``$NOTIFY_SOCKET``. A path starting with ``/`` is a socket
file; one starting with ``@`` is an abstract socket, whose name on the wire
starts with a NUL byte instead. systemd reads the sender's credentials from the
kernel, so nothing else is needed. (``vsock:`` addresses, used by newer
systemd for virtual machines, are not supported: a Pi agent never meets them.)

This is the one library module that reads ``os.environ``: here the environment
*is* the protocol (``NOTIFY_SOCKET``, ``WATCHDOG_USEC``, ``WATCHDOG_PID``).

Three pieces, used by the agent's own loop:

* :class:`Notifier` sends the datagrams. Every send is best-effort: a failure
  is logged once as a warning (later ones at debug level) and never raises into
  the agent. Outside systemd (no ``$NOTIFY_SOCKET``) it silently does nothing.
* :class:`Watchdog` pings ``WATCHDOG=1`` at half of ``WatchdogSec=`` from the
  thread that calls :meth:`Watchdog.tick` - the agent loop - and only while the
  agent says it is healthy.
* :class:`ReadyGate` sends ``READY=1`` exactly once: when the devices are up and
  the first session is set up, or a bounded time after the devices came up
  when offline, so a Pi with no network still finishes booting.

Typical use in the agent loop::

    notifier = Notifier()
    gate = ReadyGate(notifier, config.agent.ready_timeout_s)
    watchdog = Watchdog(notifier, healthy=agent.is_healthy)
    ...                                 # open audio, GPIO, camera
    gate.devices_up()
    while not stopping.is_set():
        event = events.get(timeout=1.0)  # wakes at least once a second
        if event is SETUP_COMPLETE:
            gate.session_ready()
        gate.tick()
        watchdog.tick()
        notifier.status(agent.status_line())  # deduplicated
    notifier.stopping()
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable

from .logs import redact

log = logging.getLogger(__name__)

#: Longest STATUS= text sent; ``systemctl status`` shows it on one line.
STATUS_MAX_CHARS = 200

#: Upper bound on one send. PID 1 gives its notify socket a large receive
#: buffer, so this only matters when something is badly wrong; it keeps a
#: wedged receiver from stalling the agent loop for long.
SEND_TIMEOUT_S = 1.0

_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SPACES = re.compile(r"\s+")


def _one_line(value: object) -> str:
    """``value`` as text on one line: control characters and runs of spaces become one space."""
    text = "1" if value is True else "0" if value is False else str(value)
    return _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()


def _socket_address(address: str | None) -> str | None:
    """The ``sendto`` address for a ``$NOTIFY_SOCKET`` value, or None if unusable."""
    if not address:
        return None
    if address.startswith("/"):
        return address
    if address.startswith("@") and len(address) > 1:
        return "\0" + address[1:]  # abstract namespace: leading NUL byte
    return None


class Notifier:
    """Sends sd_notify datagrams to systemd.

    ``address`` is a socket path (``/run/systemd/notify``) or an abstract name
    (``@name``); None reads ``$NOTIFY_SOCKET``. The variable is left in the
    environment: the unit's ``NotifyAccess=main`` makes systemd ignore anything
    a child process might send with it.

    A fresh socket is used for each datagram, as ``sd_notify()`` itself does,
    so there is nothing to close and a receiver that appears late still gets
    the next message. Methods are thread-safe.
    """

    def __init__(self, address: str | None = None):
        if address is None:
            address = os.environ.get("NOTIFY_SOCKET")
        self._address = address or None
        self._target = _socket_address(self._address)
        self._lock = threading.Lock()
        self._failed = False
        self._last_status: str | None = None
        if self._address and self._target is None:
            self._failed = True
            log.warning(
                "NOTIFY_SOCKET=%r is not a socket path or @name; systemd notifications are off",
                self._address,
            )

    def __repr__(self) -> str:
        return f"<Notifier address={self._address!r} available={self.available}>"

    @property
    def address(self) -> str | None:
        """The address as given (``/path`` or ``@name``), or None."""
        return self._address

    @property
    def available(self) -> bool:
        """True when there is a usable notification socket address.

        False when the agent is not running under systemd (or under a unit
        that is not ``Type=notify``); then every send is a silent no-op.
        """
        return self._target is not None

    @property
    def last_status(self) -> str | None:
        """The last STATUS= text systemd accepted, after sanitising."""
        return self._last_status

    # ----------------------------------------------------------------- sends

    def notify(self, **fields: object) -> bool:
        """Send one datagram of ``NAME=value`` lines; True if it went out.

        Names are upper-case sd_notify variables (``READY``, ``STATUS``,
        ``ERRNO``, ``EXTEND_TIMEOUT_USEC`` ...); ``True``/``False`` become
        ``1``/``0``. Values are flattened to one line, so a value can never
        inject another field. A bad *name* is a programming error and raises
        ValueError; a failed *send* never raises.
        """
        lines = []
        for name, value in fields.items():
            if not _FIELD_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not an sd_notify field name (A-Z, 0-9, _)")
            lines.append(f"{name}={_one_line(value)}")
        if not lines:
            return False
        with self._lock:
            return self._send("\n".join(lines))

    def ready(self) -> bool:
        """``READY=1``: start-up is finished (use :class:`ReadyGate` to decide when)."""
        return self.notify(READY=1)

    def stopping(self) -> bool:
        """``STOPPING=1``: an orderly shutdown has begun."""
        return self.notify(STOPPING=1)

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: one keep-alive ping (use :class:`Watchdog` to pace them)."""
        return self.notify(WATCHDOG=1)

    def status(self, text: object) -> bool:
        """``STATUS=text`` for ``systemctl status``; True if sent.

        The text is made one line, stripped of control characters, run
        through the log redactor (``systemctl status`` is readable by every
        user, so a secret must never reach it) and cut to
        :data:`STATUS_MAX_CHARS`. The same text as last time is not resent,
        so the agent may call this on every loop iteration.
        """
        line = _one_line(redact(str(text)))
        if len(line) > STATUS_MAX_CHARS:
            line = line[: STATUS_MAX_CHARS - 3].rstrip() + "..."
        with self._lock:
            if line == self._last_status:
                return False
            sent = self._send(f"STATUS={line}")
            if sent:
                self._last_status = line
            return sent

    def _send(self, message: str) -> bool:
        # Called with self._lock held.
        if self._target is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(SEND_TIMEOUT_S)
                sock.sendto(message.encode("utf-8", "replace"), self._target)
        except OSError as exc:
            what = message.partition("\n")[0].partition("=")[0]
            if not self._failed:
                self._failed = True
                log.warning(
                    "cannot notify systemd at %s (%s: %s); later failures only at debug level",
                    self._address,
                    what,
                    exc,
                )
            else:
                log.debug("cannot notify systemd at %s (%s: %s)", self._address, what, exc)
            return False
        return True

    # -------------------------------------------------------------- watchdog

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings, or None when no watchdog is asked for.

        systemd sets ``WATCHDOG_USEC`` from ``WatchdogSec=``; when
        ``WATCHDOG_PID`` is also set, the watchdog is meant for that process
        only (another process than this one inherited the variables). The
        interval is half the period, as sd_watchdog_enabled(3) advises, so one
        late iteration of the loop is not fatal.
        """
        usec = os.environ.get("WATCHDOG_USEC")
        if not usec:
            return None
        pid = os.environ.get("WATCHDOG_PID")
        try:
            if pid and int(pid) != os.getpid():
                return None
            period = int(usec)
        except ValueError:
            log.debug("ignoring bad WATCHDOG_USEC=%r / WATCHDOG_PID=%r", usec, pid)
            return None
        if period <= 0:
            return None
        return period / 2_000_000


class Watchdog:
    """Paces ``WATCHDOG=1`` pings from the agent loop.

    The agent loop calls :meth:`tick` on every iteration (it wakes at least
    once a second anyway). A ping goes out when the interval has passed *and*
    ``healthy()`` returns true. Because the thread that does the work is the
    thread that pings, a hung or dead agent loop stops the pings by itself and
    systemd kills and restarts the service after ``WatchdogSec=``.

    Never ping from a separate timer thread: such a thread keeps pinging while
    the agent loop is stuck, and the watchdog then proves nothing.

    ``healthy`` is for what a loop that still turns cannot see by itself: a
    worker thread that died, a device that stays wedged. Being offline is not
    unhealthy - a restart would not bring the network back, and the agent
    reconnects by itself. An exception from ``healthy`` counts as unhealthy.

    ``interval`` defaults to :meth:`Notifier.watchdog_interval`; with no
    watchdog configured :meth:`tick` does nothing. ``clock`` is injectable for
    tests.
    """

    def __init__(
        self,
        notifier: Notifier,
        healthy: Callable[[], bool],
        *,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._notifier = notifier
        self._healthy = healthy
        self._clock = clock
        self.interval = notifier.watchdog_interval() if interval is None else interval
        self._last_ping: float | None = None
        self._withheld = False

    @property
    def enabled(self) -> bool:
        """True when systemd expects pings and they can be sent."""
        return self.interval is not None and self._notifier.available

    def next_due(self) -> float | None:
        """When the next ping is due (None without a watchdog), so the loop sleeps till then."""
        if not self.enabled:
            return None
        return self._clock() if self._last_ping is None else self._last_ping + self.interval

    def tick(self) -> bool:
        """Ping if the interval has passed and the agent is healthy; True if pinged."""
        if not self.enabled:
            return False
        now = self._clock()
        if self._last_ping is not None and now - self._last_ping < self.interval:
            return False
        try:
            ok = bool(self._healthy())
        except Exception:  # a broken check must not kill the loop
            log.exception("health check failed; counting the agent as unhealthy")
            ok = False
        if not ok:
            if not self._withheld:
                self._withheld = True
                log.warning(
                    "agent unhealthy: withholding the watchdog ping "
                    "(systemd restarts the service if this lasts)"
                )
            return False
        if self._withheld:
            self._withheld = False
            log.info("agent healthy again: watchdog pings resumed")
        self._notifier.watchdog()
        self._last_ping = now  # even if the send failed: never retry in a tight loop
        return True


class ReadyGate:
    """Decides when to send ``READY=1``, and sends it exactly once.

    Ready means the local devices are up (:meth:`devices_up`) and either the
    first session has been set up (:meth:`session_ready`, on ``setupComplete``)
    or ``timeout_s`` (``agent.ready_timeout_s``) has passed since the devices
    came up. The timeout keeps an offline Pi from holding up boot: the agent
    is running and will connect when it can. Devices that never come up mean
    no READY, and systemd's start timeout fails the unit.

    :meth:`devices_up` and :meth:`session_ready` check at once; the loop's
    :meth:`tick` catches the timeout. ``clock`` is injectable for tests.
    """

    def __init__(
        self, notifier: Notifier, timeout_s: float, clock: Callable[[], float] = time.monotonic
    ):
        self._notifier = notifier
        self.timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._devices_at: float | None = None
        self._session = False
        self._ready = False
        self.reason: str | None = None  #: "session" or "timeout" once ready

    @property
    def is_ready(self) -> bool:
        return self._ready

    def devices_up(self) -> bool:
        """Audio, GPIO and camera are open; starts the offline timeout."""
        with self._lock:
            if self._devices_at is None:
                self._devices_at = self._clock()
        return self.tick()

    def session_ready(self) -> bool:
        """The first ``setupComplete`` arrived."""
        with self._lock:
            self._session = True
        return self.tick()

    def next_due(self) -> float | None:
        """When the offline timeout sends READY (None once ready or before the devices)."""
        with self._lock:
            if self._ready or self._devices_at is None:
                return None
            return self._devices_at + self.timeout_s

    def tick(self) -> bool:
        """Send READY=1 if it is due and not yet sent; True if it was sent now."""
        with self._lock:
            if self._ready or self._devices_at is None:
                return False
            if self._session:
                reason = "session"
            elif self._clock() - self._devices_at >= self.timeout_s:
                reason = "timeout"
            else:
                return False
            self._ready = True
            self.reason = reason
        if reason == "session":
            log.info("ready: devices up and session set up")
        else:
            log.info(
                "ready without a session after %.0f s (offline?); the agent keeps trying",
                self.timeout_s,
            )
        self._notifier.ready()
        return True
