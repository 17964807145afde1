"""A loopback Gemini Live server: faithful, strict and scriptable.

Everything in pi-agent that talks to Gemini Live (the agent, the demo, the benchmark, the
self-test) is tested against this server as if it were Google's. So it enforces the wire rules of
``BidiGenerateContent`` (described in ``docs/live-protocol.md``; public reference:
https://ai.google.dev/api/live), answers with Google's close codes and reasons, and records every
connection and client message for assertions. It ships inside the package, in the spirit of
gpiozero's mock pins.

The field tables and setup rules it checks every message against live in
:mod:`pi_agent.sim.live_schema`; the protocol state and the fake model's replies of one
connection in :mod:`pi_agent.sim.fake_session`; this module keeps the server: HTTP routing and
authentication, the records, the controls and the command line.

Choices made where the real service is uncertain ([I] = inferred, not observed):

- Bad API key: HTTP 400 ``INVALID_ARGUMENT`` at the upgrade (a missing key: 403). The real service
  may instead complete the upgrade and close with 1007 ``API key not valid...``.
- ``setup.responseModalities`` (outside ``generationConfig``) and ``config`` are unknown fields ->
  1007 ``Unknown name``. Error paths use the proto (snake_case) names, as Google does.
- A first message other than ``setup``, a second ``setup``, an empty message, ``TEXT`` modality on
  the native-audio models, ``activityStart`` with automatic VAD: 1007 ``Request contains an
  invalid argument.`` [I].
- ``toolResponse``: a missing ``id`` -> 1007, an unknown ``id`` -> 1008 ``Requested entity was not
  found.`` [I]; a response to a cancelled call is ignored (the race is legitimate).
- Tool declarations: ``type: OBJECT`` with empty ``properties`` -> 1007 (as generateContent does).
- Binary client frames are accepted (and counted); Google's handling of them is unknown.
- Tools follow the model's row in ``pi_agent.models.MODELS``: on 3.8 a NON_BLOCKING call lets the
  model talk on and speak again per the result's ``scheduling`` (an INTERRUPT cuts the output
  with ``interrupted`` [I]); a result without ``status`` (or an error without ``reason`` and
  ``retryable``) is called again up to twice; extended thinking puts ``interactionStatus`` on
  every ``turnComplete`` and a lone IDLE after a silent last result [I]. Details in
  :mod:`pi_agent.sim.fake_session`.

Threads: websockets' accept loop, one websockets handler thread per connection (it reads and
validates), one ``fake-live-reply-N`` worker per connection (it speaks), and short timer threads
for goAway/close. All state sits behind one condition, notified on every change, so tests wait
with :meth:`FakeLiveServer.wait_for` instead of sleeping.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import re
import shutil
import signal
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.sync.server import Server, ServerConnection, serve

from .certs import make_certificates
from .fake_session import (
    NOT_FOUND,  # noqa: F401  (a close reason, importable here as before)
    SESSION_NOT_FOUND,  # noqa: F401
    ConnectionClosedError,
    Conversation,
    Reply,
    Session,
    duration,
    truncate,
)
from .live_schema import (
    DOCUMENTED_MODELS,
    INVALID_ARGUMENT,  # noqa: F401  (a close reason, importable here like NOT_FOUND)
    Invalid,
    b64decode,
    camel_case,
    invalid,
)

__all__ = [
    "CONSTRAINED_PATH",
    "DEFAULT_MODELS",
    "LIVE_PATH",
    "ConnectionRecord",
    "FakeLiveServer",
    "Received",
    "Reply",
    "Sent",
    "main",
]

log = logging.getLogger("pi_agent.sim.fake_live")

LIVE_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
CONSTRAINED_PATH = (
    "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained"
)
_PATH_RE = re.compile(
    r"/ws/google\.ai\.generativelanguage\.(v1|v1beta|v1alpha)\.GenerativeService\."
    r"(BidiGenerateContent|BidiGenerateContentConstrained)"
)
DEFAULT_MODELS = DOCUMENTED_MODELS  # every model whose rules live_schema knows
DEFAULT_API_KEY = "fake-key"

DEADLINE_EXPIRED = "Deadline expired before operation could complete."


# --- records ------------------------------------------------------------------------------------


@dataclass
class ConnectionRecord:
    """One upgraded WebSocket connection, as the server saw it."""

    id: int
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    setup: dict[str, Any] | None = None  # the setup object exactly as sent (inside "setup")
    resumed_handle: str | None = None
    close_code: int | None = None  # the first close frame's code, whoever sent it; 1006 if none
    close_reason: str | None = None
    opened_at: float = 0.0  # time.monotonic()
    closed_at: float | None = None


@dataclass
class Received:
    """One client message, parsed but not normalised (snake_case stays snake_case)."""

    conn_id: int
    t: float  # time.monotonic()
    message: dict[str, Any]
    kind: str  # top-level key in camelCase: setup, clientContent, realtimeInput, toolResponse
    sub: str | None  # realtimeInput field in camelCase (audio, video, text, activityStart, ...)


@dataclass
class Sent:
    """One server message as it went on the wire (``message`` is None for raw/malformed sends)."""

    conn_id: int
    t: float
    message: dict[str, Any] | None
    kind: str | None  # first top-level key, e.g. "serverContent"


# --- the server ---------------------------------------------------------------------------------


def _first_close(conn: ServerConnection) -> tuple[int, str]:
    """The code and reason of whichever close frame came first; 1006 if there was none."""
    protocol = conn.protocol
    first = protocol.close_rcvd if protocol.close_rcvd_then_sent else protocol.close_sent
    first = first or protocol.close_rcvd
    return (first.code, first.reason) if first else (1006, "")


class _Connection(ServerConnection):
    """Closes TCP as soon as the closing handshake completes.

    websockets half-closes and then waits ``close_timeout`` for the client's FIN, but
    websocket-client keeps its socket open after echoing a server's close frame, so every
    server-initiated close would hold a thread (and ``stop()``) for that long.
    """

    record: ConnectionRecord | None = None  # set by FakeLiveServer._process_response

    def process_event(self, event: Any) -> None:
        super().process_event(event)
        if (
            isinstance(event, Frame)
            and event.opcode is Opcode.CLOSE
            and self.protocol.close_sent is not None
        ):
            self.close_socket()


class FakeLiveServer:
    """A scriptable stand-in for ``wss://generativelanguage.googleapis.com`` on 127.0.0.1.

    Use as a context manager (or ``start()``/``stop()``). Clients connect to ``url`` plus the
    usual path (``LIVE_PATH``), exactly as they would to Google. Controls act on the newest open
    connection unless ``conn_id`` is given, and are safe from any thread.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = DEFAULT_API_KEY,
        tokens: Iterable[str] = (),
        tls: bool = False,
        models: Iterable[str] = DEFAULT_MODELS,
        default_reply: Reply | None = None,
        text_frames: bool = False,
        noise: bool = False,
        tool_timeout: float = 10.0,
        close_timeout: float = 2.0,
        ping_interval: float | None = 20.0,
        max_size: int = 16 * 2**20,
    ) -> None:
        self.host = host
        self.api_key = api_key
        self.tokens: set[str] = set(tokens)
        self.tls = tls
        self.models: tuple[str, ...] = tuple(models)
        self.default_reply = default_reply or Reply()
        self.replies: collections.deque[Reply | str] = collections.deque()
        self.text_frames = text_frames
        self.noise = noise
        self.tool_timeout = tool_timeout
        self.ca_file: str | None = None

        self.connections: list[ConnectionRecord] = []
        self.received: list[Received] = []
        self.sent: list[Sent] = []
        self.usage: list[dict[str, Any]] = []
        self.counters: collections.Counter[str] = collections.Counter()

        self._port = port
        self._close_timeout = close_timeout
        self._ping_interval = ping_interval
        self._max_size = max_size
        self._cond = threading.Condition(threading.RLock())
        self._sessions: dict[int, Session] = {}
        self._handles: dict[str, Conversation] = {}
        self._tool_responses: dict[str, dict[str, Any]] = {}
        self._rejections: collections.deque[tuple[int, str]] = collections.deque()
        self._tool_seq = 0
        self._paused = False
        self._go_away_every: tuple[float, float, float] | None = None
        self._timers: list[threading.Thread] = []
        self._ws: Server | None = None
        self._thread: threading.Thread | None = None
        self._tls_dir: str | None = None
        self._started = False
        self._stopped = False

    # lifecycle

    def start(self) -> FakeLiveServer:
        """Bind and serve in a background thread; returns self."""
        if self._started:
            raise RuntimeError("FakeLiveServer already started")
        self._started = True
        ws_log = logging.getLogger("pi_agent.sim.fake_live.websockets")
        ws_log.setLevel(logging.WARNING)  # its DEBUG output would print the API key header
        try:
            context = None
            if self.tls:
                self._tls_dir = tempfile.mkdtemp(prefix="fake-live-tls-")
                self.ca_file, cert, key = make_certificates(self._tls_dir)
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(cert, key)
            self._ws = serve(
                self._handle,
                self.host,
                self._port,
                ssl=context,
                process_request=self._process_request,
                process_response=self._process_response,
                compression=None,
                close_timeout=self._close_timeout,
                ping_interval=self._ping_interval,
                max_size=self._max_size,
                logger=ws_log,
                create_connection=_Connection,
            )
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(
            target=self._ws.serve_forever, name="fake-live-server", daemon=True
        )
        self._thread.start()
        log.info("listening on %s", self.url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection (1001), stop listening and join the threads. Idempotent."""
        with self._cond:
            if self._stopped:
                return
            self._stopped = True
            self._paused = False
            self._go_away_every = None
            timers = list(self._timers)
            self._cond.notify_all()
        for timer in timers:
            if isinstance(timer, threading.Timer):
                timer.cancel()
        with self._cond:  # let closings finish, or websockets' shutdown() polls every 0.1 s
            self._cond.wait_for(
                lambda: all(s.conn.state is State.OPEN for s in self._sessions.values()),
                self._close_timeout,
            )
        if self._ws is not None:
            self._ws.shutdown()
        if self._thread is not None:
            self._thread.join(timeout)
        for timer in timers:
            timer.join(timeout)
        if self._tls_dir:
            shutil.rmtree(self._tls_dir, ignore_errors=True)

    def __enter__(self) -> FakeLiveServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._ws is None:
            raise RuntimeError("FakeLiveServer not started")
        return self._ws.socket.getsockname()[1]

    @property
    def url(self) -> str:
        """Base endpoint, e.g. ``ws://127.0.0.1:8765``; clients append the path themselves."""
        return f"{'wss' if self.tls else 'ws'}://{self.host}:{self.port}"

    # queries

    def messages(
        self, kind: str | None = None, sub: str | None = None, conn_id: int | None = None
    ) -> list[Received]:
        """Client messages received so far, filtered (kind/sub in camelCase)."""
        with self._cond:
            return [
                r
                for r in self.received
                if (kind is None or r.kind == kind)
                and (sub is None or r.sub == sub)
                and (conn_id is None or r.conn_id == conn_id)
            ]

    def sent_messages(self, kind: str | None = None, conn_id: int | None = None) -> list[Sent]:
        """Server messages sent so far, filtered by top-level key."""
        with self._cond:
            return [
                s
                for s in self.sent
                if (kind is None or s.kind == kind) and (conn_id is None or s.conn_id == conn_id)
            ]

    def audio_bytes(self, conn_id: int | None = None) -> bytes:
        """Decoded PCM of every ``realtimeInput.audio`` received, in order."""
        out = bytearray()
        for r in self.messages(kind="realtimeInput", sub="audio", conn_id=conn_id):
            body = next(iter(r.message.values()))["audio"]
            out += b64decode(body["data"])
        return bytes(out)

    def connection(self, conn_id: int | None = None) -> ConnectionRecord:
        """The record of ``conn_id``, or of the newest connection."""
        with self._cond:
            if conn_id is None:
                if not self.connections:
                    raise LookupError("no connection yet")
                return self.connections[-1]
            return next(c for c in self.connections if c.id == conn_id)

    def tool_response(self, call_id: str) -> dict[str, Any] | None:
        with self._cond:
            return self._tool_responses.get(call_id)

    def wait_for(self, predicate: Callable[[FakeLiveServer], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds; re-checked on every message, connection, close."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def wait_tool_response(self, call_id: str, timeout: float) -> dict[str, Any] | None:
        """The functionResponse (as sent) answering ``call_id``, or None after ``timeout``."""
        if self.wait_for(lambda s: call_id in s._tool_responses, timeout):
            return self.tool_response(call_id)
        return None

    # controls

    def send(self, message: dict[str, Any] | str | bytes, conn_id: int | None = None) -> None:
        """Send a raw server message: a dict as JSON, str as a text frame, bytes as binary."""
        session = self._session(conn_id)
        if isinstance(message, dict):
            session.send(message)
        else:
            session.send_raw(message)

    def send_frame(self, payload: bytes, binary: bool = True, conn_id: int | None = None) -> None:
        """Send ``payload`` verbatim as one frame; with ``binary`` False as a text frame whose
        bytes are not checked, so it may carry invalid UTF-8 (see :mod:`pi_agent.sim.malformed`).
        """
        self._session(conn_id).send_raw(payload, text=not binary)

    def send_malformed(self, conn_id: int | None = None) -> None:
        """Send a frame that is not JSON (a truncated object)."""
        payload = '{"serverContent": {"modelTurn": '
        self._session(conn_id).send_raw(payload if self.text_frames else payload.encode())

    def go_away(
        self,
        time_left_s: float = 10.0,
        close_after_s: float | None = None,
        conn_id: int | None = None,
    ) -> None:
        """Send goAway; if ``close_after_s`` is given, close with 1011 that much later."""
        session = self._session(conn_id)
        session.send({"goAway": {"timeLeft": duration(time_left_s)}})
        with self._cond:
            self.counters["go_aways"] += 1
        if close_after_s is not None:
            self._later(close_after_s, session.close, 1011, DEADLINE_EXPIRED)

    def go_away_every(
        self, seconds: float | None, time_left_s: float = 1.0, close_after_s: float = 0.2
    ) -> None:
        """Soak mode: every connection gets goAway ``seconds`` after setup, then a 1011 close."""
        with self._cond:
            self._go_away_every = None if seconds is None else (seconds, time_left_s, close_after_s)
            sessions = [s for s in self._sessions.values() if s.set_up]
        if seconds is not None:
            for session in sessions:
                self._schedule_rollover(session)

    def close(self, code: int = 1000, reason: str = "", conn_id: int | None = None) -> None:
        """Close with ``code``/``reason`` (truncated to 123 bytes); returns at once."""
        self._later(0, self._session(conn_id).close, code, reason)

    def drop(self, conn_id: int | None = None) -> None:
        """Abort the TCP connection without a close frame (the client sees 1006)."""
        self._session(conn_id).drop()

    def call_tool(
        self, name: str, args: dict[str, Any], id: str | None = None, conn_id: int | None = None
    ) -> str:
        """Send a toolCall now; returns its id (answer it with a matching toolResponse)."""
        return self._session(conn_id).call_tool(name, args, id)

    def cancel_tools(self, ids: list[str], conn_id: int | None = None) -> None:
        """Send toolCallCancellation; later responses to these ids are ignored."""
        self._session(conn_id).cancel_tools(ids)

    def interrupt(self, conn_id: int | None = None) -> bool:
        """Interrupt the reply being spoken, as user speech would; False if none was."""
        session = self._session(conn_id)
        with self._cond:
            return session._barge_in()

    def reject_next(self, code: int = 1011, reason: str = "Internal error occurred.") -> None:
        """Answer the next setup (on any connection) with this close instead of setupComplete."""
        with self._cond:
            self._rejections.append((code, truncate(reason)))

    def forget_handles(self) -> None:
        """Make every resumption handle issued so far unknown (1008 on use)."""
        with self._cond:
            self._handles.clear()

    def known_handles(self) -> set[str]:
        with self._cond:
            return set(self._handles)

    def pause_replies(self) -> None:
        """Hold turns unanswered (they queue) until resume_replies()."""
        with self._cond:
            self._paused = True

    def resume_replies(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    # internals

    def _session(self, conn_id: int | None) -> Session:
        with self._cond:
            if conn_id is None:
                if not self._sessions:
                    raise LookupError("no open connection")
                return self._sessions[max(self._sessions)]
            try:
                return self._sessions[conn_id]
            except KeyError:
                raise LookupError(f"connection {conn_id} is not open") from None

    def _next_reply(self) -> Reply:
        try:
            reply = self.replies.popleft()
        except IndexError:
            return self.default_reply
        return Reply(reply) if isinstance(reply, str) else reply

    def _sent(self, conn_id: int, message: dict[str, Any] | None) -> None:
        with self._cond:
            kind = next(iter(message), None) if message else None
            self.sent.append(Sent(conn_id, time.monotonic(), message, kind))
            self.counters["messages_out"] += 1
            self._cond.notify_all()

    def _later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        def run() -> None:
            try:
                fn(*args)
            except Exception as exc:  # the connection may be gone by then
                log.debug("deferred %s failed: %s", getattr(fn, "__name__", fn), exc)

        timer = threading.Timer(delay, run)
        timer.name = "fake-live-timer"
        timer.daemon = True
        with self._cond:
            if self._stopped:
                return
            self._timers = [t for t in self._timers if t.is_alive()]
            self._timers.append(timer)
        timer.start()

    def _schedule_rollover(self, session: Session) -> None:
        with self._cond:
            every = self._go_away_every
        if every is None:
            return
        seconds, time_left, close_after = every

        def rollover() -> None:
            with self._cond:
                if session.closed or self._go_away_every is None:
                    return
                self.counters["go_aways"] += 1
            session.send({"goAway": {"timeLeft": duration(time_left)}})
            self._later(close_after, session.close, 1011, DEADLINE_EXPIRED)

        self._later(seconds, rollover)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Route and authenticate the upgrade request like Google's front end."""
        path, _, query_string = request.path.partition("?")
        query = dict(urllib.parse.parse_qsl(query_string, keep_blank_values=True))
        match = _PATH_RE.fullmatch(path)
        failure: tuple[int, str, str] | None = None
        if match is None or (
            match.group(2).endswith("Constrained") and match.group(1) != "v1alpha"
        ):
            failure = (404, "Method not found.", "NOT_FOUND")
        elif match.group(2).endswith("Constrained"):
            auth = request.headers.get("Authorization", "")
            token = (
                auth[len("Token ") :] if auth.startswith("Token ") else query.get("access_token")
            )
            if token is None:
                failure = (
                    401,
                    "Request is missing required authentication credential.",
                    "UNAUTHENTICATED",
                )
            elif token not in self.tokens:
                failure = (
                    401,
                    "Request had invalid authentication credentials.",
                    "UNAUTHENTICATED",
                )
        else:
            key = request.headers.get("x-goog-api-key") or query.get("key")
            if key is None:
                failure = (
                    403,
                    "Method doesn't allow unregistered callers (callers without established "
                    "identity). Please use API Key or other form of API consumer identity to call "
                    "this API.",
                    "PERMISSION_DENIED",
                )
            elif key != self.api_key:
                failure = (
                    400,
                    "API key not valid. Please pass a valid API key.",
                    "INVALID_ARGUMENT",
                )
        if failure is None:
            return None
        status, message, status_text = failure
        with self._cond:
            self.counters[f"http_{status}"] += 1
            self._cond.notify_all()
        log.info("rejected upgrade to %s: HTTP %d", path, status)
        body = json.dumps({"error": {"code": status, "message": message, "status": status_text}})
        response = connection.respond(status, body + "\n")
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json; charset=UTF-8"
        return response

    def _process_response(
        self, connection: ServerConnection, request: Request, response: Response
    ) -> None:
        """Number accepted connections before the 101 goes out, so ids follow client order."""
        if response.status_code != 101 or not isinstance(connection, _Connection):
            return
        path, _, query_string = request.path.partition("?")
        with self._cond:
            connection.record = ConnectionRecord(
                id=len(self.connections) + 1,
                path=path,
                query=dict(urllib.parse.parse_qsl(query_string, keep_blank_values=True)),
                headers={k.lower(): v for k, v in request.headers.raw_items()},
                opened_at=time.monotonic(),
            )
            self.connections.append(connection.record)
            self.counters["connections"] += 1
            self._cond.notify_all()

    def _handle(self, conn: ServerConnection) -> None:
        """Per-connection handler (websockets' handler thread): read, validate, dispatch."""
        assert isinstance(conn, _Connection) and conn.record is not None
        record = conn.record
        match = _PATH_RE.fullmatch(record.path)
        version = match.group(1) if match else "v1beta"
        with self._cond:
            session = Session(self, conn, record, version)
            self._sessions[record.id] = session
        log.info("conn %d: open %s", record.id, record.path)
        try:
            self._read(session)
        except (ConnectionClosed, ConnectionClosedError):
            pass  # the client went away, possibly while we were answering it
        finally:
            session.shutdown()
            with self._cond:
                del self._sessions[record.id]
                record.close_code, record.close_reason = session.server_close or _first_close(conn)
                record.closed_at = time.monotonic()
                self._cond.notify_all()
            log.info(
                "conn %d: closed %s %s", record.id, record.close_code, record.close_reason or ""
            )

    def _read(self, session: Session) -> None:
        conn = session.conn
        for frame in conn:
            with self._cond:
                self.counters["messages_in"] += 1
                if isinstance(frame, bytes):
                    self.counters["binary_in"] += 1
            try:
                try:
                    message = json.loads(frame)
                except (ValueError, UnicodeDecodeError):
                    with self._cond:
                        self.counters["malformed_in"] += 1
                    raise invalid("Unexpected token.") from None
                if not isinstance(message, dict):
                    raise invalid("Root element must be a message.")
                self._record(session.record.id, message)
                session.on_message(message)
            except Invalid as error:
                with self._cond:
                    self.counters[f"close_{error.code}"] += 1
                session.close(error.code, error.reason)
                return

    def _record(self, conn_id: int, message: dict[str, Any]) -> None:
        kind = camel_case(next(iter(message))) if message else ""
        sub = None
        body = message.get(next(iter(message))) if message else None
        if kind == "realtimeInput" and isinstance(body, dict) and body:
            sub = camel_case(next(iter(body)))
        with self._cond:
            if kind == "setup" and isinstance(body, dict):
                record = next(c for c in self.connections if c.id == conn_id)
                if record.setup is None:
                    record.setup = body
            self.received.append(Received(conn_id, time.monotonic(), message, kind, sub))
            self._cond.notify_all()
        if sub in ("audio", "video", "mediaChunks"):
            log.debug("conn %d: realtimeInput.%s", conn_id, sub)
        else:
            log.info("conn %d: %s%s", conn_id, kind, f".{sub}" if sub else "")


# --- command line -------------------------------------------------------------------------------


def main(args: list[str] | None = None) -> int:
    """Run the fake server until SIGINT/SIGTERM; print its URL first (for scripts).

    Call it from the main thread: it waits for the signals with sigwait().
    """
    parser = argparse.ArgumentParser(
        prog="python -m pi_agent.sim.fake_live",
        description="Run a loopback fake Gemini Live server. Prints its base URL on the first "
        "line of stdout (and 'ca: PATH' with --tls), logs to stderr.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--tls", action="store_true", help="serve wss:// with a throwaway CA")
    parser.add_argument("--api-key", default=None, help=f"accepted key (default {DEFAULT_API_KEY})")
    parser.add_argument("--text-frames", action="store_true", help="send text, not binary, frames")
    parser.add_argument("--reply", default=None, help="what the fake model says every turn")
    parser.add_argument("--pace", type=float, default=0.0, help="1.0 streams replies in real time")
    parser.add_argument("--noise", action="store_true", help="interleave empty messages")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every audio chunk")
    opts = parser.parse_args(args)

    logging.basicConfig(
        level=logging.DEBUG if opts.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    reply = Reply(pace=opts.pace) if opts.reply is None else Reply(opts.reply, pace=opts.pace)
    server = FakeLiveServer(
        host=opts.host,
        port=opts.port,
        api_key=opts.api_key or DEFAULT_API_KEY,
        tls=opts.tls,
        default_reply=reply,
        text_frames=opts.text_frames,
        noise=opts.noise,
    )
    # Block the stop signals before any thread exists, so every thread inherits the mask and
    # sigwait() below receives them. (A Python handler plus Event.wait() can miss a signal that
    # the kernel delivers to another thread: the main thread's wait is never interrupted.)
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        try:
            server.start()
        except OSError as exc:
            print(f"fake_live: cannot listen on {opts.host}:{opts.port}: {exc}", file=sys.stderr)
            return 1
        print(server.url, flush=True)
        if server.ca_file:
            print(f"ca: {server.ca_file}", flush=True)
        if opts.api_key is None:
            print(f"fake_live: API key is {DEFAULT_API_KEY!r}", file=sys.stderr, flush=True)
        signum = signal.sigwait(stop_signals)
        log.info("stopping on %s", signal.Signals(signum).name)
    finally:
        server.stop()
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
