"""protocol.parse is total: mutated real frames yield documented events or ProtocolError.

The corpus holds the frames the fake server (and the real one) sends; hypothesis mutates
them structurally (any value replaced by any JSON value, huge or non-finite number
literals, deep nesting, lone-surrogate escapes, keys deleted or renamed) and byte by byte
(invalid UTF-8 included). PI_AGENT_HYPOTHESIS=long runs the long profile's budget.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pi_agent import protocol as p
from pi_agent.errors import ProtocolError

LONG = os.environ.get("PI_AGENT_HYPOTHESIS") == "long"
pytestmark = [pytest.mark.timeout(0)] if LONG else []  # a long run takes minutes per test


def budget(examples: int) -> settings:
    """A small CI budget; the long profile's own (much larger) one when asked for."""
    return settings() if LONG else settings(max_examples=examples)


_PCM = base64.b64encode(bytes(range(256)) * 7 + bytes(128)).decode()  # 40 ms at 24 kHz

CORPUS: list[dict[str, Any]] = [
    {"setupComplete": {}},
    {"setupComplete": {"sessionId": "sess-3f2a"}},
    {
        "serverContent": {
            "modelTurn": {
                "parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": _PCM}}]
            },
            "outputTranscription": {"text": " Sure,"},
        }
    },
    {"serverContent": {"inputTranscription": {"text": "turn on the lamp", "finished": True}}},
    {"serverContent": {"modelTurn": {"parts": [{"text": "**Planning**", "thought": True}]}}},
    {"serverContent": {"generationComplete": True}},
    {
        "serverContent": {"turnComplete": True},
        "usageMetadata": {
            "promptTokenCount": 182,
            "responseTokenCount": 40,
            "totalTokenCount": 222,
            "thoughtsTokenCount": "7",
            "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 182}],
            "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 40}],
        },
    },
    {"serverContent": {"interrupted": True}},
    {"serverContent": {"turnComplete": True, "turnCompleteReason": "NEED_MORE_INPUT"}},
    {"serverContent": {"waitingForInput": True}},
    {"serverContent": {"turnComplete": True, "interactionStatus": "IDLE"}},
    {"serverContent": {"interactionStatus": "IN_PROGRESS"}},
    {
        "toolCall": {
            "functionCalls": [
                {"id": "call-1", "name": "set_lamp", "args": {"on": True, "level": 0.5}},
                {"id": "call-2", "name": "blink", "args": {"times": 3, "colors": ["red", "blue"]}},
            ]
        }
    },
    {"toolCallCancellation": {"ids": ["call-1", "call-2"]}},
    {"goAway": {"timeLeft": "9.5s"}},
    {
        "sessionResumptionUpdate": {
            "newHandle": "4f1c2b9e0d8a4e7f9a6b3c2d1e0f9a8b",
            "resumable": True,
        }
    },
    {"sessionResumptionUpdate": {"resumable": False}},
    {
        "server_content": {
            "model_turn": {"parts": [{"inline_data": {"mime_type": "audio/pcm", "data": "AAEC"}}]},
            "turn_complete": True,
        },
        "usage_metadata": {"total_token_count": 3},
    },
]

KEYS = sorted(
    {
        "setupComplete", "sessionId", "serverContent", "modelTurn", "parts", "inlineData",
        "mimeType", "data", "text", "thought", "inputTranscription", "outputTranscription",
        "finished", "interrupted", "generationComplete", "turnComplete", "turnCompleteReason",
        "waitingForInput", "interactionStatus", "toolCall", "functionCalls", "id", "name",
        "args", "toolCallCancellation", "ids", "goAway", "timeLeft", "sessionResumptionUpdate",
        "newHandle", "resumable", "usageMetadata", "promptTokenCount", "responseTokenCount",
        "totalTokenCount", "thoughtsTokenCount", "toolUsePromptTokenCount", "turn_complete",
        "new_handle", "usage_metadata", "model_turn", "inline_data",
    }
)  # fmt: skip

# Literals json.dumps cannot write, spliced into the text in place of a marker string.
RAW = [
    "1e999", "-1e999", "NaN", "Infinity", "-Infinity", "1" * 4300, "9" * 5000, "-0", "1.5e308",
    "4.9e-324", "18446744073709551616", "9007199254740993", '"9007199254740993"',
    '"99999999999999999999999"', '"-1"', '" 5"', '"\\ud800"', '"a\\udfffb"', '"\\ud83d"',
    '"\\u0000\\u001b[2J\\u2028"', '"' + "x" * 200_000 + '"', "[" * 5000 + "]" * 5000,
    '{"a":' * 3000 + "1" + "}" * 3000, "[" * 60 + "]" * 60, "[" * 70 + "]" * 70,
    "[" * 100_000, '"' + "[" * 1000 + '"', '"\\\\\\"[[["', "true", "null", '"nans"', '"infs"',
    '"1_0s"', '"-1s"', '"999999999"', '"audio/pcm;rate=0"', '"audio/pcm;rate=99999999999"',
    '"audio/pcm;rate=\u0661\u0666\u0660\u0660\u0660"', '"a b"', '"' + "h" * 4097 + '"', '"=~"',
]  # fmt: skip
MARK = "\ue000RAW{}\ue000"

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),  # NaN and infinities too: json.dumps writes them as literals
    st.text(st.characters(exclude_categories=()), max_size=12),  # lone surrogates too
    st.sampled_from(["", "IDLE", "IN_PROGRESS", "audio/pcm;rate=16000", "AAAA", "1.5s", "42"]),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=8,
)


def _slots(node: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key-or-index) of a JSON tree, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((node, key))
            _slots(value, out)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.append((node, i))
            _slots(value, out)
    return out


@st.composite
def structural_frames(draw: st.DrawFn) -> bytes | str:
    frame: Any = {"root": copy.deepcopy(draw(st.sampled_from(CORPUS)))}
    raws: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        slots = _slots(frame, [])
        parent, key = draw(st.sampled_from(slots))
        op = draw(st.sampled_from(["value", "raw", "delete", "rename", "wrap", "grow"]))
        if op == "value":
            parent[key] = draw(json_values)
        elif op == "raw":
            raws.append(draw(st.sampled_from(RAW)))
            parent[key] = MARK.format(len(raws) - 1)
        elif op == "delete" and isinstance(parent, dict) and parent is not frame:
            del parent[key]
        elif op == "rename" and isinstance(parent, dict) and parent is not frame:
            parent[draw(st.sampled_from(KEYS))] = parent.pop(key)
        elif op == "wrap":
            parent[key] = draw(st.sampled_from([[parent[key]], {"x": parent[key]}]))
        elif op == "grow" and isinstance(parent[key], (list, str)):
            parent[key] = parent[key] * draw(st.integers(2, 50))
    ascii_only = draw(st.booleans())
    text = json.dumps(frame["root"], ensure_ascii=ascii_only)
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(MARK.format(i), ensure_ascii=ascii_only), raw)
    if draw(st.booleans()):
        return text
    return text.encode("utf-8", "surrogatepass")  # a raw lone surrogate is invalid UTF-8


INSERTS = [b"\xff", b"\xfe\xff", b"\xed\xa0\x80", b"\xc0\x80", b"\x00", b"\x80", b"[" * 80]
INSERTS += [b"{", b"}", b"]", b'"', b"\\", b"\\ud800", b"1e999", b"NaN", b",", b":"]


@st.composite
def byte_frames(draw: st.DrawFn) -> bytes:
    data = bytearray(json.dumps(draw(st.sampled_from(CORPUS))).encode())
    for _ in range(draw(st.integers(1, 5))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "repeat"]))
        if op == "flip":
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.sampled_from(INSERTS) | st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[at:]
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 32))] * draw(st.integers(1, 8))
    return bytes(data)


def _plain_text(text: object, limit: int = p.MAX_TEXT) -> None:
    assert type(text) is str and len(text) <= limit
    text.encode("utf-8")  # valid Unicode: no lone surrogates


def _json_safe(value: Any) -> None:
    """What a status/watch/MQTT consumer does with an event: strict JSON, UTF-8."""
    json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")


def check_event(event: object) -> None:
    kind = type(event)
    if kind is p.SetupComplete:
        assert event.session_id is None or (
            type(event.session_id) is str and 0 < len(event.session_id) <= p.MAX_ID
        )
    elif kind is p.AudioChunk:
        assert type(event.pcm) is bytes
        assert type(event.rate) is int and p.AUDIO_RATES[0] <= event.rate <= p.AUDIO_RATES[1]
    elif kind in (p.InputTranscription, p.OutputTranscription, p.ModelText):
        _plain_text(event.text)
        assert type(getattr(event, "finished", getattr(event, "thought", None))) is bool
    elif kind in (p.Interrupted, p.GenerationComplete, p.WaitingForInput):
        pass
    elif kind is p.TurnComplete:
        assert event.reason is None or _plain_text(event.reason, p.MAX_ID) is None
    elif kind is p.InteractionStatus:
        assert event.status in p.INTERACTION_STATUSES
    elif kind is p.ToolCall:
        assert type(event.calls) is tuple and event.calls
        for call in event.calls:
            assert type(call) is p.FunctionCall
            _plain_text(call.id, p.MAX_ID)
            _plain_text(call.name, p.MAX_ID)
            assert call.name and type(call.args) is dict
            _json_safe(call.args)
    elif kind is p.ToolCallCancellation:
        assert type(event.ids) is tuple
        for call_id in event.ids:
            _plain_text(call_id, p.MAX_ID)
    elif kind is p.GoAway:
        left = event.time_left_s
        assert left is None or (type(left) is float and 0 <= left <= p.MAX_TIME_LEFT_S)
    elif kind is p.SessionResumptionUpdate:
        assert event.handle is None or p.valid_handle(event.handle)
        assert type(event.resumable) is bool
    elif kind is p.Usage:
        for name in ("prompt", "response", "total", "thoughts", "tool_use_prompt"):
            count = getattr(event, f"{name}_tokens")
            assert type(count) is int and 0 <= count < p.MAX_TOKENS
    else:
        raise AssertionError(f"undocumented event {event!r}")
    if kind is not p.AudioChunk:
        _json_safe(repr(event))


def check_total(data: bytes | str) -> list[object] | None:
    """parse(data) gives documented events or a ProtocolError that is fit to log."""
    try:
        events = p.parse(data)
    except ProtocolError as exc:
        message = str(exc)
        assert "internal parser error" not in message  # the backstop never fired
        assert len(message) <= 400 and message.isprintable(), message
        return None
    assert type(events) is list
    for event in events:
        check_event(event)
    return events


def test_fuzz_corpus_is_real_and_parses_to_events():
    """Unmutated, every corpus frame parses, and into at least one event."""
    for frame in CORPUS:
        assert check_total(json.dumps(frame).encode()), frame


@budget(1500)
@given(structural_frames())
def test_fuzz_parse_structural_mutations_are_total(data):
    check_total(data)


@budget(1000)
@given(byte_frames())
def test_fuzz_parse_byte_mutations_are_total(data):
    check_total(data)


@budget(150)
@given(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=5))
def test_fuzz_parse_arbitrary_objects_are_total(message):
    check_total(json.dumps(message))


@budget(300)
@given(st.binary(max_size=64) | st.text(st.characters(exclude_categories=()), max_size=64))
def test_fuzz_parse_arbitrary_input_is_total(data):
    check_total(data)


def test_fuzz_handles_and_args_checked_after_mutation_too():
    """The invariants above are not vacuous: a plain frame with hostile values is refused
    or cleaned, and the checker notices an unclean event."""
    events = check_total(
        '{"toolCall":{"functionCalls":[{"id":"c","name":"f","args":{"\\ud800":"\\udc00"}}]}}'
    )
    assert events == [p.ToolCall((p.FunctionCall("c", "f", {"\ufffd": "\ufffd"}),))]
    assert check_total(b'{"sessionResumptionUpdate":{"newHandle":"a\\u0000b"}}') is None
    try:
        check_event(p.OutputTranscription("\ud800"))
    except UnicodeEncodeError:
        pass
    else:
        raise AssertionError("the checker accepted a lone surrogate")


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@budget(200)
@given(st.integers(p.MAX_DEPTH - 8, p.MAX_DEPTH + 4), st.integers(0, 2**32))
def test_fuzz_depth_limit_is_exact_on_valid_json(levels, seed):
    """Any shape of valid JSON: accepted up to MAX_DEPTH levels, refused beyond."""
    rnd = random.Random(seed)  # a shape from a seed: cheap to draw and to replay
    value: Any = rnd.choice(["[{", "}]]", 1, None, []])
    for _ in range(levels):
        items = rnd.choices([[], {}, [[1]], "]]", 0], k=rnd.randint(0, 3))
        items.insert(rnd.randint(0, len(items)), value)
        value = dict(zip("abcd", items, strict=False)) if rnd.random() < 0.5 else items
    message = {"future": value}
    try:
        assert p.parse(json.dumps(message)) == []
    except ProtocolError as exc:
        assert "nested deeper" in str(exc)
        assert _depth(message) > p.MAX_DEPTH
    else:
        assert _depth(message) <= p.MAX_DEPTH
