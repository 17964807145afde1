"""Tools on today's Live models, end to end: the real agent (mock pins) against the fake
server's 3.8 semantics (pi_agent.sim.fake_session): NON_BLOCKING calls the model talks over,
each scheduling value, willContinue, informative results (no re-calls), interactionStatus on
the extended-thinking model, and the "tool calls per user request" metric.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pi_agent.agent import State
from pi_agent.ledger import ToolLedger
from pi_agent.sim.fake_live import FakeLiveServer, Reply

from .agent_harness import BASE_DEVICES, BASE_TOOLS, RunningAgent, agent_config
from .conftest import FAKE_KEY, TIMEOUT

MODELS = ["gemini-3.8-live", "gemini-3.8-live-extended-thinking"]
EXTENDED = "gemini-3.8-live-extended-thinking"
DEVICES = {**BASE_DEVICES, "strip": {"kind": "pwm_led", "pin": 12, "min": 0.1, "max": 0.8}}


def lamp_tool(name: str, scheduling: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"Switch the lamp ({scheduling}).",
        "device": "lamp",
        "verb": "set",
        "behavior": "non_blocking",
        "scheduling": scheduling,
    }


TOOLS = [
    *BASE_TOOLS,  # set_lamp, toggle_lamp: instant verbs, BLOCKING by default
    lamp_tool("lamp_later", "when_idle"),
    lamp_tool("lamp_now", "interrupt"),
    lamp_tool("lamp_quietly", "silent"),
    {"name": "flash_lamp", "description": "Flash the lamp.", "device": "lamp", "verb": "blink"},
    {"name": "dim_strip", "description": "Dim the strip.", "device": "strip", "verb": "value"},
]
INTERIM = "Let me do that."
DONE = "The lamp is on."


@pytest.fixture
def server():
    with FakeLiveServer(api_key=FAKE_KEY) as srv:
        yield srv


def running(server, tmp_path, model: str) -> tuple[RunningAgent, list[dict[str, Any]]]:
    """An agent on ``model`` with the tools above, and the list its observations go to."""
    config = agent_config(
        server,
        tmp_path,
        live={"model": model},
        devices=DEVICES,
        tools=TOOLS,
        timers={"enabled": False},
    )
    run = RunningAgent(config)
    observed: list[dict[str, Any]] = []
    run.agent.parts.observers.append(observed.append)
    return run, observed


def said_by_model(observed: list[dict[str, Any]]) -> list[str]:
    return [o["text"] for o in observed if o.get("event") == "transcript" and o["who"] == "model"]


def lamp_on(run: RunningAgent) -> bool:
    return run.factory.pin(23).state == 0  # active low


def ask(run: RunningAgent, text: str) -> dict[str, Any]:
    """A typed turn; the reply comes with the turn's turnComplete."""
    reply = run.agent.request({"cmd": "say", "text": text}, timeout=TIMEOUT)
    assert reply["ok"], reply
    return reply


def in_order(expected: list[State], seq: list[State]) -> bool:
    it = iter(seq)
    return all(any(s is want for s in it) for want in expected)


def settled(server, turns: int):
    """The server finished ``turns`` turns and the agent shows ready (after IDLE)."""
    return lambda a: server.counters["turns"] >= turns and a.state is State.READY


# --------------------------------------------------------------------------- NON_BLOCKING


@pytest.mark.parametrize("model", MODELS)
def test_a_non_blocking_result_arrives_while_the_model_speaks(server, tmp_path, model, caplog):
    caplog.set_level(logging.INFO, logger="pi_agent")
    server.replies.append(Reply(DONE, tool_calls=[("lamp_later", {"on": True})], pace=1.0))
    run, observed = running(server, tmp_path, model)
    with run:
        run.wait_state(State.READY)
        start = len(run.agent.transitions)
        reply = ask(run, "lamp on please")
        assert reply["gemini"] == INTERIM  # the model talked on while the tool ran...
        assert reply["tools"][0]["result"] == {"status": "ok", "device": "lamp", "on": True}
        run.wait(lambda a: DONE in said_by_model(observed), what="the answer after the result")
        run.wait(settled(server, 2), what="ready again")
        assert lamp_on(run)
        status = run.status()
        assert status["state"] == "ready" and status["light"] == "ready"

    # ...and the result reached the model while it was still speaking its first answer.
    (response,) = server.messages(kind="toolResponse")
    ends = [m.t for m in server.sent_messages("serverContent") if "turnComplete" in str(m.message)]
    assert response.t < ends[0], "the result arrived after the first answer had ended"
    sent = response.message["toolResponse"]["functionResponses"][0]
    assert sent["scheduling"] == "WHEN_IDLE" and "willContinue" not in sent
    # Both answers, in order: the first as the turn, the second as the model's own.
    assert said_by_model(observed) == [INTERIM, DONE]
    assert f"turn 1 gemini: {INTERIM}" in caplog.text
    assert f"turn 1 gemini (unprompted): {DONE}" in caplog.text
    # What was shown: working on the tool, speaking, then between the two answers "ready"
    # (3.8: the model is done) or "working" (extended thinking: IN_PROGRESS until IDLE).
    seq = list(run.agent.transitions)[start:]
    between = State.WORKING if model == EXTENDED else State.READY
    expected = [State.TOOL_RUNNING, State.SPEAKING, between, State.SPEAKING, State.READY]
    assert in_order(expected, seq), seq
    if model == EXTENDED:
        assert State.READY not in seq[:-1], f"ready before IDLE: {seq}"
    assert server.counters["tool_recalls"] == 0


@pytest.mark.parametrize("model", MODELS)
def test_interrupt_cuts_the_first_answer_and_speaks_at_once(server, tmp_path, model, caplog):
    caplog.set_level(logging.INFO, logger="pi_agent")
    long_interim = "Let me do that, it may take a little while to switch."  # ~3 s at pace 1
    reply = Reply(DONE, tool_calls=[("lamp_now", {"on": True})], pace=1.0)
    reply.interim = long_interim
    server.replies.append(reply)
    run, observed = running(server, tmp_path, model)
    with run:
        run.wait_state(State.READY)
        ask(run, "lamp on now")
        run.wait(lambda a: DONE in said_by_model(observed), what="the interrupting answer")
        run.wait(settled(server, 2), what="ready again")
        assert lamp_on(run)
    assert server.counters["preempted"] == 1  # the first answer was cut, not played out
    first, second = said_by_model(observed)
    assert long_interim.startswith(first) and first != long_interim
    assert second == DONE
    assert "model interrupted; playback flushed" in caplog.text
    sent = server.messages(kind="toolResponse")[0].message["toolResponse"]["functionResponses"]
    assert sent[0]["scheduling"] == "INTERRUPT"


@pytest.mark.parametrize("model", MODELS)
def test_silent_result_is_taken_in_without_a_word(server, tmp_path, model):
    server.replies.extend(
        [Reply(DONE, tool_calls=[("lamp_quietly", {"on": True})]), Reply("Next answer.")]
    )
    run, observed = running(server, tmp_path, model)
    with run:
        run.wait_state(State.READY)
        ask(run, "lamp on, quietly")
        assert server.wait_for(lambda s: s.counters["tool_responses"] == 1, TIMEOUT)
        run.wait(lambda a: lamp_on(run) and a.state is State.READY, what="ready (after IDLE)")
        assert ask(run, "and now?")["gemini"] == "Next answer."
        run.wait(settled(server, 2), what="ready again")
    assert said_by_model(observed) == [INTERIM, "Next answer."]  # nothing about the lamp
    sent = server.messages(kind="toolResponse")[0].message["toolResponse"]["functionResponses"]
    assert sent[0]["scheduling"] == "SILENT"
    if model == EXTENDED:
        assert {"serverContent": {"interactionStatus": "IDLE"}} in [
            m.message for m in server.sent_messages("serverContent")
        ]


def test_blocking_instant_verbs_keep_the_turn_as_before(server, tmp_path):
    server.replies.append(Reply(DONE, tool_calls=[("set_lamp", {"on": True})]))
    run, _observed = running(server, tmp_path, "gemini-3.8-live")
    with run:
        run.wait_state(State.READY)
        assert ask(run, "lamp")["gemini"] == DONE  # no interim: the model waited
        run.wait(settled(server, 1), what="ready")
    behaviors = {
        d["name"]: d["behavior"]
        for d in server.connection().setup["tools"][0]["functionDeclarations"]
    }
    assert behaviors["set_lamp"] == behaviors["dim_strip"] == "BLOCKING"
    assert behaviors["flash_lamp"] == behaviors["lamp_later"] == "NON_BLOCKING"
    sent = server.messages(kind="toolResponse")[0].message["toolResponse"]["functionResponses"]
    assert set(sent[0]) == {"id", "name", "response"}  # nothing a BLOCKING call ignores


# --------------------------------------------------------------------------- willContinue, IDLE


@pytest.mark.parametrize("model", MODELS)
def test_a_long_blink_reports_twice_and_extended_thinking_shows_working_until_idle(
    server, tmp_path, model
):
    server.replies.append(
        Reply("It has finished flashing.", tool_calls=[("flash_lamp", {"count": 2})])
    )
    run, observed = running(server, tmp_path, model)
    with run:
        run.wait_state(State.READY)
        assert ask(run, "flash the lamp")["gemini"] == INTERIM
        # Hold the model's next words until the final report is in: what shows meanwhile?
        server.pause_replies()
        assert server.wait_for(lambda s: s.counters["tool_responses"] == 2, TIMEOUT)
        if model == EXTENDED:
            run.wait_state(State.WORKING)
            status = run.status()
            assert status["state"] == "working" and status["light"] == "working"
        else:
            run.wait_state(State.READY)
        server.resume_replies()
        run.wait(lambda a: "It has finished flashing." in said_by_model(observed), what="done")
        run.wait(settled(server, 2), what="ready again")
        states = [s.state for s in run.factory.pin(23).states]
        assert states.count(0) >= 2, f"it did not blink: {states}"  # 0 = on (active low)
    first, final = (
        m.message["toolResponse"]["functionResponses"][0]
        for m in server.messages(kind="toolResponse")
    )
    assert first["willContinue"] is True and first["scheduling"] == "SILENT"
    assert first["response"]["blinking"] is True and first["response"]["duration_s"] == 2.0
    assert "willContinue" not in final and final["scheduling"] == "WHEN_IDLE"
    assert final["response"] == {"status": "ok", "device": "lamp", "finished": True, "on": False}


def test_will_continue_is_never_sent_to_a_model_that_does_not_take_it(server, tmp_path):
    server.replies.append(Reply("Flashed.", tool_calls=[("flash_lamp", {"count": 1})]))
    run, observed = running(server, tmp_path, "gemini-3.1-flash-live-preview")
    with run:
        run.wait_state(State.READY)
        assert ask(run, "flash")["gemini"] == "Flashed."  # 3.1 waited: BLOCKING only
        run.wait(
            lambda a: any(o.get("result", {}).get("finished") for o in observed),
            what="the blink's final report (published, not sent)",
        )
    assert all("behavior" not in d for d in server.connection().setup["tools"][0][
        "functionDeclarations"
    ])  # fmt: skip
    (response,) = server.messages(kind="toolResponse")
    assert set(response.message["toolResponse"]["functionResponses"][0]) == {
        "id",
        "name",
        "response",
    }


def test_the_ledger_keeps_the_asker_of_a_call_that_will_continue():
    ledger, session = ToolLedger(), object()
    assert ledger.ask(session, "c1", "flash_lamp", {"count": 2}) == ("run", None)
    assert ledger.ask(session, "c2", "flash_lamp", {"count": 2}) == ("wait", None)  # a resend
    started = {"status": "ok", "blinking": True}
    (asker,) = ledger.finished("c1", started, more=True)
    assert (asker.id, asker.session) == ("c1", session)
    assert ledger.running == 1  # still running: a resent call waits for the final result
    done = {"status": "ok", "finished": True}
    assert [a.id for a in ledger.finished("c1", done)] == ["c1", "c2"]
    assert ledger.running == 0 and ledger.finished("c1", done) == []


# --------------------------------------------------------------------------- informative results


@pytest.mark.parametrize("model", MODELS)
def test_an_informative_error_is_not_called_again(server, tmp_path, model):
    server.replies.extend(
        [
            Reply("Too bright.", tool_calls=[("dim_strip", {"value": 0.95})]),
            Reply("No door.", tool_calls=[("open_the_door", {})]),
        ]
    )
    run, _observed = running(server, tmp_path, model)
    with run:
        run.wait_state(State.READY)
        error = ask(run, "strip to 95 percent")["tools"][0]["result"]
        assert error == {
            "status": "error",
            "reason": "argument 'value' of dim_strip is 0.95, outside the allowed "
            "0 (off) or 0.1 to 0.8",
            "retryable": False,
            "allowed_range": {"min": 0.1, "max": 0.8},
            "hint": "0 switches it off",
        }
        unknown = ask(run, "open the door")["tools"][0]["result"]
        assert unknown["status"] == "error" and "set_lamp" in unknown["valid_options"]
        run.wait(settled(server, 2), what="ready")
        assert run.status()["tool_calls_per_request"] == 1.0
    assert server.counters["tool_recalls"] == 0 and server.counters["tool_calls"] == 2
    assert run.factory.pin(12).state == 0, "nothing moved"


def legacy_shape(on_response):
    """The runner's results as they were before this change: ``{"result": ...}`` or
    ``{"error": "..."}`` (no status, no retryable), to measure what they cost."""

    def convert(report: dict[str, Any]) -> None:
        result = dict(report["response"])
        if result.pop("status") == "error":
            legacy = {"error": result["reason"]}
        else:
            legacy = {"result": result}
        on_response({"id": report["id"], "name": report["name"], "response": legacy})

    return convert


def test_a_bare_result_is_called_again_twice(server, tmp_path):
    server.replies.append(Reply("Too bright.", tool_calls=[("dim_strip", {"value": 0.95})]))
    run, _observed = running(server, tmp_path, "gemini-3.8-live")
    runner = run.agent.parts.runner
    runner._on_response = legacy_shape(runner._on_response)
    with run:
        run.wait_state(State.READY)
        ask(run, "strip to 95 percent")
        run.wait(settled(server, 1), what="ready")
        assert run.status()["tool_calls_per_request"] == 3.0
    assert server.counters["tool_recalls"] == 2 and server.counters["tool_calls"] == 3


# --------------------------------------------------------------------------- the metric

SCRIPT: list[tuple[str, dict[str, Any]]] = [
    ("set_lamp", {"on": True}),
    ("dim_strip", {"value": 0.5}),
    ("dim_strip", {"value": 1.5}),  # out of range
    ("lamp_later", {"on": False}),
    ("toggle_lamp", {}),
    ("set_lamp", {"on": "yes"}),  # wrong type
    ("lamp_quietly", {"on": True}),
    ("open_the_door", {}),  # unknown tool
    ("lamp_now", {"on": False}),
    ("toggle_lamp", {"please": 1}),  # unexpected argument
]
SPOKEN_AFTER = {"lamp_later", "lamp_now"}  # NON_BLOCKING results the model speaks about


def run_script(
    server, run: RunningAgent, observed: list[dict[str, Any]], *, legacy: bool = False
) -> float:
    """Each request makes the model call one tool; returns calls per request."""
    for i, (tool, args) in enumerate(SCRIPT):
        answer = f"Answer {i}."
        server.replies.append(Reply(answer, tool_calls=[(tool, args)]))
        ask(run, f"request {i}")
        # a NON_BLOCKING result is spoken about in a turn of its own (without a
        # scheduling, as the old results had none, even the silent one's): the next
        # request waits for it, or the two answers would cross
        if tool in SPOKEN_AFTER or (legacy and tool == "lamp_quietly"):
            run.wait(lambda a, answer=answer: answer in said_by_model(observed), what=answer)
        run.wait(lambda a: a.state is State.READY, what=f"request {i} settled")
    return run.status()["tool_calls_per_request"]


def test_tool_calls_per_user_request_on_3_8(server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pi_agent")
    run, observed = running(server, tmp_path, "gemini-3.8-live")
    with run:
        run.wait_state(State.READY)
        ratio = run_script(server, run, observed)
        counters = run.status()["counters"]
    print(f"\ntool calls per user request (3.8 fake, informative results): {ratio}")
    assert ratio <= 1.05
    assert counters["tool_calls"] == counters["user_requests"] == len(SCRIPT)
    assert server.counters["tool_recalls"] == 0
    n = len(SCRIPT)
    assert f"turn {n} tool calls: {n} in {n} request(s), 1.00 per request" in caplog.text


def test_tool_calls_per_user_request_with_the_old_shape(server, tmp_path):
    """The same script with the results shaped as before: every one is called twice more."""
    run, observed = running(server, tmp_path, "gemini-3.8-live")
    runner = run.agent.parts.runner
    runner._on_response = legacy_shape(runner._on_response)
    with run:
        run.wait_state(State.READY)
        ratio = run_script(server, run, observed, legacy=True)
    print(f"\ntool calls per user request (3.8 fake, the old bare results): {ratio}")
    assert ratio == 3.0 and server.counters["tool_recalls"] == 2 * len(SCRIPT)
