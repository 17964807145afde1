"""Model-based test of the conversation state machine: random event orders, invariants always.

Hypothesis drives the real Agent and Link (on the fakes of tests/fakes.py)
through random sequences of presses, releases, typed turns, connects that
succeed or fail with every kind of error, closes (1000, 1007, 1008, 1011,
drops), goAway, handles, answers, interruptions, tool calls and their
cancellation, mic faults and time passing. After every step it checks the
rules the issue asks for:

* a release always ends the user's turn (``activityEnd`` sent, or recorded
  in the pending turn so the resend carries it);
* with push-to-talk no audio is sent while the button is up;
* ``activityStart``/``activityEnd`` strictly alternate on every connection;
* a close the client caused itself (1007 mid-session) is never taken for a
  key or model error;
* what the state and light show names the true cause;
* a question is kept while offline until ``agent.pending_turn_ttl_s`` (or a
  key/model error) and never silently dropped.

CI runs a fixed, derandomized set (at least 2,000 steps); ``PI_AGENT_HYPOTHESIS=long``
explores many more.
"""

from __future__ import annotations

import os

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pi_agent import events as ev
from pi_agent import protocol
from pi_agent.agent import State
from pi_agent.errors import FatalSessionError, RetryableSessionError
from pi_agent.session import classify_close

from .fakes import Conversation, MalformedMessage

LONG = os.environ.get("PI_AGENT_HYPOTHESIS") == "long"

CONNECT_ERRORS = [
    RetryableSessionError("refused"),
    RetryableSessionError("timed out", kind="timeout"),
    RetryableSessionError("quota", kind="quota"),
    FatalSessionError("API key not valid", kind="auth"),
    FatalSessionError("model not found", kind="model"),
    classify_close(1008, "BidiGenerateContent session not found", during_setup=True),
    classify_close(1007, "Request contains an invalid argument.", during_setup=True, resuming=True),
]
CLOSES = [
    None,  # a clean close by the server
    classify_close(1007, "Request contains an invalid argument.", during_setup=False),
    classify_close(1008, "Requested entity was not found.", during_setup=False),
    classify_close(1011, "Deadline expired before operation could complete."),
    RetryableSessionError("connection reset"),
]


def audio_inside_activities(kinds: list[str]) -> bool:
    open_ = False
    for kind in kinds:
        if kind == "activityStart":
            if open_:
                return False
            open_ = True
        elif kind == "activityEnd":
            if not open_:
                return False
            open_ = False
        elif kind == "audio" and not open_:
            return False
    return True


class ConversationMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.c = Conversation()
        self.calls = 0

    # ----------------------------------------------------------------- the user

    @rule()
    def press(self):
        self.c.press()

    @rule()
    def release(self):
        was_talking = self.c.agent.talking
        lost_before = self.c.agent.counters["lost_turns"]
        self.c.release()
        agent = self.c.agent
        assert not agent.talking, "a release always ends the user's turn"
        if was_talking:
            pending = agent._pending
            session = self.c.session
            ended_on_wire = session is not None and session.kinds()[-1:] == ["activityEnd"]
            recorded = pending is not None and pending.ended
            lost = agent.counters["lost_turns"] > lost_before
            assert ended_on_wire or recorded or lost

    @rule()
    def cancel(self):
        self.c.step(ev.Cancel())

    @rule(text=st.sampled_from(["hi", "what time is it"]))
    def say(self, text):
        self.c.say(text)

    @rule(state=st.sampled_from(["fault", "ok"]))
    def mic_state(self, state):
        self.c.mic.state = state
        self.c.step(ev.PartState("mic", state, "test"))

    @rule(seconds=st.sampled_from([0.2, 1.0, 3.0, 20.0, 130.0]), mic=st.booleans())
    def time_passes(self, seconds, mic):
        self.c.advance(seconds, mic=mic)

    # ----------------------------------------------------------------- the link

    @precondition(lambda self: self.c.link.connecting)
    @rule()
    def connect_ok(self):
        self.c.connect()

    @precondition(lambda self: self.c.link.connecting)
    @rule(error=st.sampled_from(CONNECT_ERRORS))
    def connect_fails(self, error):
        self.c.refuse(error)

    @precondition(lambda self: self.c.link.is_open)
    @rule(error=st.sampled_from(CLOSES))
    def close(self, error):
        self.c.drop(error)
        if error is not None and error.kind == "protocol":
            assert self.c.link.fatal is None, "our own 1007 is never a key/model error"

    @precondition(lambda self: self.c.link.is_open)
    @rule()
    def stall(self):
        self.c.session.stalled_since = self.c.clock.now

    @precondition(lambda self: self.c.link.is_open)
    @rule()
    def go_away(self):
        self.c.server(protocol.GoAway(5.0))

    @precondition(lambda self: self.c.link.is_open)
    @rule(n=st.integers(0, 3))
    def handle(self, n):
        self.c.server(protocol.SessionResumptionUpdate(f"handle-{n}", True))

    @precondition(lambda self: self.c.link.is_open)
    @rule()
    def answer(self):
        self.c.answer()

    @precondition(lambda self: self.c.link.is_open)
    @rule()
    def audio(self):
        self.c.server(protocol.AudioChunk(b"\0\0" * 64))

    @precondition(lambda self: self.c.link.is_open)
    @rule()
    def interrupted(self):
        self.c.server(protocol.Interrupted(), protocol.TurnComplete())

    @precondition(lambda self: self.c.link.is_open)
    @rule(args=st.sampled_from([{"on": True}, {"on": False}]))
    def tool_call(self, args):
        self.calls += 1
        call = protocol.FunctionCall(f"id{self.calls}", "set_lamp", args)
        self.c.server(protocol.ToolCall((call,)))

    @precondition(lambda self: self.c.runner.submitted)
    @rule()
    def tool_finished(self):
        call_id, name, _args = self.c.runner.submitted[-1]
        self.c.step(ev.ToolFinished({"id": call_id, "name": name, "response": {"status": "ok"}}))

    @precondition(lambda self: self.c.link.is_open and self.calls)
    @rule()
    def tool_cancelled(self):
        self.c.server(protocol.ToolCallCancellation((f"id{self.calls}",)))

    @precondition(lambda self: self.c.link.is_open)
    @rule()
    def malformed(self):
        self.c.server(MalformedMessage("x"))

    # ----------------------------------------------------------------- invariants

    @invariant()
    def wire_rules_hold_on_every_connection(self):
        for session in self.c.sessions:
            kinds = session.kinds()
            assert audio_inside_activities(kinds), kinds

    @invariant()
    def no_audio_while_the_button_is_up(self):
        session = self.c.session
        if session is not None and not self.c.agent.talking:
            assert not self.c.agent.uplink.activity_open or not session.is_open

    @invariant()
    def the_display_names_the_true_cause(self):
        agent, link = self.c.agent, self.c.link
        state, light, cause = agent._derive()
        assert (agent.state, agent.light_state) == (state, light)
        if agent.talking:
            assert state is State.LISTENING
        elif link.fatal is not None and not agent.ringing:
            assert state is State.ERROR and light == "error_auth"
            assert cause and str(link.fatal) in cause
        pending = agent._pending
        if (
            not agent.talking
            and link.fatal is None
            and not link.is_open
            and pending is not None
            and pending.ended
            and not pending.completed
        ):
            assert state is State.RECONNECTING
        mic = agent.part_states.get("mic", ("ok", ""))[0]
        if mic in ("fault", "stalled") and state is State.READY:
            assert light == "error_audio"

    @invariant()
    def questions_are_kept_until_delivered_or_their_time_is_up(self):
        agent = self.c.agent
        pending = agent._pending
        if pending is not None and pending.ended and pending.ended_at is not None:
            age = self.c.clock.now - pending.ended_at
            assert age <= self.c.config.agent.pending_turn_ttl_s + 0.2 or self.c.link.is_open

    @invariant()
    def short_waits_while_a_question_waits(self):
        agent, link = self.c.agent, self.c.link
        pending = agent._pending
        if (
            pending is not None
            and not pending.completed
            and link.connect_at is not None
            and link.fatal is None
            and (link.problem is None or link.problem.kind != "quota")
        ):
            wait = link.connect_at - self.c.clock.now
            assert wait <= self.c.config.agent.pending_backoff_max_s + 1e-6


ConversationMachine.TestCase.settings = settings(
    max_examples=4000 if LONG else 80,
    stateful_step_count=100 if LONG else 50,
    deadline=None,
)
TestConversationModel = ConversationMachine.TestCase
