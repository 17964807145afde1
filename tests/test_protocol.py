"""The codec: every client message built, every server message parsed."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from pi_agent import protocol as p
from pi_agent.errors import ProtocolError


def sdk_types():
    return pytest.importorskip("google.genai.types")


def test_protocol_live_url_never_holds_a_key():
    assert p.live_url("wss://generativelanguage.googleapis.com/") == (
        "wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage.v1beta."
        "GenerativeService.BidiGenerateContent"
    )
    assert p.live_url("ws://127.0.0.1:9", ephemeral=True).endswith(
        "v1alpha.GenerativeService.BidiGenerateContentConstrained"
    )


def test_protocol_setup_push_to_talk_full():
    decl = {"name": "set_lamp", "description": "d", "parameters": {"type": "OBJECT"}}
    msg = p.build_setup(
        p.SetupOptions(
            model="gemini-3.8-live",
            voice="Kore",
            system_instruction="Be brief.",
            temperature=0.5,
            function_declarations=[decl],
            resumption_handle="h-1",
            media_resolution="low",
        )
    )
    assert msg == {
        "setup": {
            "model": "models/gemini-3.8-live",
            "generationConfig": {
                "responseModalities": ["AUDIO"],
                "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Kore"}}},
                "temperature": 0.5,
                "mediaResolution": "MEDIA_RESOLUTION_LOW",
            },
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "tools": [{"functionDeclarations": [decl]}],
            "realtimeInputConfig": {"automaticActivityDetection": {"disabled": True}},
            "inputAudioTranscription": {},
            "outputAudioTranscription": {},
            "sessionResumption": {"handle": "h-1"},
            "contextWindowCompression": {"slidingWindow": {}},
        }
    }
    assert "config" not in msg


def test_protocol_setup_minimal_hands_free():
    msg = p.build_setup(
        p.SetupOptions(
            model="models/x",
            automatic_activity_detection=True,
            input_transcription=False,
            output_transcription=False,
            context_window_compression=False,
        )
    )["setup"]
    assert msg["model"] == "models/x"
    assert msg["realtimeInputConfig"] == {"automaticActivityDetection": {"disabled": False}}
    assert msg["sessionResumption"] == {}
    for absent in (
        "inputAudioTranscription",
        "outputAudioTranscription",
        "tools",
        "contextWindowCompression",
        "systemInstruction",
    ):
        assert absent not in msg


def test_protocol_client_messages_exact():
    pcm = bytes(range(256)) * 5
    audio = json.loads(p.audio_message(pcm))
    assert audio == {
        "realtimeInput": {
            "audio": {"data": base64.b64encode(pcm).decode(), "mimeType": "audio/pcm;rate=16000"}
        }
    }
    jpeg = b"\xff\xd8\xff\xe0JFIF"
    assert json.loads(p.video_message(jpeg)) == {
        "realtimeInput": {
            "video": {"data": base64.b64encode(jpeg).decode(), "mimeType": "image/jpeg"}
        }
    }
    with pytest.raises(ProtocolError):
        p.video_message(jpeg, "image/gif")
    assert p.text_input("hi") == {"realtimeInput": {"text": "hi"}}
    assert p.activity_start() == {"realtimeInput": {"activityStart": {}}}
    assert p.activity_end() == {"realtimeInput": {"activityEnd": {}}}
    assert p.audio_stream_end() == {"realtimeInput": {"audioStreamEnd": True}}
    assert p.tool_response([{"id": "c1", "name": "f", "response": {"result": 1}, "x": 2}]) == {
        "toolResponse": {
            "functionResponses": [{"id": "c1", "name": "f", "response": {"result": 1}}]
        }
    }
    with pytest.raises(ProtocolError):
        p.tool_response([{"name": "f", "response": {}}])
    with pytest.raises(ProtocolError):
        p.tool_response([{"id": "1", "name": "f", "response": "ok"}])
    assert p.client_content([("user", "hi")]) == {
        "clientContent": {
            "turns": [{"role": "user", "parts": [{"text": "hi"}]}],
            "turnComplete": True,
        }
    }
    assert p.encode({"a": "é"}) == '{"a":"é"}'
    assert p.encode("raw") == "raw"


def test_protocol_client_messages_match_the_sdk_types():
    """The official SDK's pydantic types (extra='forbid') accept every message we build."""
    types = sdk_types()
    setup = p.build_setup(
        p.SetupOptions(
            model="gemini-3.8-live",
            voice="Puck",
            system_instruction="x",
            temperature=0.2,
            function_declarations=[
                {
                    "name": "f",
                    "description": "d",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {"on": {"type": "BOOLEAN", "description": "x"}},
                        "required": ["on"],
                    },
                }
            ],
            resumption_handle="h",
            media_resolution="medium",
        )
    )
    messages = [
        setup,
        json.loads(p.audio_message(b"\0\0")),
        json.loads(p.video_message(b"\xff\xd8\xff")),
        p.text_input("t"),
        p.activity_start(),
        p.activity_end(),
        p.audio_stream_end(),
        p.tool_response([{"id": "1", "name": "f", "response": {"result": "ok"}}]),
        p.client_content([("user", "hi")]),
    ]
    # The SDK's setup type has no realtimeInputConfig (its converter adds it, as the wire
    # capture of the google-genai SDK's frames shows): check that part on its own type.
    realtime_config = setup["setup"].pop("realtimeInputConfig")
    types.RealtimeInputConfig.model_validate_json(json.dumps(realtime_config))
    for message in messages:
        types.LiveClientMessage.model_validate_json(json.dumps(message))


def srv(obj) -> bytes:
    return json.dumps(obj).encode()


def test_protocol_parse_every_field_of_one_message_in_order():
    pcm = b"\x01\x00\x02\x00"
    events = p.parse(
        srv(
            {
                "serverContent": {
                    "inputTranscription": {"text": "hi", "finished": True},
                    "modelTurn": {
                        "parts": [
                            {
                                "inlineData": {
                                    "mimeType": "audio/pcm;rate=24000",
                                    "data": base64.b64encode(pcm).decode(),
                                }
                            },
                            {
                                "inlineData": {
                                    "mimeType": "audio/pcm;rate=24000",
                                    "data": base64.b64encode(pcm[:2]).decode(),
                                }
                            },
                            {"text": "thinking", "thought": True},
                        ]
                    },
                    "outputTranscription": {"text": "Sure"},
                    "generationComplete": True,
                    "turnComplete": True,
                },
                "usageMetadata": {
                    "promptTokenCount": "90",
                    "responseTokenCount": 40,
                    "totalTokenCount": 130,
                },
            }
        )
    )
    assert events == [
        p.InputTranscription("hi", True),
        p.AudioChunk(pcm),
        p.AudioChunk(pcm[:2]),
        p.ModelText("thinking", True),
        p.OutputTranscription("Sure"),
        p.GenerationComplete(),
        p.TurnComplete(),
        p.Usage(90, 40, 130),
    ]


def test_protocol_parse_all_server_messages():
    assert p.parse(b'{"setupComplete":{}}') == [p.SetupComplete()]
    assert p.parse('{"serverContent":{"interrupted":true}}') == [p.Interrupted()]
    assert p.parse(
        srv({"serverContent": {"turnComplete": True, "turnCompleteReason": "NEED_MORE_INPUT"}})
    ) == [p.TurnComplete("NEED_MORE_INPUT")]
    assert p.parse(srv({"serverContent": {"waitingForInput": True}})) == [p.WaitingForInput()]
    assert p.parse(
        srv(
            {
                "toolCall": {
                    "functionCalls": [
                        {"id": "c1", "name": "f", "args": {"on": True}},
                        {"id": "c2", "name": "g"},
                    ]
                }
            }
        )
    ) == [p.ToolCall((p.FunctionCall("c1", "f", {"on": True}), p.FunctionCall("c2", "g", {})))]
    assert p.parse(srv({"toolCallCancellation": {"ids": ["c1"]}})) == [
        p.ToolCallCancellation(("c1",))
    ]
    assert p.parse(srv({"goAway": {"timeLeft": "9.5s"}})) == [p.GoAway(9.5)]
    assert p.parse(srv({"goAway": {}})) == [p.GoAway(None)]
    assert p.parse(srv({"sessionResumptionUpdate": {"newHandle": "h", "resumable": True}})) == [
        p.SessionResumptionUpdate("h", True)
    ]
    assert p.parse(srv({"sessionResumptionUpdate": {}})) == [p.SessionResumptionUpdate(None, False)]
    assert p.parse(srv({"usageMetadata": {"totalTokenCount": 5}})) == [p.Usage(0, 0, 5)]


def test_protocol_parse_snake_case_and_urlsafe_base64():
    data = base64.urlsafe_b64encode(b"\xfb\xff\xfe\xff").decode().rstrip("=")
    events = p.parse(
        srv(
            {
                "server_content": {
                    "model_turn": {
                        "parts": [
                            {"inline_data": {"mime_type": "audio/pcm;rate=24000", "data": data}}
                        ]
                    },
                    "turn_complete": True,
                },
                "usage_metadata": {"total_token_count": 3},
            }
        )
    )
    assert events == [p.AudioChunk(b"\xfb\xff\xfe\xff"), p.TurnComplete(), p.Usage(0, 0, 3)]
    assert p.parse(srv({"go_away": {"time_left": "1s"}})) == [p.GoAway(1.0)]


def test_protocol_parse_ignores_unknown_and_empty(caplog):
    caplog.set_level(logging.DEBUG, logger="pi_agent.protocol")
    assert p.parse(b"{}") == []
    assert p.parse(srv({"serverContent": {}})) == []
    assert p.parse(srv({"somethingNew": {"x": 1}})) == []
    assert "somethingNew" in caplog.text
    assert (
        p.parse(
            srv(
                {
                    "serverContent": {
                        "modelTurn": {
                            "parts": [
                                {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
                                {"executableCode": {"code": "x"}},
                            ]
                        }
                    }
                }
            )
        )
        == []
    )
    assert "image/png" in caplog.text


def test_protocol_parse_rejects_broken_json():
    with pytest.raises(ProtocolError, match="invalid JSON"):
        p.parse(b"{not json")
    with pytest.raises(ProtocolError, match="not an object"):
        p.parse(b"[1]")
    with pytest.raises(ProtocolError):
        p.parse(b"\xff\xfe")
    with pytest.raises(ProtocolError, match="base64"):
        p.parse(
            srv(
                {
                    "serverContent": {
                        "modelTurn": {
                            "parts": [{"inlineData": {"mimeType": "audio/pcm", "data": "a"}}]
                        }
                    }
                }
            )
        )


def test_protocol_parse_accepts_what_the_sdk_would_serialise():
    """Server messages built with the SDK's own types parse to the same events."""
    types = sdk_types()
    message = types.LiveServerMessage(
        server_content=types.LiveServerContent(
            model_turn=types.Content(
                parts=[
                    types.Part(
                        inline_data=types.Blob(data=b"\x01\x02", mime_type="audio/pcm;rate=24000")
                    )
                ]
            ),
            output_transcription=types.Transcription(text="hey"),
            turn_complete=True,
        ),
        usage_metadata=types.UsageMetadata(total_token_count=7),
    )
    wire = message.model_dump_json(by_alias=True, exclude_none=True)
    assert p.parse(wire) == [
        p.AudioChunk(b"\x01\x02"),
        p.OutputTranscription("hey"),
        p.TurnComplete(),
        p.Usage(0, 0, 7),
    ]
