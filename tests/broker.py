"""Test helpers for MQTT: a real mosquitto broker and a paho client playing Home Assistant.

The broker runs in the foreground on a free loopback port with persistence off, so
killing it loses every retained message, like a broker that crashed and came back
empty. Waiting is always on a condition with a deadline, never a bare sleep.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from .conftest import TIMEOUT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def need(tool: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin")
    if path is None:
        pytest.skip(f"{tool} not installed (apt install mosquitto; scripts/setup-env does it)")
    return path


def wait_until(predicate: Callable[[], Any], timeout: float = TIMEOUT, what: str = "") -> Any:
    """Poll ``predicate`` until it is truthy; fail the test naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}")
        pause.wait(0.01)


class Broker:
    """``mosquitto -c FILE`` on 127.0.0.1; ``kill()`` and ``start()`` again keep the port."""

    def __init__(
        self,
        directory: Path,
        *,
        users: dict[str, str] | None = None,
        tls: tuple[str, str, str] | None = None,
    ):
        self.binary = need("mosquitto")
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence false",
            "user root",  # only matters when the tests run as root: do not drop privileges
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if users:
            passwd = directory / "passwd"
            tool = need("mosquitto_passwd")
            for i, (user, password) in enumerate(users.items()):
                create = ["-c"] if i == 0 else []
                subprocess.run(
                    [tool, *create, "-b", str(passwd), user, password],
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
            passwd.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            ca, cert, key = tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = directory / "mosquitto.log"

    def start(self) -> Broker:
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_until(self._listening, what=f"mosquitto to listen on port {self.port}")
        return self

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL: no goodbye to anybody, every retained message gone (persistence false)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(TIMEOUT)


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    at: float

    @property
    def text(self) -> str:
        return self.payload.decode()

    def json(self) -> Any:
        return json.loads(self.payload)


class HomeAssistant:
    """A paho client doing what Home Assistant's MQTT integration does on the wire.

    It subscribes to the discovery prefix and the agents' topics, remembers every
    message (``history``) and the last one per topic (``last``), and can publish
    commands and its own ``homeassistant/status`` birth message.
    """

    def __init__(
        self, port: int, *, user: tuple[str, str] | None = None, tls_ca: str | None = None
    ):
        self.port = port
        self.history: list[Message] = []
        self.last: dict[str, Message] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"ha-test-{port}-{id(self)}"
        )
        if user:
            self.client.username_pw_set(*user)
        if tls_ca:
            self.client.tls_set(ca_certs=tls_ca)
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message

    def start(self, topics: tuple[str, ...] = ("homeassistant/#", "pi-agent/#")) -> HomeAssistant:
        self._topics = topics
        self.client.connect_async("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        assert self._subscribed.wait(TIMEOUT), "the HA test client could not subscribe"
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, _userdata, _flags, reason, _props) -> None:
        if not reason.is_failure:
            client.subscribe([(t, 1) for t in self._topics])

    def _on_message(self, _client, _userdata, msg) -> None:
        m = Message(msg.topic, bytes(msg.payload), bool(msg.retain), time.monotonic())
        with self._lock:
            self.history.append(m)
            self.last[msg.topic] = m

    # -- queries

    def messages(self, topic: str) -> list[Message]:
        with self._lock:
            return [m for m in self.history if m.topic == topic]

    def wait_for(
        self,
        topic: str,
        predicate: Callable[[Message], bool] = lambda m: True,
        *,
        after: float = 0.0,
        timeout: float = TIMEOUT,
    ) -> Message:
        """The first message on ``topic`` received after ``after`` that satisfies ``predicate``."""

        def find() -> Message | None:
            for m in self.messages(topic):
                if m.at >= after and predicate(m):
                    return m
            return None

        return wait_until(find, timeout, what=f"a matching message on {topic}")

    def publish(self, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(TIMEOUT)


def retained(port: int, topic_filter: str, **client_args: Any) -> dict[str, Message]:
    """What a client subscribing now would get: the broker's retained messages on a filter.

    A marker published after the subscription comes back after every retained one.
    """
    found: dict[str, Message] = {}
    done = threading.Event()
    marker = f"test-marker/{id(found)}"
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"retained-{id(found)}")
    if client_args.get("user"):
        client.username_pw_set(*client_args["user"])

    def on_connect(c, _u, _f, reason, _p) -> None:
        c.subscribe([(topic_filter, 1), (marker, 1)])

    def on_subscribe(c, *_args) -> None:
        c.publish(marker, b"end", qos=1)

    def on_message(_c, _u, msg) -> None:
        if msg.topic == marker:
            done.set()
        elif msg.retain:
            found[msg.topic] = Message(msg.topic, bytes(msg.payload), True, time.monotonic())

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert done.wait(TIMEOUT), "the broker did not return the retained messages"
    finally:
        client.disconnect()
        client.loop_stop()
    return found
