"""The agent tells the truth about itself: a missing microphone is not "ready" with no cause."""

from __future__ import annotations

import pytest

from pi_agent.agent import State
from pi_agent.sim.alsa import SimulatedSoundCard
from pi_agent.sim.fake_live import FakeLiveServer

from .agent_harness import RunningAgent, agent_config
from .conftest import FAKE_KEY


class RecordingNotifier:
    """Stands in for systemd's notify socket; keeps every STATUS= text."""

    def __init__(self):
        self.statuses: list[str] = []
        self.readies = 0

    def status(self, text: str) -> bool:
        self.statuses.append(text)
        return True

    def ready(self) -> bool:
        self.readies += 1
        return True

    def stopping(self) -> bool:
        return True

    def watchdog(self) -> bool:
        return True

    def watchdog_interval(self) -> None:
        return None

    @property
    def available(self) -> bool:
        return True

    def notify(self, **fields: object) -> bool:
        return True


@pytest.fixture
def server():
    with FakeLiveServer(api_key=FAKE_KEY) as srv:
        yield srv


def test_a_missing_mic_is_named_in_status_systemd_and_the_light(server, tmp_path):
    notifier = RecordingNotifier()
    config = agent_config(
        server,
        tmp_path,
        audio={"backend": "pyaudio", "input_device": "no-such-microphone"},
    )
    with SimulatedSoundCard(tmp_path / "alsa"), RunningAgent(config, notifier=notifier) as run:
        run.wait(
            lambda a: a.part_states.get("mic", ("",))[0] == "missing" and a.link.is_open,
            what="the missing mic and the session",
        )
        status = run.status()
        assert status["state"] == "ready"
        assert status["light"] == "error_audio"
        assert any(p["part"] == "mic" and p["problem"] == "missing" for p in status["problems"])
        assert "mic: missing" in status["cause"]
        assert run.agent.light_state == "error_audio"
        run.wait(lambda a: any("mic" in s for s in notifier.statuses), what="STATUS=")
        assert notifier.statuses[-1].startswith("ready: mic: missing")
        assert run.agent.state is State.READY
