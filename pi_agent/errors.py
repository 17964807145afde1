"""Exception and warning hierarchy.

Every class derives from :class:`PiAgentError` *and* the matching built-in, so
callers can catch either (gpiozero's ``exc.py`` habit).
"""

from __future__ import annotations


class PiAgentError(Exception):
    """Base of every error raised by pi-agent."""


class ConfigError(PiAgentError, ValueError):
    """The configuration is invalid; ``problems`` holds one line per mistake."""

    def __init__(self, problems: list[str] | str):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ClosedError(PiAgentError, RuntimeError):
    """An object was used after ``close()``."""


class ProtocolError(PiAgentError, ValueError):
    """A message could not be encoded or parsed."""


class SessionError(PiAgentError, ConnectionError):
    """The Live session failed.

    ``retryable`` tells the reconnect policy whether trying again can help;
    ``kind`` names the cause for status and the light, fixed at construction:

    * ``network``, ``timeout``, ``stall``, ``server``: the link or the service
      had a problem; retried with backoff;
    * ``quota``: retried, but not before a minute;
    * ``handle``: the server no longer knows our session; a fresh one at once;
    * ``protocol``: the server refused a message of ours mid-session (our
      mistake, never the user's key or model); reconnect and resume;
    * ``auth`` (the key), ``model`` (model or API version), ``config`` (the
      setup was refused): retrying blindly cannot help.
    """

    KINDS = frozenset(
        {"network", "timeout", "stall", "server", "quota", "handle", "protocol"}
        | {"auth", "model", "config"}
    )
    FATAL_KINDS = frozenset({"auth", "model", "config"})

    def __init__(
        self,
        message: str,
        *,
        kind: str = "network",
        code: int | None = None,
        reason: str = "",
    ):
        if kind not in self.KINDS:
            raise ValueError(f"unknown session error kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.reason = reason

    @property
    def retryable(self) -> bool:
        return self.kind not in self.FATAL_KINDS


class RetryableSessionError(SessionError):
    """Network drops, server faults (1011/1006), roll-over closes."""


class FatalSessionError(SessionError):
    """Bad key, bad model, refused setup: retrying blindly cannot help."""

    def __init__(self, message: str, *, kind: str = "config", **extra: object):
        super().__init__(message, kind=kind, **extra)  # type: ignore[arg-type]


class HandleRefusedError(SessionError):
    """The server no longer knows our resumption handle: start a fresh session."""

    def __init__(self, message: str, **extra: object):
        super().__init__(message, kind="handle", **extra)  # type: ignore[arg-type]


class AudioDeviceError(PiAgentError, OSError):
    """An audio device is missing, busy or cannot do the format we need."""


class CameraError(PiAgentError, OSError):
    """The camera failed, timed out, or its library is missing."""


class DeviceError(PiAgentError, OSError):
    """A GPIO device could not be created or driven."""


class ToolError(PiAgentError, ValueError):
    """A tool call was refused (unknown tool, bad argument, rate limit...)."""


class BoundsError(ToolError):
    """A value outside a device's declared range; ``low``/``high`` are that range."""

    def __init__(self, message: str, low: float, high: float):
        super().__init__(message)
        self.low = low
        self.high = high


class ZombieThread(PiAgentError, RuntimeError):
    """A worker thread did not stop within its timeout."""


class PiAgentWarning(Warning):
    """Base of pi-agent's warnings."""
