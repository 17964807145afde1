"""Home Assistant over MQTT: the agent and its GPIO devices as one discovered device.

Optional and off by default (``mqtt.enabled``); voice never waits for it. paho-mqtt's
threaded network loop connects in the background and reconnects with backoff, so a
broker that is down at start or leaves mid-run only delays the entities. paho's
callbacks do nothing but enqueue: the bridge's own thread (``pi-agent-mqtt``)
validates commands like control-socket input, calls ``submit``/``command_device``,
and publishes the agent's observations to retained state topics.

On every connection (and whenever Home Assistant announces itself on
``<prefix>/status``) it publishes the retained discovery message, ``online`` on the
availability topic (the last will says ``offline``) and every state fresh. Commands
are accepted only on the topics the discovery message names (see
:mod:`pi_agent.mqtt_discovery`). The password comes from a file or a systemd
credential (:func:`mqtt_password`), never the YAML, and never reaches a log line.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import DeviceSettings, MqttSettings, _read_secret
from .errors import ConfigError
from .logs import add_secret
from .mqtt_discovery import (
    Command,
    CommandError,
    Discovery,
    Topics,
    agent_request,
    device_command,
    device_id,
    device_state,
    on_off,
    problem_payload,
    state_payload,
    turn_payload,
)
from .threads import Worker

try:
    from .control import ControlRequest
except ImportError:  # the control module of the new conversation core is not merged yet

    @dataclass(frozen=True)
    class ControlRequest:  # type: ignore[no-redef]
        """One command for the agent and the thread-safe way to answer it."""

        request: dict[str, Any]
        respond: Callable[[dict[str, Any]], None]


try:
    import paho.mqtt.client as paho
except ImportError:  # pragma: no cover - the mqtt extra is not installed
    paho = None

log = logging.getLogger(__name__)

CREDENTIAL = "mqtt-password"
MAX_BACKLOG = 1000  # observations and commands waiting for the bridge thread
TEXT_LIMIT = 4000  # characters of a transcript sent to Home Assistant
_TOOL_ARGS_KEPT = 64  # tool-call arguments remembered until their result arrives


def mqtt_password(settings: MqttSettings, environ: Mapping[str, str] | None = None) -> str | None:
    """``mqtt.password_file``, else the systemd credential ``mqtt-password``, else None.

    Never from the YAML. A named file that is missing or empty is a ConfigError.
    """
    env = os.environ if environ is None else environ
    if settings.password_file:
        return _read_secret(Path(settings.password_file), "mqtt.password_file")
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir and (Path(cred_dir) / CREDENTIAL).exists():
        return _read_secret(Path(cred_dir) / CREDENTIAL, f"systemd credential {CREDENTIAL!r}")
    return None


def _json(value: Any) -> bytes:
    """JSON without NaN/Infinity (Home Assistant's parser refuses them): those become null."""
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=False, default=str).encode()
    except ValueError:
        return json.dumps(_finite(value), ensure_ascii=False, default=str).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _new_client(settings: MqttSettings, password: str | None, client_id: str) -> Any:
    """A paho client with credentials and TLS set (raises ConfigError for a bad CA file)."""
    if paho is None:
        raise ConfigError("mqtt: paho-mqtt is not installed (pip install 'pi-agent[mqtt]')")
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
    if settings.username:
        client.username_pw_set(settings.username, password)
    if settings.tls.enabled:
        try:
            client.tls_set(ca_certs=settings.tls.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"mqtt.tls.ca_file: cannot use {settings.tls.ca_file}: {exc.strerror or exc}"
            ) from None
    return client


def _refusal(reason: Any) -> str:
    """Why the broker said no, with the fix."""
    text = str(reason)
    if "authori" in text.lower() or "password" in text.lower():
        return (
            f"the broker refused the login ({text}); check mqtt.username and the password "
            f"(mqtt.password_file or the systemd credential {CREDENTIAL})"
        )
    return f"the broker refused the connection ({text})"


class _Once:
    """A respond callable: thread-safe, the first call wins, later calls are ignored."""

    def __init__(self, deliver: Callable[[dict[str, Any]], None]):
        self._deliver: Callable[[dict[str, Any]], None] | None = deliver
        self._lock = threading.Lock()

    def __call__(self, reply: dict[str, Any]) -> None:
        with self._lock:
            deliver, self._deliver = self._deliver, None
        if deliver is not None:
            deliver(reply)


class MqttBridge(Worker):
    """The agent as a Home Assistant device on an MQTT broker.

    ``submit`` takes control requests (never blocks); ``command_device(name,
    verb, args)`` applies a GPIO verb through the device layer, its bounds and
    rate limits, returns the new state and raises ValueError (ToolError) when
    refused; ``devices`` are the GPIO devices to expose (leave out the status
    light the agent drives); ``device_states()`` returns every exposed device's
    state and is called from the bridge's thread.
    """

    name = "pi-agent-mqtt"

    def __init__(
        self,
        settings: MqttSettings,
        *,
        submit: Callable[[ControlRequest], None],
        command_device: Callable[[str, str, dict], dict],
        devices: Mapping[str, DeviceSettings],
        device_states: Callable[[], dict[str, dict]],
        password: str | None,
        version: str,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__()
        self.settings = settings
        self._submit = submit
        self._command_device = command_device
        self._device_states = device_states
        self._password = password
        add_secret(password)
        self._clock = clock
        self.discovery = Discovery(settings, devices, version)
        self.topics: Topics = self.discovery.topics
        self._kinds = {name: dev.kind for name, dev in devices.items()}
        self._queue: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._backlog = 0  # observations and commands queued (bounded by MAX_BACKLOG)
        self._backlog_lock = threading.Lock()
        self._dropped = 0
        self._client: Any = None
        # Below: the bridge thread's own state.
        self._online = False
        self._retained: dict[str, bytes] = {}  # last payload of every state topic
        self._devices: dict[str, dict] = {}  # last state of every device
        self._tool_args: OrderedDict[str, Any] = OrderedDict()
        self._trouble = ""  # last connection problem logged (log each kind once)
        self._dropped_logged_at = -math.inf
        self._config_seen = False  # the first discovery message since connecting was checked

    # ------------------------------------------------------------------ lifecycle

    @property
    def connected(self) -> bool:
        """True while the bridge has a broker connection (read from any thread)."""
        return self._online

    def start(self) -> None:
        """Start the bridge thread and connect in the background; never raises for the broker.

        A bad CA file or missing paho is logged and leaves the bridge off: voice
        never depends on MQTT.
        """
        if not self.settings.enabled:
            log.debug("mqtt: disabled (mqtt.enabled is false)")
            return
        s = self.settings
        try:
            client = _new_client(s, self._password, f"pi-agent-{self.discovery.device_id}")
        except ConfigError as exc:
            log.error("%s; Home Assistant link off", exc)
            return
        client.will_set(self.topics.availability, "offline", qos=1, retain=True)
        client.reconnect_delay_set(s.backoff_initial_s, s.backoff_max_s)
        client.max_queued_messages_set(MAX_BACKLOG)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        super().start()
        client.connect_async(s.host, s.port, keepalive=s.keepalive_s)
        client.loop_start()
        log.info(
            "mqtt: connecting to %s:%d%s as device %s",
            s.host,
            s.port,
            " (TLS)" if s.tls.enabled else "",
            self.discovery.device_id,
        )

    def stop(self, timeout: float = 3.0) -> None:
        """Say ``offline`` (retained), disconnect cleanly (no last will), stop both threads."""
        deadline = time.monotonic() + timeout
        client = self._client
        try:
            super().stop(timeout)
        finally:
            if client is not None:
                self._goodbye(client, max(0.1, deadline - time.monotonic()))

    def _goodbye(self, client: Any, timeout: float) -> None:
        if self._online:
            try:
                info = client.publish(self.topics.availability, "offline", qos=1, retain=True)
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.debug("mqtt: could not say offline: %s", exc)
        self._online = False
        client.disconnect()
        client.loop_stop()
        self._client = None

    def remove(self, timeout: float = 5.0) -> int:
        """Stop, then delete this device from Home Assistant and its retained topics."""
        self.stop(timeout)
        return clear_discovery(self.settings, self._password, timeout=timeout)

    # ------------------------------------------------------------------ inputs (any thread)

    def publish(self, event: dict) -> None:
        """Queue one observation (observations are dicts with an ``event`` key); never blocks.

        Before :meth:`start` (or when disabled) it is dropped: the agent's status,
        asked for on every connection, brings the states up to date.
        """
        if self._client is not None:
            self._put_bulk(("event", event))

    def _put_bulk(self, item: tuple) -> None:
        with self._backlog_lock:
            if self._backlog >= MAX_BACKLOG:
                self._dropped += 1
                return
            self._backlog += 1
        self._queue.put(item)

    def _on_connect(self, _client, _userdata, _flags, reason, _props) -> None:
        self._queue.put(("connected", not reason.is_failure, str(reason)))

    def _on_connect_fail(self, _client, _userdata) -> None:
        self._queue.put(("unreachable",))

    def _on_disconnect(self, _client, _userdata, _flags, reason, _props) -> None:
        self._queue.put(("disconnected", str(reason)))

    def _on_message(self, _client, _userdata, message) -> None:
        self._put_bulk(("message", message.topic, bytes(message.payload)))

    def _wake(self) -> None:
        self._queue.put(("stop",))

    # ------------------------------------------------------------------ the bridge thread

    def _run(self) -> None:
        poll = self.settings.device_poll_s if self._kinds else None
        next_poll = self._clock() + poll if poll else math.inf
        while not self.stopping.is_set():
            wait = None if next_poll == math.inf else max(0.0, next_poll - self._clock())
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                item = None
            if item is None or (poll and self._clock() >= next_poll):
                self._poll_devices()
                next_poll = self._clock() + poll if poll else math.inf
            if item is None:
                continue
            if item[0] in ("event", "message"):
                with self._backlog_lock:
                    self._backlog -= 1
            try:
                self._handle(item)
            except Exception:  # one bad event must not end the bridge
                log.exception("mqtt: handling %s failed", item[0])
            self._report_drops()

    def _handle(self, item: tuple) -> None:
        kind = item[0]
        if kind == "stop":
            return
        if kind == "event":
            self._observe(item[1])
        elif kind == "message":
            self._message(item[1], item[2])
        elif kind == "connected":
            self._connected(item[1], item[2])
        elif kind == "unreachable":
            s = self.settings
            self._trouble_once(
                "unreachable",
                f"mqtt: cannot reach the broker at {s.host}:{s.port}; retrying "
                f"(pi-agent check says why)",
            )
        elif kind == "disconnected":
            if self._online:
                log.warning("mqtt: lost the broker (%s); reconnecting", item[1])
            self._online = False
        elif kind == "reply":
            self._replied(item[1], item[2])
        elif kind == "status":
            self._status(item[1])

    def _trouble_once(self, key: str, message: str) -> None:
        if key != self._trouble:
            log.warning("%s", message)
        else:
            log.debug("%s", message)
        self._trouble = key

    def _report_drops(self) -> None:
        if self._dropped and self._clock() - self._dropped_logged_at >= 60:
            log.warning("mqtt: %d messages dropped (the bridge fell behind)", self._dropped)
            self._dropped, self._dropped_logged_at = 0, self._clock()

    # -- connection

    def _connected(self, ok: bool, reason: str) -> None:
        if not ok:
            self._trouble_once(f"refused {reason}", f"mqtt: {_refusal(reason)}; retrying")
            return
        self._online, self._trouble, self._config_seen = True, "", False
        t = self.topics
        log.info("mqtt: connected to %s:%d", self.settings.host, self.settings.port)
        subscriptions = [(topic, 1) for topic in self.discovery.commands]
        subscriptions += [(t.ha_status, 1), (t.config, 1)]
        self._client.subscribe(subscriptions)
        self._announce()
        self._submit_quietly({"cmd": "status"}, lambda reply: self._queue.put(("status", reply)))

    def _announce(self, stale: Mapping[str, str] | None = None) -> None:
        """Discovery, ``online``, then every state fresh (after a reconnect or an HA restart)."""
        self._send(self.topics.config, self.discovery.payload(stale), retain=True)
        self._send(self.topics.availability, b"online", retain=True)
        for topic, payload in list(self._retained.items()):
            self._send(topic, payload, retain=True)
        self._poll_devices(force=True)

    def _send(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        if self._online and self._client is not None:
            self._client.publish(topic, payload, qos=1, retain=retain)

    def _retain(self, topic: str, payload: bytes | str) -> None:
        """Publish a state (retained) when it changed; remembered for the next connection."""
        data = payload.encode() if isinstance(payload, str) else payload
        if self._retained.get(topic) == data:
            return
        self._retained[topic] = data
        self._send(topic, data, retain=True)

    # -- Home Assistant -> agent

    def _message(self, topic: str, payload: bytes) -> None:
        t = self.topics
        if topic == t.ha_status:
            if payload == b"online":
                log.info("mqtt: Home Assistant is back; announcing again")
                self._announce()
            return
        if topic == t.config:
            # Only the first one after subscribing: the retained message of the previous
            # run (or our own echo). Two agents sharing a device_id then cannot ping-pong.
            if self._config_seen:
                return
            self._config_seen = True
            stale = self.discovery.stale(payload) if payload else {}
            if stale:
                log.info("mqtt: removing entities no longer configured: %s", ", ".join(stale))
                self._announce(stale)
            return
        command = self.discovery.commands.get(topic)
        if command is None:  # not a topic the discovery payload names
            log.debug("mqtt: ignored a message on %s", topic)
            return
        try:
            if command.target == "gpio":
                self._device_command(command, topic, payload)
            else:
                request = agent_request(command, topic, payload)
                self._submit_quietly(request, lambda r: self._queue.put(("reply", request, r)))
        except CommandError as exc:
            log.warning("mqtt: refused: %s", exc)

    def _device_command(self, command: Command, topic: str, payload: bytes) -> None:
        name = command.device
        verb, args = device_command(command, topic, payload, self._devices.get(name, {}))
        try:
            state = self._command_device(name, verb, args)
        except ValueError as exc:  # ToolError: out of bounds, rate limited...
            log.warning("mqtt: refused %s %s %s: %s", name, verb, args or "", exc)
            self._publish_device(name, self._devices.get(name), force=True)
            return
        log.info("mqtt: %s %s %s", name, verb, args or "")
        if isinstance(state, dict):
            self._publish_device(name, state)

    def _submit_quietly(self, request: dict, deliver: Callable[[dict], None]) -> None:
        try:
            self._submit(ControlRequest(request=request, respond=_Once(deliver)))
        except Exception:
            log.exception("mqtt: the agent did not take %s", request.get("cmd"))

    def _replied(self, request: dict, reply: dict) -> None:
        cmd = request["cmd"]
        if isinstance(reply, dict) and reply.get("ok") is False:
            log.warning("mqtt: %s refused by the agent: %s", cmd, reply.get("error"))
            # Home Assistant shows a control at what it sent until told otherwise: tell it.
            t = self.topics
            topic = {"volume": t.volume, "mute": t.mute, "unmute": t.mute}.get(cmd)
            if topic is not None and topic in self._retained:
                self._send(topic, self._retained[topic], retain=True)
        else:
            log.info("mqtt: %s done", cmd)

    # -- agent -> Home Assistant

    def _observe(self, event: Any) -> None:
        if not isinstance(event, dict):
            return
        kind, t = event.get("event"), self.topics
        if kind == "state":
            self._retain(t.state, _json(state_payload(event)))
            self._retain(t.problem, _json(problem_payload(event)))
        elif kind == "connection":
            self._retain(t.connected, on_off(event.get("connected")))
        elif kind == "muted":
            self._retain(t.mute, on_off(event.get("muted")))
        elif kind == "volume":
            self._volume(event.get("volume"))
        elif kind == "turn":
            self._retain(t.turn, _json(turn_payload(event)))
        elif kind == "transcript":
            text = str(event.get("text", ""))[:TEXT_LIMIT]
            body = {"event_type": event.get("who"), "turn": event.get("turn"), "text": text}
            if body["event_type"] in ("user", "model"):
                self._send(t.transcript, _json(body))
        elif kind == "tool_call":
            self._tool_args[str(event.get("id"))] = event.get("args")
            while len(self._tool_args) > _TOOL_ARGS_KEPT:
                self._tool_args.popitem(last=False)
            self._send(t.tool, _json({"event_type": "call", **_pick(event)}))
        elif kind == "tool_result":
            args = self._tool_args.pop(str(event.get("id")), None)
            body = {"event_type": "result", **_pick(event), "args": args}
            self._send(t.tool, _json({**body, "result": event.get("result")}))
        elif kind == "device":
            name = event.get("name")
            if name in self._kinds and isinstance(event.get("state"), dict):
                self._publish_device(name, event["state"])

    def _volume(self, value: Any) -> None:
        if isinstance(value, (int, float)) and math.isfinite(value):
            self._retain(self.topics.volume, str(round(value * 100)))

    def _status(self, reply: Any) -> None:
        """The agent's answer to ``status``: everything, fresh, after a (re)connect."""
        status = reply.get("status") if isinstance(reply, dict) else None
        if not isinstance(status, dict):
            return
        self._observe({"event": "state", **status})
        connection = status.get("connection")
        if isinstance(connection, dict) and "connected" in connection:
            self._observe({"event": "connection", "connected": connection["connected"]})
        if "muted" in status:
            self._observe({"event": "muted", "muted": status["muted"]})
        audio = status.get("audio")
        if isinstance(audio, dict):
            self._volume(audio.get("volume"))
        last = status.get("last_turn")
        if isinstance(last, dict):  # its metrics, as a "turn" observation carries them
            counters = status.get("counters") if isinstance(status.get("counters"), dict) else {}
            usage = {
                k: counters.get(k) for k in ("prompt_tokens", "response_tokens", "total_tokens")
            }
            self._observe(
                {"event": "turn", "turn": last.get("turn"), "metrics": last, "usage": usage}
            )
        devices = status.get("devices")
        for name, state in (devices if isinstance(devices, dict) else {}).items():
            self._observe({"event": "device", "name": name, "state": state})

    def _poll_devices(self, force: bool = False) -> None:
        if not self._kinds:
            return
        try:
            states = self._device_states()
        except Exception as exc:
            log.debug("mqtt: reading the devices failed: %s", exc)
            return
        for name, state in states.items():
            if name in self._kinds:
                self._publish_device(name, state, force=force)

    def _publish_device(self, name: str, state: dict | None, *, force: bool = False) -> None:
        if state is None:
            return
        self._devices[name] = state
        topic = self.topics.gpio(name)
        payload = device_state(self._kinds[name], state).encode()
        if force:
            self._retained.pop(topic, None)
        self._retain(topic, payload)


def _pick(event: Mapping[str, Any]) -> dict[str, Any]:
    return {k: event.get(k) for k in ("turn", "id", "name")}


# --------------------------------------------------------------------------- tools


def check_broker(
    settings: MqttSettings, password: str | None, timeout: float = 5.0
) -> tuple[bool, str]:
    """``pi-agent check``: can we log in to the broker? (ok, one line with the fix if not)."""
    s = settings
    where = f"{s.host}:{s.port}"
    try:
        client = _new_client(s, password, f"pi-agent-check-{device_id(s)}-{os.getpid()}")
    except ConfigError as exc:
        return False, str(exc)
    client.connect_timeout = timeout
    answered = threading.Event()
    result: dict[str, Any] = {}

    def on_connect(_c, _u, _f, reason, _p) -> None:
        result["reason"] = reason
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(s.host, s.port, keepalive=max(5, int(timeout) + 5))
    except ssl.SSLCertVerificationError as exc:
        return False, (
            f"TLS to {where}: the broker's certificate is not trusted ({exc.verify_message}); "
            f"set mqtt.tls.ca_file to its CA"
        )
    except ssl.SSLError as exc:
        return False, f"TLS to {where} failed ({exc.reason}); is mqtt.port a TLS port?"
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return False, (
            f"cannot reach {where}: {reason}; is the broker running, and are mqtt.host and "
            f"mqtt.port right?"
        )
    client.loop_start()
    try:
        if not answered.wait(timeout):
            hint = "" if s.tls.enabled else "; if it is a TLS port, set mqtt.tls.enabled"
            return False, f"{where} did not answer the MQTT login within {timeout:g} s{hint}"
        reason = result["reason"]
        if reason.is_failure:
            return False, _refusal(reason)
        who = f" as {s.username}" if s.username else " anonymously"
        tls = " with TLS" if s.tls.enabled else ""
        return True, f"logged in to {where}{tls}{who}; device id {device_id(s)}"
    finally:
        client.disconnect()
        client.loop_stop()


def clear_discovery(settings: MqttSettings, password: str | None, timeout: float = 5.0) -> int:
    """Delete this agent from Home Assistant: empty every retained topic it left behind.

    For ``uninstall.sh --purge`` and ``pi-agent mqtt-clear``: the discovery message
    (Home Assistant removes the device) and the retained states under
    ``<base_topic>/<device_id>/``. Returns how many topics were emptied (the discovery
    topic always counts); raises ConnectionError when the broker is unreachable or refuses.
    """
    topics = Topics(settings, device_id(settings))
    marker = f"{topics.base}/clear-{os.getpid()}-{threading.get_ident()}"
    client = _new_client(settings, password, f"pi-agent-clear-{topics.device_id}-{os.getpid()}")
    client.connect_timeout = timeout
    found: set[str] = set()
    done = threading.Event()
    ready = threading.Event()
    refused: list[str] = []

    def on_connect(c, _u, _f, reason, _p) -> None:
        if reason.is_failure:
            refused.append(_refusal(reason))
            ready.set()
            return
        c.subscribe([(topics.config, 1), (f"{topics.base}/#", 1)])

    def on_subscribe(c, _u, _mid, _codes, _p) -> None:
        # The broker sends the retained messages right after the subscription: once our
        # own marker comes back, every one of them has arrived.
        c.publish(marker, b"end", qos=1)
        ready.set()

    def on_message(_c, _u, msg) -> None:
        if msg.topic == marker:
            done.set()
        elif msg.retain and msg.payload:
            found.add(msg.topic)

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    try:
        client.connect(settings.host, settings.port, keepalive=max(5, int(timeout) + 5))
    except OSError as exc:
        where = f"{settings.host}:{settings.port}"
        raise ConnectionError(f"cannot reach the MQTT broker at {where}: {exc}") from None
    client.loop_start()
    try:
        if not ready.wait(timeout) or refused:
            raise ConnectionError(refused[0] if refused else "the MQTT broker did not answer")
        if not done.wait(timeout):
            raise ConnectionError("the MQTT broker did not return the retained messages")
        found.add(topics.config)
        for topic in sorted(found):
            client.publish(topic, b"", qos=1, retain=True).wait_for_publish(timeout)
        log.info("mqtt: cleared %d retained messages of %s", len(found), topics.device_id)
        return len(found)
    finally:
        client.disconnect()
        client.loop_stop()
