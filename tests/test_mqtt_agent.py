"""Home Assistant over MQTT, end to end: the real agent, a real mosquitto, the fake Live server.

Unlike tests/test_mqtt.py (the bridge against a stand-in agent), everything here is
the product as it runs: ``build_agent`` wires the bridge (pi_agent/parts.py), its
commands go through the agent's inbox and the device layer's bounds and rate
limits, and its states are the agent's own observations. A paho client plays Home
Assistant (tests/broker.py). Where a process is needed (SIGKILL, the fleet), the
agents are ``python -m pi_agent run --config FILE`` (tests/fleet.py).
"""

from __future__ import annotations

import json
import logging
import signal
import time

import pytest

from pi_agent.agent import State
from pi_agent.mqtt import MqttBridge
from pi_agent.sim.alsa import SimulatedSoundCard
from pi_agent.sim.fake_live import FakeLiveServer, Reply

from .agent_harness import RunningAgent, agent_config
from .broker import Broker, HomeAssistant, retained, wait_until
from .conftest import FAKE_KEY, TIMEOUT
from .fleet import API_KEY, DEVICES, TOOLS, AgentProcess, Fleet

BACK_WITHIN_S = 10.0  # issue 14: every entity is back this long after the broker returns
LONG_ANSWER = "Here is a long answer, so that it is still playing when things go wrong."

# What Home Assistant refuses a component without, per platform (its MQTT schemas).
REQUIRED = {
    "sensor": {"state_topic"},
    "binary_sensor": {"state_topic"},
    "switch": {"command_topic"},
    "number": {"command_topic"},
    "button": {"command_topic"},
    "text": {"command_topic"},
    "event": {"state_topic", "event_types"},
    "light": {"command_topic", "schema"},
}
AGENT_ENTITIES = {"state", "connected", "problem", "cause", "mute", "volume", "talk", "say"}
AGENT_ENTITIES |= {"latency", "tokens", "transcript", "tool"}


@pytest.fixture
def server():
    with FakeLiveServer(api_key=FAKE_KEY) as srv:
        yield srv


def mqtt_agent(server, tmp_path, port: int, dev_id: str, *, mqtt=None, **sections):
    """The harness's agent (timers off, mock pins, control socket in tmp) with MQTT on."""
    sections.setdefault("devices", DEVICES)
    sections.setdefault("tools", TOOLS)
    settings = {"enabled": True, "host": "127.0.0.1", "port": port, "device_id": dev_id}
    settings.update(backoff_initial_s=0.1, backoff_max_s=1.0, **(mqtt or {}))
    return RunningAgent(agent_config(server, tmp_path, mqtt=settings, **sections))


def bridge_of(run: RunningAgent) -> MqttBridge:
    return next(e for e in run.agent.parts.extras if isinstance(e, MqttBridge))


def commands_heard(ha: HomeAssistant, base: str) -> None:
    """Wait until the bridge listens: it subscribes to its command topics, then says
    ``online`` on the same connection, so the broker has the subscription by then (READY
    alone does not say so: the agent connects to Gemini and the broker in parallel)."""
    ha.wait_for(f"{base}/availability", lambda m: m.text == "online")


def states_after(ha: HomeAssistant, topic: str, mark: float) -> list[str]:
    """The agent states Home Assistant saw since ``mark``, repeats folded."""
    seen: list[str] = []
    for m in ha.messages(topic):
        if m.at >= mark:
            state = m.json()["state"]
            if not seen or seen[-1] != state:
                seen.append(state)
    return seen


def in_order(seen: list[str], wanted: list[str]) -> bool:
    it = iter(seen)
    return all(any(s == w for s in it) for w in wanted)


# --------------------------------------------------------------------------- discovery


def test_the_running_agent_is_discovered_with_what_home_assistant_requires(
    broker, ha, server, tmp_path
):
    with mqtt_agent(server, tmp_path, broker.port, "lounge", mqtt={"name": "Lounge"}) as run:
        run.wait_state(State.READY)
        payload = ha.wait_for("homeassistant/device/lounge/config").json()
        ha.wait_for("pi-agent/lounge/state", lambda m: m.json()["state"] == "ready")
        ha.wait_for("pi-agent/lounge/gpio/door")
        kept = retained(broker.port, "#")
        bridge = bridge_of(run)

    assert payload["dev"]["ids"] == ["pi_agent_lounge"] and payload["dev"]["name"] == "Lounge"
    assert payload["dev"]["sw"] and payload["o"]["name"] == "pi-agent"
    base = "pi-agent/lounge"
    assert payload["availability_topic"] == f"{base}/availability"
    assert (payload["payload_available"], payload["payload_not_available"]) == ("online", "offline")
    cmps = payload["cmps"]
    # The status light and the talk button are the agent's own: not entities.
    assert set(cmps) == AGENT_ENTITIES | {"gpio_lamp", "gpio_counter_light", "gpio_door"}
    unique_ids = [c["unique_id"] for c in cmps.values()]
    assert len(set(unique_ids)) == len(unique_ids)
    state_topics, command_topics = set(), set()
    for cid, comp in cmps.items():
        assert REQUIRED[comp["p"]] <= set(comp), f"{cid} lacks {REQUIRED[comp['p']] - set(comp)}"
        assert comp["name"] and comp["unique_id"].startswith("pi_agent_lounge_"), cid
        for key, topic in comp.items():
            if key.endswith("_topic"):
                assert topic.startswith(f"{base}/"), (cid, key, topic)
        if "state_topic" in comp and comp["p"] != "event":
            state_topics.add(comp["state_topic"])
        if "command_topic" in comp:
            assert comp["command_topic"].endswith("/set") and comp["command_topic"] not in (
                state_topics | {comp.get("state_topic")}
            ), cid
            command_topics.add(comp["command_topic"])
    assert command_topics == set(bridge.discovery.commands)  # what it subscribes to, no more
    assert cmps["gpio_lamp"]["p"] == "switch"
    assert cmps["gpio_counter_light"]["supported_color_modes"] == ["brightness"]
    assert cmps["gpio_door"]["p"] == "binary_sensor"

    # Retained: Home Assistant (re)starting later gets the device and every state at once.
    assert kept["homeassistant/device/lounge/config"].json() == payload
    assert kept[f"{base}/availability"].text == "online"
    not_yet = {f"{base}/turn"}  # the last turn's sensors: no turn yet
    assert state_topics - not_yet <= set(kept), state_topics - not_yet - set(kept)
    assert kept[f"{base}/state"].json()["state"] == "ready"
    assert kept[f"{base}/connected"].text == "ON"
    assert kept[f"{base}/problem"].json()["problem"] == "OFF"
    assert kept[f"{base}/gpio/lamp"].text == "OFF"
    # A clean stop says offline (retained), so Home Assistant greys the device out.
    assert retained(broker.port, f"{base}/availability")[f"{base}/availability"].text == "offline"


# --------------------------------------------------------------------------- the conversation


def test_the_talk_button_goes_listening_thinking_speaking_ready(broker, ha, server, tmp_path):
    server.replies.append(Reply(text=LONG_ANSWER[:30], pace=1.0))  # ~1.8 s of speech
    base = "pi-agent/den"
    with mqtt_agent(server, tmp_path, broker.port, "den") as run:
        run.wait_state(State.READY)
        ha.wait_for(f"{base}/state", lambda m: m.json()["state"] == "ready")
        mark = time.monotonic()
        ha.publish(f"{base}/talk/set", "PRESS")
        ha.wait_for(f"{base}/state", lambda m: m.json()["state"] == "listening", after=mark)
        assert run.agent.talking
        ha.publish(f"{base}/talk/set", "PRESS")  # the second press ends the turn
        ha.wait_for(f"{base}/state", lambda m: m.json()["state"] == "speaking", after=mark)
        ha.wait_for(f"{base}/state", lambda m: m.json()["state"] == "ready", after=mark, timeout=15)
        seen = states_after(ha, f"{base}/state", mark)
        assert in_order(seen, ["listening", "thinking", "speaking", "ready"]), seen
        turn = ha.wait_for(f"{base}/turn", lambda m: m.json()["turn"] == 1).json()
        assert turn["latency_ms"] is not None and turn["latency_ms"] >= 0
        assert turn["metrics"]["turn"] == 1 and turn["metrics"]["speech_bytes"] == 0
        assert run.agent.turn == 1
    subs = [m.sub for m in server.messages(kind="realtimeInput")]
    assert subs == ["activityStart", "activityEnd"]  # no microphone: an empty turn


def test_mute_from_home_assistant_holds_the_talk_button(broker, ha, server, tmp_path):
    base = "pi-agent/nursery"
    with mqtt_agent(server, tmp_path, broker.port, "nursery") as run:
        run.wait_state(State.READY)
        commands_heard(ha, base)
        ha.wait_for(f"{base}/mute", lambda m: m.text == "OFF")
        ha.publish(f"{base}/mute/set", "ON")
        ha.wait_for(f"{base}/mute", lambda m: m.text == "ON")
        state = ha.wait_for(f"{base}/state", lambda m: m.json()["light"] == "muted").json()
        assert state["state"] == "ready" and run.agent.muted
        ha.publish(f"{base}/talk/set", "PRESS")  # ignored while muted
        mark = time.monotonic()
        ha.publish(f"{base}/mute/set", "OFF")  # handled after the press: a barrier
        ha.wait_for(f"{base}/mute", lambda m: m.text == "OFF", after=mark)
        assert not run.agent.talking and run.agent.turn == 0
    assert server.messages(kind="realtimeInput") == []


@pytest.fixture
def card(tmp_path):
    with SimulatedSoundCard(tmp_path / "alsa") as sim:
        yield sim


def test_volume_from_home_assistant_reaches_the_speaker(broker, ha, server, card, tmp_path):
    audio = {
        "backend": "pyaudio",
        "chimes": {"press": False, "release": False, "connected": False, "error": False},
    }
    base = "pi-agent/kitchen"
    with mqtt_agent(server, tmp_path, broker.port, "kitchen", audio=audio) as run:
        run.wait_state(State.READY)
        commands_heard(ha, base)
        run.wait(lambda a: a.speaker.state == "ok", what="the speaker to open on the card")
        ha.wait_for(f"{base}/volume", lambda m: m.text == "100")
        ha.publish(f"{base}/volume/set", "60")
        ha.wait_for(f"{base}/volume", lambda m: m.text == "60")
        assert run.agent.speaker.volume == pytest.approx(0.6)
        assert run.status()["audio"]["volume"] == pytest.approx(0.6)
        ha.publish(f"{base}/volume/set", "250")  # refused by the bridge, like the socket would
        ha.publish(f"{base}/volume/set", "35")
        ha.wait_for(f"{base}/volume", lambda m: m.text == "35")
        assert run.agent.speaker.volume == pytest.approx(0.35)


def test_volume_without_a_speaker_is_refused_and_home_assistant_gets_the_truth_back(
    broker, ha, server, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="pi_agent.mqtt")
    base = "pi-agent/pantry"
    with mqtt_agent(server, tmp_path, broker.port, "pantry") as run:  # audio: none
        run.wait_state(State.READY)
        commands_heard(ha, base)
        before = ha.wait_for(f"{base}/volume").text
        mark = time.monotonic()
        ha.publish(f"{base}/volume/set", "40")
        wait_until(lambda: "volume refused by the agent" in caplog.text, what="the refusal")
        assert "there is no speaker" in caplog.text
        # The slider in Home Assistant snaps back to what the agent has.
        assert ha.wait_for(f"{base}/volume", after=mark).text == before
        assert run.status()["audio"]["volume"] == 1.0


def test_say_from_home_assistant_brings_the_answer_and_tool_events(broker, ha, server, tmp_path):
    server.replies.append(
        Reply(text="The lamp is on.", tool_calls=[("set_lamp", {"on": True})], pace=0)
    )
    base = "pi-agent/hall"
    with mqtt_agent(server, tmp_path, broker.port, "hall") as run:
        run.wait_state(State.READY)
        commands_heard(ha, base)
        ha.wait_for(f"{base}/gpio/lamp", lambda m: m.text == "OFF")
        ha.publish(f"{base}/say/set", "switch the lamp on")
        model = ha.wait_for(f"{base}/transcript", lambda m: m.json()["event_type"] == "model")
        assert model.json() == {"event_type": "model", "turn": 1, "text": "The lamp is on."}
        assert not model.retain
        call = ha.wait_for(f"{base}/tool", lambda m: m.json()["event_type"] == "call").json()
        assert call["name"] == "set_lamp" and call["turn"] == 1
        result = ha.wait_for(f"{base}/tool", lambda m: m.json()["event_type"] == "result").json()
        assert result["args"] == {"on": True}
        assert result["result"] == {"status": "ok", "device": "lamp", "on": True}
        # The model's switch reaches Home Assistant's lamp entity too (the device poll).
        ha.wait_for(f"{base}/gpio/lamp", lambda m: m.text == "ON")
        assert run.factory.pin(23).state == 0  # active low: on
    texts = [m.message["realtimeInput"].get("text") for m in server.messages(kind="realtimeInput")]
    assert "switch the lamp on" in texts


def test_say_from_home_assistant_brings_the_users_transcript_too(broker, ha, server, tmp_path):
    server.replies.append(Reply(text="It is noon.", input_transcription=""))  # as Gemini does
    base = "pi-agent/nook"
    with mqtt_agent(server, tmp_path, broker.port, "nook") as run:
        run.wait_state(State.READY)
        commands_heard(ha, base)
        ha.publish(f"{base}/say/set", "what time is it")
        ha.wait_for(f"{base}/transcript", lambda m: m.json()["event_type"] == "model")
        run.wait(lambda a: a.state is State.READY and a.turn == 1, what="the turn to end")
    heard = [m.json() for m in ha.messages(f"{base}/transcript")]
    assert {"event_type": "user", "turn": 1, "text": "what time is it"} in heard


def test_the_last_turn_tokens_include_that_turns_usage(broker, ha, server, tmp_path):
    base = "pi-agent/snug"
    with mqtt_agent(server, tmp_path, broker.port, "snug") as run:
        run.wait_state(State.READY)
        commands_heard(ha, base)
        ha.publish(f"{base}/say/set", "hello")
        turn = ha.wait_for(f"{base}/turn", lambda m: m.json()["turn"] == 1).json()
        run.wait(lambda a: a.counters["total_tokens"] > 0, what="the usage to be counted")
        assert turn["total_tokens"] == run.agent.counters["total_tokens"] > 0


# --------------------------------------------------------------------------- devices


def test_lamp_and_light_go_through_the_device_layer_bounds_and_rate_limits(
    broker, ha, server, tmp_path, caplog
):
    caplog.set_level(logging.WARNING, logger="pi_agent.mqtt")
    tools = [{**TOOLS[0], "rate_limit_per_min": 3}]
    base = "pi-agent/study/gpio"
    with mqtt_agent(server, tmp_path, broker.port, "study", tools=tools) as run:
        run.wait_state(State.READY)
        lamp, light = run.factory.pin(23), run.factory.pin(12)
        ha.wait_for(f"{base}/lamp", lambda m: m.text == "OFF")
        assert lamp.state == 1  # active low: off

        mark = time.monotonic()
        ha.publish(f"{base}/lamp/set", "ON")
        ha.wait_for(f"{base}/lamp", lambda m: m.text == "ON", after=mark)
        assert lamp.state == 0
        assert run.status()["devices"]["lamp"] == {"on": True}
        ha.publish(f"{base}/lamp/set", "OFF")
        ha.wait_for(f"{base}/lamp", lambda m: m.text == "OFF", after=mark)
        assert lamp.state == 1

        ha.publish(f"{base}/counter_light/set", json.dumps({"state": "ON", "brightness": 102}))
        ha.wait_for(f"{base}/counter_light", lambda m: m.json().get("brightness") == 102)
        assert light.state == pytest.approx(0.4, abs=0.002)
        # Above the device's max (0.5): refused, the pin unchanged, Home Assistant told the truth.
        mark = time.monotonic()
        ha.publish(f"{base}/counter_light/set", json.dumps({"state": "ON", "brightness": 255}))
        assert ha.wait_for(f"{base}/counter_light", after=mark).json()["brightness"] == 102
        assert light.state == pytest.approx(0.4, abs=0.002)
        assert "refused counter_light" in caplog.text

        # set_lamp allows 3 a minute, and Home Assistant counts like the model does.
        mark = time.monotonic()
        ha.publish(f"{base}/lamp/set", "ON")
        ha.wait_for(f"{base}/lamp", lambda m: m.text == "ON", after=mark)
        mark = time.monotonic()
        ha.publish(f"{base}/lamp/set", "OFF")
        assert ha.wait_for(f"{base}/lamp", after=mark).text == "ON"
        assert lamp.state == 0
        assert "rate limit: lamp may be commanded at most 3 times a minute" in caplog.text


# --------------------------------------------------------------------------- the broker goes away


def test_broker_killed_and_restarted_mid_answer(server, tmp_path):
    """The turn in progress is answered; every entity is back within 10 s of the broker.

    The shipped reconnect settings (1 s doubling to 8 s) are used, not test ones.
    """
    (tmp_path / "broker").mkdir()
    own = Broker(tmp_path / "broker").start()
    ha = HomeAssistant(own.port).start()
    base = "pi-agent/cellar"
    server.replies.append(Reply(text=LONG_ANSWER, pace=1.0))  # 3 s of speech
    config = agent_config(
        server,
        tmp_path,
        devices=DEVICES,
        tools=TOOLS,
        mqtt={"enabled": True, "host": "127.0.0.1", "port": own.port, "device_id": "cellar"},
    )
    seen: list[dict] = []
    try:
        with RunningAgent(config) as run:
            run.agent.parts.observers.append(seen.append)
            run.wait_state(State.READY)
            ha.wait_for("homeassistant/device/cellar/config")
            ha.wait_for(f"{base}/gpio/door")
            ha.wait_for(f"{base}/state", lambda m: m.json()["state"] == "ready")
            before = set(retained(own.port, "#"))
            mark = time.monotonic()
            ha.publish(f"{base}/say/set", "tell me something long")
            ha.wait_for(f"{base}/state", lambda m: m.json()["state"] == "speaking", after=mark)

            own.kill()  # mid-answer; every retained message is gone with it
            wait_until(lambda: not bridge_of(run).connected, what="the bridge to notice")
            run.wait(
                lambda a: a.state is State.READY and a.turn == 1 and not a.speaking,
                timeout=15,
                what="the answer to finish",
            )
            assert any(e.get("event") == "turn" and e["turn"] == 1 for e in seen)
            said = [
                e["text"] for e in seen if e.get("event") == "transcript" and e["who"] == "model"
            ]
            assert said == [LONG_ANSWER]
            assert run.agent.counters["reconnects"] == 0 and len(server.connections) == 1
            run.factory.pin(24).drive_low()  # the door opens while the broker is away

            back = time.monotonic()
            own.start()

            def left() -> float:  # every wait ends BACK_WITHIN_S after the broker's return
                return max(0.0, back + BACK_WITHIN_S - time.monotonic())

            fresh = {
                "homeassistant/device/cellar/config": lambda m: "cmps" in m.json(),
                f"{base}/availability": lambda m: m.text == "online",
                f"{base}/state": lambda m: m.json()["state"] == "ready",
                f"{base}/gpio/door": lambda m: m.text == "ON",
                f"{base}/turn": lambda m: m.json()["turn"] == 1,
            }
            for topic in sorted(before | set(fresh)):
                ha.wait_for(topic, fresh.get(topic, lambda m: True), after=back, timeout=left())
            after = retained(own.port, "#")
            assert before <= set(after), before - set(after)
            turn = after[f"{base}/turn"].json()
            assert turn["latency_ms"] is not None and turn["total_tokens"] > 0, turn
            assert after[f"{base}/connected"].text == "ON"
    finally:
        ha.stop()
        own.stop()


# --------------------------------------------------------------------------- processes


def test_sigkill_of_an_agent_process_leaves_offline_by_last_will(broker, ha, tmp_path):
    with FakeLiveServer(api_key=API_KEY) as live:
        agent = AgentProcess(tmp_path / "garage", "garage", live.url, broker.port).start()
        try:
            ha.wait_for("pi-agent/garage/availability", lambda m: m.text == "online", timeout=30)
            ha.wait_for("pi-agent/garage/state", lambda m: m.json()["state"] == "ready")
            mark = time.monotonic()
            agent.kill(signal.SIGKILL)
            ha.wait_for("pi-agent/garage/availability", lambda m: m.text == "offline", after=mark)
            kept = retained(broker.port, "pi-agent/garage/#")
            assert kept["pi-agent/garage/availability"].text == "offline"
            assert kept["pi-agent/garage/state"].json()["state"] == "ready"  # the last known
        finally:
            agent.stop()
    assert agent.proc.returncode == -signal.SIGKILL


def test_a_fleet_of_ten_agent_processes_on_one_broker(tmp_path):
    """Ten `pi-agent run` processes: all discovered, a command reaches only its own, all return."""
    (tmp_path / "broker").mkdir()
    own = Broker(tmp_path / "broker").start()
    ha = HomeAssistant(own.port).start()
    try:
        with (
            FakeLiveServer(api_key=API_KEY) as live,
            Fleet(tmp_path, 10, live.url, own.port) as fleet,
        ):
            for dev_id in fleet.ids:
                ha.wait_for(f"homeassistant/device/{dev_id}/config", timeout=45)
                ha.wait_for(
                    f"pi-agent/{dev_id}/state",
                    lambda m: m.json()["state"] == "ready",
                    timeout=TIMEOUT,
                )
            payloads = {d: ha.last[f"homeassistant/device/{d}/config"].json() for d in fleet.ids}
            assert len({p["dev"]["ids"][0] for p in payloads.values()}) == 10
            assert len(live.connections) >= 10

            # A command to one reaches that one only.
            ha.publish("pi-agent/room7/gpio/lamp/set", "ON")
            ha.wait_for("pi-agent/room7/gpio/lamp", lambda m: m.text == "ON")
            lamps = {a.device_id: a.status()["devices"]["lamp"]["on"] for a in fleet}
            assert lamps == {d: d == "room7" for d in fleet.ids}
            for dev_id in fleet.ids:
                if dev_id != "room7":
                    assert all(m.text == "OFF" for m in ha.messages(f"pi-agent/{dev_id}/gpio/lamp"))

            own.kill()
            wait_until(
                lambda: all("mqtt: lost the broker" in a.tail(20_000) for a in fleet),
                what="every agent to notice the broker is gone",
            )
            assert all(a.ready() for a in fleet)  # voice never waits for MQTT
            back = time.monotonic()
            own.start()
            for dev_id in fleet.ids:
                ha.wait_for(
                    f"homeassistant/device/{dev_id}/config", after=back, timeout=BACK_WITHIN_S
                )
                ha.wait_for(
                    f"pi-agent/{dev_id}/availability",
                    lambda m: m.text == "online",
                    after=back,
                    timeout=BACK_WITHIN_S,
                )
            ha.wait_for("pi-agent/room7/gpio/lamp", lambda m: m.text == "ON", after=back)
            mark = time.monotonic()
        codes = [a.proc.returncode for a in fleet]
        assert codes == [0] * 10, [a.tail() for a in fleet if a.proc.returncode]
        for dev_id in fleet.ids:  # a clean stop says offline
            ha.wait_for(
                f"pi-agent/{dev_id}/availability", lambda m: m.text == "offline", after=mark
            )
    finally:
        ha.stop()
        own.stop()
