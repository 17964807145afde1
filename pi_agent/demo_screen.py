"""The demo's terminal: log lines scroll above one status line that is redrawn in place.

Every write goes through one :class:`Screen` under one lock, so a log line, a
transcript and the status line never land in the middle of each other. On a
terminal the status line is redrawn with ``\\r`` and erase-line and cut to the
terminal's width (a wrapped line could not be redrawn); anywhere else (the
``--script`` mode, a pipe, CI) lines are plain and the status is printed as a
line of its own only when the state changes.

The agent's observations (``parts.observers``) arrive on the agent thread and
are only queued there (an observer must never block); the demo's own thread
turns them into lines with :meth:`EventView.drain`.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from .logs import LineFormatter, RedactingFilter, escape

ERASE_LINE = "\r\x1b[2K"


class Screen:
    """Lines above, one status line below (``redraw``), or plain lines (``redraw=False``)."""

    def __init__(self, out: TextIO, *, redraw: bool):
        self.out = out
        self.redraw = redraw
        self._lock = threading.Lock()
        self._status = ""

    def _fit(self, text: str) -> str:
        width = shutil.get_terminal_size((100, 24)).columns - 1
        return text if len(text) <= width else text[: max(0, width - 1)] + "…"

    def line(self, text: str) -> None:
        """A line of its own, above the status line."""
        with self._lock:
            if self.redraw:
                self.out.write(ERASE_LINE + text + "\n" + self._fit(self._status))
            else:
                self.out.write(text + "\n")
            self.out.flush()

    def status(self, text: str) -> None:
        """Show ``text`` as the status line (plain mode: print it when it changed)."""
        with self._lock:
            if text == self._status:
                return
            self._status = text
            self.out.write(ERASE_LINE + self._fit(text) if self.redraw else text + "\n")
            self.out.flush()

    def close(self) -> None:
        """Leave the cursor on a fresh line below the status line."""
        with self._lock:
            if self.redraw and self._status:
                self.out.write("\n")
                self.out.flush()
            self._status = ""


class ScreenLogHandler(logging.Handler):
    """Log records as lines of the :class:`Screen`, secrets redacted."""

    def __init__(self, screen: Screen, level: int | str, sink: str):
        super().__init__(level)
        self.screen = screen
        self.setFormatter(LineFormatter(sink))
        self.addFilter(RedactingFilter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.screen.line(self.format(record))
        except Exception:
            self.handleError(record)


def device_summary(states: dict[str, dict[str, Any]], kinds: dict[str, str]) -> str:
    """``lamp ON | strip 40% | pointer +30° | door active``: each device's state, short."""
    parts = []
    for name, state in states.items():
        kind = kinds.get(name, "")
        if "angle" in state:
            angle = state["angle"]
            text = "?" if angle is None else f"{angle:+.0f}°"
        elif "color" in state:
            text = "#" + "".join(f"{round(c * 255):02x}" for c in state["color"])
        elif "value" in state:
            text = f"{state['value']:.0%}"
        elif "pressed" in state:
            text = "pressed" if state["pressed"] else "up"
        elif kind == "input":
            text = "active" if state.get("active") else "inactive"
        else:
            text = "ON" if state.get("on") else "off"
        parts.append(f"{name} {text}")
    return " | ".join(parts)


class EventView:
    """Turns the agent's observations into lines; remembers what the driver waits for."""

    def __init__(self, screen: Screen, *, model_name: str, show_latency: bool):
        self.screen = screen
        self.model_name = model_name
        self.show_latency = show_latency
        self.events: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.state = "starting"
        self.cause: str | None = None
        self.turns_done: set[int] = set()
        self.tool_calls: list[dict[str, Any]] = []
        self.tool_results: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []

    def observe(self, event: dict[str, Any]) -> None:
        """The observer (agent thread): queue and return."""
        self.events.put(event)

    def drain(self, timeout: float = 0.0) -> bool:
        """Show every queued observation, waiting up to ``timeout`` for the first."""
        try:
            event = self.events.get(timeout=timeout) if timeout > 0 else self.events.get_nowait()
        except queue.Empty:
            return False
        while True:
            self._show(event)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return True

    def _show(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        line = self.screen.line
        if kind == "state":
            self.state = str(event.get("state"))
            self.cause = event.get("cause")
        elif kind == "transcript":
            who = "you" if event.get("who") == "user" else self.model_name
            line(f"  {who}: {escape(event.get('text', ''), 500)}")
        elif kind == "tool_call":
            self.tool_calls.append(event)
            line(f"  tool call {escape(event.get('name'), 80)} {_compact(event.get('args'))}")
        elif kind == "tool_result":
            self.tool_results.append(event)
            result = event.get("result") or {}
            failed = "error" in result or result.get("status") == "error"
            verdict = "REFUSED" if failed else "->"
            line(f"  tool {escape(event.get('name'), 80)} {verdict} {_compact(result)}")
        elif kind == "turn":
            self.turns_done.add(int(event.get("turn", 0)))
            metrics = event.get("metrics") or {}
            latency = metrics.get("release_to_first_audio_ms")
            if self.show_latency and latency is not None:
                line(f"  answered {latency:.0f} ms after release")
        elif kind == "error":
            self.errors.append(event)
            line(f"  ! {escape(event.get('part'), 40)}: {escape(event.get('detail'), 300)}")
        elif kind == "muted":
            line("  microphone muted" if event.get("muted") else "  microphone unmuted")

    def failed_tools(self) -> list[str]:
        """``name: error`` of every tool result that was an error."""
        out = []
        for event in self.tool_results:
            result = event.get("result") or {}
            if "error" in result or result.get("status") == "error":
                out.append(f"{event.get('name')}: {escape(result.get('error', result), 200)}")
        return out


def _compact(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = str(value)
    return escape(text, 200)


def kinds_of(devices: Iterable[tuple[str, Any]]) -> dict[str, str]:
    """``{name: kind}`` from ``config.devices.items()``."""
    return {name: settings.kind for name, settings in devices}


def safe_states(read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Device states, or none once the pins are closed (the agent stopped)."""
    try:
        return read()
    except Exception:
        return {}
