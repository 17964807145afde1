"""What the agent tells people and the server: the status snapshot, fixes, the setup message.

Pure functions of the agent's state and config, called on the agent thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import protocol
from .config import Config
from .errors import SessionError

if TYPE_CHECKING:
    from .agent import Agent
    from .parts import Parts


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
        function_declarations=parts.toolbox.function_declarations(),
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
