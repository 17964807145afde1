"""What the agent tells people: its derived state, the status snapshot, fixes, the setup.

:class:`Display` (a mixin of the agent) derives what the light, systemd,
``ctl status`` and every observer show from the conversation's facts, after
every event, in one place; the rest are pure functions. All on the agent thread.
"""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING, Any

from . import protocol
from .config import Config
from .errors import SessionError
from .logs import escape

if TYPE_CHECKING:
    from .agent import Agent
    from .parts import Parts

log = logging.getLogger("pi_agent.agent")

NETWORK_ERROR_AFTER = 4  # failed attempts in a row before the light says "network error"


class State(enum.Enum):
    IDLE = "starting"
    CONNECTING = "connecting"
    READY = "ready"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    TOOL_RUNNING = "tool_running"
    WORKING = "working"
    RECONNECTING = "reconnecting"
    RINGING = "ringing"
    ERROR = "error"


class Display:
    """Derives what is shown from the facts (mixin of :class:`~pi_agent.agent.Agent`)."""

    def _derive(self: Agent) -> tuple[State, str, str | None]:
        """(state, light pattern, cause) from the facts; the one place that decides."""
        link, fatal = self.link, self.link.fatal
        pending = self._pending
        problem = link.problem
        if self.ringing:
            return State.RINGING, "ringing", f"{len(self.ringing)} timer(s) ringing"
        if self.talking:
            return State.LISTENING, "listening", None
        if fatal is not None:
            light = "error_auth" if fatal.kind in ("auth", "model", "config") else "error_network"
            return State.ERROR, light, f"{fatal} ({fix_for(fatal)})"
        offline = not link.is_open
        if offline and pending is not None and pending.ended and not pending.completed:
            why = f": {problem}" if problem else ""
            return State.RECONNECTING, "reconnecting", f"a question waits for the link{why}"
        if self.ledger.running:
            return State.TOOL_RUNNING, "tool_running", None
        if self.speaking:
            return State.SPEAKING, "speaking", None
        if self.awaiting_since is not None:
            return State.THINKING, "thinking", None
        if self.working:
            return State.WORKING, "working", None
        if offline:
            if not self._connected_once and link.attempt == 0:
                return State.CONNECTING, "connecting", None
            cause = str(problem) if problem else None
            if link.attempt >= NETWORK_ERROR_AFTER:
                return State.ERROR, "error_network", cause
            return State.RECONNECTING, "reconnecting", cause
        if self._audio_problems():
            return State.READY, "error_audio", "; ".join(self._audio_problems())
        return State.READY, "muted" if self.muted else "ready", None

    def _audio_problems(self: Agent) -> list[str]:
        return [
            f"{part}: {state}" + (f" ({escape(detail, 120)})" if detail else "")
            for part, (state, detail) in self.part_states.items()
            if part in ("mic", "speaker") and state in ("missing", "error", "fault", "stalled")
        ]

    def problems(self: Agent) -> list[dict[str, str]]:
        """What is degraded right now, for status, systemd and observers."""
        out = [
            {"part": part, "problem": state, "detail": detail}
            for part, (state, detail) in self.part_states.items()
            if state in ("missing", "error", "fault", "stalled")
        ]
        problem = self.link.problem
        if problem is not None and not self.link.is_open:
            part = {"auth": "key", "model": "model", "config": "model"}.get(problem.kind, "network")
            out.append({"part": part, "problem": problem.kind, "detail": str(problem)})
        return out

    def _refresh(self: Agent) -> None:
        state, light, cause = self._derive()
        problems = self.problems()
        shown = (state, light, cause, self.muted, tuple(p["detail"] for p in problems))
        if shown == self._shown:
            return
        self._shown = shown
        if state is not self.state:
            log.info("turn %d: %s%s", self.turn, state.value, f" ({cause})" if cause else "")
            self.transitions.append(state)
        self.state, self.light_state = state, light
        try:
            self.parts.light.show(light)
        except Exception:
            log.exception("status light failed")
        text = state.value + (" (muted)" if self.muted else "")
        if cause or problems:
            text += ": " + (cause or "; ".join(f"{p['part']} {p['problem']}" for p in problems))
        self.parts.notifier.status(text)
        self._publish(
            {
                "event": "state",
                "state": state.value,
                "light": light,
                "cause": cause,
                "problems": problems,
                "muted": self.muted,
            }
        )

    def _publish(self: Agent, event: dict[str, Any]) -> None:
        for observer in self.parts.observers:
            try:
                observer(event)
            except Exception:
                log.exception("observer %r failed", observer)


def ms(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start) * 1000.0, 1)


def fix_for(error: SessionError) -> str:
    """One line telling the user what to do about an error that retrying cannot mend."""
    if error.kind == "auth":
        return (
            "Check the API key (GEMINI_API_KEY, live.api_key_file or the systemd credential); "
            "retrying every few minutes"
        )
    if error.kind == "model":
        return "Check live.model (e.g. gemini-3.8-live) and live.api_version; retrying slowly"
    if error.kind == "config":
        return "The server refused the session setup; check the config; retrying slowly"
    return "Retrying"


def setup_message(config: Config, parts: Parts, handle: str | None) -> dict[str, Any]:
    """The ``setup`` of a new connection (resuming with ``handle`` when given)."""
    camera_on = parts.camera_on
    options = protocol.SetupOptions(
        model=config.live.model,
        voice=config.live.voice,
        system_instruction=config.live.system_instruction,
        temperature=config.live.temperature,
        function_declarations=parts.toolbox.function_declarations(config.live.model),
        automatic_activity_detection=config.live.hands_free,
        input_transcription=config.live.input_transcription,
        output_transcription=config.live.output_transcription,
        session_resumption=True,
        resumption_handle=handle,
        context_window_compression=config.live.context_compression or camera_on,
        media_resolution=config.camera.media_resolution if camera_on else None,
    )
    return protocol.build_setup(options)


def build_status(agent: Agent) -> dict[str, Any]:
    """The snapshot ``pi-agent ctl status`` shows (JSON-safe)."""
    parts, link, now = agent.parts, agent.link, agent._clock()
    session = link.session
    _state, light, cause = agent._derive()
    counters = dict(agent.counters)
    requests = counters.get("user_requests", 0)
    return {
        "state": agent.state.value,
        "light": light,
        "cause": cause,
        "problems": agent.problems(),
        "muted": agent.muted,
        "turn": agent.turn,
        "connection": {
            "connected": session is not None and session.is_open,
            "resumable": link.handle is not None,
            "model": agent.config.live.model,
            "reconnecting_in_s": (
                round(max(0.0, link.connect_at - now), 1) if link.connect_at is not None else None
            ),
            "last_error": agent.last_error,
        },
        "last_error": agent.last_error,
        "devices": parts.devices.states(),
        "audio": {
            "mic": parts.mic.state,
            "speaker": parts.speaker.state,
            "mic_overflows": parts.mic.overflows,
            "speaker_underruns": parts.speaker.underruns,
            "volume": parts.speaker.volume,
        },
        "camera": parts.sampler.state,
        "counters": counters,
        "tool_calls_per_request": round(counters["tool_calls"] / requests, 2) if requests else None,
        "reconnect_durations_ms": agent.reconnect_durations_ms[-10:],
        "last_turn": agent.metrics[-1].as_dict() if agent.metrics else None,
    }
