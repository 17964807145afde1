"""FakeLiveServer, driven over real sockets by websocket-client and by the official SDK."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import ssl
import subprocess
import sys
import threading
from typing import Any

import pytest
import websocket

from pi_agent.sim.fake_live import (
    CONSTRAINED_PATH,
    DEADLINE_EXPIRED,
    LIVE_PATH,
    FakeLiveServer,
    Reply,
)
from pi_agent.sim.malformed import MALFORMED_FRAMES

TIMEOUT = 5.0
KEY = "test-key-0123456789"
MODEL = "models/gemini-3.8-live"
PCM = b"\xfb\xff\xfe\xff" * 800  # 100 ms at 16 kHz; its base64 has "+" and "/" (URL-safe: - _)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
PTT_SETUP: dict[str, Any] = {
    "model": MODEL,
    "generationConfig": {"responseModalities": ["AUDIO"]},
    "systemInstruction": {"parts": [{"text": "Be brief."}]},
    "realtimeInputConfig": {"automaticActivityDetection": {"disabled": True}},
    "inputAudioTranscription": {},
    "outputAudioTranscription": {},
    "sessionResumption": {},
    "contextWindowCompression": {"slidingWindow": {}},
}


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def server():
    with FakeLiveServer(api_key=KEY, default_reply=Reply("Hi there.")) as srv:
        yield srv


def connect(srv: FakeLiveServer, path: str = LIVE_PATH, key: str | None = KEY, **kw: Any):
    header = [f"x-goog-api-key: {key}"] if key is not None else []
    return websocket.create_connection(srv.url + path, header=header, timeout=TIMEOUT, **kw)


def send(ws: websocket.WebSocket, message: dict[str, Any]) -> None:
    ws.send(json.dumps(message))


def recv(ws: websocket.WebSocket) -> dict[str, Any]:
    opcode, data = ws.recv_data()
    assert opcode == websocket.ABNF.OPCODE_BINARY, (opcode, data)
    return json.loads(data)


def recv_close(ws: websocket.WebSocket) -> tuple[int, str]:
    """Skip data frames until the close frame; return its code and reason."""
    while True:
        opcode, data = ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(data[:2], "big"), data[2:].decode()


def start(srv: FakeLiveServer, setup: dict[str, Any] | None = None, **kw: Any):
    ws = connect(srv, **kw)
    send(ws, {"setup": setup or PTT_SETUP})
    assert recv(ws) == {"setupComplete": {}}
    return ws


def audio(pcm: bytes = PCM) -> dict[str, Any]:
    data = base64.b64encode(pcm).decode()
    return {"realtimeInput": {"audio": {"data": data, "mimeType": "audio/pcm;rate=16000"}}}


def press(ws: websocket.WebSocket, pcm: bytes = PCM) -> None:
    send(ws, {"realtimeInput": {"activityStart": {}}})
    send(ws, audio(pcm))
    send(ws, {"realtimeInput": {"activityEnd": {}}})


def read_turn(ws: websocket.WebSocket) -> list[dict[str, Any]]:
    """Messages up to and including turnComplete."""
    out: list[dict[str, Any]] = []
    while not out or not out[-1].get("serverContent", {}).get("turnComplete"):
        out.append(recv(ws))
    return out


def setup_close(srv: FakeLiveServer, setup: dict[str, Any], **kw: Any) -> tuple[int, str]:
    ws = connect(srv, **kw)
    send(ws, {"setup": setup})
    try:
        return recv_close(ws)
    finally:
        ws.close()


def closed(srv: FakeLiveServer, n: int = 1):
    return lambda s: len(s.connections) >= n and s.connections[n - 1].closed_at is not None


# --- handshake ----------------------------------------------------------------------------------


def test_fake_live_wrong_path_is_404(server):
    with pytest.raises(websocket.WebSocketBadStatusException) as error:
        connect(server, path="/ws/google.ai.generativelanguage.v1beta.GenerativeService.Nope")
    assert error.value.status_code == 404
    assert server.connections == []


def test_fake_live_bad_or_missing_key_is_rejected_at_upgrade(server):
    with pytest.raises(websocket.WebSocketBadStatusException) as error:
        connect(server, key="wrong")
    assert error.value.status_code == 400
    body = json.loads(error.value.resp_body)
    assert body["error"]["status"] == "INVALID_ARGUMENT"
    assert body["error"]["message"] == "API key not valid. Please pass a valid API key."
    with pytest.raises(websocket.WebSocketBadStatusException) as error:
        connect(server, key=None)
    assert error.value.status_code == 403
    assert server.counters["http_400"] == server.counters["http_403"] == 1


def test_fake_live_accepts_query_key_v1_path_and_tokens(server):
    ws = websocket.create_connection(f"{server.url}{LIVE_PATH}?key={KEY}", timeout=TIMEOUT)
    ws.close()
    v1 = LIVE_PATH.replace(".v1beta.", ".v1.")
    connect(server, path=v1).close()
    server.tokens.add("auth_tokens/abc")
    ws = websocket.create_connection(
        server.url + CONSTRAINED_PATH, header=["Authorization: Token auth_tokens/abc"], timeout=5
    )
    ws.close()
    with pytest.raises(websocket.WebSocketBadStatusException) as error:
        websocket.create_connection(
            f"{server.url}{CONSTRAINED_PATH}?access_token=auth_tokens/nope", timeout=TIMEOUT
        )
    assert error.value.status_code == 401
    assert server.wait_for(closed(server, 3), TIMEOUT)
    assert [c.query for c in server.connections] == [{"key": KEY}, {}, {}]
    assert server.connections[2].headers["authorization"] == "Token auth_tokens/abc"


def test_fake_live_setup_complete_is_a_binary_frame(server):
    ws = connect(server)
    send(ws, {"setup": {"model": MODEL}})
    opcode, data = ws.recv_data()
    assert (opcode, json.loads(data)) == (websocket.ABNF.OPCODE_BINARY, {"setupComplete": {}})
    ws.close()
    assert server.wait_for(closed(server), TIMEOUT)
    record = server.connections[0]
    assert record.setup == {"model": MODEL}
    assert record.headers["x-goog-api-key"] == KEY
    assert (record.close_code, record.resumed_handle) == (1000, None)


def test_fake_live_text_frames_option():
    with FakeLiveServer(api_key=KEY, text_frames=True) as srv:
        ws = connect(srv)
        send(ws, {"setup": {"model": MODEL}})
        assert ws.recv_data() == (websocket.ABNF.OPCODE_TEXT, b'{"setupComplete":{}}')
        ws.close()


# --- setup validation ---------------------------------------------------------------------------


def test_fake_live_config_instead_of_setup_closes_1007(server):
    ws = connect(server)
    send(ws, {"config": {"model": MODEL, "responseModalities": ["AUDIO"]}})
    assert recv_close(ws) == (
        1007,
        'Invalid JSON payload received. Unknown name "config": Cannot find field.',
    )
    ws.close()
    assert server.wait_for(closed(server), TIMEOUT)
    assert server.connections[0].close_code == 1007
    assert server.messages()[0].kind == "config"


UNKNOWN_PARAM = {
    "model": MODEL,
    "tools": [
        {
            "functionDeclarations": [
                {
                    "name": "set_light",
                    "parameters": {
                        "type": "object",
                        "properties": {"on": {"type": "boolean", "readOnly": True}},
                    },
                }
            ]
        }
    ],
}


@pytest.mark.parametrize(
    ("setup", "code", "reason"),
    [
        (
            {"model": MODEL, "responseModalities": ["AUDIO"]},
            1007,
            "Invalid JSON payload received. Unknown name \"responseModalities\" at 'setup': "
            "Cannot find field.",
        ),
        (
            UNKNOWN_PARAM,
            1007,
            'Invalid JSON payload received. Unknown name "readOnly" at \'setup.tools[0].function_'
            "declarations[0].parameters.properties[0].value': Cannot find field.",
        ),
        (
            {"model": MODEL, "generationConfig": {"response_modalities": ["AUDIO"], "x": 1}},
            1007,
            "Invalid JSON payload received. Unknown name \"x\" at 'setup.generation_config': "
            "Cannot find field.",
        ),
        (
            {"model": MODEL, "systemInstruction": "Be brief."},
            1007,
            "Invalid JSON payload received. Invalid value at 'setup.system_instruction' "
            '(type.googleapis.com/google.ai.generativelanguage.v1beta.Content), "Be brief."',
        ),
        (
            {"model": MODEL, "realtimeInputConfig": {"activityHandling": "SOMETIMES"}},
            1007,
            "Invalid JSON payload received. Invalid value at 'setup.realtime_input_config."
            "activity_handling' (type.googleapis.com/google.ai.generativelanguage.v1beta."
            'ActivityHandling), "SOMETIMES"',
        ),
        (
            {"model": MODEL, "tools": [{"functionDeclarations": [{"name": "1light"}]}]},
            1007,
            "Request contains an invalid argument.",
        ),
        (
            {"model": MODEL, "tools": [{"functionDeclarations": [{"name": "set light"}]}]},
            1007,
            "Request contains an invalid argument.",
        ),
        (
            {"model": MODEL, "generationConfig": {"thinkingConfig": {"thinkingLevel": "LOW"}}},
            1007,
            "Request contains an invalid argument.",
        ),
        (
            {"model": MODEL, "proactivity": {"proactiveAudio": True}},
            1007,
            "Request contains an invalid argument.",
        ),
        (
            {"model": MODEL, "generationConfig": {"responseModalities": ["TEXT"]}},
            1007,
            "Request contains an invalid argument.",
        ),
        (
            {
                "model": "models/gemini-2.5-flash-native-audio-preview-12-2025",
                "generationConfig": {"enable_affective_dialog": True},
            },
            1007,
            'Invalid JSON payload received. Unknown name "enable_affective_dialog" at '
            "'setup.generation_config': Cannot find field.",
        ),
        (
            {"model": "models/gemini-9-live"},
            1008,
            "models/gemini-9-live is not found for API version v1beta, or is not supported for "
            "bidiGenerateContent. Call ListModels to see the list of available models and their "
            "supported methods.",
        ),
        (
            {"model": "gemini-3.8-live"},
            1008,
            "gemini-3.8-live is not found for API version v1beta, or is not supported for "
            "bidiGenerateContent. Call ListModels to see the list of available models and their "
            "supported methods.",
        ),
    ],
)
def test_fake_live_setup_errors(server, setup, code, reason):
    """Google's reasons, cut to the 123 bytes a close frame can carry (RFC 6455 section 5.5)."""
    assert setup_close(server, setup) == (code, reason.encode()[:123].decode())


def test_fake_live_message_shape_errors(server):
    ws = connect(server)
    send(ws, {"realtimeInput": {"text": "hi"}})  # before setup
    assert recv_close(ws) == (1007, "Request contains an invalid argument.")
    ws = start(server)
    send(ws, {"realtimeInput": {"text": "hi"}, "toolResponse": {}})
    assert recv_close(ws) == (
        1007,
        "Invalid JSON payload received. Oneof field 'message_type' is already set. "
        "Cannot set 'tool_response'",
    )
    ws = start(server)
    ws.send("{not json")
    assert recv_close(ws) == (1007, "Invalid JSON payload received. Unexpected token.")
    ws.close()
    assert server.counters["malformed_in"] == 1


def test_fake_live_reject_next(server):
    server.reject_next(1011, "The service is currently unavailable.")
    assert setup_close(server, PTT_SETUP) == (1011, "The service is currently unavailable.")
    start(server).close()  # only the next setup was rejected


# --- a push-to-talk turn ------------------------------------------------------------------------


def test_fake_live_ptt_turn(server):
    ws = start(server)
    press(ws)
    turn = read_turn(ws)
    update = recv(ws)

    assert turn[0] == {
        "serverContent": {"inputTranscription": {"text": "(100 ms of audio)", "finished": True}}
    }
    chunks = turn[1:-2]
    blobs = [m["serverContent"]["modelTurn"]["parts"][0]["inlineData"] for m in chunks]
    pcm = [base64.b64decode(blob["data"]) for blob in blobs]
    assert len(b"".join(pcm)) == 24 * 2 * 60 * len("Hi there.")  # 60 ms a character, 24 kHz
    assert {len(p) for p in pcm[:-1]} == {1920}  # 40 ms chunks
    assert {blob["mimeType"] for blob in blobs} == {"audio/pcm;rate=24000"}
    said = [m["serverContent"].get("outputTranscription", {}).get("text") for m in chunks]
    words = [w for w in said if w]
    assert words == ["Hi", " there."]
    assert turn[-2] == {"serverContent": {"generationComplete": True}}
    assert turn[-1]["serverContent"] == {"turnComplete": True}
    usage = turn[-1]["usageMetadata"]
    assert usage["promptTokenCount"] == 3  # 100 ms of audio at 25 tokens/s, rounded up
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["responseTokenCount"]
    assert update["sessionResumptionUpdate"]["resumable"] is True
    assert update["sessionResumptionUpdate"]["newHandle"] in server.known_handles()

    assert server.audio_bytes() == PCM
    assert [m.sub for m in server.messages(kind="realtimeInput")] == [
        "activityStart",
        "audio",
        "activityEnd",
    ]
    assert server.usage == [usage]
    ws.close()


def test_fake_live_text_and_client_content_turns(server):
    server.replies.extend(["One.", Reply("Two.", input_transcription="")])
    ws = start(server)
    send(ws, {"realtimeInput": {"text": "hello"}})  # manual VAD, outside an activity
    turn = read_turn(ws)
    assert "inputTranscription" not in turn[0]["serverContent"]  # no audio, nothing heard
    assert turn[0]["serverContent"]["outputTranscription"] == {"text": "One."}
    recv(ws)  # sessionResumptionUpdate
    turns = [{"role": "user", "parts": [{"text": "hi"}]}]
    send(ws, {"client_content": {"turns": turns, "turn_complete": True}})
    turn = read_turn(ws)
    assert turn[0]["serverContent"]["outputTranscription"] == {"text": "Two."}
    assert [r.kind for r in server.messages()] == ["setup", "realtimeInput", "clientContent"]
    ws.close()


def test_fake_live_snake_case_and_url_safe_base64_accepted(server):
    setup = {
        "model": MODEL,
        "generation_config": {
            "response_modalities": ["AUDIO"],
            "speech_config": {"voice_config": {"prebuilt_voice_config": {"voice_name": "Kore"}}},
        },
        "realtime_input_config": {
            "automatic_activity_detection": {"disabled": True, "silence_duration_ms": "500"},
            "activity_handling": "START_OF_ACTIVITY_INTERRUPTS",
        },
        "tools": [
            {
                "function_declarations": [
                    {
                        "name": "set_light",
                        "parameters": {
                            "type": "object",
                            "properties": {"on": {"type": "BOOLEAN", "description": "on?"}},
                            "required": ["on"],
                            "property_ordering": ["on"],
                        },
                        "behavior": "NON_BLOCKING",
                    }
                ]
            }
        ],
        "context_window_compression": {"trigger_tokens": 1000, "sliding_window": {}},
        "session_resumption": {},
    }
    ws = start(server, setup)
    data = base64.urlsafe_b64encode(PCM).decode().rstrip("=")
    assert "-" in data and "_" in data
    send(ws, {"realtime_input": {"activity_start": {}}})
    send(ws, {"realtime_input": {"audio": {"data": data, "mime_type": "audio/pcm;rate=16000"}}})
    video = base64.urlsafe_b64encode(JPEG).decode()
    send(ws, {"realtime_input": {"video": {"data": video, "mime_type": "image/jpeg"}}})
    send(ws, {"realtime_input": {"activity_end": {}}})
    read_turn(ws)
    assert server.audio_bytes() == PCM
    assert [m.sub for m in server.messages(kind="realtimeInput")] == [
        "activityStart",
        "audio",
        "video",
        "activityEnd",
    ]
    ws.close()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ({"model": MODEL}, {"realtimeInput": {"activityStart": {}}}),
        (PTT_SETUP, {"realtimeInput": {"audioStreamEnd": True}}),
        (PTT_SETUP, {"realtimeInput": {"activityStart": {}, "text": "hi"}}),
        (PTT_SETUP, {"realtimeInput": {"audio": {"data": "AAAA", "mimeType": "audio/pcm"}}}),
        (PTT_SETUP, {"realtimeInput": {"audio": {"data": "AAAA", "mimeType": "audio/wav"}}}),
        (PTT_SETUP, {"realtimeInput": {"video": {"data": "AAAAAA==", "mimeType": "image/jpeg"}}}),
        (PTT_SETUP, {"realtimeInput": {"video": {"data": "/9j/4A==", "mimeType": "image/gif"}}}),
    ],
    ids=["activity-with-vad", "stream-end-ptt", "two-fields", "odd-pcm", "wav", "magic", "gif"],
)
def test_fake_live_invalid_realtime_input_closes_1007(server, setup, message):
    ws = start(server, setup)
    send(ws, message)
    assert recv_close(ws) == (1007, "Request contains an invalid argument.")
    ws.close()


def test_fake_live_invalid_base64_closes_1007(server):
    ws = start(server)
    send(ws, {"realtimeInput": {"audio": {"data": "AA*A", "mimeType": "audio/pcm"}}})
    code, reason = recv_close(ws)
    assert (code, reason) == (
        1007,
        "Invalid JSON payload received. Invalid value at 'realtime_input.audio.data' "
        '(TYPE_BYTES), Base64 decoding failed for "AA*A"',
    )
    ws.close()


def test_fake_live_history_then_realtime_on_3_1(server):
    model = "models/gemini-3.1-flash-live-preview"
    ws = start(server, {**PTT_SETUP, "model": model})
    send(ws, {"clientContent": {"turnComplete": True}})  # 3.1: only as initial history
    assert recv_close(ws) == (1007, "Request contains an invalid argument.")
    ws.close()
    history = {"initialHistoryInClientContent": True}
    ws = start(server, {**PTT_SETUP, "model": model, "historyConfig": history})
    turns = [{"role": "user", "parts": [{"text": "hi"}]}, {"role": "model", "parts": []}]
    send(ws, {"clientContent": {"turns": turns, "turnComplete": True}})  # history: no reply
    send(ws, {"realtimeInput": {"mediaChunks": [{"data": "AAAAAA==", "mimeType": "audio/pcm"}]}})
    send(ws, {"realtimeInput": {"text": "and now?"}})
    turn = read_turn(ws)
    assert turn[0]["serverContent"]["outputTranscription"] == {"text": "Hi"}
    recv(ws)  # sessionResumptionUpdate: sent after the turn was counted
    assert server.counters["turns"] == 1
    send(ws, {"clientContent": {"turnComplete": True}})  # history is over
    assert recv_close(ws) == (1007, "Request contains an invalid argument.")
    ws.close()


def test_fake_live_pause_replies(server):
    server.pause_replies()
    ws = start(server)
    send(ws, {"realtimeInput": {"text": "hello"}})
    assert server.wait_for(lambda s: s.messages(sub="text"), TIMEOUT)
    assert server.sent_messages("serverContent") == []
    server.resume_replies()
    assert read_turn(ws)[-1]["serverContent"] == {"turnComplete": True}
    ws.close()


def test_fake_live_automatic_vad_replies_after_audio_stream_end(server):
    ws = start(server, {"model": MODEL})
    send(ws, audio())
    send(ws, {"realtimeInput": {"audioStreamEnd": True}})
    turn = read_turn(ws)
    assert turn[-2] == {"serverContent": {"generationComplete": True}}
    ws.close()


# --- tools --------------------------------------------------------------------------------------


def test_fake_live_tool_call_round_trip(server):
    server.replies.append(Reply("Done.", tool_calls=[("set_light", {"on": True})]))
    ws = start(server)
    press(ws)
    assert "inputTranscription" in recv(ws)["serverContent"]
    call = recv(ws)["toolCall"]["functionCalls"][0]
    assert (call["name"], call["args"]) == ("set_light", {"on": True})
    response = {"id": call["id"], "name": "set_light", "response": {"status": "ok", "on": True}}
    send(ws, {"toolResponse": {"functionResponses": [response]}})
    turn = read_turn(ws)
    assert turn[0]["serverContent"]["outputTranscription"] == {"text": "Done."}
    assert server.tool_response(call["id"]) == response

    assert "sessionResumptionUpdate" in recv(ws)
    call_id = server.call_tool("get_time", {}, id="t-1")  # a call from the test itself
    call = {"id": "t-1", "name": "get_time", "args": {}}
    assert recv(ws) == {"toolCall": {"functionCalls": [call]}}
    response = {"id": call_id, "name": "get_time", "response": {"output": "12:00"}}
    send(ws, {"tool_response": {"function_responses": [response]}})
    assert server.wait_tool_response(call_id, TIMEOUT)["response"] == {"output": "12:00"}
    ws.close()


@pytest.mark.parametrize(
    ("response", "code", "reason"),
    [
        ({"name": "f", "response": {}}, 1007, "Request contains an invalid argument."),
        ({"id": "nope", "name": "f", "response": {}}, 1008, "Requested entity was not found."),
        ({"id": "c-1", "name": "g", "response": {}}, 1007, "Request contains an invalid argument."),
    ],
    ids=["missing-id", "unknown-id", "wrong-name"],
)
def test_fake_live_bad_tool_response(server, response, code, reason):
    ws = start(server)
    server.call_tool("f", {}, id="c-1")
    assert "toolCall" in recv(ws)
    send(ws, {"toolResponse": {"functionResponses": [response]}})
    assert recv_close(ws) == (code, reason)
    ws.close()


# --- 3.8 tool semantics: NON_BLOCKING, scheduling, re-calls, interactionStatus ------------------


def tool_setup(behavior: str | None = None, model: str = MODEL) -> dict[str, Any]:
    decl: dict[str, Any] = {"name": "set_light", "description": "Switch the light."}
    if behavior:
        decl["behavior"] = behavior
    return {**PTT_SETUP, "model": model, "tools": [{"functionDeclarations": [decl]}]}


def said(messages: list[dict[str, Any]]) -> str:
    return "".join(
        m["serverContent"].get("outputTranscription", {}).get("text", "")
        for m in messages
        if "serverContent" in m
    )


def answer(ws, call: dict[str, Any], result: dict[str, Any], **extra: Any) -> None:
    response = {"id": call["id"], "name": call["name"], "response": result, **extra}
    send(ws, {"toolResponse": {"functionResponses": [response]}})


def first_call(ws) -> dict[str, Any]:
    press(ws)
    assert "inputTranscription" in recv(ws)["serverContent"]
    return recv(ws)["toolCall"]["functionCalls"][0]


OK = {"status": "ok", "on": True}


@pytest.mark.parametrize("behavior", [None, "NON_BLOCKING"])
def test_fake_live_3_8_non_blocking_talks_on_then_speaks_when_idle(server, behavior):
    server.replies.append(Reply("The light is on.", tool_calls=[("set_light", {"on": True})]))
    ws = start(server, tool_setup(behavior))
    call = first_call(ws)
    interim = read_turn(ws)  # the model keeps talking while the tool runs
    assert said(interim) == "Let me do that."
    assert interim[-1]["serverContent"] == {"turnComplete": True}
    assert "sessionResumptionUpdate" in recv(ws)
    answer(ws, call, OK, scheduling="WHEN_IDLE")
    after = read_turn(ws)  # a model turn of its own once the result is in
    assert said(after) == "The light is on."
    assert after[-2] == {"serverContent": {"generationComplete": True}}
    assert server.wait_for(lambda s: s.counters["turns"] == 2, TIMEOUT)
    assert server.counters["tool_recalls"] == 0
    ws.close()


def test_fake_live_3_8_blocking_declared_holds_the_turn(server):
    server.replies.append(Reply("The light is on.", tool_calls=[("set_light", {"on": True})]))
    ws = start(server, tool_setup("BLOCKING"))
    call = first_call(ws)
    answer(ws, call, OK)
    turn = read_turn(ws)
    assert said(turn) == "The light is on."  # no interim: it waited for the result
    assert server.wait_for(lambda s: s.counters["turns"] == 1, TIMEOUT)
    ws.close()


def test_fake_live_3_8_interrupt_cuts_the_output_being_streamed(server):
    reply = Reply("The light is on.", tool_calls=[("set_light", {"on": True})], pace=1.0)
    reply.interim = "Let me do that, it may take a little while."  # ~2.6 s in real time
    server.replies.append(reply)
    ws = start(server, tool_setup())
    call = first_call(ws)
    assert "modelTurn" in recv(ws)["serverContent"]  # the interim is being spoken
    answer(ws, call, OK, scheduling="INTERRUPT")
    cut = read_turn(ws)
    assert cut[-2:] == [
        {"serverContent": {"interrupted": True}},
        {"serverContent": {"turnComplete": True}},
    ]
    assert len(cut) < 10, "cut short, not played out"
    assert "sessionResumptionUpdate" in recv(ws)
    assert said(read_turn(ws)) == "The light is on."
    assert server.counters["preempted"] == 1 and server.counters["interrupted"] == 0
    ws.close()


def test_fake_live_3_8_silent_result_says_nothing(server):
    server.replies.extend(
        [Reply("The light is on.", tool_calls=[("set_light", {"on": True})]), "Next answer."]
    )
    ws = start(server, tool_setup())
    call = first_call(ws)
    read_turn(ws)
    assert "sessionResumptionUpdate" in recv(ws)
    answer(ws, call, OK, scheduling="SILENT")
    assert server.wait_for(lambda s: s.counters["tool_responses"] == 1, TIMEOUT)
    press(ws)  # the next thing heard is the answer to the next question
    turn = read_turn(ws)
    assert said(turn) == "Next answer."
    ws.close()


def test_fake_live_3_8_will_continue_keeps_the_call_open(server):
    server.replies.append(Reply("It has finished.", tool_calls=[("set_light", {"on": True})]))
    ws = start(server, tool_setup())
    call = first_call(ws)
    read_turn(ws)
    assert "sessionResumptionUpdate" in recv(ws)
    answer(ws, call, {"status": "ok", "blinking": True}, scheduling="SILENT", willContinue=True)
    answer(ws, call, {"status": "ok", "finished": True}, scheduling="WHEN_IDLE")
    assert said(read_turn(ws)) == "It has finished."
    assert server.counters["tool_responses"] == 2
    answer(ws, call, OK)  # the call is closed now
    assert recv_close(ws) == (1008, "Requested entity was not found.")
    ws.close()


@pytest.mark.parametrize("behavior", ["BLOCKING", "NON_BLOCKING"])
@pytest.mark.parametrize(
    ("result", "recalls"),
    [
        ({"result": "ok"}, 2),  # no status: called twice more, then given up
        ({"error": "no such light"}, 2),
        ({"status": "error", "reason": "no such light"}, 2),  # retryable missing
        ({"status": "error", "reason": "no such light", "retryable": False}, 0),
        (OK, 0),
    ],
    ids=["bare-result", "bare-error", "half-error", "informative-error", "ok"],
)
def test_fake_live_3_8_recalls_a_tool_whose_result_is_not_informative(
    server, behavior, result, recalls
):
    server.replies.append(Reply("Done.", tool_calls=[("set_light", {"on": True})]))
    ws = start(server, tool_setup(behavior))
    call = first_call(ws)
    ids, heard = [call["id"]], ""
    answer(ws, call, result)
    while True:  # answer every call alike until the model says its answer
        message = recv(ws)
        if "toolCall" in message:
            call = message["toolCall"]["functionCalls"][0]
            assert (call["name"], call["args"]) == ("set_light", {"on": True})
            ids.append(call["id"])
            answer(ws, call, result)
        heard += said([message])
        if message.get("serverContent", {}).get("turnComplete") and heard.endswith("Done."):
            break
    assert len(ids) == recalls + 1
    assert server.counters["tool_recalls"] == recalls
    assert server.counters["tool_calls"] == recalls + 1
    ws.close()


def test_fake_live_extended_thinking_reports_in_progress_until_idle(server):
    light = Reply("The light is on.", tool_calls=[("set_light", {"on": True})])
    server.replies.extend([light, light, "No tools."])
    ws = start(server, tool_setup(model="models/gemini-3.8-live-extended-thinking"))
    call = first_call(ws)
    done = {"turnComplete": True, "interactionStatus": "IN_PROGRESS"}
    assert read_turn(ws)[-1]["serverContent"] == done  # the call still runs
    assert "sessionResumptionUpdate" in recv(ws)
    answer(ws, call, OK)  # no scheduling: WHEN_IDLE
    after = read_turn(ws)
    assert said(after) == "The light is on."
    assert after[-1]["serverContent"]["interactionStatus"] == "IDLE"
    assert "sessionResumptionUpdate" in recv(ws)

    call = first_call(ws)
    assert read_turn(ws)[-1]["serverContent"] == done
    assert "sessionResumptionUpdate" in recv(ws)
    answer(ws, call, OK, scheduling="SILENT")
    assert recv(ws) == {"serverContent": {"interactionStatus": "IDLE"}}  # nothing said

    press(ws)
    turn = read_turn(ws)
    assert said(turn) == "No tools."
    assert turn[-1]["serverContent"]["interactionStatus"] == "IDLE"
    ws.close()


def test_fake_live_3_1_holds_the_turn_and_never_recalls(server):
    server.replies.append(Reply("Done.", tool_calls=[("set_light", {"on": True})]))
    ws = start(server, tool_setup(model="models/gemini-3.1-flash-live-preview"))
    call = first_call(ws)
    answer(ws, call, {"result": "ok"})  # not informative, but 3.1 takes it
    turn = read_turn(ws)
    assert said(turn) == "Done." and turn[-1]["serverContent"] == {"turnComplete": True}
    assert server.counters["tool_recalls"] == 0 and server.counters["tool_calls"] == 1
    ws.close()
    closed_with = setup_close(
        server, tool_setup("NON_BLOCKING", model="models/gemini-3.1-flash-live-preview")
    )
    assert closed_with == (1007, "Request contains an invalid argument.")


# --- interruption, goAway, drops ----------------------------------------------------------------


def test_fake_live_barge_in(server):
    server.replies.append(Reply("x" * 50, pace=1.0))  # 3 s of audio, streamed in real time
    ws = start(server)
    press(ws)
    assert "inputTranscription" in recv(ws)["serverContent"]
    assert "modelTurn" in recv(ws)["serverContent"]
    send(ws, {"realtimeInput": {"activityStart": {}}})
    rest = read_turn(ws)
    assert rest[-2:] == [
        {"serverContent": {"interrupted": True}},
        {"serverContent": {"turnComplete": True}},
    ]
    assert all("modelTurn" in m["serverContent"] for m in rest[:-2])
    assert len(rest) < 10
    assert "sessionResumptionUpdate" in recv(ws)
    send(ws, audio())
    send(ws, {"realtimeInput": {"activityEnd": {}}})
    turn = read_turn(ws)  # the new turn is answered in full
    assert turn[-2] == {"serverContent": {"generationComplete": True}}
    assert server.counters["interrupted"] == 1
    ws.close()


def test_fake_live_barge_in_cancels_pending_tool_calls(server):
    server.replies.append(Reply("Done.", tool_calls=[("set_light", {"on": True})]))
    ws = start(server)
    press(ws)
    recv(ws)  # inputTranscription
    call_id = recv(ws)["toolCall"]["functionCalls"][0]["id"]
    send(ws, {"realtimeInput": {"text": "never mind"}})
    assert read_turn(ws) == [
        {"toolCallCancellation": {"ids": [call_id]}},
        {"serverContent": {"interrupted": True}},
        {"serverContent": {"turnComplete": True}},
    ]
    # A response that crossed the cancellation on the wire is ignored, not an error.
    late = {"id": call_id, "name": "set_light", "response": {}}
    send(ws, {"toolResponse": {"functionResponses": [late]}})
    assert "sessionResumptionUpdate" in recv(ws)
    assert "outputTranscription" in read_turn(ws)[0]["serverContent"]  # the text's reply
    ws.close()


def test_fake_live_go_away_then_1011(server):
    ws = start(server)
    server.go_away(time_left_s=1, close_after_s=0.05)
    assert recv(ws) == {"goAway": {"timeLeft": "1s"}}
    assert recv_close(ws) == (1011, DEADLINE_EXPIRED)
    ws.close()
    assert server.wait_for(closed(server), TIMEOUT)
    assert server.connections[0].close_code == 1011


def test_fake_live_go_away_every_rolls_connections(server):
    server.go_away_every(0.05, time_left_s=0.5, close_after_s=0.05)
    for _ in range(2):
        ws = start(server)
        assert recv(ws) == {"goAway": {"timeLeft": "0.500s"}}
        assert recv_close(ws)[0] == 1011
        ws.close()
    assert server.counters["go_aways"] == 2


def test_fake_live_close_and_drop(server):
    ws = start(server)
    server.close(1011, "Internal error occurred. " * 10)
    code, reason = recv_close(ws)
    assert code == 1011 and len(reason.encode()) == 123
    ws.close()
    ws = start(server)
    server.drop()
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        ws.recv_data()
    assert server.wait_for(closed(server, 2), TIMEOUT)
    assert server.connections[1].close_code == 1006


def test_fake_live_send_raw_and_malformed(server):
    ws = start(server)
    server.send({"serverContent": {"waitingForInput": True}})
    assert recv(ws) == {"serverContent": {"waitingForInput": True}}
    server.send("plain text")
    assert ws.recv_data() == (websocket.ABNF.OPCODE_TEXT, b"plain text")
    server.send_malformed()
    opcode, data = ws.recv_data()
    assert opcode == websocket.ABNF.OPCODE_BINARY
    with pytest.raises(json.JSONDecodeError):
        json.loads(data)
    ws.close()


def test_fake_live_sends_every_malformed_frame_verbatim(server):
    """The safety tests' catalogue goes out byte for byte, and the server keeps serving."""
    assert len(MALFORMED_FRAMES) >= 20
    assert len({name for name, _ in MALFORMED_FRAMES}) == len(MALFORMED_FRAMES)
    ws = start(server)
    for name, payload in MALFORMED_FRAMES:
        # send() blocks until the kernel takes a big frame: read meanwhile
        sender = threading.Thread(target=server.send_frame, args=(payload,))
        sender.start()
        assert ws.recv_data() == (websocket.ABNF.OPCODE_BINARY, payload), name
        sender.join(TIMEOUT)
    press(ws)
    assert read_turn(ws)[-1]["serverContent"]["turnComplete"]
    sent = server.sent_messages(conn_id=1)
    assert sum(s.message is None for s in sent) == len(MALFORMED_FRAMES)
    ws.close()


def test_fake_live_text_frame_with_invalid_utf8(server):
    ws = start(server)
    server.send_frame(b'{"setupComplete":{}}', binary=False)
    assert ws.recv_data() == (websocket.ABNF.OPCODE_TEXT, b'{"setupComplete":{}}')
    server.send_frame(dict(MALFORMED_FRAMES)["invalid-utf8"], binary=False)
    with pytest.raises(websocket.WebSocketException):  # websocket-client checks text frames
        ws.recv_data()
    ws.close()
    assert server.wait_for(closed(server), TIMEOUT)
    start(server).close()  # the server is unharmed
    assert server.counters["setups"] == 2


def test_fake_live_noise():
    with FakeLiveServer(api_key=KEY, noise=True, default_reply=Reply("Hello.")) as srv:
        ws = start(srv, {**PTT_SETUP, "sessionResumption": {}})
        assert recv(ws) == {}
        assert "sessionResumptionUpdate" in recv(ws)  # early, before any turn
        press(ws)
        turn = read_turn(ws)
        assert {} in turn and {"serverContent": {}} in turn
        ws.close()


# --- session resumption -------------------------------------------------------------------------


def test_fake_live_resumption(server):
    ws = start(server)
    send(ws, {"realtimeInput": {"text": "hi"}})
    read_turn(ws)
    handle = recv(ws)["sessionResumptionUpdate"]["newHandle"]
    ws.close()

    ws = start(server, {**PTT_SETUP, "sessionResumption": {"handle": handle}})
    ws.close()
    assert server.wait_for(closed(server, 2), TIMEOUT)
    assert server.connections[1].resumed_handle == handle

    bad = {**PTT_SETUP, "sessionResumption": {"handle": "no-such-handle"}}
    assert setup_close(server, bad) == (1008, "BidiGenerateContent session not found")
    server.forget_handles()
    again = {**PTT_SETUP, "sessionResumption": {"handle": handle}}
    assert setup_close(server, again) == (1008, "BidiGenerateContent session not found")


# --- TLS, CLI and the official SDK --------------------------------------------------------------


def test_fake_live_tls():
    with FakeLiveServer(api_key=KEY, tls=True) as srv:
        assert srv.url.startswith("wss://127.0.0.1:")
        with pytest.raises(ssl.SSLError):
            connect(srv)
        ws = connect(srv, sslopt={"ca_certs": srv.ca_file})
        send(ws, {"setup": {"model": MODEL}})
        assert recv(ws) == {"setupComplete": {}}
        ws.close()


def test_fake_live_cli():
    proc = subprocess.Popen(
        [sys.executable, "-m", "pi_agent.sim.fake_live", "--port", "0", "--api-key", KEY],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("ws://127.0.0.1:")
        header = [f"x-goog-api-key: {KEY}"]
        ws = websocket.create_connection(url + LIVE_PATH, header=header, timeout=TIMEOUT)
        send(ws, {"setup": {"model": MODEL}})
        assert recv(ws) == {"setupComplete": {}}
        ws.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
        err = proc.stderr.read()
        assert "conn 1: setup gemini-3.8-live" in err
        assert KEY not in err
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_fake_live_fidelity_with_official_sdk():
    """google-genai's own Live client must get through a whole session without one 1007."""
    genai = pytest.importorskip("google.genai")
    types = genai.types
    with FakeLiveServer(api_key=KEY, tls=True, default_reply=Reply("Hello there.")) as srv:
        srv.replies.extend(["Hello there.", Reply("On.", tool_calls=[("set_light", {"on": True})])])
        config = types.LiveConnectConfig(
            response_modalities=["AUDIO"],
            system_instruction="You are a test.",
            speech_config=types.SpeechConfig(
                voice_config=types.VoiceConfig(
                    prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name="Kore")
                )
            ),
            tools=[
                types.Tool(
                    function_declarations=[
                        types.FunctionDeclaration(
                            name="set_light",
                            description="Turn the LED on or off.",
                            behavior=types.Behavior.BLOCKING,
                            parameters=types.Schema(
                                type="OBJECT",
                                properties={"on": types.Schema(type="BOOLEAN")},
                                required=["on"],
                            ),
                        )
                    ]
                )
            ],
            input_audio_transcription=types.AudioTranscriptionConfig(),
            output_audio_transcription=types.AudioTranscriptionConfig(),
            realtime_input_config=types.RealtimeInputConfig(
                automatic_activity_detection=types.AutomaticActivityDetection(disabled=True)
            ),
            session_resumption=types.SessionResumptionConfig(),
            context_window_compression=types.ContextWindowCompressionConfig(
                sliding_window=types.SlidingWindow()
            ),
        )
        client = genai.Client(
            api_key=KEY,
            http_options={
                "base_url": srv.url.replace("wss://", "https://"),
                "api_version": "v1beta",
                "async_client_args": {"ssl": ssl.create_default_context(cafile=srv.ca_file)},
            },
        )

        async def session_script() -> dict[str, Any]:
            got: dict[str, Any] = {"audio": b"", "heard": "", "said": "", "calls": []}
            async with client.aio.live.connect(model="gemini-3.8-live", config=config) as session:
                await session.send_realtime_input(activity_start=types.ActivityStart())
                await session.send_realtime_input(
                    audio=types.Blob(data=PCM, mime_type="audio/pcm;rate=16000")
                )
                await session.send_realtime_input(activity_end=types.ActivityEnd())
                async for msg in session.receive():
                    got["audio"] += msg.data or b""
                    content = msg.server_content
                    if content and content.input_transcription:
                        got["heard"] += content.input_transcription.text
                    if content and content.output_transcription:
                        got["said"] += content.output_transcription.text
                await session.send_realtime_input(text="turn on the light")
                async for msg in session.receive():
                    if msg.tool_call:
                        for call in msg.tool_call.function_calls:
                            got["calls"].append((call.id, call.name, call.args))
                            await session.send_tool_response(
                                function_responses=[
                                    types.FunctionResponse(
                                        id=call.id, name=call.name, response={"status": "ok"}
                                    )
                                ]
                            )
                await session.send_realtime_input(
                    video=types.Blob(data=JPEG, mime_type="image/jpeg")
                )
                await session.send_client_content(
                    turns=types.Content(role="user", parts=[types.Part(text="thanks")]),
                    turn_complete=True,
                )
                async for _ in session.receive():
                    pass
            return got

        got = asyncio.run(session_script())
        assert srv.wait_for(closed(srv), TIMEOUT)

    assert srv.counters["close_1007"] == srv.counters["close_1008"] == 0
    record = srv.connections[0]
    assert record.path == LIVE_PATH and record.close_code == 1000
    assert record.headers["x-goog-api-key"] == KEY
    assert record.setup["realtimeInputConfig"] == {
        "automatic_activity_detection": {"disabled": True}
    }
    assert len(got["audio"]) == 24 * 2 * 60 * len("Hello there.")
    assert got["heard"] == "(100 ms of audio)"
    assert got["said"] == "Hello there."
    call_id = got["calls"][0][0]
    assert got["calls"] == [(call_id, "set_light", {"on": True})]
    assert srv.tool_response(call_id)["response"] == {"status": "ok"}
    assert srv.audio_bytes() == PCM
    assert [(m.kind, m.sub) for m in srv.messages()] == [
        ("setup", None),
        ("realtimeInput", "activityStart"),
        ("realtimeInput", "audio"),
        ("realtimeInput", "activityEnd"),
        ("realtimeInput", "text"),
        ("toolResponse", None),
        ("realtimeInput", "video"),
        ("clientContent", None),
    ]
    assert "realtime_input" in srv.messages(sub="audio")[0].message  # the SDK's snake_case
    assert srv.counters["turns"] == 3
