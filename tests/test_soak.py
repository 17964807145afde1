"""The soak (scripts/soak.py) in its short form, and the product bugs soaking found (fixed).

The short soak runs the same :class:`Soak` as ``scripts/soak``: a real Agent against the fake
server with goAway every 1.5 s, dropped connections, malformed messages and tool calls on the
mock lamp, and every network fault the proxy plays (resets between and during turns, an outage
the question waits through, a black hole while the answer is awaited, delay), and asserts what
the long one does except the RSS trend (too few turns for that).
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path

import pytest

from pi_agent.agent import State
from pi_agent.sim.fake_live import FakeLiveServer, Reply

from .agent_harness import RunningAgent, agent_config
from .conftest import FAKE_KEY, TIMEOUT

SOAK_PY = Path(__file__).resolve().parent.parent / "scripts" / "soak.py"


def _load_soak():
    spec = importlib.util.spec_from_file_location("pi_agent_soak_script", SOAK_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


soak = _load_soak()

SHORT = soak.SoakOptions(
    turns=30,
    go_away_every=1.5,
    drop_rate=0.25,
    malformed_rate=0.1,
    think_s=0.1,
    seed=2,
    fault_rate=0.4,
    refuse_s=(1.0, 2.0),
    blackhole_s=(1.0, 2.0),
    delay_turns=(1, 3),  # the dead link stays dead: noticed after response_timeout_s (3 s)
    turn_timeout=15.0,
    max_seconds=50.0,
)


@pytest.fixture
def server():
    with FakeLiveServer(api_key=FAKE_KEY) as srv:
        yield srv


def test_short_plan_covers_every_kind_of_trouble():
    plan = soak.make_plan(SHORT)
    drops = {turn.drop for turn in plan} - {None}
    assert drops == set(soak.DROP_MOMENTS)
    assert {turn.kind for turn in plan} == set(soak.TURN_KINDS)
    assert any(turn.tool for turn in plan) and any(turn.malformed for turn in plan)
    assert {turn.fault for turn in plan} - {None} == set(soak.FAULTS)
    assert any(turn.fault == "refuse" and turn.fault_at == 0 for turn in plan), (
        "an outage that the question has to wait through"
    )


def test_the_plan_is_the_seeds():
    again = soak.make_plan(SHORT)
    assert again == soak.make_plan(SHORT)
    other = soak.make_plan(soak.SoakOptions(**{**SHORT.__dict__, "seed": 3}))
    assert [t.fault for t in other] != [t.fault for t in again]


def test_short_soak_is_flat_and_loses_nothing():
    result = soak.Soak(SHORT).run()
    checks = {check.name: check for check in result.checks}
    for name in (
        "no harness failure",
        "every turn answered",
        "no turn lost",
        "never in ERROR for a network fault",
        "every black hole noticed",
        "answers match turns",
        "each turn sent once (plus resends)",
        "no client message rejected",
        "each tool call ran once",
        "agent exited cleanly",
        "threads flat",
        "fds flat",
        "threads back to baseline",
        "fds back to baseline",
    ):
        assert checks[name].ok, f"{name}: {checks[name].detail}"
    assert result.turns_answered == SHORT.turns
    assert result.counters["rollovers"] > 0, result.counters
    assert result.counters["lost_turns"] == 0
    assert result.turns_server_answered == result.turns_sent == SHORT.turns
    assert set(result.errors_shown) <= {"error_network"}, result.errors_shown
    assert result.harness["drops"] >= 3, result.harness
    assert all(result.faults[kind] >= 1 for kind in soak.FAULTS), result.faults
    assert result.faults["connections_reset"] >= 3, result.faults
    assert result.proxy["blackholed"] >= 1, result.proxy
    assert result.counters["liveness_drops"] >= result.faults["blackhole"], result.counters
    assert result.counters["resent_turns"] >= 3, result.counters
    assert result.end["new_threads"] == 0, result.leftover_threads
    assert result.end["new_fds"] == 0, result.leftover_fds


# --------------------------------------------------------------------------- product bugs
# Each was found by the soak against the old agent and is fixed in the new core; the tests
# stay so that it remains fixed. Names in the docstrings are the old agent's.


def test_press_release_turn_without_audio_is_answered_after_a_drop(server, tmp_path):
    """Was a bug: a push-to-talk turn with no mic audio vanishes when the connection drops.

    With ``audio.backend: none`` (or a missing/failed microphone) a press/release turn has
    no chunks and no text. ``Agent._flush_offline_work`` returns early for such a turn, so it
    is neither resent after the reconnect nor counted in ``lost_turns``: the user gets no
    answer, no error chime and the light says READY.
    """
    with RunningAgent(agent_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        server.pause_replies()
        run.agent.press()
        run.wait_state(State.LISTENING)
        run.agent.release()
        assert server.wait_for(lambda s: len(s.messages(sub="activityEnd")) == 1, TIMEOUT)
        server.drop()
        server.resume_replies()
        run.wait(
            lambda a: len(server.connections) == 2 and a.state is State.READY, what="reconnected"
        )
        answered = run.agent.wait_until(
            lambda a: (
                bool(server.sent_messages("sessionResumptionUpdate"))
                or a.counters["lost_turns"] > 0
            ),
            5.0,
        )
        assert answered, (
            "the turn was neither resent nor reported lost "
            f"(resent_turns={run.agent.counters['resent_turns']}, "
            f"client messages on the new connection: "
            f"{[m.sub or m.kind for m in server.messages(conn_id=2)]})"
        )


@pytest.fixture
def card(tmp_path):
    from pi_agent.sim.alsa import SimulatedSoundCard

    with SimulatedSoundCard(tmp_path / "alsa") as sim:
        yield sim


def test_go_away_while_the_answer_is_still_playing_rolls_over(server, card, tmp_path):
    """Was a bug: a goAway that comes while a finished answer is still playing is never acted on.

    The model's audio arrives faster than real time, so ``turnComplete`` (and the new handle)
    come while the speaker still plays and the agent is SPEAKING. ``_on_go_away`` then only
    sets ``_rollover_pending``, which is acted on at the *next* ``turnComplete``; nothing
    rolls over when playback ends. If the user says nothing before goAway's time is up, the
    server closes the connection (1011) and the agent has to reconnect (the light shows
    RECONNECTING). The soak with ``--audio`` sees most goAways end that way.
    """
    server.replies.append(Reply(text="A long answer.", audio=soak.tone(1500)))  # plays 1.5 s
    audio = {"backend": "pyaudio", "chimes": {"volume": 0.05}}
    config = agent_config(server, tmp_path, audio=audio)
    with RunningAgent(config) as run:
        run.wait_state(State.READY)
        run.agent.say("tell me something long")
        run.wait(
            lambda a: a.handle is not None and a.state is State.SPEAKING,
            what="the answer still playing after its turnComplete",
        )
        server.go_away(time_left_s=3, close_after_s=3)
        run.wait(
            lambda a: a.counters["rollovers"] > 0 or a.counters["reconnects"] > 0,
            what="a roll-over or a reconnect",
        )
        counters = run.agent.counters
        assert counters["rollovers"] == 1 and counters["reconnects"] == 0, (
            f"no roll-over before goAway's deadline: {counters['rollovers']} roll-overs, "
            f"{counters['reconnects']} reconnects, first connection closed with "
            f"{server.connections[0].close_code}"
        )


def test_tool_still_running_when_the_turn_is_resent_is_answered_properly(server, tmp_path):
    """Was a bug: the model re-asks a call that is still running -> no answer, then a stale id.

    A drop while a tool runs: the turn is resent and the model asks for the same call again.
    ``_on_tool_call`` finds the key in ``pending.tool_results``, but its value is still the
    ``{}`` "running" marker; the ``{"id": <new id>}`` it queues is refused by
    ``protocol.tool_response`` (ProtocolError, logged as "agent failed handling
    tool_response"), so the re-asked call is never answered. When the first run finishes, its
    response goes out with the *old* id on the new connection, which does not know it: the
    server closes with 1008 and the agent has to reconnect and resend once more. Expected:
    answer the new id with the running call's result once it is there, and never send a
    response on a connection that did not ask for it.
    """
    server.replies.extend([Reply(text="Toggled.", tool_calls=[("toggle_lamp", {})])] * 3)
    with RunningAgent(agent_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        gate = threading.Event()
        execute = run.agent.toolbox.execute

        def slow_execute(name, args):
            gate.wait(3.0)  # a slow device (well inside the tool's 5 s timeout)
            return execute(name, args)

        run.agent.toolbox.execute = slow_execute
        run.agent.say("toggle the lamp")
        run.wait_state(State.TOOL_RUNNING)
        server.drop()
        assert server.wait_for(
            lambda s: len(s.connections) >= 2 and bool(s.sent_messages("toolCall", conn_id=2)),
            TIMEOUT,
        ), "the resent turn's tool call"
        run.wait(lambda a: a.counters["tool_calls"] >= 2, what="the call asked again")
        gate.set()
        run.wait(
            lambda a: (
                len(server.sent_messages("sessionResumptionUpdate")) >= 1 and a.state is State.READY
            ),
            what="the turn answered",
        )
        rejected = [(c.id, c.close_code, c.close_reason) for c in server.connections[1:]]
        assert all(code in (None, 1000) for _, code, _ in rejected), rejected
        assert lamp_toggled_once(run)


def lamp_toggled_once(run: RunningAgent) -> bool:
    return run.factory.pin(23).state == 0  # active low: on


def test_malformed_server_messages_are_counted(server, tmp_path):
    """Was a bug (minor): ``counters["malformed"]`` (in ``pi-agent ctl status``) never moves.

    The session skips a message that is not JSON with a warning, but nothing tells the agent,
    so the counter it declares and reports stays 0 (the soak sends 20 and reads 0).
    """
    with RunningAgent(agent_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        server.send_malformed()
        run.agent.say("still there?")
        run.wait(
            lambda a: (
                bool(server.sent_messages("sessionResumptionUpdate")) and a.state is State.READY
            ),
            what="a reply after the garbage",
        )
        assert run.status()["counters"]["malformed"] == 1
