"""The Gemini Live wire protocol as a pure codec: no sockets, no threads.

Client messages are built as plain dicts with the documented camelCase names
(the ``BidiGenerateContent`` messages of the Gemini Live API reference) and encoded
to compact JSON text frames. The hot-path messages (audio, video) are written as
strings directly: base64 never needs JSON escaping, and skipping ``json.dumps``
halves their cost.

Server messages arrive as binary (or text) frames of UTF-8 JSON. ``parse``
turns one message into a list of typed events, handling *every* field present
(audio parts, a transcription and ``turnComplete`` may share one message) in
the order a player needs them. camelCase and snake_case are both accepted;
unknown fields and empty messages are ignored with a debug log. The parser is
total: whatever the server sends, the result is events or a ProtocolError.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, NoReturn

from .errors import ProtocolError
from .logs import escape

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
#
# The server is not trusted: a broken or hostile peer must not be able to kill the reader
# thread, store a handle that breaks every reconnect, or plant a value that crashes a later
# encode. ``parse`` is therefore total (events or ProtocolError, nothing else) and every
# value an event carries is checked: type, range, length, valid Unicode.

MAX_FRAME = 16 * 1024 * 1024
"""Largest server frame parsed (bytes or characters); a 40 ms audio chunk is ~2.7 kB."""
MAX_DEPTH = 64
"""Deepest JSON nesting accepted, checked before the decoder can recurse."""
MAX_TEXT = 128 * 1024
"""Longest text field (transcript chunk, model text, argument string), in characters."""
MAX_ID = 256
"""Longest function-call id or name, session id or status word."""
MAX_HANDLE = 4096
"""Longest resumption handle stored (and resent on every reconnect)."""
MAX_TOKENS = 2**53
"""Token counts are below this (exact in a double, so safe in any JSON consumer)."""
MAX_ARG_DEPTH = 32
MAX_ARG_VALUES = 10_000
MAX_ARG_INT = 2**53
"""Function-call args arrive as a protobuf Struct (doubles): larger integers are not real."""
MAX_TIME_LEFT_S = 86_400.0
AUDIO_RATES = (4_000, 192_000)
INTERACTION_STATUSES = frozenset({"IN_PROGRESS", "IDLE"})


@dataclass(frozen=True)
class SetupComplete:
    session_id: str | None = None


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
class InteractionStatus:
    """The server's view of the exchange: ``"IN_PROGRESS"`` or ``"IDLE"``."""

    status: str


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
    thoughts_tokens: int = 0
    tool_use_prompt_tokens: int = 0


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
    | InteractionStatus
    | ToolCall
    | ToolCallCancellation
    | GoAway
    | SessionResumptionUpdate
    | Usage
)

_HANDLE = re.compile(r"[A-Za-z0-9._~+/=:-]+")
_SESSION_ID = re.compile(r"[!-~]+")  # printable ASCII, no spaces
_DURATION = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?s")  # proto3 JSON Duration, >= 0
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# A JSON string as the decoder sees it (an escape consumes the next character).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def valid_handle(value: object) -> bool:
    """True for a resumption handle that is safe to store, log and resend on every connect.

    A plain string of 1 to 4096 characters from ``[A-Za-z0-9._~+/=:-]``: what the server
    issues. Anything else (a number, a lone surrogate, megabytes) would be resent forever
    and break every reconnect, so it is never stored.
    """
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_HANDLE
        and _HANDLE.fullmatch(value) is not None
    )


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}" if len(repr(value)) <= 24 else "a number out of range"
    return {str: "a string", list: "an array", dict: "an object"}.get(type(value), "a value")


def _fail(path: str, expected: str, value: object) -> NoReturn:
    raise ProtocolError(f"server message field {path} must be {expected}, not {_kind(value)}")


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not a JSON value")


def _parse_int(digits: str) -> int | float:
    # int() is quadratic in the digits (and capped at 4300 by default): long literals become
    # floats (inf beyond 1e308), in linear time, and every range check below refuses them.
    return int(digits) if len(digits) <= 40 else float(digits)


_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_constant=_reject_constant)


def _check_depth(text: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH before the (recursive) decoder sees it.

    Fast path: fewer brackets than the limit cannot nest deeper (every audio frame). Else,
    with the strings taken out, the deepest running sum of +1 per opening and -1 per
    closing bracket bounds the decoder's recursion (it is the depth, for valid JSON). Two
    C-speed passes that delete adjacent "()" pairs first peel the leaves off, which is
    most of any real frame; each pass lowers the depth of what is left by exactly one.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    raw = _JSON_STRING.sub(b"", text.encode("utf-8", "surrogatepass"))
    steps = raw.translate(_BRACKETS, _NOT_BRACKETS)
    if b"\x01" * (MAX_DEPTH + 1) not in steps:
        peeled = 0
        while peeled < 2 and steps:
            steps, peeled = steps.replace(b"\x01\xff", b""), peeled + 1
        deepest = max(accumulate(memoryview(steps).cast("b")), default=0)
        if not steps or peeled + deepest <= MAX_DEPTH:
            return
    raise ProtocolError(f"server message nested deeper than {MAX_DEPTH} levels")


def _load(data: bytes | str) -> dict[str, Any]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) > MAX_FRAME:
            raise ProtocolError(f"server message of {len(data)} bytes (at most {MAX_FRAME})")
        try:
            text = bytes(data).decode("utf-8")  # strict: no encoded surrogates
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"server sent invalid UTF-8: {exc.reason} at {exc.start}") from None
    elif isinstance(data, str):
        if len(data) > MAX_FRAME:
            raise ProtocolError(f"server message of {len(data)} characters (at most {MAX_FRAME})")
        text = data
    else:
        raise ProtocolError(f"a server message is bytes or str, not {type(data).__name__}")
    _check_depth(text)
    try:
        message = _DECODER.decode(text)
    except RecursionError:  # not reachable past _check_depth; kept as a last guard
        raise ProtocolError("server message nested too deeply") from None
    except ValueError as exc:
        raise ProtocolError(f"server sent invalid JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"server sent {_kind(message)}, not an object")
    return message


def _unicode(text: str) -> str:
    """Valid Unicode: lone surrogates (legal as JSON escapes) become U+FFFD, so no later
    encode (log line, status JSON, MQTT) can fail on them."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def _text(value: object, path: str, limit: int = MAX_TEXT) -> str:
    if type(value) is not str:
        _fail(path, "a string", value)
    if len(value) > limit:
        raise ProtocolError(f"server message field {path} is longer than {limit} characters")
    return _unicode(value)


def _object(value: object, path: str) -> dict[str, Any] | None:
    """A nested message: an object, or null/absent (None)."""
    if value is None or type(value) is dict:
        return value
    _fail(path, "an object", value)


def _list(value: object, path: str) -> list[Any]:
    if value is None:
        return []
    if type(value) is not list:
        _fail(path, "an array", value)
    return value


def _flag(obj: Mapping[str, Any], name: str, path: str) -> bool:
    value = _get(obj, name)
    if value is None:
        return False
    if value is True or value is False:
        return value
    _fail(f"{path}.{name}", "true or false", value)


def _count(obj: Mapping[str, Any], name: str) -> int:
    """A token count: an int64 (a number, or a string of digits as proto3 JSON allows)
    from 0 to 2**53."""
    value = _get(obj, name)
    if value is None:
        return 0
    number = value
    digits = type(value) is str and len(value) <= 20 and value.isascii() and value.isdigit()
    if digits or (type(value) is float and value.is_integer()):
        number = int(value)
    if type(number) is int and 0 <= number < MAX_TOKENS:
        return number
    _fail(f"usageMetadata.{name}", "a token count from 0 to 2**53", value)


def _time_left(value: object) -> float | None:
    if value is None:
        return None
    seconds: float | None = None
    if type(value) is str and len(value) <= 24 and _DURATION.fullmatch(value):
        seconds = float(value[:-1])
    elif type(value) in (int, float):
        seconds = float(value)
    if seconds is None or not 0.0 <= seconds <= MAX_TIME_LEFT_S:  # also refuses NaN
        _fail("goAway.timeLeft", f"a duration from 0 to {MAX_TIME_LEFT_S:.0f}s", value)
    return seconds


def _args(value: object, path: str) -> dict[str, Any]:
    """A function call's arguments, copied with every value checked.

    They reach tools, logs and status JSON: bounded depth and size, finite numbers,
    integers a double can hold, valid Unicode (keys too).
    """
    if type(value) is not dict:
        _fail(path, "an object", value)
    budget = [MAX_ARG_VALUES]

    def clean(item: Any, depth: int) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise ProtocolError(f"server message field {path} holds over {MAX_ARG_VALUES} values")
        kind = type(item)
        if kind is str:
            return _text(item, path)
        if kind is int:
            if -MAX_ARG_INT <= item <= MAX_ARG_INT:
                return item
        elif kind is float:
            if math.isfinite(item):
                return item
        elif item is None or kind is bool:
            return item
        elif depth >= MAX_ARG_DEPTH:
            raise ProtocolError(
                f"server message field {path} nests deeper than {MAX_ARG_DEPTH} levels"
            )
        elif kind is dict:
            return {_text(k, path): clean(v, depth + 1) for k, v in item.items()}
        elif kind is list:
            return [clean(v, depth + 1) for v in item]
        _fail(path, "JSON with finite numbers within 2**53", item)

    return clean(value, 0)


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


def _decode_b64(data: str) -> bytes:
    try:
        if "-" in data or "_" in data:
            return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
        return base64.b64decode(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"invalid base64 in inlineData: {exc}") from None


def _audio_rate(mime: str) -> int:
    if "rate=" not in mime:
        return OUTPUT_RATE
    digits = mime.rsplit("rate=", 1)[1].split(";")[0].strip()
    if digits.isascii() and digits.isdigit() and len(digits) <= 6:
        rate = int(digits)
        if AUDIO_RATES[0] <= rate <= AUDIO_RATES[1]:
            return rate
    raise ProtocolError(
        f"server sent audio at an unusable rate (inlineData.mimeType {escape(mime, 64)})"
    )


def _transcription(content: Mapping[str, Any], name: str) -> tuple[str, bool] | None:
    where = f"serverContent.{name}"
    t = _object(_get(content, name), where)
    if t is None:
        return None
    text = t.get("text")
    if text is None or text == "":
        return None
    return _text(text, f"{where}.text"), _flag(t, "finished", where)


def _model_turn(turn: Mapping[str, Any], events: list[ServerEvent]) -> None:
    for i, part in enumerate(_list(turn.get("parts"), "serverContent.modelTurn.parts")):
        where = f"serverContent.modelTurn.parts[{i}]"
        if type(part) is not dict:
            _fail(where, "an object", part)
        inline = _object(_get(part, "inlineData"), f"{where}.inlineData")
        if inline is not None:
            mime = _get(inline, "mimeType")
            mime = "" if mime is None else _text(mime, f"{where}.inlineData.mimeType", MAX_ID)
            data = inline.get("data")
            if data is None or data == "":
                continue
            if type(data) is not str:
                _fail(f"{where}.inlineData.data", "a base64 string", data)
            if mime.startswith("audio/"):
                events.append(AudioChunk(_decode_b64(data), _audio_rate(mime)))
            else:
                log.debug("ignoring inlineData of type %s", escape(mime, 64))
            continue
        text = part.get("text")
        if text is not None:
            events.append(ModelText(_text(text, f"{where}.text"), _flag(part, "thought", where)))


def _server_content(content: Mapping[str, Any], events: list[ServerEvent]) -> None:
    heard = _transcription(content, "inputTranscription")
    if heard is not None:
        events.append(InputTranscription(*heard))
    turn = _object(_get(content, "modelTurn"), "serverContent.modelTurn")
    if turn is not None:
        _model_turn(turn, events)
    said = _transcription(content, "outputTranscription")
    if said is not None:
        events.append(OutputTranscription(*said))
    where = "serverContent"
    if _flag(content, "interrupted", where):
        events.append(Interrupted())
    if _flag(content, "generationComplete", where):
        events.append(GenerationComplete())
    if _flag(content, "waitingForInput", where):
        events.append(WaitingForInput())
    # Before turnComplete: a turn that ends IN_PROGRESS goes from speaking to working,
    # never through a moment of "ready".
    status = _get(content, "interactionStatus")
    if status is not None:
        status = _text(status, "serverContent.interactionStatus", MAX_ID)
        if status in INTERACTION_STATUSES:
            events.append(InteractionStatus(status))
        else:
            log.debug("ignoring unknown interactionStatus %s", escape(status, 64))
    if _flag(content, "turnComplete", where):
        reason = _get(content, "turnCompleteReason")
        if reason is not None:
            reason = _text(reason, "serverContent.turnCompleteReason", MAX_ID)
        events.append(TurnComplete(reason))


def _setup_complete(setup: Mapping[str, Any]) -> SetupComplete:
    session_id = _get(setup, "sessionId")
    if session_id is None or session_id == "":
        return SetupComplete()
    if type(session_id) is not str:
        _fail("setupComplete.sessionId", "a string", session_id)
    if len(session_id) > MAX_ID or not _SESSION_ID.fullmatch(session_id):
        log.debug("ignoring a session id that is not printable ASCII of <= %d chars", MAX_ID)
        return SetupComplete()
    return SetupComplete(session_id)


def _tool_call(call: Mapping[str, Any]) -> ToolCall | None:
    calls = []
    for i, fc in enumerate(_list(_get(call, "functionCalls"), "toolCall.functionCalls")):
        where = f"toolCall.functionCalls[{i}]"
        if type(fc) is not dict:
            _fail(where, "an object", fc)
        name = _text(fc.get("name"), f"{where}.name", MAX_ID)
        if not name:
            raise ProtocolError(f"server message field {where}.name is empty")
        call_id = fc.get("id")
        call_id = "" if call_id is None else _text(call_id, f"{where}.id", MAX_ID)
        args = fc.get("args")
        calls.append(
            FunctionCall(call_id, name, {} if args is None else _args(args, f"{where}.args"))
        )
    return ToolCall(tuple(calls)) if calls else None


def _resumption(update: Mapping[str, Any]) -> SessionResumptionUpdate:
    handle = _get(update, "newHandle")
    if handle == "":
        handle = None
    if handle is not None and not valid_handle(handle):
        if type(handle) is not str:
            _fail("sessionResumptionUpdate.newHandle", "a string", handle)
        raise ProtocolError(
            "server sent an unusable resumption handle (it must be 1 to "
            f"{MAX_HANDLE} characters of A-Z a-z 0-9 . _ ~ + / = : -)"
        )
    return SessionResumptionUpdate(handle, _flag(update, "resumable", "sessionResumptionUpdate"))


def parse(data: bytes | str) -> list[ServerEvent]:
    """Parse one server frame into events, in the order a player needs them.

    Total: any input yields a list of events or raises ProtocolError, nothing else (the
    caller counts and skips the message). Unknown fields are ignored; known ones of the
    wrong type or out of range make the whole message malformed.
    """
    try:
        return _parse(_load(data))
    except ProtocolError:
        raise
    except Exception as exc:  # a bug here must still not kill the reader thread
        log.error("bug: protocol.parse failed on a server message", exc_info=True)
        raise ProtocolError(f"internal parser error ({type(exc).__name__})") from None


def _parse(message: dict[str, Any]) -> list[ServerEvent]:
    events: list[ServerEvent] = []
    if not message:
        log.debug("ignoring empty server message")
        return events
    setup = _object(_get(message, "setupComplete"), "setupComplete")
    if setup is not None:
        events.append(_setup_complete(setup))
    content = _object(_get(message, "serverContent"), "serverContent")
    if content is not None:
        _server_content(content, events)
    call = _object(_get(message, "toolCall"), "toolCall")
    if call is not None:
        tool_call = _tool_call(call)
        if tool_call is not None:
            events.append(tool_call)
    cancel = _object(_get(message, "toolCallCancellation"), "toolCallCancellation")
    if cancel is not None:
        ids = _list(cancel.get("ids"), "toolCallCancellation.ids")
        where = "toolCallCancellation.ids[]"
        events.append(ToolCallCancellation(tuple(_text(i, where, MAX_ID) for i in ids)))
    away = _object(_get(message, "goAway"), "goAway")
    if away is not None:
        events.append(GoAway(_time_left(_get(away, "timeLeft"))))
    update = _object(_get(message, "sessionResumptionUpdate"), "sessionResumptionUpdate")
    if update is not None:
        events.append(_resumption(update))
    usage = _object(_get(message, "usageMetadata"), "usageMetadata")
    if usage is not None:
        counted = Usage(
            _count(usage, "promptTokenCount"),
            _count(usage, "responseTokenCount"),
            _count(usage, "totalTokenCount"),
            _count(usage, "thoughtsTokenCount"),
            _count(usage, "toolUsePromptTokenCount"),
        )
        # Before a turnComplete in the same message: the turn's figures include its usage.
        at = next((i for i, e in enumerate(events) if isinstance(e, TurnComplete)), len(events))
        events.insert(at, counted)
    if log.isEnabledFor(logging.DEBUG):
        unknown = [k for k in message if k not in _KNOWN_TOP and _camel(k) not in _KNOWN_TOP]
        if unknown:
            names = ", ".join(escape(k, 40) for k in unknown[:10])
            log.debug("ignoring unknown server fields %s", names)
    return events


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)
