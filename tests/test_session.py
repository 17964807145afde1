"""LiveSession against the fake Live server over real loopback sockets."""

from __future__ import annotations

import base64
import io
import logging
import queue

import pytest
import websocket

from pi_agent import protocol
from pi_agent.errors import (
    ClosedError,
    FatalSessionError,
    HandleRefusedError,
    RetryableSessionError,
)
from pi_agent.logs import add_secret, setup_logging
from pi_agent.session import Credentials, LiveSession, SessionEnded, classify_close
from pi_agent.sim.fake_live import FakeLiveServer, Reply

from .conftest import FAKE_KEY, TIMEOUT


@pytest.fixture
def server():
    with FakeLiveServer(api_key=FAKE_KEY) as srv:
        yield srv


class Events:
    """Collects what the session reports (on its reader thread)."""

    def __init__(self):
        self.q: queue.Queue = queue.Queue()

    def __call__(self, session, event):
        self.q.put(event)

    def next(self, kind, timeout=TIMEOUT):
        while True:
            event = self.q.get(timeout=timeout)
            if isinstance(event, kind):
                return event


def make_session(server, events, *, handle=None, model="gemini-3.8-live", key=FAKE_KEY, **kw):
    setup = protocol.build_setup(protocol.SetupOptions(model=model, resumption_handle=handle))
    return LiveSession(
        protocol.live_url(server.url),
        Credentials(api_key=key),
        setup,
        on_event=events,
        setup_timeout=5,
        **kw,
    )


def test_session_setup_handshake_and_key_in_header_only(server):
    events = Events()
    session = make_session(server, events)
    session.open()
    try:
        record = server.connection()
        assert record.path.endswith("v1beta.GenerativeService.BidiGenerateContent")
        assert record.query == {}
        assert record.headers["x-goog-api-key"] == FAKE_KEY
        assert FAKE_KEY not in session.url
        assert record.setup["model"] == "models/gemini-3.8-live"
        assert server.messages()[0].kind == "setup"
        assert session.ready.is_set() and session.is_open
        assert repr(session._credentials) == "Credentials(api_key=<redacted>)"
    finally:
        session.close()
    assert session.closed.wait(TIMEOUT)
    assert events.next(SessionEnded).error is None
    session.close()  # idempotent


def test_session_url_with_a_key_is_refused():
    with pytest.raises(ValueError, match="never in the URL"):
        LiveSession("ws://x/ws?key=abc", Credentials(api_key="abcd"), {}, on_event=print)


def test_session_push_to_talk_round_trip(server):
    server.replies.append(Reply(text="Hi there", input_transcription="hello"))
    events = Events()
    session = make_session(server, events)
    session.open()
    pcm = bytes(range(256)) * 5  # 640 B = 20 ms
    session.send(protocol.activity_start())
    for _ in range(3):
        session.send_audio(pcm)
    session.send(protocol.activity_end())
    assert events.next(protocol.InputTranscription).text == "hello"
    audio = events.next(protocol.AudioChunk)
    assert audio.rate == 24000 and len(audio.pcm) > 0
    assert events.next(protocol.TurnComplete)
    handle = events.next(protocol.SessionResumptionUpdate)
    assert handle.resumable and handle.handle
    subs = [m.sub for m in server.messages(kind="realtimeInput")]
    assert subs == ["activityStart", "audio", "audio", "audio", "activityEnd"]
    assert server.audio_bytes() == pcm * 3
    session.close()


def test_session_video_text_and_tool_response(server):
    events = Events()
    session = make_session(server, events)
    session.open()
    jpeg = b"\xff\xd8\xff\xe0" + b"\0" * 100
    session.send_video(jpeg)
    assert server.wait_for(lambda s: s.messages(sub="video"), TIMEOUT)
    body = server.messages(sub="video")[0].message["realtimeInput"]["video"]
    assert base64.b64decode(body["data"]) == jpeg and body["mimeType"] == "image/jpeg"
    call_id = server.call_tool("set_lamp", {"on": True})
    call = events.next(protocol.ToolCall).calls[0]
    assert (call.id, call.name, call.args) == (call_id, "set_lamp", {"on": True})
    session.send(
        protocol.tool_response(
            [{"id": call.id, "name": call.name, "response": {"result": {"on": True}}}]
        )
    )
    assert server.wait_tool_response(call_id, TIMEOUT)["response"] == {"result": {"on": True}}
    session.send(protocol.activity_start())
    session.send(protocol.text_input("what time is it"))
    session.send(protocol.activity_end())
    assert events.next(protocol.TurnComplete)
    assert [m.sub for m in server.messages(kind="realtimeInput")][-3:] == [
        "activityStart",
        "text",
        "activityEnd",
    ]
    session.close()


def test_session_video_newest_frame_wins(server):
    events = Events()
    session = make_session(server, events)
    session.open()
    frames = [b"\xff\xd8\xff" + bytes([i]) for i in range(3)]
    with session._cond:  # the writer cannot take a frame until all three were offered
        for frame in frames:
            session.send_video(frame)
    assert server.wait_for(lambda s: s.messages(sub="video"), TIMEOUT)
    session.send(protocol.text_input("x"))  # a later message proves nothing else was queued
    session.wait_drained(TIMEOUT)
    got = server.messages(sub="video")
    assert len(got) == 1
    assert base64.b64decode(got[0].message["realtimeInput"]["video"]["data"]) == frames[-1]
    assert session.video_dropped == 2
    session.close()


def test_session_unknown_model_is_fatal(server):
    with pytest.raises(FatalSessionError) as info:
        make_session(server, Events(), model="gemini-0-nope").open()
    assert info.value.code == 1008 and "not found" in str(info.value)
    assert not info.value.retryable


def test_session_bad_key_is_fatal_auth_and_never_shown(server):
    with pytest.raises(FatalSessionError) as info:
        make_session(server, Events(), key="wrong-key-123456").open()
    assert info.value.kind == "auth"
    assert "wrong-key-123456" not in str(info.value)


def test_session_stale_handle_is_refused(server):
    with pytest.raises(HandleRefusedError) as info:
        make_session(server, Events(), handle="no-such-handle").open()
    assert info.value.code == 1008 and info.value.retryable


def test_session_server_close_1011_is_retryable(server):
    events = Events()
    session = make_session(server, events)
    session.open()
    server.go_away(time_left_s=1, close_after_s=0.05)
    assert events.next(protocol.GoAway).time_left_s == 1.0
    error = events.next(SessionEnded).error
    assert isinstance(error, RetryableSessionError) and error.code == 1011
    with pytest.raises(ClosedError):
        session.send(protocol.activity_start())


def test_session_dropped_tcp_is_retryable(server):
    events = Events()
    session = make_session(server, events)
    session.open()
    server.drop()
    error = events.next(SessionEnded).error
    assert isinstance(error, RetryableSessionError) and error.kind == "network"


def test_session_malformed_message_is_skipped(server, caplog):
    events = Events()
    session = make_session(server, events)
    session.open()
    server.send_malformed()
    server.send({"goAway": {"timeLeft": "5s"}})
    assert events.next(protocol.GoAway).time_left_s == 5.0
    assert "skipping malformed server message" in caplog.text
    assert session.is_open
    session.close()


def test_session_keepalive_timeout_detects_a_silent_server():
    """A peer that completes setup then never answers anything (not even pongs)."""
    import socket
    import threading

    from websockets.sync.server import serve

    stop = threading.Event()

    def handler(conn):
        conn.recv()
        conn.send(b'{"setupComplete":{}}')
        conn.socket.settimeout(None)
        stop.wait(10)  # say nothing more; websockets' own pongs are off below

    with serve(handler, "127.0.0.1", 0, ping_interval=None) as srv:
        port = srv.socket.getsockname()[1]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        events = Events()
        session = LiveSession(
            f"ws://127.0.0.1:{port}/ws",
            Credentials(api_key="k" * 8),
            {"setup": {}},
            on_event=events,
            keepalive_interval=0.2,
            keepalive_timeout=0.5,
        )
        session.open()
        # The server's library still answers pings, so silence it at the socket level.
        for conn in list(srv.connections):
            conn.socket.shutdown(socket.SHUT_WR)
        error = events.next(SessionEnded).error
        stop.set()
        srv.shutdown()
    assert error is not None and error.retryable


def test_session_key_redacted_from_websocket_trace_logging(server):
    stream = io.StringIO()
    setup_logging("DEBUG", stream=stream)
    add_secret(FAKE_KEY)
    trace = io.StringIO()
    websocket.enableTrace(True, handler=logging.StreamHandler(trace))
    try:
        session = make_session(server, Events())
        session.open()
        session.close()
    finally:
        websocket.enableTrace(False)
    assert "x-goog-api-key: [REDACTED]" in trace.getvalue()
    assert FAKE_KEY not in trace.getvalue()
    assert FAKE_KEY not in stream.getvalue()


def test_session_close_classification():
    assert isinstance(
        classify_close(1008, "BidiGenerateContent session not found"), HandleRefusedError
    )
    err = classify_close(1008, "Your API key was reported as leaked. Please use another API key.")
    assert not err.retryable and err.kind == "auth"
    setup = classify_close(1007, "Invalid JSON payload received.", during_setup=True)
    assert not setup.retryable and setup.kind == "config"
    # After setup a 1007 refused one of our messages: our mistake, not the key or model.
    mid = classify_close(1007, "Request contains an invalid argument.", during_setup=False)
    assert mid.retryable and mid.kind == "protocol"
    # On a resuming setup it means the session is gone: start fresh, once.
    resuming = classify_close(
        1007, "Request contains an invalid argument.", during_setup=True, resuming=True
    )
    assert isinstance(resuming, HandleRefusedError)
    model = classify_close(1008, "models/x is not found for API version v1beta", during_setup=True)
    assert model.kind == "model" and not model.retryable
    quota = classify_close(1011, "RESOURCE_EXHAUSTED: quota")
    assert quota.retryable and quota.kind == "quota"
    assert classify_close(1011, "Internal error occurred.").retryable
    assert classify_close(1006, "").retryable
