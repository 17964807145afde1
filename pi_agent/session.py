"""One Gemini Live connection over websocket-client: setup, a reader and a writer.

``LiveSession.open()`` connects, sends ``setup`` and blocks until
``setupComplete`` (or raises a typed :class:`~pi_agent.errors.SessionError`).
Then two threads run: the reader parses every frame and hands events to
``on_event(session, event)``; the writer is the only thread that sends, draining
a bounded outbound queue in order. Audio and control messages are never
dropped silently; video frames sit in a one-slot mailbox where the newest frame
wins. The reader always reports how the connection ended, exactly once, with a
:class:`SessionEnded` event.

Reconnecting is not done here: the agent owns that loop (with backoff) and
opens a new ``LiveSession`` with the newest resumption handle.
"""

from __future__ import annotations

import collections
import logging
import shlex
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import websocket

from . import protocol
from .errors import (
    ClosedError,
    FatalSessionError,
    HandleRefusedError,
    ProtocolError,
    RetryableSessionError,
    SessionError,
)
from .logs import add_secret, escape, redact
from .threads import name_os_thread

log = logging.getLogger(__name__)

_VIDEO_SLOT = "\0video"  # a place in the outbox where the newest pending frame goes
_CLOSE = 8
_PONG = 10
_PING = 9


@dataclass(frozen=True)
class Credentials:
    """How one connection authenticates: an API key, or an ephemeral token."""

    api_key: str | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        if bool(self.api_key) == bool(self.token):
            raise ValueError("give exactly one of api_key or token")
        add_secret(self.api_key)
        add_secret(self.token)

    def __repr__(self) -> str:  # never show the secret, even in a traceback
        return f"Credentials({'token' if self.token else 'api_key'}=<redacted>)"

    @property
    def ephemeral(self) -> bool:
        return self.token is not None

    def headers(self) -> list[str]:
        """Upgrade-request headers: the key goes here, never in the URL."""
        if self.token:
            return [f"Authorization: Token {self.token}"]
        return [f"x-goog-api-key: {self.api_key}"]


def fetch_token(command: str, timeout: float = 30.0) -> str:
    """Run ``live.token_command`` and return the token it prints (first line).

    A helper that fails may print anything on stderr, a key included, so its output
    is never put in an error, a status or a warning: the error names the exit code,
    and the first line of stderr (redacted, cut) goes to the debug log only.
    """
    try:
        done = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise RetryableSessionError(
            f"live.token_command did not finish within {timeout:g} s"
        ) from None
    except (OSError, ValueError) as exc:
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise RetryableSessionError(f"live.token_command could not run: {what}") from None
    if done.returncode != 0:
        first = (done.stderr or "").strip().splitlines()[:1]
        if first:
            log.debug("live.token_command stderr: %s", escape(redact(first[0]), 120))
        raise RetryableSessionError(f"live.token_command exited with status {done.returncode}")
    lines = done.stdout.strip().splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise RetryableSessionError("live.token_command printed no token")
    add_secret(token)
    return token


@dataclass(frozen=True)
class MalformedMessage:
    """A server frame that was not valid JSON was logged and skipped (counted by the agent)."""

    detail: str


@dataclass(frozen=True)
class SessionEnded:
    """The last event of every session: ``error`` is None after our own ``close()``."""

    error: SessionError | None


_AUTH_WORDS = ("api key", "leaked", "permission", "unauthenticated", "credential")


def classify_close(
    code: int | None, reason: str, *, during_setup: bool = False, resuming: bool = False
) -> SessionError:
    """Turn a close code and reason into a typed error (docs/live-protocol.md, close codes).

    The same code means different things at different moments: a 1007 refusing our
    ``setup`` is a configuration problem, but a 1007 in the middle of a session refused
    one of *our* messages (an order or payload mistake), which a reconnect and resume
    mends, and which is never the user's key or model. A 1007 on a resuming setup is
    how the service refuses an expired session: drop the handle and start fresh.
    """
    text = f"server closed the connection ({code}): {reason}" if reason else f"closed ({code})"
    low = reason.lower()
    extra = {"code": code, "reason": reason}
    if code == 1008 and "session not found" in low:
        return HandleRefusedError(text, **extra)
    if any(word in low for word in _AUTH_WORDS) or "api_key" in low:
        return FatalSessionError(text, kind="auth", **extra)
    if "resource_exhausted" in low or "quota" in low or "overloaded" in low:
        return RetryableSessionError(text, kind="quota", **extra)
    if code == 1008 and ("not implemented" in low or "requested entity" in low):
        return RetryableSessionError(text, kind="server", **extra)  # intermittent
    if code in (1007, 1008):
        if not during_setup:
            return RetryableSessionError(text, kind="protocol", **extra)
        if resuming:
            return HandleRefusedError(text, **extra)
        if "not found" in low or "not supported" in low or "model" in low:
            return FatalSessionError(text, kind="model", **extra)
        return FatalSessionError(text, kind="config", **extra)
    return RetryableSessionError(text, kind="server", **extra)


def classify_exception(exc: BaseException) -> SessionError:
    """Turn a connect/transport exception into a typed error (never including secrets)."""
    if isinstance(exc, SessionError):
        return exc
    if isinstance(exc, websocket.WebSocketBadStatusException):
        status = exc.status_code
        body = exc.resp_body.decode("utf-8", "replace") if isinstance(exc.resp_body, bytes) else ""
        detail = escape(" ".join(body.split()), 200)
        text = f"server refused the connection with HTTP {status}" + (
            f": {detail}" if detail else ""
        )
        extra = {"code": status, "reason": detail}
        if status == 429:
            return RetryableSessionError(text, kind="quota", **extra)
        if status in (401, 403) or "api key" in body.lower():
            return FatalSessionError(text, kind="auth", **extra)
        if status == 404:
            return FatalSessionError(text, kind="model", **extra)
        if 400 <= status < 500:
            return FatalSessionError(text, kind="config", **extra)
        return RetryableSessionError(text, kind="server", **extra)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return RetryableSessionError(
            f"TLS certificate check failed ({exc.verify_message}); is the clock right?"
        )
    if isinstance(exc, (websocket.WebSocketTimeoutException, TimeoutError)):
        return RetryableSessionError(f"timed out: {exc}", kind="timeout")
    return RetryableSessionError(f"network error: {type(exc).__name__}: {escape(exc, 200)}")


class LiveSession:
    """One connection to the Live API. Thread-safe ``send*``; ``close()`` is idempotent.

    ``open()`` connects and waits for ``setupComplete`` on the caller's thread;
    ``start()`` then starts the reader and the writer. The two steps let the
    owner announce the session (an event on the agent's queue) *before* the
    reader can deliver anything, so nothing the server says right after setup
    (an early resumption handle, say) can overtake the news that the session
    exists.
    """

    def __init__(
        self,
        url: str,
        credentials: Credentials,
        setup: Mapping[str, Any],
        *,
        on_event: Callable[[LiveSession, object], None],
        sslopt: Mapping[str, Any] | None = None,
        setup_timeout: float = 15.0,
        keepalive_interval: float = 20.0,
        keepalive_timeout: float = 40.0,
        queue_limit: int = 3000,
        name: str = "session",
        resuming: bool = False,
    ):
        if "?" in url and ("key=" in url or "access_token=" in url):
            raise ValueError("credentials go in headers, never in the URL")
        self.url = url
        self.name = name
        self.resuming = resuming
        self._credentials = credentials
        self._setup = setup
        self._on_event = on_event
        self._sslopt = dict(sslopt or {})
        self._setup_timeout = setup_timeout
        self._keepalive_interval = keepalive_interval
        self._keepalive_timeout = keepalive_timeout
        self._queue_limit = queue_limit
        self._ws: websocket.WebSocket | None = None
        self._outbox: collections.deque[str] = collections.deque()
        self._video: str | None = None
        self._cond = threading.Condition()
        self._closing = False
        self._started = False
        self._error: SessionError | None = None
        self._reader: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self._early: list[object] = []
        self._progress_at = time.monotonic()  # the writer last moved (or the outbox filled)
        self._sending = False
        #: ``time.monotonic()`` of the newest frame from the server (pongs included).
        self.last_rx = time.monotonic()
        self.ready = threading.Event()
        self.closed = threading.Event()
        self.messages_sent = 0
        self.bytes_sent = 0
        self.video_dropped = 0
        self.on_sent: Callable[[str], None] | None = None

    def __repr__(self) -> str:
        return f"<LiveSession {self.name} {self.url}>"

    # ----------------------------------------------------------------- lifecycle

    def open(self, *, start: bool = True) -> None:
        """Connect, send ``setup``, wait for ``setupComplete``; then :meth:`start` unless told not
        to (the agent's connector starts it only after announcing the session)."""
        if self._closing or self._ws is not None:
            raise ClosedError("a LiveSession opens once; make a new one to reconnect")
        try:
            ws = websocket.create_connection(
                self.url,
                header=self._credentials.headers(),
                timeout=self._setup_timeout,
                sslopt=self._sslopt or None,
                skip_utf8_validation=True,  # measured 4x cheaper on receive
                enable_multithread=True,
            )
        except Exception as exc:  # every failure becomes a typed error
            raise classify_exception(exc) from None
        self._ws = ws
        try:
            ws.send(protocol.encode(self._setup))
            self._early = self._await_setup_complete(ws)
        except BaseException as exc:
            self._abort_socket(release=True)
            self._closing = True
            self.closed.set()
            if isinstance(exc, SessionError):
                raise
            raise classify_exception(exc) from None
        ws.settimeout(None)
        self.last_rx = self._progress_at = time.monotonic()
        self.ready.set()
        if start:
            self.start()

    def start(self) -> None:
        """Start the reader and the writer; events before this are delivered first."""
        with self._cond:
            if self._started or self._closing or not self.ready.is_set():
                return
            self._started = True
        for event in self._early:
            self._deliver(event)
        self._early = []
        self._reader = threading.Thread(
            target=self._read_loop, name=f"pi-agent-ws-reader-{self.name}", daemon=True
        )
        self._writer = threading.Thread(
            target=self._write_loop, name=f"pi-agent-ws-writer-{self.name}", daemon=True
        )
        self._reader.start()
        self._writer.start()

    def _await_setup_complete(self, ws: websocket.WebSocket) -> list[object]:
        deadline = time.monotonic() + self._setup_timeout
        early: list[object] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RetryableSessionError(
                    f"no setupComplete within {self._setup_timeout:.0f} s", kind="timeout"
                )
            ws.settimeout(remaining)
            opcode, frame = ws.recv_data_frame(True)
            if opcode == _CLOSE:
                code, reason = _close_info(frame.data)
                raise classify_close(code, reason, during_setup=True, resuming=self.resuming)
            if opcode in (_PING, _PONG):
                continue
            for event in _events_of(frame.data):
                if isinstance(event, protocol.SetupComplete):
                    return early
                early.append(event)

    def close(self, timeout: float = 3.0) -> None:
        """Send a close frame, stop both threads and join them. Safe to call twice."""
        with self._cond:
            first = not self._closing
            self._closing = True
            self._cond.notify_all()
        ws = self._ws
        if first and ws is not None and ws.connected and self._error is None:
            try:
                ws.settimeout(min(timeout, 1.0))  # a dead link must not hold the close
                ws.send_close(websocket.STATUS_NORMAL)
            except Exception:  # the socket may be gone already
                pass
        self._abort_socket()
        for thread in (self._writer, self._reader):
            if thread is not None and thread.ident is not None:
                if thread is threading.current_thread():
                    continue
                thread.join(timeout)
                if thread.is_alive():
                    log.error("%s did not stop within %.1f s", thread.name, timeout)
        if self._reader is None or self._reader.ident is None:
            self._abort_socket(release=True)
            self.closed.set()

    def abort(self, error: SessionError) -> None:
        """End the connection now with ``error`` (a dead or stalled link); the reader reports it."""
        log.warning("%s: %s; closing the connection", self.name, error)
        self._fail(error)
        if self._reader is None:
            self._abort_socket(release=True)
            self.closed.set()

    def _abort_socket(self, release: bool = False) -> None:
        """Wake a thread blocked in recv or send (SHUT_RDWR); ``release`` also closes the fd."""
        ws = self._ws
        if ws is None:
            return
        try:
            ws.abort()
            if release:
                ws.shutdown()
        except Exception:
            pass

    @property
    def is_open(self) -> bool:
        return self.ready.is_set() and not self._closing and not self.closed.is_set()

    @property
    def error(self) -> SessionError | None:
        return self._error

    def stalled_s(self, now: float | None = None) -> float:
        """How long outgoing messages have waited without the socket taking any (0 if none)."""
        with self._cond:
            if not (self._outbox or self._sending):
                return 0.0
            return max(0.0, (time.monotonic() if now is None else now) - self._progress_at)

    # ----------------------------------------------------------------- sending

    def send(self, message: Mapping[str, Any] | str) -> None:
        """Queue a message for the writer, in order. Never drops; raises if closed.

        A queue that fills up means the socket is not draining: the connection is
        ended as stalled (the owner reconnects and resends), rather than blocking
        the caller (often the microphone thread) or dropping audio silently.
        """
        text = protocol.encode(message)
        with self._cond:
            if self._closing:
                raise ClosedError(f"{self!r} is closed")
            if len(self._outbox) >= self._queue_limit:
                stalled = True
            else:
                stalled = False
                if not self._outbox and not self._sending:
                    self._progress_at = time.monotonic()
                self._outbox.append(text)
                self._cond.notify()
        if stalled:
            self._fail(
                RetryableSessionError("outbound queue full: the link is not draining", kind="stall")
            )
            raise ClosedError(f"{self!r} stalled")

    def send_audio(self, pcm: bytes) -> None:
        """Queue one chunk of 16 kHz s16le mono mic audio."""
        self.send(protocol.audio_message(pcm))

    def send_video(self, jpeg: bytes) -> None:
        """Offer a JPEG frame; an older frame not yet sent is replaced (newest wins).

        The frame keeps its place in the order of messages (a ``look`` frame goes
        out before the tool response queued after it), but never queues up: a
        frame still waiting is overwritten by the newer one.
        """
        text = protocol.video_message(jpeg)
        with self._cond:
            if self._closing:
                return
            if self._video is not None:
                self.video_dropped += 1
            else:
                if not self._outbox and not self._sending:
                    self._progress_at = time.monotonic()
                self._outbox.append(_VIDEO_SLOT)
            self._video = text
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._outbox)

    def wait_drained(self, timeout: float) -> bool:
        """Wait until everything queued has been written to the socket."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._outbox or self._sending:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closing:
                    return not self._outbox
                self._cond.wait(remaining)
        return True

    # ----------------------------------------------------------------- threads

    def _write_loop(self) -> None:
        name_os_thread(f"pi-agent-wr-{self.name}")
        ws = self._ws
        assert ws is not None
        next_ping = time.monotonic() + self._keepalive_interval
        while True:
            with self._cond:
                while not self._outbox and not self._closing:
                    wait = next_ping - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)  # asleep until there is work or a ping is due
                if self._closing:
                    return
                text: str | None = None
                if self._outbox:
                    text = self._outbox.popleft()
                    if text is _VIDEO_SLOT:
                        text, self._video = self._video, None
                    self._sending = True
                self._cond.notify_all()
            now = time.monotonic()
            try:
                if text is not None:
                    ws.send(text)
                    self.messages_sent += 1
                    self.bytes_sent += len(text)
                    if self.on_sent is not None:
                        self.on_sent(text)
                if now >= next_ping:
                    if now - self.last_rx > self._keepalive_timeout:
                        self._fail(
                            RetryableSessionError(
                                f"no data from the server for {now - self.last_rx:.0f} s",
                                kind="timeout",
                            )
                        )
                        return
                    ws.ping()
                    next_ping = now + self._keepalive_interval
            except Exception as exc:
                self._fail(classify_exception(exc))
                return
            finally:
                with self._cond:
                    if self._sending:
                        self._sending = False
                        self._progress_at = time.monotonic()
                        self._cond.notify_all()

    def _read_loop(self) -> None:
        name_os_thread(f"pi-agent-rd-{self.name}")
        ws = self._ws
        assert ws is not None
        try:
            while True:
                try:
                    opcode, frame = ws.recv_data_frame(True)
                except Exception as exc:
                    if not self._closing:
                        self._fail(classify_exception(exc))
                    return
                self.last_rx = time.monotonic()
                if opcode == _CLOSE:
                    if not self._closing:
                        self._fail(classify_close(*_close_info(frame.data)))
                    return
                if opcode in (_PING, _PONG):
                    continue
                for event in _events_of(frame.data):
                    self._deliver(event)
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._abort_socket()
            if self._writer is not None and self._writer.ident is not None:
                self._writer.join(3.0)
            self._abort_socket(release=True)
            self.closed.set()
            self._deliver(SessionEnded(self._error))

    def _fail(self, error: SessionError) -> None:
        with self._cond:
            if self._error is None:
                self._error = error
            self._closing = True
            self._cond.notify_all()
        self._abort_socket()

    def _deliver(self, event: object) -> None:
        try:
            self._on_event(self, event)
        except Exception:  # a handler bug must not kill the reader
            log.exception("session event handler failed on %r", type(event).__name__)


def _events_of(data: bytes) -> list[object]:
    """The events of one data frame; a broken frame is logged, counted and skipped.

    ``protocol.parse`` raises only ProtocolError for any input; anything else that
    escapes is a parser bug, treated the same way so the connection survives it.
    """
    try:
        return list(protocol.parse(data))
    except ProtocolError as exc:
        log.warning("skipping malformed server message: %s", escape(exc, 200))
        return [MalformedMessage(escape(exc, 200))]
    except Exception as exc:  # never let a parser bug end the session
        log.error("parser failed on a server message (%s); skipped", escape(repr(exc), 200))
        return [MalformedMessage(f"parser failure: {type(exc).__name__}")]


def _close_info(data: bytes) -> tuple[int | None, str]:
    if len(data) >= 2:
        return int.from_bytes(data[:2], "big"), data[2:].decode("utf-8", "replace")
    return None, ""
