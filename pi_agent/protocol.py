"""The Gemini Live wire protocol as a pure codec: no sockets, no threads.

Client messages are built as plain dicts with the documented camelCase names
(``shared/live-protocol.md`` §3) and encoded to compact JSON text frames. The
hot-path messages (audio, video) are written as strings directly: base64 never
needs JSON escaping, and skipping ``json.dumps`` halves their cost.

Server messages arrive as binary (or text) frames of UTF-8 JSON. ``parse``
turns one message into a list of typed events, handling *every* field present
(audio parts, a transcription and ``turnComplete`` may share one message) in
the order a player needs them. camelCase and snake_case are both accepted;
unknown fields and empty messages are ignored with a debug log.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ProtocolError

log = logging.getLogger(__name__)

INPUT_RATE = 16000
OUTPUT_RATE = 24000
AUDIO_MIME = f"audio/pcm;rate={INPUT_RATE}"
API_PATH = "/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"
TOKEN_PATH = (
    "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained"
)

MEDIA_RESOLUTIONS = {
    "low": "MEDIA_RESOLUTION_LOW",
    "medium": "MEDIA_RESOLUTION_MEDIUM",
    "high": "MEDIA_RESOLUTION_HIGH",
}


def live_url(endpoint: str, *, api_version: str = "v1beta", ephemeral: bool = False) -> str:
    """The WebSocket URL for an endpoint base such as ``wss://generativelanguage.googleapis.com``.

    The key never goes in the URL (it goes in the ``x-goog-api-key`` header).
    """
    base = endpoint.rstrip("/")
    if ephemeral:
        return base + TOKEN_PATH
    return base + API_PATH.format(version=api_version)


# --------------------------------------------------------------------------- client -> server


@dataclass(frozen=True)
class SetupOptions:
    """What goes into the ``setup`` message; every field maps to a real protocol field."""

    model: str
    voice: str | None = None
    system_instruction: str | None = None
    temperature: float | None = None
    function_declarations: Sequence[Mapping[str, Any]] = ()
    automatic_activity_detection: bool = False
    input_transcription: bool = True
    output_transcription: bool = True
    session_resumption: bool = True
    resumption_handle: str | None = None
    context_window_compression: bool = True
    media_resolution: str | None = None


def build_setup(options: SetupOptions) -> dict[str, Any]:
    """The first message of every connection: ``{"setup": {...}}`` (never ``config``)."""
    model = options.model if options.model.startswith("models/") else f"models/{options.model}"
    generation: dict[str, Any] = {"responseModalities": ["AUDIO"]}
    if options.voice:
        generation["speechConfig"] = {
            "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": options.voice}}
        }
    if options.temperature is not None:
        generation["temperature"] = options.temperature
    if options.media_resolution:
        generation["mediaResolution"] = MEDIA_RESOLUTIONS.get(
            options.media_resolution, options.media_resolution
        )
    setup: dict[str, Any] = {"model": model, "generationConfig": generation}
    if options.system_instruction:
        setup["systemInstruction"] = {"parts": [{"text": options.system_instruction}]}
    if options.function_declarations:
        declarations = [dict(d) for d in options.function_declarations]
        setup["tools"] = [{"functionDeclarations": declarations}]
    setup["realtimeInputConfig"] = {
        "automaticActivityDetection": {"disabled": not options.automatic_activity_detection}
    }
    if options.input_transcription:
        setup["inputAudioTranscription"] = {}
    if options.output_transcription:
        setup["outputAudioTranscription"] = {}
    if options.session_resumption:
        setup["sessionResumption"] = (
            {"handle": options.resumption_handle} if options.resumption_handle else {}
        )
    if options.context_window_compression:
        setup["contextWindowCompression"] = {"slidingWindow": {}}
    return {"setup": setup}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def audio_message(pcm: bytes, rate: int = INPUT_RATE) -> str:
    """``realtimeInput.audio`` as an encoded text frame (hot path: no json.dumps)."""
    return (
        '{"realtimeInput":{"audio":{"data":"'
        + _b64(pcm)
        + '","mimeType":"audio/pcm;rate='
        + str(rate)
        + '"}}}'
    )


def video_message(image: bytes, mime_type: str = "image/jpeg") -> str:
    """``realtimeInput.video``: one JPEG (or PNG) frame."""
    if mime_type not in ("image/jpeg", "image/png"):
        raise ProtocolError(f"unsupported image type {mime_type!r}")
    data = _b64(image)
    return '{"realtimeInput":{"video":{"data":"' + data + '","mimeType":"' + mime_type + '"}}}'


def text_input(text: str) -> dict[str, Any]:
    """``realtimeInput.text``: typed words, streamed like speech."""
    return {"realtimeInput": {"text": text}}


def activity_start() -> dict[str, Any]:
    """Push-to-talk: the user started speaking (automatic VAD disabled only)."""
    return {"realtimeInput": {"activityStart": {}}}


def activity_end() -> dict[str, Any]:
    """Push-to-talk: the user stopped speaking; the model answers now."""
    return {"realtimeInput": {"activityEnd": {}}}


def audio_stream_end() -> dict[str, Any]:
    """Hands-free: the mic was muted (automatic VAD enabled only)."""
    return {"realtimeInput": {"audioStreamEnd": True}}


def tool_response(responses: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``toolResponse`` for function calls; each needs the call's ``id`` and ``name``."""
    items = []
    for r in responses:
        if not r.get("id") or not r.get("name"):
            raise ProtocolError("a function response needs the call's id and name")
        if not isinstance(r.get("response"), Mapping):
            raise ProtocolError("a function response's 'response' must be an object")
        item = {"id": r["id"], "name": r["name"], "response": dict(r["response"])}
        for extra in ("scheduling", "willContinue"):
            if extra in r:
                item[extra] = r[extra]
        items.append(item)
    return {"toolResponse": {"functionResponses": items}}


def client_content(
    turns: Sequence[tuple[str, str]] = (), *, turn_complete: bool = True
) -> dict[str, Any]:
    """``clientContent``: (role, text) turns appended to the history."""
    return {
        "clientContent": {
            "turns": [{"role": role, "parts": [{"text": text}]} for role, text in turns],
            "turnComplete": turn_complete,
        }
    }


def encode(message: Mapping[str, Any] | str) -> str:
    """Compact JSON text for a client message (pre-encoded strings pass through)."""
    if isinstance(message, str):
        return message
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------- server -> client


@dataclass(frozen=True)
class SetupComplete:
    pass


@dataclass(frozen=True)
class AudioChunk:
    """24 kHz s16le mono PCM from the model."""

    pcm: bytes
    rate: int = OUTPUT_RATE


@dataclass(frozen=True)
class ModelText:
    text: str
    thought: bool = False


@dataclass(frozen=True)
class InputTranscription:
    text: str
    finished: bool = False


@dataclass(frozen=True)
class OutputTranscription:
    text: str
    finished: bool = False


@dataclass(frozen=True)
class Interrupted:
    pass


@dataclass(frozen=True)
class GenerationComplete:
    pass


@dataclass(frozen=True)
class TurnComplete:
    reason: str | None = None


@dataclass(frozen=True)
class WaitingForInput:
    pass


@dataclass(frozen=True)
class FunctionCall:
    id: str
    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolCall:
    calls: tuple[FunctionCall, ...]


@dataclass(frozen=True)
class ToolCallCancellation:
    ids: tuple[str, ...]


@dataclass(frozen=True)
class GoAway:
    time_left_s: float | None


@dataclass(frozen=True)
class SessionResumptionUpdate:
    handle: str | None
    resumable: bool


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    response_tokens: int = 0
    total_tokens: int = 0


ServerEvent = (
    SetupComplete
    | AudioChunk
    | ModelText
    | InputTranscription
    | OutputTranscription
    | Interrupted
    | GenerationComplete
    | TurnComplete
    | WaitingForInput
    | ToolCall
    | ToolCallCancellation
    | GoAway
    | SessionResumptionUpdate
    | Usage
)

_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")
_snake_cache: dict[str, str] = {}


def _get(obj: Mapping[str, Any], name: str) -> Any:
    """Field lookup accepting both proto3 JSON spellings (camelCase and snake_case)."""
    value = obj.get(name)
    if value is None:
        snake = _snake_cache.get(name)
        if snake is None:
            snake = _snake_cache[name] = _SNAKE.sub("_", name).lower()
        value = obj.get(snake)
    return value


_KNOWN_TOP = {
    "setupComplete",
    "serverContent",
    "toolCall",
    "toolCallCancellation",
    "goAway",
    "sessionResumptionUpdate",
    "usageMetadata",
    "voiceActivity",
    "voiceActivityDetectionSignal",
}


def _duration_s(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.endswith("s"):
        try:
            return float(value[:-1])
        except ValueError:
            return None
    return None


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _decode_b64(data: str) -> bytes:
    try:
        if "-" in data or "_" in data:
            return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
        return base64.b64decode(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"invalid base64 in inlineData: {exc}") from None


def _server_content(content: Mapping[str, Any], events: list) -> None:
    t = _get(content, "inputTranscription")
    if isinstance(t, Mapping) and t.get("text"):
        events.append(InputTranscription(str(t["text"]), bool(t.get("finished", False))))
    turn = _get(content, "modelTurn")
    if isinstance(turn, Mapping):
        for part in turn.get("parts") or ():
            if not isinstance(part, Mapping):
                continue
            inline = _get(part, "inlineData")
            if isinstance(inline, Mapping) and inline.get("data"):
                mime = str(_get(inline, "mimeType") or "")
                if mime.startswith("audio/"):
                    rate = OUTPUT_RATE
                    if "rate=" in mime:
                        rate = _int(mime.rsplit("rate=", 1)[1].split(";")[0]) or OUTPUT_RATE
                    events.append(AudioChunk(_decode_b64(inline["data"]), rate))
                else:
                    log.debug("ignoring inlineData of type %r", mime)
            elif "text" in part:
                events.append(ModelText(str(part["text"]), bool(part.get("thought", False))))
    t = _get(content, "outputTranscription")
    if isinstance(t, Mapping) and t.get("text"):
        events.append(OutputTranscription(str(t["text"]), bool(t.get("finished", False))))
    if _get(content, "interrupted"):
        events.append(Interrupted())
    if _get(content, "generationComplete"):
        events.append(GenerationComplete())
    if _get(content, "waitingForInput"):
        events.append(WaitingForInput())
    if _get(content, "turnComplete"):
        events.append(TurnComplete(_get(content, "turnCompleteReason")))


def parse(data: bytes | str) -> list[ServerEvent]:
    """Parse one server frame into events; raise ProtocolError only for broken JSON."""
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"server sent invalid JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"server sent a JSON {type(message).__name__}, not an object")
    events: list[ServerEvent] = []
    if not message:
        log.debug("ignoring empty server message")
        return events
    if _get(message, "setupComplete") is not None:
        events.append(SetupComplete())
    content = _get(message, "serverContent")
    if isinstance(content, Mapping):
        _server_content(content, events)
    call = _get(message, "toolCall")
    if isinstance(call, Mapping):
        calls = []
        for fc in _get(call, "functionCalls") or ():
            if isinstance(fc, Mapping) and fc.get("name"):
                args = fc.get("args")
                calls.append(
                    FunctionCall(str(fc.get("id") or ""), str(fc["name"]), dict(args or {}))
                )
        if calls:
            events.append(ToolCall(tuple(calls)))
    cancel = _get(message, "toolCallCancellation")
    if isinstance(cancel, Mapping):
        events.append(ToolCallCancellation(tuple(str(i) for i in cancel.get("ids") or ())))
    away = _get(message, "goAway")
    if isinstance(away, Mapping):
        events.append(GoAway(_duration_s(_get(away, "timeLeft"))))
    update = _get(message, "sessionResumptionUpdate")
    if isinstance(update, Mapping):
        handle = _get(update, "newHandle")
        events.append(SessionResumptionUpdate(handle or None, bool(update.get("resumable"))))
    usage = _get(message, "usageMetadata")
    if isinstance(usage, Mapping):
        events.append(
            Usage(
                _int(_get(usage, "promptTokenCount")),
                _int(_get(usage, "responseTokenCount")),
                _int(_get(usage, "totalTokenCount")),
            )
        )
    if log.isEnabledFor(logging.DEBUG):
        unknown = [k for k in message if k not in _KNOWN_TOP and _camel(k) not in _KNOWN_TOP]
        if unknown:
            log.debug("ignoring unknown server fields %s", unknown)
    return events


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)
