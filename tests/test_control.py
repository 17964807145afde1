"""The control socket: JSON lines over a real UNIX socket, bad input never crashes it."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import threading

import pytest

from pi_agent.control import ControlServer, parse_command, send_command
from pi_agent.errors import PiAgentError

from .control_fake import FakeAgent


def test_control_parse_plain_and_json():
    assert parse_command("press") == {"cmd": "press"}
    assert parse_command("say turn on the lamp") == {
        "cmd": "say",
        "text": "turn on the lamp",
        "wait": True,
    }
    assert parse_command("volume 0.5") == {"cmd": "volume", "value": 0.5}
    assert parse_command('{"cmd": "status"}') == {"cmd": "status"}
    assert parse_command('{"cmd": "volume", "value": 1}') == {"cmd": "volume", "value": 1}


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
    ],
)
def test_control_parse_rejects(line, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        parse_command(line)


@pytest.fixture
def agent():
    fake = FakeAgent()
    yield fake
    fake.close()


@pytest.fixture
def server(tmp_path, agent):
    srv = ControlServer(str(tmp_path / "run" / "control.sock"), 0o660, agent.submit)
    agent.server = srv
    srv.start()
    srv.seen = agent.seen
    yield srv
    srv.stop()


def test_control_socket_permissions_and_round_trip(server):
    mode = stat.S_IMODE(os.stat(server.path).st_mode)
    assert mode == 0o660
    assert send_command(str(server.path), {"cmd": "press"}) == {"ok": True}
    assert send_command(str(server.path), {"cmd": "status"})["status"]["state"] == "ready"
    assert server.seen == [{"cmd": "press"}, {"cmd": "status"}]


def test_control_socket_malformed_lines_get_error_lines(server):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(server.path))
        sock.sendall(b"{bad json\nfly\npress\n" + b"x" * 70000 + b"\nmute\n")
        reader = sock.makefile("rb")
        replies = [json.loads(reader.readline()) for _ in range(5)]
    assert replies[0]["ok"] is False and "invalid JSON" in replies[0]["error"]
    assert replies[1] == {
        "ok": False,
        "error": "unknown command 'fly'; known: press, release, talk, say, mute, unmute, volume,"
        " status, watch",
    }
    assert replies[2] == {"ok": True}
    assert replies[3] == {"ok": False, "error": "request line longer than 65536 bytes"}
    assert replies[4] == {"ok": False, "error": "there is no microphone to mute"}
    # the server survived all of it
    assert send_command(str(server.path), {"cmd": "release"}) == {"ok": True}


def test_control_socket_replaces_stale_socket_but_not_a_file(tmp_path):
    path = tmp_path / "c.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    srv = ControlServer(str(path), 0o600, lambda r: r.respond({"ok": True}))
    srv.start()
    try:
        assert send_command(str(path), {"cmd": "press"}) == {"ok": True}
    finally:
        srv.stop()
    assert not path.exists()
    regular = tmp_path / "file"
    regular.write_text("keep me")
    with pytest.raises(PiAgentError, match="is not a socket"):
        ControlServer(str(regular), 0o600, lambda r: r.respond({"ok": True})).start()
    assert regular.read_text() == "keep me"


def test_control_concurrent_clients(server):
    results = []

    def client():
        results.append(send_command(str(server.path), {"cmd": "press"}))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert results == [{"ok": True}] * 8
