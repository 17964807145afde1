"""Logging setup that keeps secrets out of every line, whoever logs them."""

from __future__ import annotations

import logging
import sys
import threading

_secrets: set[str] = set()
_lock = threading.Lock()
REDACTED = "[REDACTED]"


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


def setup_logging(level: str | int = "INFO", stream=None) -> logging.Handler:
    """Log to stderr (journald captures it) with secrets redacted; return the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_pi_agent", False):
            root.removeHandler(old)
    handler._pi_agent = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    return handler


_UNSAFE = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_UNSAFE.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
_UNSAFE.update({0x2028: "\\u2028", 0x2029: "\\u2029"})


def escape(text: object, limit: int = 500) -> str:
    """Untrusted text made safe for one log line: control characters become visible
    escapes (no forged journal lines), lone surrogates are replaced, long text is cut."""
    s = str(text).encode("utf-8", "backslashreplace").decode("utf-8").translate(_UNSAFE)
    return s if len(s) <= limit else s[: limit - 1] + "…"
