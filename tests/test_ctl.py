"""``pi-agent ctl`` against a real control socket served to a fake agent."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pi_agent.cli import main
from pi_agent.ctl import format_status, run_ctl

from .conftest import TIMEOUT, wait_for
from .control_fake import STATUS, FakeAgent, budget, serving


@pytest.fixture
def agent():
    fake = FakeAgent()
    yield fake
    fake.close()


@pytest.fixture
def server(tmp_path, agent):
    with serving(tmp_path / "control.sock", agent) as srv:
        yield srv


def ctl(server, *words: str) -> int:
    return main(["ctl", "--socket", str(server.path), *words])


def test_ctl_say_waits_and_prints_the_exchange(server, agent, capsys):
    assert ctl(server, "say", "turn", "on", "the", "lamp") == 0
    assert capsys.readouterr().out == (
        "you: turn on the lamp\n"
        'tool: set_lamp {"on": true} -> {"ok": true, "on": true}\n'
        "gemini: The lamp is on.\n"
    )
    assert agent.seen == [{"cmd": "say", "text": "turn on the lamp", "wait": True}]


def test_ctl_say_no_wait_returns_at_once(server, agent, capsys):
    agent.gate.clear()  # the model would take forever
    assert ctl(server, "say", "--no-wait", "lamp", "on") == 0
    assert capsys.readouterr().out == "sent (turn 4)\n"
    assert agent.seen == [{"cmd": "say", "text": "lamp on", "wait": False}]


def test_ctl_say_timeout(server, agent, capsys):
    agent.gate.clear()
    assert ctl(server, "--timeout", "0.2", "say", "hello") == 1
    assert capsys.readouterr().err == (
        "pi-agent ctl: the agent did not answer within 0.2 s (--timeout to wait longer)\n"
    )


@pytest.mark.parametrize(
    ("words", "error"),
    [
        (["sya", "hello"], "unknown command 'sya'; did you mean 'say'?"),
        (["stauts"], "unknown command 'stauts'; did you mean 'status'?"),
        (["fly"], "unknown command 'fly'; known: press, release, talk, say, mute, unmute, volume,"),
        (["press", "now"], "press takes no argument"),
        (["say"], "say needs some text"),
        (["volume"], "volume takes one value: 0-1 or a percentage (0.6, 60 or 60%)"),
        (["volume", "loud"], "volume needs 0-1 or a percentage (0.6, 60 or 60%), not 'loud'"),
        (["volume", "150%"], "volume must be from 0 to 1 or 0% to 100%, not '150%'"),
        (["--no-wait", "status"], "--no-wait only applies to say"),
        (["--timeout", "0", "status"], "--timeout must be a positive number of seconds, not 0"),
        (["say", "a\x1b[2Jb"], "say text contains the control character U+001B at character 1"),
    ],
)
def test_ctl_usage_errors_exit_2_and_send_nothing(server, agent, capsys, words, error):
    assert ctl(server, *words) == 2
    assert capsys.readouterr().err.startswith(f"pi-agent ctl: {error}")
    assert agent.seen == []


@pytest.mark.parametrize("value", ["0.6", "60", "60%"])
def test_ctl_volume_as_fraction_or_percent(server, agent, capsys, value):
    assert ctl(server, "volume", value) == 0
    assert capsys.readouterr().out == "volume 60%\n"
    assert agent.seen == [{"cmd": "volume", "value": pytest.approx(0.6)}]


def test_ctl_agent_errors_exit_1(server, capsys):
    assert ctl(server, "mute") == 1
    assert capsys.readouterr().err == "pi-agent ctl: there is no microphone to mute\n"


def test_ctl_simple_commands_print_what_the_agent_adds(server, agent, capsys):
    assert ctl(server, "press") == 0
    assert ctl(server, "talk") == 0
    assert capsys.readouterr().out == "talking: true\n"
    assert agent.seen == [{"cmd": "press"}, {"cmd": "talk"}]


def test_ctl_status_for_people_and_json(server, agent, capsys):
    assert ctl(server, "status") == 0
    assert capsys.readouterr().out == (
        "state:      ready (light: no_mic)\n"
        "cause:      no microphone\n"
        "problems:   mic missing: no capture device 'seeed'\n"
        "connection: connected, resumable, model models/gemini-live-test\n"
        "audio:      mic missing, speaker ok, volume 60%, not muted\n"
        "camera:     off\n"
        "devices:    lamp: on=true\n"
        "counters:   frames_sent=12, malformed=0\n"
        "turns:      3\n"
        "last turn:  turn=3, first_audio_ms=412.0\n"
        "firmware:   v9\n"
    )
    assert ctl(server, "status", "--json") == 0
    assert json.loads(capsys.readouterr().out) == STATUS


def test_ctl_status_when_all_is_well_and_reconnecting():
    text = format_status(
        {
            "state": "reconnecting",
            "light": "reconnecting",
            "cause": None,
            "problems": [],
            "connection": {"connected": False, "reconnecting_in_s": 2.5, "resumable": False},
            "devices": {"lamp": {"on": False}, "fan": {"value": 0.25}},
        }
    )
    assert text == (
        "state:      reconnecting (light: reconnecting)\n"
        "problems:   none\n"
        "connection: not connected, reconnecting in 2.5 s, not resumable\n"
        "devices:    lamp: on=false\n"
        "            fan: value=0.25"
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@budget(150)
@given(st.dictionaries(st.sampled_from([*STATUS, "x\x1b", "new_key"]), json_values, max_size=8))
def test_ctl_status_formatting_never_fails(status):
    """Whatever the agent's status holds (keys may grow), it prints, one safe line per item."""
    text = format_status(status)
    assert not any(ch in text for ch in "\x00\x1b\r\x7f")
    text.encode("utf-8")  # printable: no lone surrogate


def test_ctl_status_odd_values():
    text = format_status(
        {"audio": {"volume": 10**400}, "connection": {"reconnecting_in_s": 10**400}, "light": 3}
    )
    assert text.startswith("state:      unknown (light: 3)\n")
    assert "volume 1" in text and "reconnecting in 1000" in text


def test_ctl_escapes_what_a_terminal_would_obey(tmp_path, capsys):
    def submit(req):
        req.respond({"ok": True, "you": "hi", "gemini": "\x1b]0;owned\x07 \ud800 bye"})

    with serving(tmp_path / "c.sock", FakeAgent(), mode=0o600) as srv:
        srv._submit = submit
        assert run_ctl(str(srv.path), "say", ["hi"]) == 0
    assert capsys.readouterr().out == "you: hi\ngemini: \\x1b]0;owned\\x07 \\ud800 bye\n"


def test_ctl_unencodable_reply_is_an_error_not_a_crash(tmp_path, capsys):
    with serving(tmp_path / "c.sock", FakeAgent(), mode=0o600) as srv:
        srv._submit = lambda req: req.respond({"ok": True, "status": {"tokens": 10**5000}})
        assert run_ctl(str(srv.path), "status") == 1
    assert capsys.readouterr().err.startswith(
        "pi-agent ctl: internal: the reply could not be encoded as JSON (ValueError"
    )


def test_ctl_unreachable_agent(tmp_path, capsys):
    missing = tmp_path / "missing.sock"
    assert main(["ctl", "--socket", str(missing), "status"]) == 1
    assert capsys.readouterr().err == (
        f"pi-agent ctl: no agent is listening on {missing} (is pi-agent running?)\n"
    )
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(stale))  # bound, never listening: what a crashed agent leaves
    assert main(["ctl", "--socket", str(stale), "status"]) == 1
    assert capsys.readouterr().err == (
        f"pi-agent ctl: no agent is running on {stale} (the socket is left over)\n"
    )


def _ctl_as_nobody(path: str) -> tuple[int, str]:
    """Run ``ctl status`` in a child that dropped root: root is never denied a socket."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            with os.fdopen(w, "w") as stream:
                code = run_ctl(path, "status", out=stream, err=stream)
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as stream:
        text = stream.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), text


def test_ctl_permission_denied_explains_the_group(tmp_path, agent, capsys):
    path = tmp_path / "control.sock"
    with serving(path, agent, mode=0o000):
        if os.geteuid() == 0:
            code, err = _ctl_as_nobody(str(path))
        else:
            code, err = run_ctl(str(path), "status"), capsys.readouterr().err
    assert code == 1
    assert err == (
        f"pi-agent ctl: permission denied on {path}: add yourself to the pi-agent group: "
        "sudo adduser $USER pi-agent (then log out and in)\n"
    )
    assert agent.seen == []


def test_ctl_watch_streams_events_until_ctrl_c(server, agent, capsys):
    proc = subprocess.Popen(
        [sys.executable, "-m", "pi_agent", "ctl", "--socket", str(server.path), "watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        assert wait_for(lambda: server.watchers == 1)
        assert ctl(server, "say", "lamp", "on") == 0
        events = [json.loads(lines.get(timeout=TIMEOUT)) for _ in range(6)]
        assert [e["event"] for e in events] == [
            "state",
            "transcript",
            "tool_call",
            "tool_result",
            "transcript",
            "turn",
        ]
        assert events[2] == {
            "event": "tool_call",
            "turn": 4,
            "id": "t1",
            "name": "set_lamp",
            "args": {"on": True},
        }
        proc.send_signal(signal.SIGINT)
        assert proc.wait(TIMEOUT) == 0
        assert proc.stderr.read() == ""  # no traceback
    finally:
        proc.kill()
        proc.wait(TIMEOUT)


def test_ctl_watch_ends_cleanly_when_the_agent_stops(tmp_path, agent):
    read, write = os.pipe()
    with serving(tmp_path / "c.sock", agent) as srv, os.fdopen(write, "w") as out:
        done = []
        thread = threading.Thread(
            target=lambda: done.append(run_ctl(str(srv.path), "watch", out=out))
        )
        thread.start()
        assert wait_for(lambda: srv.watchers == 1)
        srv.publish({"event": "muted", "muted": True})
        with os.fdopen(read) as stream:
            assert json.loads(stream.readline()) == {"event": "muted", "muted": True}
            srv.stop()  # EOF for the watcher
            thread.join(TIMEOUT)
    assert done == [0]
