"""The field rules of Gemini Live client messages, as the real service enforces them.

Google's front end parses every client message with a strict proto3 JSON parser and closes
the WebSocket on the first thing it cannot place, so a client that is wrong in one field
fails in production with nothing but a close frame (docs/live-protocol.md). pi-agent's
own tests only catch that if the fake server rejects the same messages, with the same code
and reason. This module is that rulebook, kept apart from :mod:`pi_agent.sim.fake_live`
(the server, its sessions and its scripting), which calls it for every message:

- The known-field tables: ``BidiGenerateContentClientMessage`` and everything under it
  (``setup``, ``generationConfig``, ``realtimeInputConfig``, ``tools``, function
  declarations, the OpenAPI ``Schema`` subset, ``clientContent``, ``realtimeInput``,
  ``toolResponse``), from PROTO ``generative_service.proto`` @ bc7e3baa and
  ``content.proto`` @ c76b7407, plus the newer fields that PYSDK v2.19.0 (2026-08-19)
  sends (docs/live-protocol.md).
- proto3 JSON parsing: camelCase and snake_case names at every level, enums by name
  (Schema ``type`` in any case) or number, int64 as numbers or strings, bytes in standard or
  URL-safe base64. An unknown or duplicate field, a wrong type or a second top-level key
  -> 1007 ``Invalid JSON payload received. ...`` with the proto (snake_case) path, as
  observed in google-gemini/cookbook#775 and googleapis/js-genai#696. Unknown schema
  keys such as ``readOnly`` are rejected too (livekit/agents#7349).
- Setup rules (sources: the model pages, the Live guide, REF): one AUDIO response
  modality; the ``generationConfig`` fields Live rejects; no multi-speaker voices; no
  code execution, URL context or Maps tools; function names ``[a-zA-Z_][a-zA-Z0-9_-]{0,62}``,
  unique per tool; no OBJECT schema with empty ``properties``; ``enableAffectiveDialog``
  and ``proactivity`` only on 2.5 over v1alpha; no ``thinkingConfig`` on 3.8; only BLOCKING
  functions on 3.1 (the per-model tool table is :data:`pi_agent.models.MODELS`). These
  close with 1007 ``Request contains an invalid argument.`` (mastra-ai/mastra#18363 shows
  that reason; which rule gives which text is [I] elsewhere),
  except the 2.5-only fields on v1beta, which are unknown names there (cookbook#775).

What needs the connection's state (setup first and once, VAD mode, pending tool calls,
resumption handles, the served model list -> 1008) stays in ``fake_live``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from ..models import MODELS, capabilities

__all__ = [
    "DOCUMENTED_MODELS",
    "INVALID_ARGUMENT",
    "Invalid",
    "b64decode",
    "camel_case",
    "check_setup",
    "invalid",
    "parse_client_message",
    "snake_case",
]

INVALID_ARGUMENT = "Request contains an invalid argument."
DOCUMENTED_MODELS = tuple(MODELS)
"""The models docs/live-protocol.md documents; the per-model rules apply to these only."""
_FUNC_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_-]{0,62}")


# --- errors -------------------------------------------------------------------------------------


class Invalid(Exception):
    """A client error the real server answers with a close frame."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


def invalid(detail: str = "") -> Invalid:
    """A 1007: the parser's ``detail``, or with none Google's generic invalid-argument reason."""
    if detail:
        return Invalid(1007, f"Invalid JSON payload received. {detail}")
    return Invalid(1007, INVALID_ARGUMENT)


# --- proto3 JSON names and bytes (docs/live-protocol.md) ------------------------------------------


def snake_case(name: str) -> str:
    """``generationConfig`` -> ``generation_config`` (the proto name, used in error paths)."""
    return re.sub(r"([A-Z])", r"_\1", name).lower()


def camel_case(name: str) -> str:
    """``client_content`` -> ``clientContent`` (the JSON name; camelCase stays as it is)."""
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def b64decode(text: str) -> bytes:
    """Decode standard or URL-safe base64, padding optional (proto3 JSON accepts both)."""
    if re.search(r"[^A-Za-z0-9+/\-_=]", text):
        raise ValueError("bad base64 character")
    body = text.rstrip("=").replace("-", "+").replace("_", "/")
    if len(body) % 4 == 1:
        raise ValueError("bad base64 length")
    return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else f'"{value}"'
    return text if len(text) <= 40 else text[:37] + "..."


# --- proto3 JSON schema of client messages (docs/live-protocol.md) -------------------------------


class _Scalar:
    def __init__(self, proto: str) -> None:
        self.proto = proto


class _Enum:
    def __init__(self, name: str, values: str, case_insensitive: bool = False) -> None:
        self.name = name
        self.values = values.split()
        self.case_insensitive = case_insensitive


class _Msg:
    def __init__(self, name: str, fields: dict[str, Any] | None = None) -> None:
        self.name = name
        self.fields: dict[str, Any] = {}
        self.lookup: dict[str, str] = {}
        self.define(fields or {})

    def define(self, fields: dict[str, Any]) -> None:
        self.fields.update(fields)
        for camel in fields:
            self.lookup[camel] = camel
            self.lookup[snake_case(camel)] = camel


class _List:
    def __init__(self, item: Any) -> None:
        self.item = item


class _Map:
    def __init__(self, value: Any) -> None:
        self.value = value


_STR, _BOOL, _INT32, _INT64 = (_Scalar(p) for p in ("STRING", "BOOL", "INT32", "INT64"))
_FLOAT, _DOUBLE, _BYTES = (_Scalar(p) for p in ("FLOAT", "DOUBLE", "BYTES"))
_VALUE = _Scalar("google.protobuf.Value")  # any JSON
_STRUCT = _Scalar("google.protobuf.Struct")  # any JSON object
_TYPE_PREFIX = "type.googleapis.com/google.ai.generativelanguage.v1beta."

_BLOB = _Msg("Blob", {"mimeType": _STR, "data": _BYTES})
_FUNCTION_CALL = _Msg("FunctionCall", {"id": _STR, "name": _STR, "args": _STRUCT})
_SCHEDULING = _Enum(
    "FunctionResponse.Scheduling", "SCHEDULING_UNSPECIFIED SILENT WHEN_IDLE INTERRUPT"
)
_FUNCTION_RESPONSE = _Msg(
    "FunctionResponse",
    {
        "id": _STR,
        "name": _STR,
        "response": _STRUCT,
        "willContinue": _BOOL,
        "scheduling": _SCHEDULING,
        "parts": _List(_Msg("FunctionResponsePart", {"inlineData": _BLOB})),
    },
)
_PART = _Msg(
    "Part",
    {
        "text": _STR,
        "inlineData": _BLOB,
        "fileData": _Msg("FileData", {"mimeType": _STR, "fileUri": _STR}),
        "functionCall": _FUNCTION_CALL,
        "functionResponse": _FUNCTION_RESPONSE,
        "thought": _BOOL,
        "thoughtSignature": _BYTES,
        "executableCode": _Msg("ExecutableCode", {"language": _STR, "code": _STR}),
        "codeExecutionResult": _Msg("CodeExecutionResult", {"outcome": _STR, "output": _STR}),
    },
)
_CONTENT = _Msg("Content", {"role": _STR, "parts": _List(_PART)})

_SCHEMA = _Msg("Schema")  # the OpenAPI subset; anything else (readOnly, $schema...) is unknown
_SCHEMA.define(
    {
        "type": _Enum(
            "Type",
            "TYPE_UNSPECIFIED STRING NUMBER INTEGER BOOLEAN ARRAY OBJECT NULL",
            case_insensitive=True,
        ),
        "format": _STR,
        "title": _STR,
        "description": _STR,
        "nullable": _BOOL,
        "enum": _List(_STR),
        "maxItems": _INT64,
        "minItems": _INT64,
        "properties": _Map(_SCHEMA),
        "required": _List(_STR),
        "items": _SCHEMA,
        "minimum": _DOUBLE,
        "maximum": _DOUBLE,
        "minLength": _INT64,
        "maxLength": _INT64,
        "pattern": _STR,
        "anyOf": _List(_SCHEMA),
        "propertyOrdering": _List(_STR),
        "default": _VALUE,
        "example": _VALUE,
    }
)
_FUNCTION_DECLARATION = _Msg(
    "FunctionDeclaration",
    {
        "name": _STR,
        "description": _STR,
        "parameters": _SCHEMA,
        "parametersJsonSchema": _VALUE,
        "response": _SCHEMA,
        "responseJsonSchema": _VALUE,
        "behavior": _Enum("FunctionDeclaration.Behavior", "UNSPECIFIED BLOCKING NON_BLOCKING"),
    },
)
_TOOL = _Msg(
    "Tool",
    {
        "functionDeclarations": _List(_FUNCTION_DECLARATION),
        "googleSearch": _Msg(
            "GoogleSearch",
            {"timeRangeFilter": _Msg("Interval", {"startTime": _STR, "endTime": _STR})},
        ),
        # Valid Tool fields that Live models reject: checked after parsing.
        "codeExecution": _STRUCT,
        "urlContext": _STRUCT,
        "googleMaps": _STRUCT,
    },
)
_SPEECH_CONFIG = _Msg(
    "SpeechConfig",
    {
        "voiceConfig": _Msg(
            "VoiceConfig",
            {"prebuiltVoiceConfig": _Msg("PrebuiltVoiceConfig", {"voiceName": _STR})},
        ),
        "languageCode": _STR,
        "multiSpeakerVoiceConfig": _STRUCT,  # not supported by Live: rejected after parsing
    },
)
_GENERATION_CONFIG = _Msg(
    "GenerationConfig",
    {
        "responseModalities": _List(
            _Enum("GenerationConfig.Modality", "MODALITY_UNSPECIFIED TEXT IMAGE AUDIO")
        ),
        "speechConfig": _SPEECH_CONFIG,
        "temperature": _FLOAT,
        "topP": _FLOAT,
        "topK": _INT32,
        "maxOutputTokens": _INT32,
        "seed": _INT32,
        "candidateCount": _INT32,
        "presencePenalty": _FLOAT,
        "frequencyPenalty": _FLOAT,
        "mediaResolution": _Enum(
            "GenerationConfig.MediaResolution",
            "MEDIA_RESOLUTION_UNSPECIFIED MEDIA_RESOLUTION_LOW MEDIA_RESOLUTION_MEDIUM "
            "MEDIA_RESOLUTION_HIGH",
        ),
        "thinkingConfig": _Msg(
            "ThinkingConfig",
            {
                "thinkingLevel": _Enum(
                    "ThinkingConfig.ThinkingLevel",
                    "THINKING_LEVEL_UNSPECIFIED MINIMAL LOW MEDIUM HIGH",
                ),
                "thinkingBudget": _INT32,
                "includeThoughts": _BOOL,
            },
        ),
        "enableAffectiveDialog": _BOOL,
        "translationConfig": _Msg(
            "TranslationConfig", {"targetLanguageCode": _STR, "echoTargetLanguage": _BOOL}
        ),
        # Valid GenerationConfig fields rejected for Live: checked after parsing.
        "responseLogprobs": _BOOL,
        "responseMimeType": _STR,
        "logprobs": _INT32,
        "responseSchema": _SCHEMA,
        "responseJsonSchema": _VALUE,
        "stopSequences": _List(_STR),
        "routingConfig": _STRUCT,
        "audioTimestamp": _BOOL,
    },
)
_UNSUPPORTED_GENERATION = [
    "responseLogprobs",
    "responseMimeType",
    "logprobs",
    "responseSchema",
    "responseJsonSchema",
    "stopSequences",
    "routingConfig",
    "audioTimestamp",
]
_TRANSCRIPTION = _Msg(
    "AudioTranscriptionConfig",
    {
        "languageCodes": _List(_STR),
        "customVocabulary": _List(_STR),
        "mode": _STR,
        "wordTimestamp": _BOOL,
        "diarization": _BOOL,
    },
)
_SETUP = _Msg(
    "BidiGenerateContentSetup",
    {
        "model": _STR,
        "generationConfig": _GENERATION_CONFIG,
        "systemInstruction": _CONTENT,
        "tools": _List(_TOOL),
        "realtimeInputConfig": _Msg(
            "RealtimeInputConfig",
            {
                "automaticActivityDetection": _Msg(
                    "AutomaticActivityDetection",
                    {
                        "disabled": _BOOL,
                        "startOfSpeechSensitivity": _Enum(
                            "StartSensitivity",
                            "START_SENSITIVITY_UNSPECIFIED START_SENSITIVITY_HIGH "
                            "START_SENSITIVITY_LOW",
                        ),
                        "endOfSpeechSensitivity": _Enum(
                            "EndSensitivity",
                            "END_SENSITIVITY_UNSPECIFIED END_SENSITIVITY_HIGH END_SENSITIVITY_LOW",
                        ),
                        "prefixPaddingMs": _INT32,
                        "silenceDurationMs": _INT32,
                    },
                ),
                "activityHandling": _Enum(
                    "ActivityHandling",
                    "ACTIVITY_HANDLING_UNSPECIFIED START_OF_ACTIVITY_INTERRUPTS NO_INTERRUPTION",
                ),
                "turnCoverage": _Enum(
                    "TurnCoverage",
                    "TURN_COVERAGE_UNSPECIFIED TURN_INCLUDES_ONLY_ACTIVITY TURN_INCLUDES_ALL_INPUT "
                    "TURN_INCLUDES_AUDIO_ACTIVITY_AND_ALL_VIDEO",
                ),
            },
        ),
        "inputAudioTranscription": _TRANSCRIPTION,
        "outputAudioTranscription": _TRANSCRIPTION,
        "sessionResumption": _Msg("SessionResumptionConfig", {"handle": _STR}),
        "contextWindowCompression": _Msg(
            "ContextWindowCompressionConfig",
            {
                "triggerTokens": _INT64,
                "slidingWindow": _Msg("SlidingWindow", {"targetTokens": _INT64}),
            },
        ),
        "proactivity": _Msg("ProactivityConfig", {"proactiveAudio": _BOOL}),
        "historyConfig": _Msg("HistoryConfig", {"initialHistoryInClientContent": _BOOL}),
        "safetySettings": _List(_Msg("SafetySetting", {"category": _STR, "threshold": _STR})),
        "avatarConfig": _STRUCT,
    },
)
_EMPTY = _Msg("Empty")
_CLIENT_MESSAGE = _Msg(
    "BidiGenerateContentClientMessage",
    {
        "setup": _SETUP,
        "clientContent": _Msg(
            "BidiGenerateContentClientContent", {"turns": _List(_CONTENT), "turnComplete": _BOOL}
        ),
        "realtimeInput": _Msg(
            "BidiGenerateContentRealtimeInput",
            {
                "mediaChunks": _List(_BLOB),
                "audio": _BLOB,
                "video": _BLOB,
                "text": _STR,
                "activityStart": _EMPTY,
                "activityEnd": _EMPTY,
                "audioStreamEnd": _BOOL,
            },
        ),
        "toolResponse": _Msg(
            "BidiGenerateContentToolResponse", {"functionResponses": _List(_FUNCTION_RESPONSE)}
        ),
    },
)


# --- the parser ---------------------------------------------------------------------------------


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _bad_value(path: str, type_name: str, value: Any) -> Invalid:
    return invalid(f"Invalid value at '{path}' ({type_name}), {_short(value)}")


def _parse(spec: Any, value: Any, path: str) -> Any:
    """Validate ``value`` against ``spec`` like Google's proto3 JSON parser; return it normalised.

    Message field names come back in camelCase; map keys and Struct/Value contents stay as sent;
    bytes come back decoded; enum names come back upper-case.
    """
    if isinstance(spec, _Msg):
        if not isinstance(value, dict):
            raise _bad_value(path, _TYPE_PREFIX + spec.name, value)
        out: dict[str, Any] = {}
        for key, item in value.items():
            camel = spec.lookup.get(key)
            if camel is None:
                where = f" at '{path}'" if path else ""
                raise invalid(f'Unknown name "{key}"{where}: Cannot find field.')
            if camel in out:
                raise invalid(f"Duplicate field \"{key}\" at '{path}'.")
            if item is not None:
                out[camel] = _parse(spec.fields[camel], item, _join(path, snake_case(camel)))
        return out
    if isinstance(spec, _List):
        if not isinstance(value, list):
            raise _bad_value(path, "list", value)
        return [_parse(spec.item, item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(spec, _Map):
        if not isinstance(value, dict):
            raise _bad_value(path, "map", value)
        return {
            key: _parse(spec.value, item, f"{path}[{i}].value")
            for i, (key, item) in enumerate(value.items())
        }
    if isinstance(spec, _Enum):
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(spec.values):
            return spec.values[value]
        name = value.upper() if isinstance(value, str) and spec.case_insensitive else value
        if name not in spec.values:
            raise _bad_value(path, _TYPE_PREFIX + spec.name, value)
        return name
    return _parse_scalar(spec, value, path)


def _parse_scalar(spec: _Scalar, value: Any, path: str) -> Any:
    kind = spec.proto
    if spec is _VALUE:
        return value
    if spec is _STRUCT:
        if not isinstance(value, dict):
            raise _bad_value(path, "type.googleapis.com/google.protobuf.Struct", value)
        return value
    type_name = f"TYPE_{kind}"
    if kind == "STRING" and isinstance(value, str):
        return value
    if kind == "BOOL" and isinstance(value, bool):
        return value
    if kind in ("INT32", "INT64") and not isinstance(value, bool):
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            return int(value)
    if kind in ("FLOAT", "DOUBLE") and not isinstance(value, bool):
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    if kind == "BYTES" and isinstance(value, str):
        try:
            return b64decode(value)
        except (ValueError, binascii.Error):
            detail = f"Base64 decoding failed for {_short(value)}"
            raise invalid(f"Invalid value at '{path}' ({type_name}), {detail}") from None
    raise _bad_value(path, type_name, value)


def parse_client_message(message: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Validate one client message; return its kind (camelCase) and its normalised body.

    Raises :class:`Invalid` for an empty message, any field the tables do not know or a
    value of the wrong type, and a second top-level key (the message is a oneof).
    """
    if not message:
        raise invalid()
    parsed = _parse(_CLIENT_MESSAGE, message, "")
    if len(message) > 1:
        second = snake_case(camel_case(list(message)[1]))
        raise invalid(f"Oneof field 'message_type' is already set. Cannot set '{second}'")
    kind = camel_case(next(iter(message)))
    return kind, parsed.get(kind, {})


# --- setup rules (docs/live-protocol.md) ---------------------------------------------------


def check_setup(setup: dict[str, Any], model_id: str, api_version: str) -> None:
    """Apply the setup rules Live adds to the schema; raise :class:`Invalid` on the first broken.

    ``setup`` is the normalised body from :func:`parse_client_message`; ``model_id`` has no
    ``models/`` prefix and is already known to be served.
    """
    _check_model_rules(model_id, setup, api_version)
    for tool in setup.get("tools", []):
        _check_tool(model_id, tool)


def _check_model_rules(model_id: str, setup: dict[str, Any], api_version: str) -> None:
    """Per-model rules of docs/live-protocol.md, for the models it documents."""
    gen = setup.get("generationConfig", {})
    modalities = gen.get("responseModalities", [])
    if len(modalities) > 1 or any(m not in ("AUDIO", "MODALITY_UNSPECIFIED") for m in modalities):
        raise invalid()  # native-audio models: exactly one modality, AUDIO
    if any(name in gen for name in _UNSUPPORTED_GENERATION):
        raise invalid()
    if "multiSpeakerVoiceConfig" in gen.get("speechConfig", {}):
        raise invalid()
    if model_id not in DOCUMENTED_MODELS:
        return  # a custom model: no per-model rules
    for key, where, at in (
        ("enableAffectiveDialog", gen, "setup.generation_config"),
        ("proactivity", setup, "setup"),
    ):
        if key not in where:
            continue
        if model_id.startswith("gemini-3"):
            raise invalid()
        if api_version != "v1alpha":  # 2.5: v1alpha only (cookbook#775, js-genai#696)
            raise invalid(f"Unknown name \"{snake_case(key)}\" at '{at}': Cannot find field.")
    if model_id == "gemini-3.8-live" and "thinkingConfig" in gen:
        raise invalid()


def _check_tool(model_id: str, tool: dict[str, Any]) -> None:
    if any(name in tool for name in ("codeExecution", "urlContext", "googleMaps")):
        raise invalid()  # not supported by Live models
    names: set[str] = set()
    for decl in tool.get("functionDeclarations", []):
        name = decl.get("name", "")
        if not _FUNC_NAME_RE.fullmatch(name) or name in names:
            raise invalid()
        names.add(name)
        refuses = capabilities(model_id).refuses_non_blocking
        if refuses and decl.get("behavior") == "NON_BLOCKING":
            raise invalid()  # 3.1: synchronous function calls only
        for schema in (decl.get("parameters"), decl.get("response")):
            if schema is not None:
                _check_schema(schema)


def _check_schema(schema: dict[str, Any]) -> None:
    if schema.get("type") == "OBJECT" and schema.get("properties") == {}:
        raise invalid()  # "properties: should be non-empty for OBJECT type"
    children = list(schema.get("properties", {}).values()) + schema.get("anyOf", [])
    if "items" in schema:
        children.append(schema["items"])
    for child in children:
        _check_schema(child)
