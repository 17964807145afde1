"""The agent end to end with sound: real PyAudio on a simulated ALSA card, an
espeak-ng phrase as the user's voice, the fake Live server, mock GPIO pins.
"""

from __future__ import annotations

import pytest

from pi_agent.agent import State
from pi_agent.sim.alsa import SimulatedSoundCard
from pi_agent.sim.fake_live import FakeLiveServer, Reply
from pi_agent.sim.speech import SpeechToolMissing, synthesize

from .agent_harness import RunningAgent, agent_config
from .conftest import FAKE_KEY, TIMEOUT

CHUNK_MS = 40
CHUNK_BYTES = 16000 * 2 * CHUNK_MS // 1000


@pytest.fixture(scope="module")
def phrase():
    try:
        return synthesize("turn on the kitchen lamp please")
    except SpeechToolMissing as exc:  # scripts/test installs espeak-ng; say so if it did not
        pytest.fail(str(exc))


@pytest.fixture
def server():
    with FakeLiveServer(api_key=FAKE_KEY) as srv:
        yield srv


@pytest.fixture
def card(tmp_path):
    with SimulatedSoundCard(tmp_path / "alsa") as sim:
        yield sim


def audio_config(server, tmp_path, preroll_ms=200, **extra):
    return agent_config(
        server,
        tmp_path,
        audio={
            "backend": "pyaudio",
            "chunk_ms": CHUNK_MS,
            "preroll_ms": preroll_ms,
            # chimes off so the mic path is byte-exact (a chime blanks overlapping chunks)
            "chimes": {"press": False, "release": False, "connected": False, "error": False},
        },
        **extra,
    )


def speak_turn(run, card, pcm):
    """Hold, speak, keep holding a moment (as people do), release."""
    run.agent.press()
    run.wait_state(State.LISTENING)
    card.speak(pcm + bytes(16000 * 2 * 150 // 1000))
    assert card.wait_spoken(TIMEOUT)
    run.agent.release()


def turn_finished(server, n):
    return lambda a: (
        len(server.sent_messages("sessionResumptionUpdate")) >= n
        and a.state is State.READY
        and not a.speaker.is_playing
    )


def turn_audio(server, conn_id):
    return server.audio_bytes(conn_id=conn_id)


def test_agent_full_spoken_turn(server, card, tmp_path, phrase):
    reply = Reply(text="Okay, the lamp is on.", pace=0)
    server.replies.append(reply)
    with RunningAgent(audio_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        speak_turn(run, card, phrase)
        run.wait(turn_finished(server, 1), what="the answer to play out")
        metrics = run.agent.metrics[-1]
        assert card.wait_played(len(reply.pcm()), TIMEOUT)
        switches = run.agent.mic.switches  # reopened with one-chunk periods at the press
    assert switches >= 1
    conn = server.connections[0].id
    messages = server.messages(kind="realtimeInput", conn_id=conn)
    subs = [m.sub for m in messages]
    assert subs[0] == "activityStart" and subs[-1] == "activityEnd"
    assert set(subs[1:-1]) == {"audio"}
    got = turn_audio(server, conn)
    assert all(len(c) == CHUNK_BYTES for c in _chunks(messages))
    assert phrase in got, "the spoken phrase arrives byte for byte"
    assert len(got) == metrics.speech_bytes
    assert metrics.press_to_start_ms is not None and metrics.release_to_first_audio_ms is not None
    assert metrics.first_audio_to_play_ms is not None
    assert reply.pcm() in card.played_bytes(), "the model's audio reached the speaker intact"


def _chunks(messages):
    import base64

    return [
        base64.b64decode(m.message["realtimeInput"]["audio"]["data"])
        for m in messages
        if m.sub == "audio"
    ]


def test_agent_preroll_keeps_the_first_syllable(server, card, tmp_path, phrase):
    with RunningAgent(audio_config(server, tmp_path, preroll_ms=300)) as run:
        run.wait_state(State.READY)
        mic = run.agent.mic
        run.wait(lambda a: mic.chunks >= 6, what="the mic to run for a while")
        card.speak(phrase[:3200])  # 100 ms said just before the press
        assert card.wait_spoken(TIMEOUT)
        heard = mic.chunks + 2  # the mic has read all of it
        run.wait(lambda a: mic.chunks >= heard, what="the mic to hear it")
        run.agent.press()
        run.wait_state(State.LISTENING)
        run.agent.release()
        run.wait(turn_finished(server, 1), what="the answer")
    assert phrase[:3200] in turn_audio(server, server.connections[0].id)


def test_agent_barge_in_flushes_and_interrupts(server, card, tmp_path, phrase):
    server.replies.append(Reply(text="A long answer " * 10, pace=1.0))  # 3 s, real time
    server.replies.append(Reply(text="Sure.", pace=0))
    with RunningAgent(audio_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        speak_turn(run, card, phrase[:16000])
        run.wait(lambda a: a.state is State.SPEAKING, what="speaking")
        assert card.wait_played(24000, TIMEOUT)  # half a second played
        run.agent.press()  # barge in
        run.wait_state(State.LISTENING)
        at_press = card.written_bytes()
        assert server.wait_for(
            lambda s: any(
                "interrupted" in (m.message or {}).get("serverContent", {})
                for m in s.sent_messages("serverContent")
            ),
            TIMEOUT,
        )
        run.agent.release()
        run.wait(turn_finished(server, 2), what="the second answer")
        assert run.agent.transitions.count(State.LISTENING) == 2
    # after the flush, at most one device buffer of the old answer was still written
    assert card.written_bytes() - at_press < 3 * 24000 * 2  # the second (short) answer only


def test_agent_server_interrupted_flushes_the_speaker(server, card, tmp_path, phrase):
    server.replies.append(Reply(text="A long answer " * 10, pace=1.0))
    with RunningAgent(audio_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        speak_turn(run, card, phrase[:8000])
        run.wait(lambda a: a.state is State.SPEAKING, what="speaking")
        assert server.interrupt()
        run.wait(
            lambda a: a.state is State.READY and not a.speaker.is_playing,
            what="silence after interrupted",
        )
        assert run.agent.metrics[-1].interrupt_to_silence_ms is not None


@pytest.mark.parametrize("how", ["go_away", "drop"])
def test_agent_connection_lost_mid_utterance_loses_no_audio(server, card, tmp_path, phrase, how):
    with RunningAgent(audio_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        run.agent.say("hello")  # one turn first, so there is a handle to resume with
        run.wait(turn_finished(server, 1), what="first turn")
        run.agent.press()
        run.wait_state(State.LISTENING)
        card.speak(phrase + bytes(16000 * 2 * 150 // 1000))
        # the connection ends while the user is still talking
        assert server.wait_for(lambda s: len(s.messages(sub="audio")) >= 10, TIMEOUT)
        if how == "go_away":
            server.go_away(time_left_s=0.2, close_after_s=0.1)
        else:
            server.drop()
        assert card.wait_spoken(TIMEOUT)
        run.wait(lambda a: a.session is not None and a.session.name == "s2", what="reconnect")
        run.agent.release()
        run.wait(turn_finished(server, 2), what="the turn answered on the new connection")
        metrics = run.agent.metrics[-1]
    second = server.connections[-1]
    assert second.resumed_handle is not None
    delivered = turn_audio(server, second.id)
    assert len(delivered) == metrics.speech_bytes, "every chunk the mic produced was delivered"
    assert phrase in delivered
    subs = [m.sub for m in server.messages(kind="realtimeInput", conn_id=second.id)]
    assert subs[0] == "activityStart" and subs[-1] == "activityEnd"


def test_agent_hands_free_streams_with_the_half_duplex_gate(server, card, tmp_path):
    server.replies.append(Reply(text="Here is a reply of about a second.", pace=1.0))
    config = agent_config(
        server,
        tmp_path,
        live={"endpoint": server.url, "hands_free": True},
        ptt={"device": None},
        audio={
            "backend": "pyaudio",
            "chunk_ms": CHUNK_MS,
            "echo_tail_ms": 400,
            "chimes": {"press": False, "release": False, "connected": False},
        },
    )
    with RunningAgent(config) as run:
        run.wait_state(State.READY)
        setup = server.connection().setup
        assert setup["realtimeInputConfig"] == {"automaticActivityDetection": {"disabled": False}}
        assert server.wait_for(lambda s: len(s.messages(sub="audio")) >= 5, TIMEOUT)
        run.agent.say("hello")
        run.wait(lambda a: a.state is State.SPEAKING, what="speaking")
        run.wait(turn_finished(server, 1), what="the reply played out")
        drained = run.agent.speaker.last_drained
        assert server.wait_for(
            lambda s: any(m.t > drained + 0.5 for m in s.messages(sub="audio")), TIMEOUT
        ), "the mic opens again after the echo tail"
        assert run.agent.request({"cmd": "mute"}) == {"ok": True}
        assert server.wait_for(lambda s: s.messages(sub="audioStreamEnd"), TIMEOUT)
    subs = {m.sub for m in server.messages(kind="realtimeInput")}
    assert "activityStart" not in subs and "activityEnd" not in subs
    first_reply = next(
        s.t
        for s in server.sent_messages("serverContent")
        if "modelTurn" in s.message["serverContent"]
    )
    during = [
        m.t for m in server.messages(sub="audio") if first_reply + 0.15 < m.t < drained + 0.4 - 0.1
    ]
    assert during == [], "no mic audio while the speaker plays and for the tail"


def test_agent_debug_recording_of_one_turn(server, card, tmp_path, phrase):
    """agent.debug_recording_dir: what was sent and heard, as WAV files, and the messages."""
    import json
    import wave

    reply = Reply(text="Recorded.", pace=0)
    server.replies.append(reply)
    config = audio_config(server, tmp_path)
    agent = config.agent.__class__(
        **{**config.agent.__dict__, "debug_recording_dir": str(tmp_path / "rec")}
    )
    config = config.__class__(**{**config.__dict__, "agent": agent})
    with RunningAgent(config) as run:
        run.wait_state(State.READY)
        speak_turn(run, card, phrase)
        run.wait(turn_finished(server, 1), what="the answer")
        sent_bytes = run.agent.metrics[-1].speech_bytes
    (turn_dir,) = sorted((tmp_path / "rec").iterdir())
    with wave.open(str(turn_dir / "sent.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        assert w.getnframes() * 2 == sent_bytes
    with wave.open(str(turn_dir / "received.wav")) as w:
        assert w.getframerate() == 24000
        assert w.getnframes() * 2 == len(reply.pcm())
    messages = json.loads((turn_dir / "messages.json").read_text())
    assert any(m["dir"] == "sent" for m in messages)
    assert FAKE_KEY not in (turn_dir / "messages.json").read_text()
