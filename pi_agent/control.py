"""The local control socket: a UNIX stream socket speaking JSON lines.

Other software (a second button, Home Assistant, a test) drives the agent with
one request per line and gets one JSON reply per line::

    {"cmd": "press"}            {"cmd": "say", "text": "what time is it"}
    {"cmd": "volume", "value": 0.5}                      {"cmd": "status"}

Plain words work too (``press``, ``say hello``, ``volume 60%``), so ``socat``
or ``nc -U`` are enough by hand. Replies are ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``. ``{"cmd": "watch"}`` turns a connection into
a subscriber that gets every published event as one JSON line.

It is a UNIX socket with file permissions, never a TCP port: who may talk to
the agent is decided by the file mode. Anyone who may is still not trusted:
one thread serves every client with bounded buffers, idle and line limits, so
no client (idle, hostile, or one that never reads) can stop the others.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import re
import selectors
import socket
import stat
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import PiAgentError
from .threads import Worker

log = logging.getLogger(__name__)

COMMANDS = ("press", "release", "talk", "say", "mute", "unmute", "volume", "status", "watch")
FIELDS: dict[str, tuple[str, ...]] = {"say": ("text", "wait"), "volume": ("value",)}
MAX_LINE = 64 * 1024
MAX_TEXT = 4000

_LISTEN, _WAKE = object(), object()  # selector keys of the listening socket and the wake pipe
_SURROGATE = re.compile("[\ud800-\udfff]")
_SPACES = re.compile("[\t\n\v\f\r\x1c-\x1f\x85\u2028\u2029]")  # line/field breaks -> space
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class ControlRequest:
    """One validated command and the way to answer it.

    ``respond`` is thread-safe and never blocks; the first call wins, later
    ones are ignored, so an answer given late (``say`` waits for the model)
    or twice (a timeout racing the answer) is harmless.
    """

    request: dict[str, Any]
    respond: Callable[[dict[str, Any]], None]


# --------------------------------------------------------------------------- parsing


def _did_you_mean(word: str, choices: tuple[str, ...], what: str) -> str:
    shown = repr(word) if len(repr(word)) <= 40 else repr(word)[:37] + "..."
    close = difflib.get_close_matches(word.lower(), choices, n=1, cutoff=0.6)
    if close:
        return f"unknown {what} {shown}; did you mean {close[0]!r}?"
    return f"unknown {what} {shown}; known: {', '.join(choices)}"


def check_command(cmd: object) -> str:
    """Return ``cmd`` if it is a known command; else a ValueError with a suggestion."""
    if not isinstance(cmd, str):
        raise ValueError(f'a request needs "cmd", one of: {", ".join(COMMANDS)}')
    if cmd not in COMMANDS:
        raise ValueError(_did_you_mean(cmd, COMMANDS, "command"))
    return cmd


def clean_text(text: str, what: str = "say text", limit: int = MAX_TEXT) -> str:
    """Typed text as the agent may take it: valid Unicode, one line, no control characters.

    Line and field breaks become spaces (so a transcript or log line cannot be
    forged); any other control character is refused, as is a lone surrogate
    (it cannot be encoded as UTF-8, so it would break the session's JSON).
    """
    bad = _SURROGATE.search(text)
    if bad:
        raise ValueError(
            f"{what} is not valid Unicode: lone surrogate U+{ord(bad.group()):04X} "
            f"at character {bad.start()}"
        )
    text = _SPACES.sub(" ", text).strip(" ")
    bad = _CONTROL.search(text)
    if bad:
        raise ValueError(
            f"{what} contains the control character U+{ord(bad.group()):04X} "
            f"at character {bad.start()}; only plain text is accepted"
        )
    if len(text) > limit:
        raise ValueError(f"{what} is longer than {limit} characters ({len(text)})")
    return text


def parse_volume(text: str) -> float:
    """A volume as 0-1 or a percentage: ``"0.6"``, ``"60"`` and ``"60%"`` are all 0.6."""
    word = text.strip()
    percent = word.endswith("%")
    try:
        value = float(word[:-1] if percent else word)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"volume needs 0-1 or a percentage (0.6, 60 or 60%), not {word!r}")
    if percent or value > 1:
        value /= 100.0
    if value > 1:
        raise ValueError(f"volume must be from 0 to 1 or 0% to 100%, not {word!r}")
    return value


def validate(request: dict[str, Any]) -> dict[str, Any]:
    """Check a request dict and return a clean copy holding only known fields."""
    cmd = check_command(request.get("cmd"))
    allowed = ("cmd", *FIELDS.get(cmd, ()))
    for key in request:
        if key not in allowed:
            if not FIELDS.get(cmd):
                raise ValueError(f"{cmd} takes no argument (got {str(key)[:40]!r})")
            raise ValueError(f"{cmd}: " + _did_you_mean(str(key), FIELDS[cmd], "field"))
    clean: dict[str, Any] = {"cmd": cmd}
    if cmd == "say":
        text = request.get("text")
        if not isinstance(text, str):
            raise ValueError("say needs some text")
        clean["text"] = clean_text(text)
        if not clean["text"]:
            raise ValueError("say needs some text")
        wait = request.get("wait", True)
        if not isinstance(wait, bool):
            raise ValueError(f"say: wait must be true or false, not {str(wait)[:40]!r}")
        clean["wait"] = wait
    elif cmd == "volume":
        value = request.get("value")
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (0 <= value <= 1)  # also refuses NaN
        ):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise ValueError(f"volume needs a number from 0 to 1, not {shown}")
        clean["value"] = float(value)
    return clean


def parse_command(line: str) -> dict[str, Any]:
    """Turn one request line (JSON or plain words) into a validated command dict.

    Raises ValueError with a message fit to send back; never anything else.
    """
    line = line.strip()
    if not line:
        raise ValueError("empty command")
    if line.startswith(("{", "[")):
        try:
            request = json.loads(line)
        except RecursionError:
            raise ValueError("invalid JSON: nested too deeply") from None
        except ValueError as exc:
            raise ValueError(f"invalid JSON: {str(exc)[:120]}") from None
        if not isinstance(request, dict):
            raise ValueError("a request must be a JSON object")
        return validate(request)
    word, *more = line.split(None, 1)
    rest = more[0] if more else ""
    cmd = check_command(word.lower())
    if cmd == "say":
        return validate({"cmd": cmd, "text": rest})
    if cmd == "volume":
        return validate({"cmd": cmd, "value": parse_volume(rest)})
    if rest.strip():
        raise ValueError(f"{cmd} takes no argument")
    return {"cmd": cmd}


# --------------------------------------------------------------------------- output


def encode_line(obj: Any, *, what: str = "reply") -> bytes:
    """One JSON line for ``obj``; never raises.

    Whatever cannot be encoded (a non-dict, NaN, an int too long to print, an
    object JSON does not know) becomes a clear internal error line instead,
    so one bad value can never break the socket or a later ``status``.
    """
    try:
        if not isinstance(obj, dict):
            raise TypeError(f"a {what} must be a JSON object, not {type(obj).__name__}")
        return (json.dumps(obj, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")
    except Exception as exc:  # RecursionError, ValueError, TypeError, OverflowError...
        detail = f"{type(exc).__name__}: {str(exc)[:120]}"
        log.error("control: a %s could not be encoded as JSON (%s)", what, detail)
        error = f"internal: the {what} could not be encoded as JSON ({detail})"
        if what == "event":
            fallback = {"event": "error", "part": "control", "detail": error}
        else:
            fallback = {"ok": False, "error": error}
        return (json.dumps(fallback, ensure_ascii=True) + "\n").encode("ascii")


# --------------------------------------------------------------------------- socket file


def peer_pid(sock: socket.socket) -> int | None:
    """The pid of the process at the other end of a connected UNIX socket (Linux)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", raw)[0] or None
    except (OSError, AttributeError, struct.error):
        return None


def _claim(path: Path) -> None:
    """Make ``path`` free for our bind: refuse links, files and a live agent; clear a stale one."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise PiAgentError(f"control.socket {path} is a symbolic link; refusing to use it")
    if not stat.S_ISSOCK(st.st_mode):
        raise PiAgentError(f"control.socket {path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            pass  # nobody listens: a stale file left by a crash
        except TimeoutError:
            raise PiAgentError(
                f"another pi-agent is running on {path} (its socket is busy)"
            ) from None
        else:
            pid = peer_pid(probe)
            who = f"pid {pid}" if pid else "pid unknown"
            raise PiAgentError(f"another pi-agent is running ({who}) on {path}")
    try:
        path.unlink()
        log.info("control: replaced the stale socket %s", path)
    except FileNotFoundError:
        pass


def bind_socket(path: Path, mode: int, backlog: int) -> tuple[socket.socket, tuple[int, int]]:
    """Bind a listening UNIX socket at ``path`` with exactly ``mode``; return it and its inode.

    The mode comes from the umask at bind time: a chmod after bind would follow
    a symbolic link planted in between. bind() itself never follows one.
    """
    if not path.parent.exists():
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    _claim(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o777 & ~mode)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old_umask)
        st = path.lstat()
        if not stat.S_ISSOCK(st.st_mode) or stat.S_IMODE(st.st_mode) != mode & 0o777:
            raise PiAgentError(
                f"control.socket {path} came out with mode {stat.S_IMODE(st.st_mode):04o}, "
                f"not {mode:04o}"
            )
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock, (st.st_dev, st.st_ino)


# --------------------------------------------------------------------------- server


class _Responder:
    """The ``respond`` of one request: first call wins, from any thread."""

    __slots__ = ("_client_id", "_done", "_lock", "_server")

    def __init__(self, server: ControlServer, client_id: int):
        self._server = server
        self._client_id = client_id
        self._lock = threading.Lock()
        self._done = False

    def __call__(self, reply: dict[str, Any]) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._server._post(("reply", self._client_id, self, encode_line(reply)))


class _Client:
    """One connection's buffers and deadlines (owned by the server thread)."""

    __slots__ = (
        "eof",
        "id",
        "inbuf",
        "mask",
        "outbuf",
        "pending",
        "pid",
        "skipping",
        "sock",
        "touched",
        "watching",
    )

    def __init__(self, sock: socket.socket, client_id: int, now: float):
        self.sock = sock
        self.id = client_id
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.pending: _Responder | None = None
        self.watching = False
        self.skipping = False  # discarding the rest of an oversized line
        self.eof = False
        self.mask = 0
        self.touched = now
        self.pid = peer_pid(sock)


class ControlServer(Worker):
    """Serves the control socket on one thread; each request goes to ``submit``.

    ``submit(ControlRequest)`` must not block (the agent enqueues it); the
    answer comes back through ``request.respond`` from any thread, now or much
    later. ``publish(event)`` sends an event to every ``watch`` client.

    One thread waits in ``select`` for sockets, a wake-up pipe (answers,
    events, stop) and the nearest idle deadline, so an idle agent with nobody
    connected costs nothing. Limits: ``max_clients`` connections (the next one
    gets an error line), ``idle_timeout_s`` without a request or a byte read,
    ``max_line`` bytes per request line, ``max_output`` bytes queued for a
    client that does not read (a slow watcher is dropped, never waited for).
    """

    name = "pi-agent-control"

    def __init__(
        self,
        path: str,
        mode: int,
        submit: Callable[[ControlRequest], None],
        *,
        max_clients: int = 16,
        idle_timeout_s: float = 300.0,
        max_line: int = MAX_LINE,
        max_output: int = 1024 * 1024,
    ):
        super().__init__()
        self.path = Path(path)
        self.mode = mode
        self._submit = submit
        self.max_clients = max_clients
        self.idle_timeout_s = idle_timeout_s
        self.max_line = max_line
        self.max_output = max(max_output, 2 * max_line)
        self._sock: socket.socket | None = None
        self._inode: tuple[int, int] | None = None
        self._selector: selectors.BaseSelector | None = None
        self._clients: dict[int, _Client] = {}
        self._next_id = 0
        self._watchers = 0
        self._inbox: deque[tuple[Any, ...]] = deque()
        self._lock = threading.Lock()
        self._woken = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._accept_paused_until: float | None = None
        self.dropped = 0  # clients dropped for not reading (for status and tests)
        self.refused = 0  # clients turned away while full; reset once one gets in

    # ------------------------------------------------------------------ public

    @property
    def clients(self) -> int:
        """Open connections (watchers included)."""
        return len(self._clients)

    @property
    def watchers(self) -> int:
        """Connections subscribed with ``watch``."""
        return self._watchers

    def start(self) -> None:
        """Bind the socket (refusing a live one, replacing a stale one) and start serving."""
        try:
            self._sock, self._inode = bind_socket(
                self.path, self.mode, backlog=max(8, self.max_clients)
            )
        except OSError as exc:
            raise PiAgentError(
                f"cannot open control.socket {self.path}: {exc.strerror or exc}"
            ) from None
        super().start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop serving, close every client and remove the socket file if it is still ours."""
        started = self._thread is not None
        super().stop(timeout)
        if not started:
            self._shutdown()

    def publish(self, event: dict[str, Any]) -> None:
        """Send ``event`` to every watcher; never blocks, free when nobody watches."""
        if self._watchers <= 0 or self.stopping.is_set():
            return
        self._post(("event", encode_line(event, what="event")))

    # ------------------------------------------------------------------ cross-thread

    def _post(self, item: tuple[Any, ...]) -> None:
        self._inbox.append(item)
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            if self._woken:
                return
            self._woken = True
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # full (the loop is awake anyway) or closed (stopped)

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        assert self._sock is not None
        self._selector = sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ, _LISTEN)
        sel.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        try:
            while not self.stopping.is_set():
                for key, mask in sel.select(self._timeout()):
                    if key.data is _LISTEN:
                        self._accept()
                    elif key.data is _WAKE:
                        self._drain_wake()
                    else:
                        self._guarded(key.data, self._on_ready, key.data, mask)
                self._drain_inbox()
                self._expire()
        finally:
            self._shutdown()

    def _timeout(self) -> float | None:
        """Seconds to the nearest deadline; None (sleep until woken) when none is due."""
        deadlines = [
            c.touched + self.idle_timeout_s for c in self._clients.values() if not c.watching
        ]
        if self._accept_paused_until is not None:
            deadlines.append(self._accept_paused_until)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _guarded(self, client: _Client, func: Callable[..., None], *args: Any) -> None:
        """Run per-client work; any failure drops that client, never the server."""
        try:
            func(*args)
        except Exception:
            log.exception("control: client %s failed; dropping it", client.id)
            self._close(client)

    def _accept(self) -> None:
        assert self._sock is not None and self._selector is not None
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: back off instead of spinning
            log.warning("control: cannot accept a client (%s); pausing for 1 s", exc.strerror)
            self._selector.unregister(self._sock)
            self._accept_paused_until = time.monotonic() + 1.0
            return
        try:
            conn.setblocking(False)
            if len(self._clients) >= self.max_clients:
                self.refused += 1
                log.log(
                    logging.WARNING if self.refused == 1 else logging.DEBUG,
                    "control: refusing a client, %d already connected",
                    self.max_clients,
                )
                line = {"ok": False, "error": f"too many control clients ({self.max_clients})"}
                try:
                    conn.send(encode_line(line))
                except OSError:
                    pass
                conn.close()
                return
            self._next_id += 1
            client = _Client(conn, self._next_id, time.monotonic())
        except Exception:
            log.exception("control: setting up a client failed")
            conn.close()
            return
        self._clients[client.id] = client
        self.refused = 0
        log.debug("control: client %d connected (pid %s)", client.id, client.pid)
        self._guarded(client, self._update, client)

    def _drain_wake(self) -> None:
        # Empty the pipe first, then clear the flag: the other order can swallow the
        # byte of a wake-up that set the flag meanwhile, and every later one is lost.
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass
        with self._lock:
            self._woken = False

    def _drain_inbox(self) -> None:
        while self._inbox:
            item = self._inbox.popleft()
            if item[0] == "event":
                for client in [c for c in self._clients.values() if c.watching]:
                    self._guarded(client, self._queue, client, item[1])
                continue
            _, client_id, responder, line = item
            client = self._clients.get(client_id)
            if client is None or client.pending is not responder:
                continue  # the client left (or timed out) before the answer
            client.pending = None
            client.touched = time.monotonic()
            self._guarded(client, self._answered, client, line)

    def _answered(self, client: _Client, line: bytes) -> None:
        self._queue(client, line)
        if client.sock.fileno() >= 0:
            self._process(client)
            self._update(client)

    def _expire(self) -> None:
        now = time.monotonic()
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            assert self._selector is not None and self._sock is not None
            self._selector.register(self._sock, selectors.EVENT_READ, _LISTEN)
        for client in list(self._clients.values()):
            if client.watching or now < client.touched + self.idle_timeout_s:
                continue
            if client.pending is not None:
                error = f"the agent did not answer within {self.idle_timeout_s:g} s"
            else:
                error = f"idle for {self.idle_timeout_s:g} s; closing"
            log.info("control: client %d: %s", client.id, error)
            self._close(client, encode_line({"ok": False, "error": error}))

    # ------------------------------------------------------------------ one client

    def _on_ready(self, client: _Client, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(client)
            if client.sock.fileno() >= 0:
                self._process(client)  # lines held back while replies were queued
        if mask & selectors.EVENT_READ and client.sock.fileno() >= 0:
            self._read(client)
        if client.sock.fileno() >= 0:
            self._update(client)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(client)
            return
        if not data:
            client.eof = True
            if client.watching:
                self._close(client)
            else:
                self._process(client)  # answer what it sent, then close
            return
        client.touched = time.monotonic()
        if client.watching:
            return  # a subscriber only listens; what it sends is dropped
        client.inbuf += data
        self._process(client)

    def _process(self, client: _Client) -> None:
        """Handle every complete line in the input buffer, one request at a time."""
        buf = client.inbuf
        while client.pending is None and not client.watching and client.sock.fileno() >= 0:
            if len(client.outbuf) >= self.max_output // 2:
                break  # the client is not reading its replies: take no more requests
            end = buf.find(b"\n")
            if client.skipping:
                if end < 0:
                    buf.clear()
                    break
                del buf[: end + 1]
                client.skipping = False
                continue
            if end < 0 and len(buf) <= self.max_line:
                if not (client.eof and buf):
                    break
                end = len(buf)  # the last line of a client that closed its side
                buf.append(0x0A)
            if end < 0 or end > self.max_line:
                error = f"request line longer than {self.max_line} bytes"
                client.skipping = end < 0
                del buf[: len(buf) if end < 0 else end + 1]
                self._queue(client, encode_line({"ok": False, "error": error}))
                continue
            raw = bytes(buf[:end])
            del buf[: end + 1]
            self._handle(client, raw)
        if (
            client.eof
            and client.pending is None
            and not client.outbuf
            and not client.watching
            and not (client.inbuf and not client.skipping)
        ):
            self._close(client)

    def _handle(self, client: _Client, raw: bytes) -> None:
        try:
            request = parse_command(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            self._queue(
                client,
                encode_line(
                    {"ok": False, "error": f"request is not valid UTF-8 (byte {exc.start})"}
                ),
            )
            return
        except ValueError as exc:
            self._queue(client, encode_line({"ok": False, "error": str(exc)}))
            return
        if request["cmd"] == "watch":
            client.watching = True
            client.inbuf.clear()
            self._watchers += 1
            self._queue(client, encode_line({"ok": True, "watching": True}))
            return
        responder = _Responder(self, client.id)
        client.pending = responder
        try:
            self._submit(ControlRequest(request, responder))
        except Exception as exc:
            log.exception("control: submitting %r failed", request["cmd"])
            responder({"ok": False, "error": f"internal: {type(exc).__name__}: {str(exc)[:120]}"})

    def _queue(self, client: _Client, line: bytes) -> None:
        if len(client.outbuf) + len(line) > self.max_output:
            self.dropped += 1
            log.warning(
                "control: dropping client %d (pid %s): it does not read (%d bytes queued)",
                client.id,
                client.pid,
                len(client.outbuf),
            )
            self._close(client)
            return
        client.outbuf += line
        self._flush(client)
        if client.sock.fileno() >= 0:
            self._update(client)

    def _flush(self, client: _Client) -> None:
        while client.outbuf:
            try:
                sent = client.sock.send(client.outbuf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close(client)  # the peer is gone (EPIPE, ECONNRESET)
                return
            del client.outbuf[:sent]

    def _update(self, client: _Client) -> None:
        """Register exactly the events this client can make progress on."""
        if client.sock.fileno() < 0:
            return
        mask = 0
        if client.outbuf:
            mask |= selectors.EVENT_WRITE
        if not client.eof and len(client.outbuf) < self.max_output // 2:
            if client.watching or len(client.inbuf) <= self.max_line:
                mask |= selectors.EVENT_READ
        if mask == client.mask:
            return
        assert self._selector is not None
        if client.mask == 0:
            self._selector.register(client.sock, mask, client)
        elif mask == 0:
            self._selector.unregister(client.sock)
        else:
            self._selector.modify(client.sock, mask, client)
        client.mask = mask

    def _close(self, client: _Client, last: bytes = b"") -> None:
        if self._clients.pop(client.id, None) is None:
            return
        if client.watching:
            self._watchers -= 1
        if client.mask and self._selector is not None:
            try:
                self._selector.unregister(client.sock)
            except (KeyError, ValueError):
                pass
        client.mask = 0
        if last:
            try:
                client.sock.send(bytes(client.outbuf) + last)
            except OSError:
                pass
        client.sock.close()
        log.debug("control: client %d closed", client.id)

    def _shutdown(self) -> None:
        for client in list(self._clients.values()):
            self._close(client)
        if self._selector is not None:
            self._selector.close()
        if self._sock is not None:
            self._sock.close()
        self._wake_r.close()
        self._wake_w.close()
        self._remove_file()

    def _remove_file(self) -> None:
        """Delete the socket file, but only if it is still ours (not a successor's)."""
        try:
            st = self.path.lstat()
            if (st.st_dev, st.st_ino) == self._inode:
                self.path.unlink()
        except OSError:
            pass


def send_command(path: str, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Client side: send one request, return the agent's reply (raises OSError if unreachable)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall((json.dumps(request) + "\n").encode())
        with sock.makefile("rb") as reader:
            line = reader.readline(16 * MAX_LINE)
    if not line:
        raise ConnectionError("the agent closed the control connection without answering")
    return json.loads(line)
