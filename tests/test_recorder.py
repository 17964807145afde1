"""TurnRecorder: real protocol frames and events in, WAV and JSON files out."""

from __future__ import annotations

import base64
import json
import logging
import queue
import resource
import signal
import stat
import threading
import wave
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pi_agent import protocol
from pi_agent.logs import REDACTED, add_secret
from pi_agent.recorder import TurnRecorder, _audio_frame, _sent_audio, scrub
from pi_agent.session import Credentials, LiveSession
from pi_agent.sim.fake_live import FakeLiveServer, Reply

from .conftest import FAKE_KEY, TIMEOUT

T0 = 1_700_000_000.5  # 2023-11-14T22:13:20.500Z


class Clock:
    """A wall clock the test moves: each call is one second later."""

    def __init__(self, start: float = T0):
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def pcm_of(n_bytes: int, seed: int = 1) -> bytes:
    return bytes((seed + i * 7) % 256 for i in range(n_bytes))


def read_wav(path: Path) -> tuple[int, int, int, bytes]:
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), w.getnchannels(), w.getsampwidth(), w.readframes(w.getnframes())


def turn_dirs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.startswith("turn-"))


def messages_of(turn_dir: Path) -> list[dict]:
    return json.loads((turn_dir / "messages.json").read_text(encoding="utf-8"))


def test_recorder_one_turn_writes_wavs_and_json(tmp_path):
    add_secret(FAKE_KEY)
    directory = tmp_path / "rec"
    recorder = TurnRecorder(directory, clock=lambda: T0)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    mic = [pcm_of(1280, 1), pcm_of(1280, 2), pcm_of(640, 3)]
    answer = [pcm_of(1920, 4), pcm_of(960, 5)]
    recorder.sent(protocol.audio_message(b"\1\2" * 100))  # before the turn: not recorded
    recorder.begin(1)
    recorder.sent(protocol.encode(protocol.activity_start()))
    recorder.sent(protocol.audio_message(mic[0]))
    recorder.sent(json.dumps(json.loads(protocol.audio_message(mic[1])), indent=1))
    recorder.sent(protocol.audio_message(mic[2]))
    recorder.sent(protocol.encode(protocol.text_input(f"my key is {FAKE_KEY}")))
    recorder.sent(protocol.encode({"apiKey": FAKE_KEY, "headers": {"x-goog-api-key": FAKE_KEY}}))
    recorder.sent(protocol.encode(protocol.activity_end()))
    recorder.received(protocol.InputTranscription("hello", finished=True))
    for chunk in answer:
        recorder.received(protocol.AudioChunk(chunk))
    recorder.received(protocol.OutputTranscription("Hi there"))
    recorder.received(protocol.SessionResumptionUpdate("secret-handle-1", True))
    recorder.received(protocol.TurnComplete())
    recorder.end(1)
    recorder.received(protocol.AudioChunk(b"\0" * 480))  # after the turn: not recorded
    assert recorder.flush(TIMEOUT)

    [turn] = turn_dirs(directory)
    assert turn.name == "turn-0001-20231114T221320.500Z"
    assert stat.S_IMODE(turn.stat().st_mode) == 0o700
    assert sorted(p.name for p in turn.iterdir()) == ["messages.json", "received.wav", "sent.wav"]
    for f in turn.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert read_wav(turn / "sent.wav") == (16000, 1, 2, b"".join(mic))
    assert read_wav(turn / "received.wav") == (24000, 1, 2, b"".join(answer))

    text = (turn / "messages.json").read_text(encoding="utf-8")
    for chunk in mic + answer:
        assert base64.b64encode(chunk).decode()[:40] not in text
    assert FAKE_KEY not in text and "secret-handle-1" not in text
    assert "apiKey" not in text and "x-goog-api-key" not in text and "headers" not in text
    messages = messages_of(turn)
    assert [m["dir"] for m in messages] == ["sent"] * 7 + ["received"] * 6
    times = [m["t"] for m in messages]
    assert times == sorted(times) and times[0] >= 0
    sent = [m["message"] for m in messages[:7]]
    assert sent[0] == {"realtimeInput": {"activityStart": {}}}
    assert sent[1] == {
        "realtimeInput": {"audio": {"data": {"bytes": 1280}, "mimeType": "audio/pcm;rate=16000"}}
    }
    assert sent[3]["realtimeInput"]["audio"]["data"] == {"bytes": 640}
    assert sent[4] == {"realtimeInput": {"text": f"my key is {REDACTED}"}}
    assert sent[5] == {}
    assert sent[6] == {"realtimeInput": {"activityEnd": {}}}
    received = [m["message"] for m in messages[7:]]
    assert received[0] == {"event": "InputTranscription", "text": "hello", "finished": True}
    assert received[1] == {"event": "AudioChunk", "pcm": {"bytes": 1920}, "rate": 24000}
    assert received[3] == {"event": "OutputTranscription", "text": "Hi there", "finished": False}
    assert received[4] == {"event": "SessionResumptionUpdate", "resumable": True}
    assert received[5] == {"event": "TurnComplete", "reason": None}
    recorder.close()
    assert recorder.turns_written == 1


def test_recorder_typed_turn_has_empty_valid_wavs(tmp_path):
    recorder = TurnRecorder(tmp_path, clock=Clock())
    recorder.begin(7)
    recorder.sent(protocol.encode(protocol.text_input("what time is it")))
    recorder.received(protocol.TurnComplete())
    recorder.close()  # close writes the turn still open and waits
    [turn] = turn_dirs(tmp_path)
    assert turn.name.startswith("turn-0007-")
    assert read_wav(turn / "sent.wav") == (16000, 1, 2, b"")
    assert read_wav(turn / "received.wav") == (24000, 1, 2, b"")
    assert [m["message"] for m in messages_of(turn)] == [
        {"realtimeInput": {"text": "what time is it"}},
        {"event": "TurnComplete", "reason": None},
    ]
    recorder.begin(8)  # closed: nothing more
    recorder.end(8)
    assert len(turn_dirs(tmp_path)) == 1


def test_recorder_begin_writes_the_open_turn_and_end_ignores_other_numbers(tmp_path):
    recorder = TurnRecorder(tmp_path, clock=Clock())
    recorder.begin(1)
    recorder.sent(protocol.audio_message(pcm_of(640)))
    recorder.end(2)  # not the open turn
    recorder.begin(2)  # barge-in: turn 1 is written as it was
    recorder.received(protocol.Interrupted())
    recorder.end(2)
    assert recorder.flush(TIMEOUT)
    first, second = turn_dirs(tmp_path)
    assert first.name.startswith("turn-0001-") and second.name.startswith("turn-0002-")
    assert read_wav(first / "sent.wav")[3] == pcm_of(640)
    assert [m["message"] for m in messages_of(second)] == [{"event": "Interrupted"}]
    recorder.close()


def test_recorder_keeps_the_newest_turns_only(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "turn-keep-me").mkdir()
    clock = Clock()
    recorder = TurnRecorder(tmp_path, max_turns=3, clock=clock)
    for n in range(1, 6):
        recorder.begin(n)
        recorder.sent(protocol.audio_message(pcm_of(64, n)))
        recorder.end(n)
        assert recorder.flush(TIMEOUT)
    recorder.close()
    assert [p.name[:9] for p in turn_dirs(tmp_path) if p.name != "turn-keep-me"] == [
        "turn-0003",
        "turn-0004",
        "turn-0005",
    ]
    # After a restart the numbers start again at 1: age, not number, decides.
    again = TurnRecorder(tmp_path, max_turns=3, clock=clock)
    again.begin(1)
    again.end(1)
    again.close()
    names = sorted(p.name[:9] for p in turn_dirs(tmp_path) if p.name != "turn-keep-me")
    assert names == ["turn-0001", "turn-0004", "turn-0005"]
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "turn-keep-me").is_dir()


def test_recorder_sweeps_a_half_written_turn(tmp_path):
    leftover = tmp_path / ".turn-0003-20231114T221320.500Z.tmp"
    leftover.mkdir()
    (leftover / "sent.wav").write_bytes(b"RIFF")
    TurnRecorder(tmp_path).close()
    assert list(tmp_path.iterdir()) == []


def test_recorder_unusable_directory_warns_once_and_never_raises(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="pi_agent.recorder"):
        recorder = TurnRecorder(blocker / "rec")
        for n in (1, 2):
            recorder.begin(n)
            recorder.sent(protocol.audio_message(pcm_of(64)))
            recorder.received(protocol.AudioChunk(pcm_of(96)))
            recorder.end(n)
        assert recorder.flush(TIMEOUT)
        recorder.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "recording stopped" in warnings[0]
    assert str(blocker / "rec") in warnings[0]
    assert not recorder.recording


def test_recorder_write_error_mid_turn_stops_recording_and_leaves_no_debris(tmp_path, caplog):
    """A file-size limit makes the kernel refuse the write (EFBIG), as a full disk would."""
    recorder = TurnRecorder(tmp_path, clock=Clock())
    recorder.begin(1)
    recorder.received(protocol.AudioChunk(pcm_of(48_000)))
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, old_limit[1]))
    try:
        with caplog.at_level(logging.WARNING, logger="pi_agent.recorder"):
            recorder.end(1)
            assert recorder.flush(TIMEOUT)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "recording stopped" in warnings[0]
    assert list(tmp_path.iterdir()) == []  # the half-written turn is gone
    recorder.begin(2)  # stopped for good: the disk is not hammered turn after turn
    recorder.end(2)
    recorder.close()
    assert list(tmp_path.iterdir()) == [] and recorder.turns_written == 0


def test_recorder_sent_and_received_from_two_threads(tmp_path):
    recorder = TurnRecorder(tmp_path, clock=Clock())
    recorder.begin(1)
    mic = [pcm_of(640, i) for i in range(300)]
    answer = [pcm_of(960, i + 50) for i in range(300)]
    start = threading.Barrier(2)

    def writer():
        start.wait(TIMEOUT)
        for chunk in mic:
            recorder.sent(protocol.audio_message(chunk))

    def reader():
        start.wait(TIMEOUT)
        for chunk in answer:
            recorder.received(protocol.AudioChunk(chunk))

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    recorder.end(1)
    recorder.close()
    [turn] = turn_dirs(tmp_path)
    assert read_wav(turn / "sent.wav")[3] == b"".join(mic)
    assert read_wav(turn / "received.wav")[3] == b"".join(answer)
    messages = messages_of(turn)
    assert sum(m["dir"] == "sent" for m in messages) == len(mic)
    assert sum(m["dir"] == "received" for m in messages) == len(answer)
    times = [m["t"] for m in messages]
    assert times == sorted(times)


_SECRET = "sk-test-" + "9" * 24
_keys = st.sampled_from(
    ["text", "data", "mimeType", "apiKey", "api_key", "x-goog-api-key", "Authorization", "n"]
)
_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from([_SECRET, f"say {_SECRET}!"])
)
_json = st.recursive(
    _leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150)
@given(_json)
def test_scrub_leaves_no_secret_key_field_or_body(value):
    add_secret(_SECRET)
    text = json.dumps(scrub(value), ensure_ascii=False)
    assert _SECRET not in text

    def walk(item):
        if isinstance(item, dict):
            for key, child in item.items():
                assert key.lower().replace("-", "").replace("_", "") not in (
                    "apikey",
                    "xgoogapikey",
                    "authorization",
                )
                if key == "data" and isinstance(child, str):
                    raise AssertionError(f"data left as {child!r}")
                walk(child)
        elif isinstance(item, list):
            for child in item:
                walk(child)

    walk(scrub(value))


@settings(max_examples=100)
@given(st.binary(max_size=4000), st.sampled_from([8000, 16000, 24000, 48000]))
def test_audio_fast_path_matches_the_json_parse(pcm, rate):
    frame = protocol.audio_message(pcm, rate)
    message = json.loads(frame)
    assert _audio_frame(frame) == (pcm, rate, scrub(message))
    assert _sent_audio(message) == (pcm, rate)
    spaced = json.dumps(message, indent=1)  # same message, other spelling: the slow path
    assert _audio_frame(spaced) is None


def test_recorder_with_a_live_session_against_the_fake_server(tmp_path):
    recorder = TurnRecorder(tmp_path, clock=Clock())
    events: queue.Queue = queue.Queue()

    def on_event(session, event):
        recorder.received(event)
        events.put(event)

    with FakeLiveServer(api_key=FAKE_KEY) as server:
        server.replies.append(Reply(text="Hi there", input_transcription="hello"))
        setup = protocol.build_setup(protocol.SetupOptions(model="gemini-3.8-live"))
        session = LiveSession(
            protocol.live_url(server.url),
            Credentials(api_key=FAKE_KEY),
            setup,
            on_event=on_event,
            setup_timeout=5,
        )
        session.on_sent = recorder.sent
        session.open()
        session.start()
        try:
            recorder.begin(1)
            mic = [pcm_of(640, i) for i in range(5)]  # 5 x 20 ms
            session.send(protocol.activity_start())
            for chunk in mic:
                session.send_audio(chunk)
            session.send(protocol.activity_end())
            answer = []
            while True:
                event = events.get(timeout=TIMEOUT)
                if isinstance(event, protocol.AudioChunk):
                    answer.append(event.pcm)
                if isinstance(event, protocol.TurnComplete):
                    break
            recorder.end(1)
            assert recorder.flush(TIMEOUT)
            assert server.audio_bytes() == b"".join(mic)
            while not isinstance(event, protocol.SessionResumptionUpdate):
                event = events.get(timeout=TIMEOUT)
            handles = server.known_handles()
        finally:
            session.close()
            recorder.close()
    [turn] = turn_dirs(tmp_path)
    rate, channels, width, frames = read_wav(turn / "sent.wav")
    assert (rate, channels, width, frames) == (16000, 1, 2, b"".join(mic))
    rate, channels, width, frames = read_wav(turn / "received.wav")
    assert (rate, channels, width) == (24000, 1, 2)
    assert frames == b"".join(answer) and len(frames) > 0
    text = (turn / "messages.json").read_text(encoding="utf-8")
    assert FAKE_KEY not in text
    messages = json.loads(text)
    sent = [m["message"]["realtimeInput"] for m in messages if m["dir"] == "sent"]
    assert [next(iter(s)) for s in sent] == ["activityStart"] + ["audio"] * 5 + ["activityEnd"]
    assert all(s["audio"]["data"] == {"bytes": 640} for s in sent[1:6])
    kinds = [m["message"]["event"] for m in messages if m["dir"] == "received"]
    assert "InputTranscription" in kinds and "OutputTranscription" in kinds
    assert kinds.count("AudioChunk") == len(answer)
    done = kinds.index("TurnComplete")  # a resumption update may follow it
    assert "AudioChunk" not in kinds[done:]
    assert handles and not any(handle in text for handle in handles)
