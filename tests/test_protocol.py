"""The codec: every client message built, every server message parsed."""

from __future__ import annotations

import base64
import dataclasses
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
        p.Usage(90, 40, 130),  # before turnComplete: the finished turn includes its usage
        p.TurnComplete(),
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
    assert events == [p.AudioChunk(b"\xfb\xff\xfe\xff"), p.Usage(0, 0, 3), p.TurnComplete()]
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
        p.Usage(0, 0, 7),
        p.TurnComplete(),
    ]


# --------------------------------------------------------------------------- hostile input


def refused(frame: bytes | str, match: str | None = None) -> str:
    with pytest.raises(ProtocolError, match=match) as caught:
        p.parse(frame)
    return str(caught.value)


def test_protocol_parse_refuses_the_examples_of_the_fuzzing_report():
    """Each used to escape as something other than ProtocolError."""
    refused(b'{"usageMetadata":{"promptTokenCount":1e999}}', "promptTokenCount")
    refused(b'{"serverContent":{"modelTurn":{"parts":5}}}', "parts must be an array")
    refused(b'{"serverContent":{"modelTurn":{"parts":["junk"]}}}', r"parts\[0\] must be an obj")
    refused(b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested deeper than 64")
    refused(b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "nested deeper")
    refused(b"[" * 200_000, "nested deeper")  # unbalanced, still refused before decoding
    digits = b"9" * 4300
    refused(b'{"usageMetadata":{"totalTokenCount":' + digits + b"}}", "totalTokenCount")
    refused(b'{"usageMetadata":{"totalTokenCount":"' + digits + b'"}}', "totalTokenCount")
    refused(b'{"toolCall":{"functionCalls":[{"name":"f","args":{"v":1e999}}]}}', "args")
    refused(b'{"toolCall":{"functionCalls":[{"name":"f","args":{"v":' + digits + b"}}]}}")
    refused(b'{"toolCall":{"functionCalls":[{"name":"f","args":[1]}]}}', "args must be an obj")
    refused(b'{"toolCall":{"functionCalls":[{"id":"1"}]}}', "name must be a string")
    refused(b'{"goAway":{"timeLeft":"nans"}}', "timeLeft")
    refused(b'{"goAway":{"timeLeft":"1_0s"}}', "timeLeft")
    refused(b'{"goAway":{"timeLeft":1e999}}', "timeLeft")
    refused(b'{"serverContent":{"turnComplete":"yes"}}', "turnComplete must be true or false")
    refused(b'{"serverContent":{"outputTranscription":{"text":5}}}', "text must be a string")
    refused(b'{"serverContent":{"interrupted":true},"x":NaN}', "NaN")
    refused(b'{"toolCallCancellation":{"ids":[1]}}', "ids")
    for rate in (b"0", b"99999999999", "\u0661\u0666\u0660\u0660\u0660".encode(), b"x"):
        part = b'{"inlineData":{"mimeType":"audio/pcm;rate=' + rate + b'","data":"AAAA"}}'
        refused(b'{"serverContent":{"modelTurn":{"parts":[' + part + b"]}}}", "rate")


def test_protocol_parse_refuses_what_is_not_a_frame():
    refused(b"\xed\xa0\x80", "UTF-8")  # an encoded surrogate
    refused(b'{"a":"\xff"}', "UTF-8")
    refused(None, "bytes or str")  # type: ignore[arg-type]
    refused(b" " * (p.MAX_FRAME + 1), "at most")
    refused("\ufeff{}", "invalid JSON")


def test_protocol_parse_errors_are_fit_for_one_log_line():
    message = refused(
        b'{"serverContent":{"modelTurn":{"parts":[{"inlineData":'
        b'{"mimeType":"audio/pcm;rate=1\\n\\u001b[2J","data":"AAAA"}}]}}}'
    )
    assert "\n" not in message and "\x1b" not in message and "\\n" in message
    assert "123" not in refused(b'{"serverContent":{"turnComplete":"12345"}}')


def test_protocol_parse_keeps_what_is_merely_odd():
    # Brackets inside strings do not nest; a big number in an unknown field is ignored.
    text = "[{" * 5_000
    assert p.parse(srv({"serverContent": {"outputTranscription": {"text": text}}})) == [
        p.OutputTranscription(text)
    ]
    wire = b'{"serverContent":{"interrupted":true},"future":[' + b"9" * 5000 + b",1e999]}"
    assert p.parse(wire) == [p.Interrupted()]
    assert p.parse(b'{"x":' + b"[" * 60 + b"]" * 60 + b"}") == []
    # Lone surrogates (legal JSON escapes) become U+FFFD wherever text is kept.
    events = p.parse(
        b'{"serverContent":{"inputTranscription":{"text":"a\\ud800b"},'
        b'"turnComplete":true,"turnCompleteReason":"\\udfff"},'
        b'"toolCall":{"functionCalls":[{"id":"\\ud83d","name":"f",'
        b'"args":{"k\\udc00":["\\ud800",{"n":null,"b":false,"f":1.5,"i":-3}]}}]}}'
    )
    assert events == [
        p.InputTranscription("a\ufffdb"),
        p.TurnComplete("\ufffd"),
        p.ToolCall(
            (
                p.FunctionCall(
                    "\ufffd",
                    "f",
                    {"k\ufffd": ["\ufffd", {"n": None, "b": False, "f": 1.5, "i": -3}]},
                ),
            )
        ),
    ]
    json.dumps([dataclasses.asdict(e) for e in events], ensure_ascii=False).encode("utf-8")


def test_protocol_parse_bounds_function_call_args():
    def call(args: object) -> bytes:
        return srv({"toolCall": {"functionCalls": [{"id": "c", "name": "f", "args": args}]}})

    deep: object = 1
    for _ in range(p.MAX_ARG_DEPTH - 1):  # the args object itself is the first level
        deep = [deep]
    assert p.parse(call({"v": deep}))[0].calls[0].args == {"v": deep}
    refused(call({"v": [deep]}), "deeper than 32")
    refused(call({"v": list(range(p.MAX_ARG_VALUES))}), "over 10000 values")
    assert p.parse(call({"v": 2**53, "w": -(2**53)}))[0].calls[0].args == {
        "v": 2**53,
        "w": -(2**53),
    }
    refused(call({"v": 2**53 + 1}), "args")
    refused(call({"v": "x" * (p.MAX_TEXT + 1)}), "longer than")
    assert p.parse(call(None)) == [p.ToolCall((p.FunctionCall("c", "f", {}),))]


def test_protocol_parse_token_counts():
    def usage(**counts: object) -> list:
        return p.parse(srv({"usageMetadata": counts}))

    assert usage(promptTokenCount="90", responseTokenCount=5.0, totalTokenCount=2**53 - 1) == [
        p.Usage(90, 5, 2**53 - 1)
    ]
    assert usage(thoughtsTokenCount=7, toolUsePromptTokenCount="3") == [
        p.Usage(thoughts_tokens=7, tool_use_prompt_tokens=3)
    ]
    for bad in (-1, 2**53, 1.5, True, "-1", " 5", "0x10", "\u0665", [], {}):
        refused(srv({"usageMetadata": {"totalTokenCount": bad}}), "token count")


def test_protocol_parse_go_away_durations():
    assert p.parse(srv({"goAway": {"timeLeft": 3}})) == [p.GoAway(3.0)]
    assert p.parse(srv({"goAway": {"timeLeft": "0.250s"}})) == [p.GoAway(0.25)]
    for bad in ("-1s", "1e3s", "9.5", "infs", -1, 86_401, True, [], "1" * 30 + "s"):
        refused(srv({"goAway": {"timeLeft": bad}}), "goAway.timeLeft")


def test_protocol_interaction_status_and_session_id():
    assert p.parse(srv({"serverContent": {"interactionStatus": "IDLE", "turnComplete": True}})) == [
        p.InteractionStatus("IDLE"),
        p.TurnComplete(),
    ]
    assert p.parse(srv({"serverContent": {"interaction_status": "IN_PROGRESS"}})) == [
        p.InteractionStatus("IN_PROGRESS")
    ]
    assert p.parse(srv({"serverContent": {"interactionStatus": "SOMETHING_NEW"}})) == []
    refused(srv({"serverContent": {"interactionStatus": 1}}), "interactionStatus")
    assert p.parse(srv({"setupComplete": {"sessionId": "s-1"}})) == [p.SetupComplete("s-1")]
    assert p.parse(srv({"setupComplete": {"sessionId": "a b\n"}})) == [p.SetupComplete()]
    assert p.parse(srv({"setupComplete": {"sessionId": "s" * 257}})) == [p.SetupComplete()]
    refused(srv({"setupComplete": {"sessionId": 5}}), "sessionId")
    refused(srv({"setupComplete": True}), "setupComplete must be an object")


def test_protocol_valid_handle():
    for good in (
        "4f1c2b9e0d8a4e7f9a6b3c2d1e0f9a8b",
        "Cj8KDQjIhL+uBhD4/v7+AxIuY2xpZW50LWV2ZW50cy0xMjM0NTY=",
        "a.b_c~d+e/f=g:h-i",
        "h" * 4096,
    ):
        assert p.valid_handle(good), good
    for bad in ("", "h" * 4097, "a b", 'a"b', "a\\b", "a\nb", "\ud800", "é", "١", 5, None, b"ab"):
        assert not p.valid_handle(bad), bad


def test_protocol_parse_never_passes_an_unusable_handle():
    def update(handle: object) -> bytes:
        return srv({"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})

    assert p.parse(update("h-1")) == [p.SessionResumptionUpdate("h-1", True)]
    assert p.parse(update("")) == [p.SessionResumptionUpdate(None, True)]
    for bad in (5, 1.5, True, ["h"], {"h": 1}, "\ud800", "a b", "x" * 4097, "x" * 2_000_000):
        message = refused(update(bad), "newHandle|resumption handle")
        assert len(message) < 200
    refused(srv({"sessionResumptionUpdate": {"resumable": "yes"}}), "resumable")


def test_protocol_unknown_field_names_are_logged_escaped(caplog):
    caplog.set_level(logging.DEBUG, logger="pi_agent.protocol")
    assert p.parse(srv({"x\nERROR forged": 1, "y" * 10_000: 2})) == []
    (record,) = [r for r in caplog.records if "unknown server fields" in r.getMessage()]
    message = record.getMessage()
    assert "\n" not in message and "x\\nERROR forged" in message and len(message) < 200
