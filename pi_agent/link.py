"""Keeping one Live connection: when to connect, with which handle and token, how long to wait.

The agent owns a :class:`Link` and calls it only from its own thread. Opening
a session blocks (TCP, TLS, ``setup`` -> ``setupComplete``), so it happens on
a short-lived connector thread whose outcome comes back to the agent as an
event (``connected`` or ``connect_failed``); the agent then calls
:meth:`Link.adopt` or :meth:`Link.failed`. The link decides the waits (capped
exponential backoff with jitter, reset only after ``setupComplete``); the agent
decides what the user sees.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import protocol
from .config import AgentSettings, LiveSettings
from .errors import SessionError
from .session import Credentials, LiveSession

log = logging.getLogger(__name__)

ROLLOVER_RETRY_MAX_S = 5.0  # a failed roll-over retries quickly: the old link is still up
QUOTA_WAIT_MIN_S = 60.0


@dataclass(frozen=True)
class Retry:
    """What :meth:`Link.failed` decided: try again after ``delay`` seconds, and why."""

    delay: float
    reason: str  # rollover | handle | fatal | backoff


class Link:
    """The current session, the newest resumption handle, and the reconnect schedule."""

    def __init__(
        self,
        live: LiveSettings,
        policy: AgentSettings,
        *,
        credentials: Callable[[], Credentials],
        sslopt: Mapping[str, Any],
        on_event: Callable[[LiveSession, object], None],
        report: Callable[[str, Any], None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.live = live
        self.policy = policy
        self._credentials = credentials
        self._sslopt = dict(sslopt)
        self._on_event = on_event
        self._report = report
        self._clock = clock
        self.session: LiveSession | None = None
        self.handle: str | None = None
        self.resumed = False
        self.attempt = 0
        self.connecting = False
        self.connect_at: float | None = None
        self.rollover_pending = False
        self.disconnected_at: float | None = None
        self._token: Credentials | None = None
        self._opened = 0

    @property
    def is_open(self) -> bool:
        return self.session is not None and self.session.is_open

    # ----------------------------------------------------------------- schedule

    def schedule(self, delay: float) -> None:
        self.connect_at = self._clock() + delay

    def wait_s(self, longest: float) -> float:
        """How long the agent loop may sleep before a connect is due."""
        if self.connect_at is None:
            return longest
        return max(0.0, min(longest, self.connect_at - self._clock()))

    def due(self) -> bool:
        return (
            self.connect_at is not None and not self.connecting and self._clock() >= self.connect_at
        )

    # ----------------------------------------------------------------- opening

    def open(self, setup: Callable[[str | None], Mapping[str, Any]]) -> None:
        """Open a session with the newest handle on the connector thread.

        An ephemeral token is fetched for each new session and reused to resume
        one (resumption does not spend a token's use).
        """
        self.connect_at = None
        self.connecting = True
        self._opened += 1
        name = f"s{self._opened}"
        handle = self.handle
        token = self._token if handle is not None else None
        live = self.live

        def connect() -> None:
            try:
                creds = token or self._credentials()
                session = LiveSession(
                    protocol.live_url(
                        live.endpoint, api_version=live.api_version, ephemeral=creds.ephemeral
                    ),
                    creds,
                    setup(handle),
                    on_event=self._on_event,
                    sslopt=self._sslopt,
                    setup_timeout=live.setup_timeout_s,
                    keepalive_interval=live.keepalive_interval_s,
                    keepalive_timeout=live.keepalive_timeout_s,
                    name=name,
                )
                session.open()
            except SessionError as exc:
                self._report("connect_failed", exc)
                return
            except Exception as exc:
                self._report("connect_failed", SessionError(f"{type(exc).__name__}: {exc}"))
                return
            self._report("connected", (session, handle, creds))

        threading.Thread(target=connect, name="pi-agent-connector", daemon=True).start()

    def adopt(
        self, session: LiveSession, handle: str | None, creds: Credentials
    ) -> LiveSession | None:
        """A session is ready: make it current; return the old one, for the caller to close."""
        self.connecting = False
        self.attempt = 0  # backoff resets only after setupComplete
        self.connect_at = None
        self.rollover_pending = False
        self.resumed = handle is not None
        self._token = creds
        old, self.session = self.session, session
        return old

    def discard(self, session: LiveSession) -> None:
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

    def lost(self, session: LiveSession) -> bool:
        """``session`` ended; True if it was the current one (not an old one after a roll-over)."""
        if session is not self.session:
            return False
        self.session = None
        return True

    def failed(self, error: SessionError) -> Retry:
        """Decide when to try again after a failed connect or a lost connection."""
        if self.is_open:
            # A roll-over attempt failed while the old connection still works.
            self.attempt += 1
            return self._retry(min(ROLLOVER_RETRY_MAX_S, 0.5 * self.attempt), "rollover")
        if self.disconnected_at is None:
            self.disconnected_at = self._clock()
        if error.kind == "handle":
            self.handle = None  # the server forgot the session: start a fresh one at once
            self._token = None
            return self._retry(0.0, "handle")
        if not error.retryable:
            self._token = None  # an expired or revoked token is fetched anew next time
            self.attempt += 1
            return self._retry(self.policy.fatal_retry_s, "fatal")
        delay = min(self.policy.backoff_max_s, self.policy.backoff_initial_s * 2**self.attempt)
        if error.kind == "quota":
            delay = max(delay, QUOTA_WAIT_MIN_S)
        delay *= random.uniform(0.5, 1.0)  # jitter: a fleet must not redial in step
        self.attempt += 1
        return self._retry(delay, "backoff")

    def _retry(self, delay: float, reason: str) -> Retry:
        self.schedule(delay)
        return Retry(delay, reason)

    def connect_failed(self, error: SessionError) -> Retry:
        self.connecting = False
        return self.failed(error)

    def restart(self) -> LiveSession | None:
        """Forget the session and its handle; connect afresh now. Returns the old session."""
        old, self.session = self.session, None
        self.handle = None
        self._token = None
        self.schedule(0.0)
        return old

    def close(self, timeout: float = 1.0) -> None:
        session, self.session = self.session, None
        if session is not None:
            session.close(timeout)
