"""Hostile input from outside, against the running agent: nothing crashes, nothing leaks.

A broken or hostile server sends every kind of malformed frame
(``pi_agent.sim.malformed``): the agent counts each, keeps the session (no
reconnect) and answers the next turn. A resumption handle that is not a safe
string is never stored. A failing ``live.token_command`` never has its output
published. Text from the model, the user or the network cannot forge log lines.
"""

from __future__ import annotations

import contextlib
import logging
import sys

import pytest

from pi_agent.agent import State
from pi_agent.errors import RetryableSessionError
from pi_agent.logs import escape
from pi_agent.session import fetch_token
from pi_agent.sim.fake_live import FakeLiveServer, Reply
from pi_agent.sim.malformed import MALFORMED_FRAMES

from .agent_harness import RunningAgent, agent_config
from .conftest import FAKE_KEY, TIMEOUT


@pytest.fixture
def server():
    with FakeLiveServer(api_key=FAKE_KEY) as srv:
        yield srv


def test_every_malformed_frame_is_counted_skipped_and_the_session_goes_on(server, tmp_path):
    with RunningAgent(agent_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        for _name, payload in MALFORMED_FRAMES:
            server.send_frame(payload, binary=True)
        # A valid message after them all: once it is taken in, so is every frame before it.
        # "go-away-number" (timeLeft: 10) is read leniently as 10 s and starts a roll-over, so
        # a second connection may be open (and held back while the model speaks): send the
        # handle on every open connection, the one the agent listens to among them.
        for conn in list(server.connections):
            if conn.closed_at is None:
                update = {"sessionResumptionUpdate": {"newHandle": "after-all", "resumable": True}}
                with contextlib.suppress(LookupError):  # closed meanwhile
                    server.send(update, conn_id=conn.id)
        run.wait(lambda a: a.handle == "after-all", what="every frame to be handled")
        malformed = run.agent.counters["malformed"]
        assert malformed >= len(MALFORMED_FRAMES) // 2, malformed
        assert run.agent.counters["reconnects"] == 0, "no reconnect: the session survived"
        server.replies.append(Reply(text="Still here."))
        before = server.counters["turns"]
        reply = run.agent.request({"cmd": "say", "text": "are you ok", "wait": True}, TIMEOUT)
        assert reply["ok"] and reply["gemini"] == "Still here."
        assert server.counters["turns"] == before + 1
        assert run.agent.state is State.READY
        assert run.agent.handle is None or run.agent.handle.isascii()


def test_a_hostile_handle_is_never_stored_or_sent_back(server, tmp_path):
    with RunningAgent(agent_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        for bad in (12345, "\ud800", "x" * 100_000, "a b", None):
            server.send({"sessionResumptionUpdate": {"newHandle": bad, "resumable": True}})
        server.send({"sessionResumptionUpdate": {"newHandle": "good-handle", "resumable": True}})
        run.wait(lambda a: a.handle == "good-handle", what="the valid handle")
        server.drop()
        assert server.wait_for(lambda s: len(s.connections) >= 2, TIMEOUT)
        assert server.wait_for(lambda s: s.connections[-1].setup is not None, TIMEOUT)
        sent = server.connections[-1].setup["sessionResumption"]
        assert sent == {"handle": "good-handle"}


def test_a_failing_token_command_never_publishes_its_output(tmp_path, caplog):
    helper = tmp_path / "token.sh"
    helper.write_text("#!/bin/sh\necho 'secret-from-helper AIzaFAKE' >&2\nexit 3\n")
    helper.chmod(0o700)
    caplog.set_level(logging.DEBUG, logger="pi_agent")
    with pytest.raises(RetryableSessionError) as info:
        fetch_token(str(helper))
    assert str(info.value) == "live.token_command exited with status 3"
    warnings = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert not any("secret-from-helper" in r.getMessage() for r in warnings)


def test_a_token_command_that_cannot_run_is_a_clear_error():
    with pytest.raises(RetryableSessionError, match="could not run"):
        fetch_token("/nonexistent/token-helper")
    with pytest.raises(RetryableSessionError, match="did not finish"):
        fetch_token(f"{sys.executable} -c 'import time; time.sleep(5)'", timeout=0.2)


def test_typed_text_and_transcripts_cannot_forge_log_lines(server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pi_agent")
    forged = "hi\nINFO pi_agent.agent: turn 9: ready\x1b[2J"
    server.replies.append(Reply(text="ok\r\nERROR forged line", input_transcription=""))
    with RunningAgent(agent_config(server, tmp_path)) as run:
        run.wait_state(State.READY)
        run.agent.request({"cmd": "say", "text": forged, "wait": True}, TIMEOUT)
    for record in caplog.records:
        message = record.getMessage()
        assert "\n" not in message and "\r" not in message and "\x1b" not in message, message
    assert escape(forged) in caplog.text
