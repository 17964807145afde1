"""The control socket: JSON lines over a real UNIX socket, bad input never crashes it.

The server is driven by ``FakeAgent`` (tests/control_fake.py), which answers the
way the conversation core does: at once, or later from another thread.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import stat
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pi_agent.control import (
    MAX_TEXT,
    ControlServer,
    encode_line,
    parse_command,
    parse_volume,
    send_command,
)
from pi_agent.errors import PiAgentError

from .conftest import TIMEOUT, wait_for
from .control_fake import STATUS, FakeAgent, budget, serving


def test_control_parse_plain_and_json():
    assert parse_command("press") == {"cmd": "press"}
    assert parse_command("say turn on the lamp") == {
        "cmd": "say",
        "text": "turn on the lamp",
        "wait": True,
    }
    assert parse_command("volume 0.5") == {"cmd": "volume", "value": 0.5}
    assert parse_command('{"cmd": "status"}') == {"cmd": "status"}
    assert parse_command('{"cmd": "volume", "value": 1}') == {"cmd": "volume", "value": 1.0}
    assert parse_command("volume 60%") == {"cmd": "volume", "value": 0.6}
    assert parse_command("TALK") == {"cmd": "talk"}
    said = parse_command("say\thello\tthere\r")
    assert said == {"cmd": "say", "text": "hello there", "wait": True}
    assert parse_command("watch") == {"cmd": "watch"}
    assert parse_command('{"cmd": "say", "text": "hi", "wait": false}') == {
        "cmd": "say",
        "text": "hi",
        "wait": False,
    }


def test_control_parse_sanitises_typed_text():
    # line breaks and tabs become spaces: a typed turn cannot forge a log line
    assert parse_command('{"cmd": "say", "text": "a\\nb\\tc\\r\\n"}')["text"] == "a b c"
    # an escaped surrogate pair is one real character, fine
    assert parse_command('{"cmd": "say", "text": "\\ud83d\\ude00"}')["text"] == "\U0001f600"
    assert len(parse_command("say " + "x" * MAX_TEXT)["text"]) == MAX_TEXT


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.6", 0.6),
        ("60", 0.6),
        ("60%", 0.6),
        ("1", 1.0),
        ("0", 0.0),
        ("100%", 1.0),
        ("0.5%", 0.005),
    ],
)
def test_control_volume_takes_fractions_and_percentages(value, expected):
    assert math.isclose(parse_volume(value), expected)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("", "empty command"),
        ("jump", "unknown command 'jump'"),
        ("say", "say needs some text"),
        ("volume loud", "volume needs 0-1 or a percentage (0.6, 60 or 60%), not 'loud'"),
        ('{"cmd": "volume", "value": 3}', "volume needs a number from 0 to 1, not 3"),
        ('{"cmd": "volume", "value": true}', "volume needs a number from 0 to 1, not True"),
        ("press now", "press takes no argument"),
        ("sya hello", "unknown command 'sya'; did you mean 'say'?"),
        ("{broken", "invalid JSON"),
        ("[1]", "a request must be a JSON object"),
        ('["press"]', "a request must be a JSON object"),
        ("volume 150", "volume must be from 0 to 1 or 0% to 100%, not '150'"),
        ("volume nan", "volume needs 0-1 or a percentage (0.6, 60 or 60%), not 'nan'"),
        ("volume -1", "volume needs 0-1 or a percentage (0.6, 60 or 60%), not '-1'"),
        ('{"cmd": "volume", "value": 1e999}', "volume needs a number from 0 to 1, not inf"),
        ('{"cmd": "volume", "value": NaN}', "volume needs a number from 0 to 1, not nan"),
        ('{"cmd": "say", "txt": "hi"}', "say: unknown field 'txt'; did you mean 'text'?"),
        ('{"cmd": "press", "force": 1}', "press takes no argument (got 'force')"),
        ('{"cmd": "say", "text": "hi", "wait": "no"}', "say: wait must be true or false"),
        ('{"cmd": 7}', 'a request needs "cmd", one of: press, release, talk'),
        (
            '{"cmd": "say", "text": "\\ud800"}',
            "say text is not valid Unicode: lone surrogate U+D800",
        ),
        ('{"cmd": "say", "text": "a\\u001b[2J"}', "say text contains the control character U+001B"),
        ('{"cmd": "say", "text": "a\\u0000"}', "say text contains the control character U+0000"),
        ("say " + "x" * (MAX_TEXT + 1), f"say text is longer than {MAX_TEXT} characters"),
        ('{"cmd": "say", "text": " \\n "}', "say needs some text"),
        ("[" * 100_000, "invalid JSON: nested too deeply"),
        ('{"cmd": "volume", "value": ' + "9" * 5000 + "}", "invalid JSON: Exceeds the limit"),
    ],
)
def test_control_parse_rejects(line, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        parse_command(line)


@budget(300)
@given(
    st.text(max_size=200)
    | st.sampled_from(["say ", '{"cmd": "say", "text": "']).flatmap(
        lambda prefix: st.text(max_size=200).map(lambda t: prefix + t)
    )
)
def test_control_parse_raises_only_value_error_and_passes_only_clean_text(line):
    try:
        request = parse_command(line)
    except ValueError:
        return
    text = request.get("text", "")
    assert not re.search("[\x00-\x1f\x7f-\x9f]", text)
    text.encode("utf-8")  # valid Unicode, or this raises
    assert 0 < len(text) <= MAX_TEXT or request["cmd"] != "say"


def _deep(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


class Weird:
    def __repr__(self) -> str:
        return "<weird>"


@pytest.mark.parametrize(
    "reply",
    [
        {"ok": True, "tokens": 10**5000},
        {"ok": True, "volume": math.nan},
        {"ok": True, "x": Weird()},
        {"ok": True, "deep": _deep(100_000)},
        ["not", "a", "dict"],
    ],
)
def test_control_encode_never_raises(reply):
    line = encode_line(reply)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    decoded = json.loads(line)
    assert decoded["ok"] is False and decoded["error"].startswith("internal: the reply could not")


def test_control_encode_keeps_unicode_on_one_ascii_line():
    line = encode_line({"ok": True, "gemini": "line\nbreak \u00e9 \ud800"})
    assert line.isascii() and line.count(b"\n") == 1
    assert json.loads(line)["gemini"] == "line\nbreak \u00e9 \ud800"
    event = json.loads(encode_line({"event": "x", "n": math.inf}, what="event"))
    assert event["event"] == "error" and event["part"] == "control"


# --------------------------------------------------------------------------- the server


class Client:
    """A raw line client (socat-like)."""

    def __init__(self, path, timeout: float = TIMEOUT):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(str(path))
                break
            except BlockingIOError:  # the listen backlog is full: the server is catching up
                if time.monotonic() > deadline:
                    raise
                threading.Event().wait(0.005)
        self.reader = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self):
        line = self.reader.readline()
        return json.loads(line) if line else None

    def ask(self, line: str):
        self.send(line.encode() + b"\n")
        return self.read()

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@pytest.fixture
def agent():
    fake = FakeAgent()
    yield fake
    fake.close()


@pytest.fixture
def server(tmp_path, agent):
    with serving(tmp_path / "run" / "control.sock", agent) as srv:
        yield srv


def status_ok(srv) -> bool:
    return send_command(str(srv.path), {"cmd": "status"})["status"]["state"] == "ready"


@pytest.mark.parametrize("mode", [0o600, 0o660, 0o640])
def test_control_socket_mode_exactly_as_asked(tmp_path, agent, mode):
    old = os.umask(0o002)
    try:
        with serving(tmp_path / "c.sock", agent, mode=mode) as srv:
            assert stat.S_IMODE(os.lstat(srv.path).st_mode) == mode
    finally:
        assert os.umask(old) == 0o002  # the process umask is restored


def test_control_socket_round_trip_and_one_thread(server, agent):
    assert send_command(str(server.path), {"cmd": "press"}) == {"ok": True}
    assert send_command(str(server.path), {"cmd": "status"})["status"] == STATUS
    clients = [Client(server.path) for _ in range(10)]
    assert wait_for(lambda: server.clients == 10)
    names = [t.name for t in threading.enumerate() if t.name.startswith("pi-agent-control")]
    assert names == ["pi-agent-control"]
    assert [c.ask("talk") for c in clients] == [{"ok": True, "talking": True}] * 10
    for c in clients:
        c.close()
    assert agent.seen[:2] == [{"cmd": "press"}, {"cmd": "status"}]


def test_control_idle_server_has_no_deadline(server):
    """Nobody connected (or only watchers): the loop sleeps until woken, no tick."""
    assert server._timeout() is None
    watcher = Client(server.path)
    assert watcher.ask("watch") == {"ok": True, "watching": True}
    assert server._timeout() is None
    idle = Client(server.path)
    assert wait_for(lambda: server.clients == 2)
    assert 0 < server._timeout() <= server.idle_timeout_s
    watcher.close(), idle.close()


def test_control_socket_malformed_lines_get_error_lines(server):
    client = Client(server.path)
    client.send(b"{bad json\nfly\npress\n" + b"x" * 70000 + b"\nmute\n\xff\xfeok\n")
    replies = [client.read() for _ in range(6)]
    assert replies[0]["ok"] is False and "invalid JSON" in replies[0]["error"]
    assert replies[1] == {
        "ok": False,
        "error": "unknown command 'fly'; known: press, release, talk, say, mute, unmute, volume,"
        " status, watch",
    }
    assert replies[2] == {"ok": True}
    assert replies[3] == {"ok": False, "error": "request line longer than 65536 bytes"}
    assert replies[4] == {"ok": False, "error": "there is no microphone to mute"}
    assert replies[5] == {"ok": False, "error": "request is not valid UTF-8 (byte 0)"}
    # an oversized line sent in pieces is skipped up to its end, then the stream resyncs
    client.send(b"y" * 40000)
    client.send(b"y" * 40000)
    client.send(b"y\nstatus\n")
    assert client.read() == {"ok": False, "error": "request line longer than 65536 bytes"}
    assert client.read()["ok"] is True
    client.close()
    assert status_ok(server)


def test_control_half_closed_client_still_gets_its_answers(server):
    """``echo status | nc -U -N``: the request, then EOF, then the answer."""
    client = Client(server.path)
    client.send(b"press\nstatus")  # the last line has no newline
    client.sock.shutdown(socket.SHUT_WR)
    assert client.read() == {"ok": True}
    assert client.read()["status"]["state"] == "ready"
    assert client.read() is None  # then the server closes
    client.close()


def test_control_deferred_answer_does_not_hold_anyone_up(server, agent):
    agent.gate.clear()
    waiting = Client(server.path)
    waiting.send(b'{"cmd": "say", "text": "lamp on"}\nstatus\n')
    assert wait_for(lambda: agent.turn == 4)  # the say reached the agent
    # meanwhile everyone else is served, and so is a say that does not wait
    assert status_ok(server)
    assert send_command(str(server.path), {"cmd": "say", "text": "x", "wait": False}) == {
        "ok": True,
        "turn": 5,
    }
    agent.gate.set()
    answer = waiting.read()
    assert answer["you"] == "lamp on" and answer["gemini"] == "The lamp is on."
    assert answer["tools"] == [
        {"name": "set_lamp", "args": {"on": True}, "result": {"ok": True, "on": True}}
    ]
    # the agent's second respond() was ignored: the next line answers the next request
    assert waiting.read()["status"]["state"] == "ready"
    waiting.close()


def test_control_respond_from_many_threads_first_call_wins(tmp_path):
    def submit(req):
        def answer(n):
            start.wait(TIMEOUT)
            req.respond({"ok": True, "n": n})

        start = threading.Event()
        threads = [threading.Thread(target=answer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        start.set()

    srv = ControlServer(str(tmp_path / "c.sock"), 0o600, submit)
    srv.start()
    try:
        client = Client(srv.path)
        answers = [client.ask("press") for _ in range(20)]
        assert all(a["ok"] and a["n"] in range(8) for a in answers)
        client.sock.settimeout(0.2)
        with pytest.raises(TimeoutError):  # nothing more than one answer per request
            client.read()
        client.close()
    finally:
        srv.stop()


def test_control_many_clients_and_events_lose_no_wake_up(server, agent):
    results = []

    def client():
        c = Client(server.path)
        results.extend(c.ask("press")["ok"] for _ in range(50))
        c.close()

    watcher = Client(server.path)
    assert watcher.ask("watch")["ok"]
    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for n in range(300):
        server.publish({"event": "tick", "n": n})
    for t in threads:
        t.join(TIMEOUT)
    assert results == [True] * 400
    assert [watcher.read()["n"] for _ in range(300)] == list(range(300))
    watcher.close()


def test_control_watch_gets_published_events(server, agent):
    watcher = Client(server.path)
    assert watcher.ask("watch") == {"ok": True, "watching": True}
    assert server.watchers == 1
    reply = send_command(str(server.path), {"cmd": "say", "text": "lamp on"}, timeout=TIMEOUT)
    assert reply["gemini"] == "The lamp is on."
    events = [watcher.read() for _ in range(6)]
    assert [e["event"] for e in events] == [
        "state",
        "transcript",
        "tool_call",
        "tool_result",
        "transcript",
        "turn",
    ]
    assert events[1] == {"event": "transcript", "turn": 4, "who": "user", "text": "lamp on"}
    assert events[2]["name"] == "set_lamp" and events[2]["args"] == {"on": True}
    # an event that cannot be encoded becomes an error event, the stream goes on
    server.publish({"event": "turn", "usage": {"total_tokens": 10**5000}})
    server.publish({"event": "muted", "muted": True})
    assert watcher.read()["event"] == "error"
    assert watcher.read() == {"event": "muted", "muted": True}
    # what a watcher sends is ignored
    watcher.send(b"status\n")
    server.publish({"event": "volume", "volume": 0.5})
    assert watcher.read() == {"event": "volume", "volume": 0.5}
    watcher.close()
    assert wait_for(lambda: server.watchers == 0)


def test_control_publish_without_watchers_costs_nothing(server):
    server.publish({"event": "state", "state": "ready"})
    assert not server._inbox and not server._woken


def test_control_slow_watcher_is_dropped_and_nobody_waits(tmp_path, agent):
    with serving(tmp_path / "c.sock", agent, max_line=1024, max_output=8192) as srv:
        slow = Client(srv.path)
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert slow.ask("watch")["ok"]  # then never reads again
        event = {"event": "transcript", "turn": 1, "who": "model", "text": "x" * 200}
        sent = 0
        while srv.watchers and sent < 100_000:
            srv.publish(event)
            sent += 1
            if sent % 100 == 0:
                assert status_ok(srv)  # others are served all along
        assert wait_for(lambda: srv.watchers == 0 and srv.dropped == 1)
        assert status_ok(srv)
        slow.close()


def test_control_client_that_never_reads_replies(tmp_path, agent):
    with serving(tmp_path / "c.sock", agent, max_line=1024, max_output=8192) as srv:
        greedy = Client(srv.path)
        greedy.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with contextlib.suppress(TimeoutError):
            greedy.sock.settimeout(1.0)
            greedy.send(b"status\n" * 20000)  # ~12 MB of replies it never reads
        assert status_ok(srv)
        greedy.close()
        assert wait_for(lambda: srv.clients == 0)
        assert status_ok(srv)


def test_control_max_clients(tmp_path, agent):
    with serving(tmp_path / "c.sock", agent, max_clients=3) as srv:
        held = [Client(srv.path) for _ in range(3)]
        assert wait_for(lambda: srv.clients == 3)
        extra = Client(srv.path)
        assert extra.read() == {"ok": False, "error": "too many control clients (3)"}
        assert extra.read() is None  # and closed
        extra.close()
        held.pop().close()
        assert wait_for(lambda: srv.clients == 2)
        assert status_ok(srv)
        for c in held:
            assert c.ask("press") == {"ok": True}
            c.close()


def test_control_answers_after_many_idle_clients(tmp_path, agent):
    with serving(tmp_path / "c.sock", agent, idle_timeout_s=0.5) as srv:
        idle = [Client(srv.path) for _ in range(60)]  # 16 get in, 44 are turned away
        replies = [c.read() for c in idle]
        timed_out = replies.count({"ok": False, "error": "idle for 0.5 s; closing"})
        refused = replies.count({"ok": False, "error": "too many control clients (16)"})
        assert timed_out >= 16 and timed_out + refused == 60
        assert wait_for(lambda: srv.clients == 0)
        assert status_ok(srv)
        for c in idle:
            c.close()


def test_control_idle_timeout(tmp_path):
    never = []
    srv = ControlServer(str(tmp_path / "c.sock"), 0o600, never.append, idle_timeout_s=0.3)
    srv.start()
    try:
        quiet = Client(srv.path)
        assert quiet.read() == {"ok": False, "error": "idle for 0.3 s; closing"}
        assert quiet.read() is None
        unanswered = Client(srv.path)
        unanswered.send(b"status\n")
        assert unanswered.read() == {"ok": False, "error": "the agent did not answer within 0.3 s"}
        assert unanswered.read() is None
        assert len(never) == 1
        never[0].respond({"ok": True})  # too late: ignored, nothing breaks
        assert wait_for(lambda: srv.clients == 0)
        assert srv.is_alive
    finally:
        srv.stop()


def test_control_submit_or_client_failure_never_stops_the_server(tmp_path, monkeypatch, caplog):
    def submit(req):
        if req.request["cmd"] == "mute":
            raise RuntimeError("boom")
        req.respond({"ok": True, "status": {"tokens": 10**5000}})

    srv = ControlServer(str(tmp_path / "c.sock"), 0o600, submit)
    srv.start()
    try:
        client = Client(srv.path)
        assert client.ask("mute") == {"ok": False, "error": "internal: RuntimeError: boom"}
        reply = client.ask("status")  # a reply that cannot be encoded
        assert reply["ok"] is False and reply["error"].startswith("internal: the reply could not")
        # a bug while handling one client drops that client, and only it
        real = parse_command

        def buggy(line):
            if line == "press":
                raise KeyError("bug")
            return real(line)

        monkeypatch.setattr("pi_agent.control.parse_command", buggy)
        assert client.ask("press") is None
        assert "client 1 failed; dropping it" in caplog.text
        assert Client(srv.path).ask("release")["ok"] is False  # the unencodable one again
        assert srv.is_alive
    finally:
        srv.stop()


@budget(60)
@given(
    st.lists(
        st.binary(max_size=300)
        | st.sampled_from(
            [
                b"status\n",
                b"watch\n",
                b"say hello\n",
                b'{"cmd": "say", "text": "\\ud800"}\n',
                b'{"cmd": "volume", "value": 1e999}\n',
                b"[" * 5000 + b"\n",
                b"\xed\xa0\x80\n",
                b"\r\n",
                b"x" * 70000,
            ]
        ),
        max_size=8,
    ),
    st.booleans(),
)
def test_control_fuzz_the_server_always_answers_a_fresh_client(random_server, chunks, read):
    srv = random_server
    client = Client(srv.path)
    for chunk in chunks:
        with contextlib.suppress(OSError):
            client.send(chunk)
    if read:
        client.sock.settimeout(0.05)
        with contextlib.suppress(OSError, ValueError):
            client.reader.readline()
    client.close()
    assert status_ok(srv)


@pytest.fixture(scope="module")
def random_server(tmp_path_factory):
    agent = FakeAgent()
    with serving(tmp_path_factory.mktemp("fuzz") / "c.sock", agent) as srv:
        yield srv
    agent.close()


# --------------------------------------------------------------------------- the socket file


def test_control_second_server_on_a_live_socket_is_refused(server, agent):
    other = ControlServer(str(server.path), 0o660, agent.submit)
    message = f"another pi-agent is running (pid {os.getpid()}) on {server.path}"
    with pytest.raises(PiAgentError, match=re.escape(message)):
        other.start()
    other.stop()  # never started: nothing to stop, and the first one's file stays
    assert status_ok(server)


def test_control_stale_socket_replaced_but_not_a_file(tmp_path, agent):
    path = tmp_path / "c.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    with serving(path, agent) as srv:
        assert status_ok(srv)
    assert not path.exists()
    regular = tmp_path / "file"
    regular.write_text("keep me")
    with pytest.raises(PiAgentError, match="is not a socket"):
        ControlServer(str(regular), 0o600, agent.submit).start()
    assert regular.read_text() == "keep me"


def test_control_symlink_refused(tmp_path, agent):
    target = tmp_path / "target"
    target.write_text("keep me")
    link = tmp_path / "c.sock"
    link.symlink_to(target)
    with pytest.raises(PiAgentError, match="is a symbolic link; refusing to use it"):
        ControlServer(str(link), 0o666, agent.submit).start()
    assert link.is_symlink() and target.read_text() == "keep me"
    assert stat.S_IMODE(target.stat().st_mode) != 0o666


def test_control_stop_removes_only_its_own_file(tmp_path, agent):
    path = tmp_path / "c.sock"
    first = ControlServer(str(path), 0o600, agent.submit)
    first.start()
    path.unlink()  # e.g. an operator cleaned up; a second agent starts
    with serving(path, FakeAgent()) as second:
        first.stop()
        assert path.exists() and status_ok(second)
    assert not path.exists()


def test_control_parent_directory(tmp_path, agent):
    with serving(tmp_path / "new" / "c.sock", agent):
        assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o755 & ~_umask()
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with serving(private / "c.sock", agent):
        pass
    assert stat.S_IMODE(private.stat().st_mode) == 0o700  # never chmod-ed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_control_symlink_planted_after_the_check_is_not_followed(tmp_path, agent, monkeypatch):
    """The race chmod-after-bind lost: a link planted between the check and bind()."""
    from pi_agent import control

    target = tmp_path / "target"
    target.write_text("keep me")
    target.chmod(0o600)
    path = tmp_path / "c.sock"
    real_claim = control._claim

    def claim_then_plant(p):
        real_claim(p)
        p.symlink_to(target)

    monkeypatch.setattr(control, "_claim", claim_then_plant)
    with pytest.raises(PiAgentError, match=r"control\.socket .*: Address already in use"):
        ControlServer(str(path), 0o666, agent.submit).start()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_text() == "keep me"
    assert path.is_symlink()
