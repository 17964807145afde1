"""Server frames a hostile or broken Live server could send, for the agent's safety tests.

Each entry of :data:`MALFORMED_FRAMES` is ``(name, payload)``: the exact bytes of one WebSocket
message. Send them with :meth:`pi_agent.sim.fake_live.FakeLiveServer.send_frame` (binary, as
Google sends, or as a text frame) and check that the client neither crashes nor hangs nor
leaks the input into logs or status unescaped: each either becomes a clear protocol error or
is ignored. The well-formed messages they distort are described in ``docs/live-protocol.md``
(public reference: https://ai.google.dev/api/live).

Some payloads are large on purpose (a frame of ~4 MB, a 1 MB string): build the list once.
"""

from __future__ import annotations

import base64
import json
from typing import Any

__all__ = ["MALFORMED_FRAMES", "frame"]

_PCM_MIME = "audio/pcm;rate=24000"


def frame(message: Any) -> bytes:
    """``message`` as compact JSON bytes (non-ASCII and lone surrogates as \\u escapes)."""
    return json.dumps(message, separators=(",", ":")).encode()


def _content(**fields: Any) -> bytes:
    return frame({"serverContent": fields})


def _audio_part(data: str, mime: str = _PCM_MIME) -> bytes:
    return _content(modelTurn={"parts": [{"inlineData": {"mimeType": mime, "data": data}}]})


def _call(call: Any) -> bytes:
    return frame({"toolCall": {"functionCalls": [call]}})


_NESTED = b"[" * 5000 + b"]" * 5000

MALFORMED_FRAMES: list[tuple[str, bytes]] = [
    # -- not a JSON object ----------------------------------------------------------------------
    ("invalid-json", b'{"serverContent": {"modelTurn": '),
    ("empty-frame", b""),
    ("json-array", b'[{"setupComplete": {}}]'),
    ("json-number", b"42"),
    ("json-string", b'"setupComplete"'),
    ("json-null", b"null"),
    ("utf8-bom", b'\xef\xbb\xbf{"setupComplete":{}}'),
    ("invalid-utf8", b'{"serverContent":{"outputTranscription":{"text":"\xff\xfe\xc3"}}}'),
    ("surrogate-utf8-bytes", b'{"serverContent":{"inputTranscription":{"text":"\xed\xa0\x80"}}}'),
    ("deep-nesting", b'{"serverContent":{"modelTurn":{"parts":' + _NESTED + b"}}}"),
    ("duplicate-keys", b'{"serverContent":{"turnComplete":true},"serverContent":{"parts":1}}'),
    # -- numbers that break arithmetic ----------------------------------------------------------
    ("token-count-1e999", b'{"usageMetadata":{"promptTokenCount":1e999}}'),  # float("inf")
    ("token-count-nan", b'{"usageMetadata":{"promptTokenCount":NaN}}'),  # Python's json takes it
    ("token-count-4300-digits", b'{"usageMetadata":{"promptTokenCount":' + b"9" * 4300 + b"}}"),
    # one digit past the 4,300 that int() accepts: json.loads itself raises ValueError
    ("token-count-4301-digits", b'{"usageMetadata":{"promptTokenCount":' + b"9" * 4301 + b"}}"),
    ("token-count-negative", frame({"usageMetadata": {"promptTokenCount": -1}})),
    ("token-count-string", frame({"usageMetadata": {"totalTokenCount": "lots"}})),
    # -- serverContent of the wrong shape -------------------------------------------------------
    ("server-content-string", frame({"serverContent": "yes"})),
    ("model-turn-parts-number", _content(modelTurn={"parts": 5})),
    ("model-turn-parts-string", _content(modelTurn={"parts": "abc"})),
    ("model-turn-part-null", _content(modelTurn={"parts": [None, 3, "x"]})),
    ("many-empty-parts", _content(modelTurn={"parts": [{}] * 200_000})),
    ("inline-data-invalid-base64", _audio_part("!!not*base64~~")),
    ("inline-data-not-string", _content(modelTurn={"parts": [{"inlineData": {"data": 12}}]})),
    ("audio-odd-length", _audio_part(base64.b64encode(b"\x01\x02\x03").decode())),
    ("audio-rate-zero", _audio_part("AAA=", "audio/pcm;rate=0")),
    ("audio-rate-huge", _audio_part("AAA=", "audio/pcm;rate=" + "9" * 40)),
    ("huge-audio-frame", _audio_part(base64.b64encode(bytes(3 * 2**20)).decode())),  # ~4 MB
    ("turn-complete-string", _content(turnComplete="false")),
    ("interaction-status-number", _content(turnComplete=True, interactionStatus=42)),
    ("input-transcription-string", _content(inputTranscription="hello")),
    ("transcription-text-number", _content(outputTranscription={"text": 12.5})),
    ("transcription-lone-surrogate", _content(outputTranscription={"text": "\ud800"})),
    (
        "transcription-control-characters",
        _content(outputTranscription={"text": "ok\n2038-01-19 ERROR forged\r\x1b[2J\0\a\u202e"}),
    ),
    ("transcription-1mb", _content(outputTranscription={"text": "a" * 2**20})),
    # -- tool calls -----------------------------------------------------------------------------
    ("tool-call-null", frame({"toolCall": None})),
    ("function-calls-not-a-list", frame({"toolCall": {"functionCalls": {"name": "set_led"}}})),
    ("function-call-without-name", _call({"id": "call-1", "args": {}})),
    ("function-call-name-number", _call({"id": "call-2", "name": 7, "args": {}})),
    ("function-call-args-not-object", _call({"id": "call-3", "name": "set_led", "args": [1, 2]})),
    ("function-call-without-id", _call({"name": "set_led", "args": {"on": True}})),
    ("tool-cancellation-ids-number", frame({"toolCallCancellation": {"ids": 7}})),
    ("tool-cancellation-ids-objects", frame({"toolCallCancellation": {"ids": [{}, None]}})),
    # -- session control ------------------------------------------------------------------------
    ("go-away-negative", frame({"goAway": {"timeLeft": "-5s"}})),
    ("go-away-nan", frame({"goAway": {"timeLeft": "NaNs"}})),
    ("go-away-huge", frame({"goAway": {"timeLeft": "9" * 40 + "s"}})),
    ("go-away-number", frame({"goAway": {"timeLeft": 10}})),
    ("resumption-handle-number", frame({"sessionResumptionUpdate": {"newHandle": 12345}})),
    ("resumption-handle-huge", frame({"sessionResumptionUpdate": {"newHandle": "h" * 2**20}})),
    ("setup-complete-not-object", frame({"setupComplete": []})),
]
"""(name, payload) pairs; names are unique and stable, for test ids."""
