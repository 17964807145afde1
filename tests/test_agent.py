"""The agent end to end: real Agent, real gpiozero (mock pins), real sockets, fake server.

These run with ``audio.backend: none`` (typed turns, the button without a mic);
tests/test_agent_audio.py adds the microphone and speaker on simulated ALSA.
"""

from __future__ import annotations

import itertools
import logging

import pytest

from pi_agent.agent import State
from pi_agent.control import send_command
from pi_agent.sim.fake_live import FakeLiveServer, Reply

from .agent_harness import RunningAgent, agent_config
from .conftest import FAKE_KEY, TIMEOUT


@pytest.fixture
def server():
    with FakeLiveServer(api_key=FAKE_KEY) as srv:
        yield srv


def subs(server, conn_id=None):
    return [m.sub for m in server.messages(kind="realtimeInput", conn_id=conn_id)]


def lamp_on(run: RunningAgent) -> bool:
    # active_high: false -> the relay input is driven low when the lamp is on
    return run.factory.pin(23).state == 0


def turns_done(server, n):
    """The server finished turn n and the agent has taken it in (ready again)."""
    return lambda a: (
        len(server.sent_messages("sessionResumptionUpdate")) >= n and a.state is State.READY
    )


def test_agent_connects_and_sends_a_valid_setup(server, tmp_path):
    with RunningAgent(agent_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        setup = server.connection().setup
        assert setup["realtimeInputConfig"] == {"automaticActivityDetection": {"disabled": True}}
        names = [d["name"] for d in setup["tools"][0]["functionDeclarations"]]
        assert names == ["set_lamp", "toggle_lamp"]
        assert setup["sessionResumption"] == {}
        assert setup["contextWindowCompression"] == {"slidingWindow": {}}
        assert run.status()["connection"]["connected"] is True
    assert run.exit_code == 0


def test_agent_typed_turn_and_transcripts(server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pi_agent")
    server.replies.append(Reply(text="It is noon.", input_transcription=""))
    with RunningAgent(agent_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        reply = send_command(str(tmp_path / "control.sock"), {"cmd": "say", "text": "time?"})
        assert reply == {
            "ok": True,
            "turn": 1,
            "you": "time?",
            "gemini": "It is noon.",
            "tools": [],
        }
        run.wait(lambda a: a.state is State.READY and a.turn == 1 and a.handle, what="turn done")
    assert subs(server) == ["activityStart", "text", "activityEnd"]
    assert "turn 1 you (typed): time?" in caplog.text
    assert "turn 1 gemini: It is noon." in caplog.text


def test_agent_button_press_release_makes_a_turn(server, tmp_path):
    with RunningAgent(agent_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        button = run.factory.pin(17)
        button.drive_low()
        run.wait_state(State.LISTENING)
        button.drive_high()
        run.wait(turns_done(server, 1), what="a reply")
        run.wait_state(State.READY)
        assert State.THINKING in run.agent.transitions
    assert subs(server) == ["activityStart", "activityEnd"]


def test_agent_tool_call_switches_a_pin_and_answers_with_its_id(server, tmp_path):
    server.replies.append(Reply(text="Done.", tool_calls=[("set_lamp", {"on": True})]))
    with RunningAgent(agent_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        assert not lamp_on(run)
        run.agent.say("turn on the lamp")
        run.wait(turns_done(server, 1), what="the turn")
        assert lamp_on(run)
        call = server.sent_messages("toolCall")[0].message["toolCall"]["functionCalls"][0]
        response = server.tool_response(call["id"])
        assert response["name"] == "set_lamp"
        assert response["response"]["status"] == "ok" and response["response"]["on"] is True
        assert run.status()["counters"]["tool_calls"] == 1
        lamp = run.factory.pin(23)
    # Shutdown drives the safe value (off = high for this active-low relay), then close()
    # releases the pin to an input, which the mock pin reads as 0.
    states = [p.state for p in lamp.states]
    assert states[-2:] == [1, 0], states


def test_agent_bad_tool_args_get_an_error_response_and_move_nothing(server, tmp_path):
    server.replies.append(Reply(text="Hmm.", tool_calls=[("set_lamp", {"on": "yes please"})]))
    server.replies.append(Reply(text="Hmm.", tool_calls=[("open_the_door", {})]))
    with RunningAgent(agent_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        run.agent.say("lamp")
        run.wait(turns_done(server, 1), what="first turn")
        run.agent.say("door")
        run.wait(turns_done(server, 2), what="second turn")
        assert not lamp_on(run)
        assert run.agent.state is State.READY
    calls = [
        m.message["toolCall"]["functionCalls"][0]["id"] for m in server.sent_messages("toolCall")
    ]
    errors = [server.tool_response(i)["response"]["reason"] for i in calls]
    assert errors[0] == "argument 'on' of set_lamp must be true or false, not 'yes please'"
    assert "open_the_door" in errors[1]


def test_agent_go_away_rolls_over_with_the_handle_without_error(server, tmp_path):
    with RunningAgent(agent_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        run.agent.say("one")
        run.wait(lambda a: a.handle is not None and a.state is State.READY, what="a handle")
        handle = run.agent.handle
        server.go_away(time_left_s=5, close_after_s=2)
        run.wait(
            lambda a: (
                len(server.connections) == 2 and a.session is not None and a.session.name == "s2"
            ),
            what="the new connection",
        )
        assert server.connections[1].resumed_handle == handle
        run.agent.say("two")
        run.wait(turns_done(server, 2), what="turn on the new connection")
        assert run.agent.counters["rollovers"] == 1
        bad = {State.ERROR, State.RECONNECTING, State.CONNECTING}
        assert not bad & set(list(run.agent.transitions)[2:]), run.agent.transitions
    assert subs(server, conn_id=server.connections[1].id) == [
        "activityStart",
        "text",
        "activityEnd",
    ]


def test_agent_drop_reconnects_and_resumes(server, tmp_path):
    with RunningAgent(agent_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        run.agent.say("one")
        run.wait(lambda a: a.handle is not None and a.state is State.READY, what="a handle")
        handle = run.agent.handle
        server.drop()
        run.wait(
            lambda a: len(server.connections) == 2 and a.state is State.READY, what="reconnected"
        )
        assert server.connections[1].resumed_handle == handle
        status = run.status()
        assert status["counters"]["reconnects"] == 1
        assert len(status["reconnect_durations_ms"]) == 1


def test_agent_drop_before_the_answer_resends_the_turn(server, tmp_path):
    with RunningAgent(agent_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        server.pause_replies()
        run.agent.say("are you there")
        server.wait_for(lambda s: "activityEnd" in subs(s), TIMEOUT)
        server.drop()
        server.resume_replies()
        run.wait(turns_done(server, 1), what="the resent turn answered")
        assert run.agent.counters["resent_turns"] == 1
    second = server.connections[-1].id
    texts = [
        m.message["realtimeInput"]["text"] for m in server.messages(sub="text", conn_id=second)
    ]
    assert texts == ["are you there"]
    assert subs(server, conn_id=second) == ["activityStart", "text", "activityEnd"]


def test_agent_tool_not_run_twice_when_the_turn_is_resent(server, tmp_path):
    """A toggle that ran before the drop must not toggle again when the model re-asks."""
    # The first answer is spoken in real time, so the drop lands in the middle of it.
    slow = Reply(text="I toggled the lamp for you, here you go.", pace=1.0)
    slow.tool_calls.append(("toggle_lamp", {}))
    server.replies.append(slow)
    server.replies.append(Reply(text="Toggled.", tool_calls=[("toggle_lamp", {})]))
    with RunningAgent(agent_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        run.agent.say("toggle the lamp")
        call_id = "function-call-1"
        assert server.wait_tool_response(call_id, TIMEOUT)
        assert lamp_on(run)
        server.drop()
        run.wait(turns_done(server, 1), what="the resent turn answered")
        assert lamp_on(run), "the lamp was toggled once, not twice"
        assert run.agent.counters["resent_turns"] == 1


def test_agent_refused_handle_falls_back_to_a_fresh_session(server, tmp_path, caplog):
    with RunningAgent(agent_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        run.agent.say("one")
        run.wait(lambda a: a.handle is not None and a.state is State.READY, what="a handle")
        server.forget_handles()
        server.drop()
        run.wait(
            lambda a: len(server.connections) == 3 and a.state is State.READY,
            what="a fresh session",
        )
        assert server.connections[1].close_code == 1008
        assert server.connections[2].resumed_handle is None
        assert "starting a fresh one" in caplog.text


def test_agent_fatal_model_error_stops_retrying(server, tmp_path, caplog):
    config = agent_config(server, tmp_path, live={"endpoint": server.url, "model": "gemini-9"})
    with RunningAgent(config) as run:
        run.wait_state(State.ERROR)
        status = run.status()
        assert status["connection"]["reconnecting_in_s"] > 20  # fatal_retry_s = 30
        assert "not found" in status["last_error"]
        assert len(server.connections) == 1
        assert run.agent.light is not None
    assert "Check live.model" in caplog.text


def test_agent_bad_key_shows_the_auth_error(server, tmp_path):
    with RunningAgent(agent_config(server, tmp_path), key="not-the-key") as run:
        run.wait_state(State.ERROR)
        assert run.agent.error_kind == "auth"
        assert "not-the-key" not in run.status()["last_error"]


def test_agent_malformed_server_message_is_skipped(server, tmp_path):
    with RunningAgent(agent_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        server.send_malformed()
        server.send({"serverContent": {}})
        run.agent.say("still there?")
        run.wait(turns_done(server, 1), what="a reply after garbage")
        assert run.agent.session is not None and run.agent.session.name == "s1"


def test_agent_control_socket_commands(server, tmp_path):
    sock = str(tmp_path / "control.sock")
    with RunningAgent(agent_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        assert send_command(sock, {"cmd": "press"}) == {"ok": True}
        run.wait_state(State.LISTENING)
        assert send_command(sock, {"cmd": "release"}) == {"ok": True}
        run.wait(turns_done(server, 1), what="reply")
        assert send_command(sock, {"cmd": "mute"}) == {"ok": True}
        assert send_command(sock, {"cmd": "status"})["status"]["muted"] is True
        assert send_command(sock, {"cmd": "press"}) == {"ok": True}  # ignored while muted
        assert send_command(sock, {"cmd": "unmute"}) == {"ok": True}
        reply = send_command(sock, {"cmd": "volume", "value": 0.5})
        assert reply == {"ok": False, "error": "there is no speaker (audio.backend is none)"}
        assert send_command(sock, {"cmd": "bogus"})["ok"] is False
        status = send_command(sock, {"cmd": "status"})["status"]
        assert status["state"] == "ready" and status["turn"] == 1
        assert status["devices"]["lamp"] is not None
    assert subs(server) == ["activityStart", "activityEnd"]


def test_agent_status_light_follows_states(server, tmp_path):
    with RunningAgent(agent_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        led = run.factory.pin(18)
        run.factory.pin(17).drive_low()
        run.wait_state(State.LISTENING)
        listening = led.state
        run.factory.pin(17).drive_high()
        run.wait(turns_done(server, 1), what="reply")
        run.wait_state(State.READY)
        assert listening != 0
    assert led.state == 0  # off after shutdown


def test_agent_camera_look_sends_one_fresh_frame_before_the_tool_response(server, tmp_path):
    server.replies.append(Reply(text="I see bars.", tool_calls=[("look", {})]))
    config = agent_config(
        server,
        tmp_path,
        camera={
            "backend": "synthetic",
            "mode": "on_demand",
            "width": 320,
            "height": 240,
            "media_resolution": "low",
        },
    )
    with RunningAgent(config) as run:
        run.wait_state(State.READY)
        setup = server.connection().setup
        names = [d["name"] for d in setup["tools"][0]["functionDeclarations"]]
        assert "look" in names
        assert setup["generationConfig"]["mediaResolution"] == "MEDIA_RESOLUTION_LOW"
        assert setup["contextWindowCompression"] == {"slidingWindow": {}}
        run.agent.say("what do you see")
        run.wait(turns_done(server, 1), what="the turn")
    order = [(m.kind, m.sub) for m in server.messages() if m.kind != "setup"]
    video_at = order.index(("realtimeInput", "video"))
    response_at = order.index(("toolResponse", None))
    assert video_at < response_at
    assert order.count(("realtimeInput", "video")) == 1
    frame = server.messages(sub="video")[0]
    call = server.sent_messages("toolCall")[0]
    assert frame.t >= call.t, "the frame was captured after the model asked"


def test_agent_camera_while_talking_sends_frames_only_while_held(server, tmp_path):
    config = agent_config(
        server,
        tmp_path,
        camera={
            "backend": "synthetic",
            "mode": "while_talking",
            "fps": 2,
            "width": 320,
            "height": 240,
        },
    )
    with RunningAgent(config) as run:
        run.wait_state(State.READY)
        setup = server.connection().setup
        assert "tools" not in setup or "look" not in str(setup["tools"])
        run.agent.press()
        assert server.wait_for(lambda s: len(s.messages(sub="video")) >= 3, TIMEOUT)
        run.agent.release()
        run.wait(turns_done(server, 1), what="the turn")
        run.agent.say("and now?")  # a turn without the button: no frames
        run.wait(turns_done(server, 2), what="the second turn")
    msgs = server.messages(kind="realtimeInput")
    start = next(m.t for m in msgs if m.sub == "activityStart")
    end = next(m.t for m in msgs if m.sub == "activityEnd")
    frames = [m.t for m in msgs if m.sub == "video"]
    assert all(start <= t <= end for t in frames), "frames only between press and release"
    assert frames[0] - start < 0.4, "the first frame right at the press"
    gaps = [b - a for a, b in itertools.pairwise(frames)]
    assert all(0.2 < g < 1.0 for g in gaps), gaps  # 2 fps, give or take a busy CI machine


def test_agent_toggle_button_and_a_release_from_the_control_socket_stay_in_step(server, tmp_path):
    config = agent_config(
        server, tmp_path, ptt={"device": "talk_button", "mode": "toggle", "min_press_ms": 0}
    )
    with RunningAgent(config) as run:
        run.wait_state(State.READY)
        button = run.factory.pin(17)
        button.drive_low()  # first press: start talking
        button.drive_high()
        run.wait_state(State.LISTENING)
        button.drive_low()  # second press: stop
        button.drive_high()
        run.wait(turns_done(server, 1), what="the first turn")
        button.drive_low()  # start again with the button...
        button.drive_high()
        run.wait_state(State.LISTENING)
        run.agent.release()  # ...but end it from elsewhere
        run.wait(turns_done(server, 2), what="the second turn")
        button.drive_low()  # the next press must start a turn, not end one
        button.drive_high()
        run.wait_state(State.LISTENING)


def test_agent_ephemeral_tokens_new_per_session_reused_for_resumption(server, tmp_path):
    counter = tmp_path / "n"
    counter.write_text("0")
    minter = tmp_path / "mint-token"
    minter.write_text(
        f'#!/bin/sh\nn=$(( $(cat {counter}) + 1 ))\necho $n > {counter}\necho "auth_tokens/t$n"\n'
    )
    minter.chmod(0o755)
    server.tokens.update({"auth_tokens/t1", "auth_tokens/t2", "auth_tokens/t3"})
    config = agent_config(
        server, tmp_path, live={"endpoint": server.url, "token_command": str(minter)}
    )
    run = RunningAgent(config, key=None)
    with run:
        run.wait_state(State.READY)
        run.agent.say("one")
        run.wait(turns_done(server, 1), what="a turn and a handle")
        server.drop()  # resumption: the same token
        run.wait(lambda a: len(server.connections) == 2 and a.state is State.READY, what="resumed")
        server.forget_handles()
        server.drop()  # the handle is refused: a fresh session with a fresh token
        run.wait(
            lambda a: len(server.connections) == 4 and a.state is State.READY,
            what="a fresh session",
        )
    auth = [c.headers.get("authorization") for c in server.connections]
    assert auth == [
        "Token auth_tokens/t1",
        "Token auth_tokens/t1",
        "Token auth_tokens/t1",
        "Token auth_tokens/t2",
    ]
    assert all("BidiGenerateContentConstrained" in c.path for c in server.connections)
    assert all("x-goog-api-key" not in c.headers for c in server.connections)


def test_agent_words_that_cannot_be_delivered_are_reported(server, tmp_path, caplog):
    with RunningAgent(agent_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        server.pause_replies()
        run.agent.say("are you there")
        assert server.wait_for(lambda s: "activityEnd" in subs(s), TIMEOUT)
        server.reject_next(1008, "Your API key was reported as leaked. Please use another API key.")
        server.drop()
        run.wait_state(State.ERROR)
        assert run.agent.counters["lost_turns"] == 1
        assert run.agent.error_kind == "auth"
    assert (
        "turn 1 could not be delivered (the session cannot be opened: auth error); please ask again"
        in caplog.text
    )


def test_ctl_watch_streams_a_typed_turn_with_a_tool_call(server, tmp_path):
    """The event stream integrations build on, from the real agent over the real socket."""
    import json
    import socket

    server.replies.append(Reply(text="Done.", tool_calls=[("set_lamp", {"on": True})]))
    with RunningAgent(agent_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        watcher = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        watcher.settimeout(TIMEOUT)
        watcher.connect(str(tmp_path / "control.sock"))
        watcher.sendall(b'{"cmd": "watch"}\n')
        stream = watcher.makefile("rb")
        json.loads(stream.readline())  # the subscription's own reply
        run.agent.say("lamp on please")
        seen: list[dict] = []
        while not any(e.get("event") == "turn" for e in seen):
            seen.append(json.loads(stream.readline()))
        watcher.close()
    kinds = [e["event"] for e in seen]
    assert "state" in kinds
    call = next(e for e in seen if e["event"] == "tool_call")
    assert call["name"] == "set_lamp" and call["args"] == {"on": True}
    result = next(e for e in seen if e["event"] == "tool_result")
    assert result["id"] == call["id"]
    said = {e["who"]: e["text"] for e in seen if e["event"] == "transcript"}
    assert said == {"user": "lamp on please", "model": "Done."}
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("turn")
