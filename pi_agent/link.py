"""Keeping one Live connection: when to connect, with which handle, and whether it still lives.

The agent owns a :class:`Link` and calls it only from its own thread. The link
decides *when* (capped exponential backoff with jitter, reset only after
``setupComplete``; short waits while a user's turn waits to be delivered),
*with what* (the newest resumption handle, the ephemeral token to reuse), and
*whether the connection is dead* although no error was seen (nothing could
be sent for ``live.outbound_stall_s``; no frame at all for
``live.response_timeout_s`` while an answer is awaited). The agent decides
what the user sees.

Opening a session blocks (TCP, TLS, ``setup`` -> ``setupComplete``), so the
link hands that to a :class:`Connector`; the outcome comes back to the agent
as an event (``Connected`` / ``ConnectFailed``). :class:`ThreadConnector` is
the real one (a short-lived thread per attempt); tests use a fake that only
records what was asked, so the whole policy runs with no sockets and no
threads.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from . import protocol
from .config import AgentSettings, LiveSettings
from .errors import RetryableSessionError, SessionError
from .events import Connected, ConnectFailed
from .session import Credentials, LiveSession
from .threads import name_os_thread

log = logging.getLogger(__name__)

ROLLOVER_RETRY_MAX_S = 5.0  # a failed roll-over retries quickly: the old link is still up
QUOTA_WAIT_MIN_S = 60.0
LIVENESS_POLL_S = 1.0  # how often the agent looks while a turn is in flight


@dataclass(frozen=True)
class Retry:
    """What :meth:`Link.failed` decided: try again after ``delay`` seconds, and why."""

    delay: float
    reason: str  # rollover | handle | fatal | backoff


@dataclass(frozen=True)
class ConnectRequest:
    """One attempt to open a session."""

    name: str
    handle: str | None
    credentials: Credentials | None  # a token to reuse when resuming; None = get fresh ones
    setup: Mapping[str, Any]


class Connector(Protocol):
    def open(self, request: ConnectRequest) -> None:
        """Start opening; report ``Connected`` or ``ConnectFailed`` through the inbox."""


class ThreadConnector:
    """Opens each :class:`LiveSession` on a short-lived ``pi-agent-connector`` thread.

    The ``Connected`` event is queued *before* the session's reader starts, so no
    server event can overtake it (an early resumption handle used to be lost).
    """

    def __init__(
        self,
        live: LiveSettings,
        *,
        credentials: Callable[[], Credentials],
        sslopt: Mapping[str, Any],
        on_event: Callable[[LiveSession, object], None],
        emit: Callable[[object], None],
    ):
        self.live = live
        self._credentials = credentials
        self._sslopt = dict(sslopt)
        self._on_event = on_event
        self._emit = emit

    def open(self, request: ConnectRequest) -> None:
        threading.Thread(
            target=self._connect, args=(request,), name="pi-agent-connector", daemon=True
        ).start()

    def _connect(self, request: ConnectRequest) -> None:
        name_os_thread("pi-agent-connect")
        live = self.live
        try:
            creds = request.credentials or self._credentials()
            session = LiveSession(
                protocol.live_url(
                    live.endpoint, api_version=live.api_version, ephemeral=creds.ephemeral
                ),
                creds,
                request.setup,
                on_event=self._on_event,
                sslopt=self._sslopt,
                setup_timeout=live.setup_timeout_s,
                keepalive_interval=live.keepalive_interval_s,
                keepalive_timeout=live.keepalive_timeout_s,
                name=request.name,
                resuming=request.handle is not None,
            )
            session.open(start=False)
        except SessionError as exc:
            self._emit(ConnectFailed(exc))
            return
        except Exception as exc:  # a bug or an odd library error: still an answer
            self._emit(ConnectFailed(RetryableSessionError(f"{type(exc).__name__}: {exc}")))
            return
        self._emit(Connected(session, request.handle, creds))
        session.start()


class Link:
    """The current session, the newest resumption handle, and the reconnect schedule."""

    def __init__(
        self,
        live: LiveSettings,
        policy: AgentSettings,
        connector: Connector,
        *,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = lambda: random.uniform(0.5, 1.0),
    ):
        self.live = live
        self.policy = policy
        self.connector = connector
        self._clock = clock
        self._jitter = jitter  # a fleet must not redial in step
        self.session: Any = None
        self.handle: str | None = None
        self.resumed = False
        self.attempt = 0
        self.connecting = False
        self.connect_at: float | None = None
        self.rollover_pending = False
        self.disconnected_at: float | None = None
        #: The last error while down (None when connected): what status and light show.
        self.problem: SessionError | None = None
        self._token: Credentials | None = None
        self._opened = 0

    @property
    def is_open(self) -> bool:
        return self.session is not None and self.session.is_open

    @property
    def fatal(self) -> SessionError | None:
        """The key, model or setup error that keeps us out (until a setup succeeds)."""
        problem = self.problem
        return problem if problem is not None and not problem.retryable else None

    # ----------------------------------------------------------------- schedule

    def schedule(self, delay: float) -> None:
        self.connect_at = self._clock() + delay

    def due(self) -> bool:
        return (
            self.connect_at is not None and not self.connecting and self._clock() >= self.connect_at
        )

    def hurry(self) -> None:
        """A user's turn now waits: a long backoff is cut to ``agent.pending_backoff_max_s``."""
        if self.connect_at is None or self.connecting or self.fatal is not None:
            return
        if self.problem is not None and self.problem.kind == "quota":
            return
        latest = self._clock() + self.policy.pending_backoff_max_s
        if self.connect_at > latest:
            self.connect_at = latest

    # ----------------------------------------------------------------- opening

    def open(self, setup: Callable[[str | None], Mapping[str, Any]]) -> None:
        """Open a session with the newest handle (through the connector).

        An ephemeral token is fetched for each new session and reused to resume
        one (resumption does not spend a token's use).
        """
        self.connect_at = None
        self.connecting = True
        self._opened += 1
        handle = self.handle
        token = self._token if handle is not None else None
        self.connector.open(ConnectRequest(f"s{self._opened}", handle, token, setup(handle)))

    def adopt(self, session: Any, handle: str | None, creds: Any) -> Any:
        """A session is ready: make it current; return the old one, for the caller to close."""
        self.connecting = False
        self.attempt = 0  # backoff resets only after setupComplete
        self.connect_at = None
        self.rollover_pending = False
        self.problem = None
        self.resumed = handle is not None
        self._token = creds
        old, self.session = self.session, session
        return old

    def discard(self, session: Any) -> None:
        """A session opened at the wrong moment (see the agent's roll-over rule)."""
        self.connecting = False
        session.close()

    def reconnect_took_ms(self) -> float | None:
        """Time since the link went down, once it is back up (None if it never went down)."""
        if self.disconnected_at is None:
            return None
        took = (self._clock() - self.disconnected_at) * 1000.0
        self.disconnected_at = None
        return round(took, 1)

    # ----------------------------------------------------------------- losing it

    def lost(self, session: Any) -> bool:
        """``session`` ended; True if it was the current one (not an old one after a roll-over)."""
        if session is None or session is not self.session:
            return False
        self.session = None
        return True

    def failed(self, error: SessionError, *, urgent: bool = False) -> Retry:
        """Decide when to try again after a failed connect or a lost connection.

        ``urgent``: a user's turn waits to be delivered, so the wait is capped at
        ``agent.pending_backoff_max_s`` (the turn goes out soon after the network
        is back), except for quota errors and errors retrying cannot mend.
        """
        if self.is_open:
            # A roll-over attempt failed while the old connection still works.
            self.attempt += 1
            return self._retry(min(ROLLOVER_RETRY_MAX_S, 0.5 * self.attempt), "rollover")
        if self.disconnected_at is None:
            self.disconnected_at = self._clock()
        self.problem = error
        if error.kind == "handle":
            self.handle = None  # the server forgot the session: start a fresh one at once
            self._token = None
            return self._retry(0.0, "handle")
        if not error.retryable:
            self._token = None  # an expired or revoked token is fetched anew next time
            self.attempt += 1
            return self._retry(self.policy.fatal_retry_s, "fatal")
        delay = min(self.policy.backoff_max_s, self.policy.backoff_initial_s * 2**self.attempt)
        if urgent:
            delay = min(delay, self.policy.pending_backoff_max_s)
        if error.kind == "quota":
            delay = max(delay, QUOTA_WAIT_MIN_S)
        delay *= self._jitter()
        self.attempt += 1
        return self._retry(delay, "backoff")

    def _retry(self, delay: float, reason: str) -> Retry:
        self.schedule(delay)
        return Retry(delay, reason)

    def connect_failed(self, error: SessionError, *, urgent: bool = False) -> Retry:
        self.connecting = False
        return self.failed(error, urgent=urgent)

    def restart(self) -> Any:
        """Forget the session and its handle; connect afresh now. Returns the old session."""
        old, self.session = self.session, None
        self.handle = None
        self._token = None
        self.problem = None
        self.attempt = 0
        self.schedule(0.0)
        return old

    def close(self, timeout: float = 1.0) -> None:
        session, self.session = self.session, None
        if session is not None:
            session.close(timeout)

    # ----------------------------------------------------------------- liveness

    def check(self, awaiting_since: float | None) -> SessionError | None:
        """A reason to give up on the open connection, or None while it lives.

        Outgoing data stuck for ``live.outbound_stall_s`` (a socket that no longer
        drains) or, while an answer is awaited, no frame at all for
        ``live.response_timeout_s`` (a link that died without a reset, as Wi-Fi
        does) both mean: reconnect and resend. Idle, the session's own keepalive
        (slow on purpose: Gemini pongs can take 8-30 s) does the watching.
        """
        session = self.session
        if session is None or not session.is_open:
            return None
        now = self._clock()
        stalled = session.stalled_s(now)
        if stalled > self.live.outbound_stall_s:
            return RetryableSessionError(
                f"nothing could be sent for {stalled:.0f} s (the link is not draining)",
                kind="stall",
            )
        if awaiting_since is not None:
            quiet = now - max(awaiting_since, session.last_rx)
            if quiet > self.live.response_timeout_s:
                return RetryableSessionError(
                    f"no answer and no data from the server for {quiet:.0f} s", kind="timeout"
                )
        return None

    def next_deadline(self, awaiting_since: float | None, busy: bool) -> float | None:
        """When the agent must look again (a due connect, or a liveness check)."""
        times = [t for t in (self.connect_at,) if t is not None and not self.connecting]
        session = self.session
        if session is not None and session.is_open and (busy or awaiting_since is not None):
            times.append(self._clock() + LIVENESS_POLL_S)
        return min(times) if times else None
