"""The conversation state machine on fake parts, a fake link and a fake clock.

No sockets and no threads: every event is fed by the test, time moves only
when the test says so. One scenario per failure found from outside (issue
"conversation core"), plus the basics.
"""

from __future__ import annotations

from pi_agent import events as ev
from pi_agent import protocol
from pi_agent.agent import State
from pi_agent.errors import FatalSessionError, HandleRefusedError, RetryableSessionError
from pi_agent.session import classify_close

from .fakes import Conversation, conversation_config


def activity(session) -> list[str]:
    return [k for k in session.kinds() if k in ("activityStart", "activityEnd")]


def alternates(kinds: list[str]) -> bool:
    return all(k == ("activityStart" if i % 2 == 0 else "activityEnd") for i, k in enumerate(kinds))


def ready() -> Conversation:
    c = Conversation()
    c.connect()
    assert c.state is State.READY
    return c


def test_a_spoken_turn_is_bracketed_answered_and_shown():
    c = ready()
    c.press()
    assert c.state is State.LISTENING and c.light.shown[-1] == "listening"
    c.advance(0.5)
    c.release()
    assert c.state is State.THINKING
    kinds = c.session.kinds()
    assert kinds[0] == "activityStart" and kinds[-1] == "activityEnd"
    assert kinds.count("audio") == 5
    c.answer("It is noon.")
    assert c.state is State.READY
    assert {"event": "transcript", "turn": 1, "who": "model", "text": "It is noon."} in c.observed
    assert c.agent._pending is None  # a newer handle covers the turn


def test_typed_say_waits_for_the_answer():
    c = ready()
    replies = c.say("what time is it", wait=True)
    assert c.session.kinds() == ["activityStart", "text", "activityEnd"]
    assert replies == []
    c.answer("Noon.")
    assert replies[0]["ok"] and replies[0]["gemini"] == "Noon."


# --------------------------------------------------------------------------- failure 1


def test_failure1_outage_while_held_release_still_ends_the_turn_and_it_is_answered():
    c = ready()
    first = c.session
    c.press()
    c.advance(0.3)
    c.drop()
    for _ in range(6):  # many failed reconnects while the button is held
        c.until_connecting()
        c.refuse()
        assert c.state is State.LISTENING, "the user is still talking"
    c.advance(1.0)
    c.release()
    assert not c.agent.talking and not c.mic.capturing
    assert c.agent._pending.ended, "the release is recorded for the resend"
    c.until_connecting()
    second = c.connect()
    assert second.kinds()[0] == "activityStart" and second.kinds()[-1] == "activityEnd"
    assert activity(first) == ["activityStart"]  # it dropped before the release
    assert alternates(activity(second))
    assert c.state is State.THINKING
    c.answer()
    assert c.state is State.READY
    c.press()
    c.release()
    assert alternates(activity(second))


def test_failure1_release_while_offline_then_press_again_keeps_the_wire_valid():
    c = ready()
    c.press()
    c.drop()
    c.release()
    c.until_connecting()
    s = c.connect()
    c.answer(session=s)
    c.press()
    c.advance(0.2)
    c.release()
    assert alternates(activity(s))
    assert c.state is State.THINKING


def test_a_1007_after_setup_is_our_mistake_not_the_key():
    error = classify_close(1007, "Request contains an invalid argument.", during_setup=False)
    assert error.kind == "protocol" and error.retryable
    c = ready()
    c.say("x")
    c.drop(error)
    assert c.state is State.RECONNECTING
    assert c.link.fatal is None
    c.until_connecting()
    s = c.connect()
    assert s.kinds() == ["activityStart", "text", "activityEnd"]


# --------------------------------------------------------------------------- failure 2


def test_failure2_a_60s_outage_keeps_the_question_and_retries_often():
    c = ready()
    c.say("are you there")
    c.drop()
    for _ in range(60):
        c.until_connecting(limit=5)
        c.refuse()
    assert c.link.connect_at - c.clock.now <= c.config.agent.pending_backoff_max_s + 1e-9
    assert c.agent._pending is not None and c.agent.counters["lost_turns"] == 0
    assert c.state is State.RECONNECTING
    c.until_connecting(limit=c.config.agent.pending_backoff_max_s + 0.2)
    s = c.connect()
    assert s.kinds() == ["activityStart", "text", "activityEnd"]


def test_failure2_after_the_ttl_the_turn_is_reported_lost():
    c = ready()
    c.say("hello")
    c.drop()
    ttl = c.config.agent.pending_turn_ttl_s
    while c.clock.now < 1000 + ttl + 2:
        if c.link.connecting:
            c.refuse()
        c.advance(0.5)
    assert c.agent._pending is None
    assert c.agent.counters["lost_turns"] == 1
    assert "error" in c.speaker.chimes
    assert any(o["event"] == "error" and "offline" in o["detail"] for o in c.observed)


# --------------------------------------------------------------------------- failure 3


def test_failure3_a_stalled_outbound_link_is_closed_and_the_turn_resent():
    c = ready()
    c.press()
    c.advance(0.3)
    c.session.stalled_since = c.clock.now
    c.advance(c.config.live.outbound_stall_s + 1.1)
    assert c.sessions[0].aborted is not None and c.sessions[0].aborted.kind == "stall"
    c.release()
    c.until_connecting()
    s = c.connect()
    assert s.kinds()[0] == "activityStart" and s.kinds()[-1] == "activityEnd"


def test_failure3_a_flooding_mic_ends_the_turn_and_shows_a_mic_fault():
    c = ready()
    c.press()
    c.step(ev.PartState("mic", "fault", "data at 40x real time"))
    assert not c.agent.talking
    assert c.session.kinds()[-1] == "activityEnd"
    c.answer()
    assert c.light.shown[-1] == "error_audio"
    assert c.agent.problems()[0]["part"] == "mic"
    assert "error" in c.speaker.chimes


def test_failure3_a_stalled_mic_is_a_fault_and_the_turn_ends_cleanly():
    c = ready()
    c.press()
    c.advance(0.4)
    c.advance(1.5, mic=False)
    assert not c.agent.talking and c.mic.reopens == 1
    assert c.session.kinds()[-1] == "activityEnd"
    assert c.agent.part_states["mic"][0] == "stalled"


# --------------------------------------------------------------------------- failure 4


def test_failure4_a_bad_key_stays_shown_after_a_press():
    c = Conversation()
    c.refuse(FatalSessionError("API key not valid", kind="auth"))
    assert c.state is State.ERROR and c.light.shown[-1] == "error_auth"
    c.press()
    c.release()
    assert c.state is State.ERROR and c.light.shown[-1] == "error_auth"
    assert "error" in c.speaker.chimes
    c.advance(10)
    assert c.state is State.ERROR
    assert "key" in c.notifier.statuses[-1].lower()


def test_failure4_a_key_revoked_while_talking_fails_the_turn_at_once_naming_the_key():
    c = ready()
    c.press()
    c.drop()
    c.until_connecting()
    c.refuse(FatalSessionError("API key expired", kind="auth"))
    assert c.agent.counters["lost_turns"] == 1
    assert c.state is State.ERROR and c.light.shown[-1] == "error_auth"


# --------------------------------------------------------------------------- failure 5


def test_failure5_a_silent_link_is_noticed_while_an_answer_is_awaited():
    c = ready()
    c.say("hello")
    c.advance(c.config.live.response_timeout_s + 1.1)
    assert c.sessions[0].aborted is not None and c.sessions[0].aborted.kind == "timeout"
    assert c.state is State.RECONNECTING
    c.until_connecting()
    s = c.connect()
    assert s.kinds() == ["activityStart", "text", "activityEnd"]


def test_failure5_an_idle_link_is_not_dropped_for_silence():
    c = ready()
    c.advance(120)
    assert c.sessions[0].aborted is None and c.state is State.READY


# --------------------------------------------------------------------------- failure 6


def test_failure6_a_handle_right_after_setup_is_kept():
    c = ready()
    c.server(protocol.SessionResumptionUpdate("early-handle", True))
    assert c.link.handle == "early-handle"
    c.drop(classify_close(1011, "Internal error occurred."))
    c.until_connecting()
    assert c.connector.requests[-1].handle == "early-handle"


def test_bad_handles_are_never_stored():
    c = ready()
    for bad in ("has space", "x" * 5000, "\ud800", 'quo"te'):
        c.server(protocol.SessionResumptionUpdate(bad, True))
    assert c.link.handle is None


def test_a_refused_handle_starts_a_fresh_session_at_once():
    c = ready()
    c.server(protocol.SessionResumptionUpdate("h1", True))
    c.drop()
    c.until_connecting()
    assert c.connector.requests[-1].handle == "h1"
    c.refuse(HandleRefusedError("session not found", code=1008))
    c.step()
    assert c.link.connecting and c.connector.requests[-1].handle is None


# --------------------------------------------------------------------------- tools, barge-in


def test_a_tool_call_runs_once_across_a_resend():
    c = ready()
    c.say("lamp on")
    call = protocol.FunctionCall("id1", "set_lamp", {"on": True})
    c.server(protocol.ToolCall((call,)))
    assert c.state is State.TOOL_RUNNING
    c.drop()
    c.step(ev.ToolFinished({"id": "id1", "name": "set_lamp", "response": {"status": "ok"}}))
    c.until_connecting()
    s = c.connect()
    c.server(protocol.ToolCall((protocol.FunctionCall("id2", "set_lamp", {"on": True}),)))
    assert len(c.runner.submitted) == 1
    assert s.sent[-1]["toolResponse"]["functionResponses"][0]["id"] == "id2"


def test_a_press_during_an_answer_stops_it_and_its_audio_never_plays():
    c = ready()
    c.say("tell me a story")
    c.server(protocol.AudioChunk(b"\0\0" * 100))
    assert c.state is State.SPEAKING
    c.press()
    assert c.speaker.flushes >= 1
    played = len(c.speaker.played)
    c.server(protocol.AudioChunk(b"\0\0" * 100))  # late audio of the old answer
    assert len(c.speaker.played) == played
    c.server(protocol.Interrupted(), protocol.TurnComplete())
    assert c.state is State.LISTENING


def test_speech_the_model_starts_by_itself_is_played_and_logged():
    c = ready()
    c.server(protocol.AudioChunk(b"\0\0" * 100), protocol.OutputTranscription("Your timer."))
    assert c.speaker.played and c.state is State.SPEAKING
    c.server(protocol.TurnComplete())
    c.step(ev.SpeakerIdle())
    assert c.state is State.READY
    assert any(o.get("text") == "Your timer." for o in c.observed)


def test_interaction_status_keeps_the_light_busy_until_idle():
    InteractionStatus = protocol.InteractionStatus

    c = ready()
    c.say("think hard")
    c.server(protocol.TurnComplete(), InteractionStatus("IN_PROGRESS"))
    assert c.state is State.WORKING
    c.server(InteractionStatus("IDLE"))
    assert c.state is State.READY


def test_goaway_rolls_over_between_turns_and_keeps_the_handle():
    c = ready()
    c.server(protocol.SessionResumptionUpdate("h1", True), protocol.GoAway(5.0))
    c.step()
    assert c.link.connecting and c.connector.requests[-1].handle == "h1"
    old = c.session
    c.connect()
    assert old.closed and c.agent.counters["rollovers"] == 1


def test_malformed_messages_are_counted():
    from .fakes import MalformedMessage

    c = ready()
    c.server(MalformedMessage("bad"), MalformedMessage("bad"))
    assert c.agent.counters["malformed"] == 2 and c.state is State.READY


def test_hands_free_press_only_barges_in():
    c = Conversation(conversation_config(live={"hands_free": True}))
    c.connect()
    c.press()
    assert c.state is State.READY and "activityStart" not in c.session.kinds()


def test_stop_is_a_flag_and_a_pipe_write():
    c = ready()
    c.agent.stop()
    assert c.agent.stopping
    assert c.agent.inbox.get(0) is not None


def test_retryable_error_kinds_are_fixed_at_construction():
    assert RetryableSessionError("x", kind="quota").kind == "quota"
    assert not FatalSessionError("x", kind="model").retryable


# --------------------------------------------------------------------------- timers


def test_a_timer_rings_without_network_until_a_press_then_the_model_is_told():
    class Timer:
        label = "pasta"

    class Timers:
        def announcement(self, timer):
            return f"The '{timer.label}' timer has finished."

    c = Conversation()
    c.parts.timers = Timers()
    c.refuse()  # no network at all
    c.step(ev.TimerDue(Timer()))
    assert c.state is State.RINGING and c.light.shown[-1] == "ringing"
    c.advance(6, mic=False)
    assert c.speaker.chimes.count("timer") >= 2, "it keeps ringing"
    c.press()
    assert not c.agent.talking, "the press only stops the ringing"
    assert not c.agent.ringing
    assert c.agent._pending.text == "The 'pasta' timer has finished."
    c.until_connecting()
    s = c.connect()
    assert s.kinds() == ["activityStart", "text", "activityEnd"]


def test_an_unanswered_ringing_timer_stops_by_itself():
    class Timer:
        label = "tea"

    c = ready()
    c.step(ev.TimerDue(Timer()))
    c.advance(61, mic=False)
    assert not c.agent.ringing and c.state is State.READY
