"""Logging: secrets kept out of every line, untrusted text escaped, lines fit for their sink.

Three sinks, told apart the way systemd documents it (``JOURNAL_STREAM``, see
systemd.exec(5)): the journal gets a syslog ``<N>`` priority prefix on every line and no
timestamp (it adds its own); a terminal gets a short local time; a pipe or file gets an
ISO-8601 one.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from typing import TextIO

_secrets: set[str] = set()
_lock = threading.Lock()
REDACTED = "[REDACTED]"

# C0 and C1 controls, DEL, line/paragraph separators, bidi overrides/isolates (they reorder
# what a reader sees) and lone surrogates (they break a later encode).
_UNSAFE = re.compile("([\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff])")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: object, limit: int = 500) -> str:
    """``text`` made safe for one log line: controls become visible escapes, long text ends
    in "…".

    For anything from the model, the user or the network (transcripts, typed text, tool
    arguments, server reasons): a newline or ``\\x1b`` in it can no longer forge a line or
    repaint a terminal. ``\\n \\r \\t`` keep their names, other controls show as ``\\xNN``
    or ``\\uNNNN``; backslashes are left as they are. ``limit`` counts characters of the
    result (escapes included, the "…" not).
    """
    s = text if isinstance(text, str) else str(text)
    cut = len(s) > limit
    if cut:
        s = s[:limit]
    if _UNSAFE.search(s) is None:
        return s + "…" if cut else s
    out: list[str] = []
    room = limit
    for i, piece in enumerate(_UNSAFE.split(s)):
        if i % 2:  # a separator: one unsafe character
            piece = _escaped(piece)
            if len(piece) > room:
                cut = True
                break
        elif len(piece) > room:
            piece, cut = piece[:room], True
        out.append(piece)
        room -= len(piece)
    return "".join(out) + ("…" if cut else "")


def add_secret(secret: str | None) -> None:
    """Register a value that must never appear in a log line (API key, token).

    Also guards websocket-client's own logger directly, so its trace output (which
    prints the upgrade request's headers) is redacted whatever handler prints it.
    """
    if secret and len(secret) >= 4:
        with _lock:
            _secrets.add(secret)
            ws_logger = logging.getLogger("websocket")
            if not any(isinstance(f, RedactingFilter) for f in ws_logger.filters):
                ws_logger.addFilter(RedactingFilter())


def redact(text: str) -> str:
    """Replace every registered secret in ``text``."""
    for secret in tuple(_secrets):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites records whose rendered message holds a secret.

    Installed on handlers, so it also covers third-party loggers such as
    websocket-client's trace output, which prints request headers.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        message = record.getMessage()
        clean = redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            exc_text = logging.Formatter().formatException(record.exc_info)
            if redact(exc_text) != exc_text:
                record.exc_text = redact(exc_text)
                record.exc_info = None
        if clean != message:
            record.msg, record.args = clean, None
        return True


def _priority(levelno: int) -> int:
    """The syslog priority journald files a line under (``journalctl -p``)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class LineFormatter(logging.Formatter):
    """``LEVEL logger: message`` (traceback included), redacted as a whole, then fitted to
    the sink: ``journal`` (``<N>`` on every line), ``terminal`` (HH:MM:SS.mmm) or ``file``
    (ISO-8601 with offset)."""

    def __init__(self, sink: str = "file") -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.sink = sink

    def format(self, record: logging.LogRecord) -> str:
        text = redact(super().format(record))  # message, traceback and stack alike
        if self.sink == "journal":
            prefix = f"<{_priority(record.levelno)}>"
            return "\n".join(prefix + line for line in text.split("\n"))
        if self.sink == "terminal":
            stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
            return f"{stamp}.{int(record.msecs):03d} {text}"
        local = time.localtime(record.created)
        zone = time.strftime("%z", local)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", local)
        return f"{stamp}.{int(record.msecs):03d}{zone[:3]}:{zone[3:]} {text}"


def sink_of(stream: TextIO) -> str:
    """``journal`` if systemd connected ``stream`` to the journal (``JOURNAL_STREAM`` holds
    its device and inode), else ``terminal`` for a tty, else ``file``."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return "file"
    journal = os.environ.get("JOURNAL_STREAM", "")
    if journal:
        try:
            st = os.fstat(fd)
            if journal == f"{st.st_dev}:{st.st_ino}":
                return "journal"
        except OSError:
            pass
    try:
        return "terminal" if os.isatty(fd) else "file"
    except OSError:
        return "file"


def setup_logging(level: str | int = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Log to ``stream`` (default stderr) with secrets redacted; return the handler."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LineFormatter(sink_of(stream)))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_pi_agent", False):
            root.removeHandler(old)
    handler._pi_agent = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    threading.excepthook = _log_thread_crash  # a crash in any thread goes through redaction
    return handler


def _log_thread_crash(args: threading.ExceptHookArgs) -> None:
    """Uncaught exceptions in threads: logged (so redacted), never printed raw to stderr."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "a thread"
    logging.getLogger("pi_agent").error(
        "uncaught exception in %s",
        name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
