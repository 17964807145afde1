"""The real agent on a bad network: a TCP proxy between it and the fake Live server.

``pi_agent.sim.netproxy.FaultProxy`` refuses, resets, black-holes or delays
the connection on command, as flaky Wi-Fi does. Each test ends with the
user's whole turn (``activityEnd`` included) answered, or with the true cause
shown. Waits are on conditions with timeouts, never sleeps.
"""

from __future__ import annotations

import pytest

from pi_agent.agent import State
from pi_agent.sim.fake_live import FakeLiveServer, Reply
from pi_agent.sim.netproxy import FaultProxy

from .agent_harness import RunningAgent, agent_config
from .conftest import FAKE_KEY, TIMEOUT


@pytest.fixture
def server():
    with FakeLiveServer(api_key=FAKE_KEY) as srv:
        yield srv


@pytest.fixture
def proxy(server):
    with FaultProxy(("127.0.0.1", server.port)) as p:
        yield p


def faulty_config(proxy, server, tmp_path, **agent):
    config = agent_config(server, tmp_path, agent={"backoff_initial_s": 0.05, **agent})
    live = config.live.__class__(**{**config.live.__dict__, "endpoint": proxy.url})
    return config.__class__(**{**config.__dict__, "live": live})


def answered_turns(server) -> int:
    return server.counters["turns"]


def whole_turn_on_last_connection(server) -> bool:
    conn = server.connections[-1].id
    subs = [m.sub for m in server.messages(kind="realtimeInput", conn_id=conn)]
    return "activityStart" in subs and "activityEnd" in subs


def test_outage_while_the_button_is_held_loses_nothing(server, proxy, tmp_path):
    with RunningAgent(faulty_config(proxy, server, tmp_path)) as run:
        run.wait_state(State.READY)
        run.agent.press()
        run.wait_state(State.LISTENING)
        proxy.set_mode("refuse")
        proxy.reset_all()
        run.wait(lambda a: a.counters["reconnects"] >= 5, what="several failed reconnects")
        assert run.agent.state is State.LISTENING, "the user is still talking"
        run.agent.release()
        run.wait(lambda a: not a.talking, what="the release to end the turn")
        assert run.agent._pending.ended
        before = answered_turns(server)
        proxy.set_mode("forward")
        assert server.wait_for(lambda s: answered_turns(s) > before, TIMEOUT)
        assert whole_turn_on_last_connection(server)
        run.wait_state(State.READY)
        # The next press is in order on the new connection (no 1007, no lock-out).
        run.agent.press()
        run.wait_state(State.LISTENING)
        run.agent.release()
        assert server.wait_for(lambda s: answered_turns(s) > before + 1, TIMEOUT)
        assert server.counters["close_1007"] == 0


def test_a_question_goes_out_soon_after_a_long_outage(server, proxy, tmp_path):
    config = faulty_config(proxy, server, tmp_path, backoff_initial_s=1, backoff_max_s=30)
    with RunningAgent(config) as run:
        run.wait_state(State.READY)
        proxy.set_mode("refuse")
        proxy.reset_all()
        run.wait(lambda a: a.counters["reconnects"] >= 1, what="the drop")
        run.agent.say("are you still there")
        run.wait(lambda a: a.counters["reconnects"] >= 4, timeout=30, what="a long outage")
        assert run.agent.state is State.RECONNECTING
        assert run.agent.counters["lost_turns"] == 0

        def next_try_soon(a):
            wait = a.link.connect_at - a._clock() if a.link.connect_at else 0
            return wait <= config.agent.pending_backoff_max_s

        run.wait(next_try_soon, what="a short wait while the question waits")
        before = answered_turns(server)
        proxy.set_mode("forward")
        assert server.wait_for(lambda s: answered_turns(s) > before, TIMEOUT)
        assert whole_turn_on_last_connection(server)


def test_a_black_holed_link_is_noticed_while_an_answer_is_awaited(server, proxy, tmp_path):
    config = faulty_config(proxy, server, tmp_path)
    live = config.live.__class__(**{**config.live.__dict__, "response_timeout_s": 3})
    config = config.__class__(**{**config.__dict__, "live": live})
    with RunningAgent(config) as run:
        run.wait_state(State.READY)
        proxy.set_mode("blackhole")
        before = answered_turns(server)
        run.agent.say("hello?")
        run.wait(lambda a: a.counters["liveness_drops"] >= 1, what="the dead link noticed")
        assert "no answer" in (run.agent.last_error or "")
        proxy.set_mode("forward")
        assert server.wait_for(lambda s: answered_turns(s) > before, TIMEOUT)
        assert whole_turn_on_last_connection(server)


def test_a_reset_during_the_answer_resends_and_answers(server, proxy, tmp_path):
    server.replies.append(Reply(text="A long answer " * 20, pace=1.0))
    with RunningAgent(faulty_config(proxy, server, tmp_path)) as run:
        run.wait_state(State.READY)
        run.agent.say("tell me something long")
        assert server.wait_for(lambda s: s.counters["audio_out_bytes"] > 0, TIMEOUT)
        proxy.reset_all()
        run.wait(lambda a: a.counters["resent_turns"] >= 1, what="the resend")
        assert server.wait_for(lambda s: s.counters["turns"] >= 1, TIMEOUT)
        run.wait(lambda a: a._pending is None or a._pending.completed, what="the answer")
        assert whole_turn_on_last_connection(server)
        assert run.agent.counters["lost_turns"] == 0


def test_a_delayed_link_still_works(server, proxy, tmp_path):
    with RunningAgent(faulty_config(proxy, server, tmp_path)) as run:
        run.wait_state(State.READY)
        proxy.delay(0.2)
        before = answered_turns(server)
        run.agent.say("slowly")
        assert server.wait_for(lambda s: answered_turns(s) > before, TIMEOUT)
        run.wait_state(State.READY)


def test_a_bad_key_stays_shown_after_a_press(server, proxy, tmp_path):
    with RunningAgent(faulty_config(proxy, server, tmp_path), key="wrong-key-0000") as run:
        run.wait(lambda a: a.state is State.ERROR, what="the key error")
        assert run.agent.light_state == "error_auth"
        run.agent.press()
        run.agent.release()
        run.wait(lambda a: True)
        reply = run.agent.request({"cmd": "status"})
        assert reply["status"]["state"] == "error"
        assert reply["status"]["light"] == "error_auth"
        assert "API key" in reply["status"]["cause"]
        assert run.agent.light_state == "error_auth"
