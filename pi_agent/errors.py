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

    ``retryable`` tells the reconnect loop whether trying again can help;
    ``kind`` is a short word for status and the LED (network, server, auth,
    config, quota, handle, timeout).
    """

    retryable = True
    kind = "network"

    def __init__(self, message: str, *, code: int | None = None, reason: str = ""):
        super().__init__(message)
        self.code = code
        self.reason = reason


class RetryableSessionError(SessionError):
    """Network drops, server faults (1011/1006), roll-over closes."""


class FatalSessionError(SessionError):
    """Bad key, bad model, bad request (1007/1008, HTTP 4xx): retrying blindly cannot help."""

    retryable = False
    kind = "config"


class HandleRefusedError(SessionError):
    """The server no longer knows our resumption handle: start a fresh session."""

    kind = "handle"


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
