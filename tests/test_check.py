"""`pi-agent check` against the fake server (TLS) and simulated hardware."""

from __future__ import annotations

import io

import pytest
from gpiozero import LED
from gpiozero.pins.mock import MockFactory, MockPWMPin

from pi_agent.check import Checker
from pi_agent.cli import main
from pi_agent.config import parse_config
from pi_agent.sim.alsa import SimulatedSoundCard
from pi_agent.sim.fake_live import FakeLiveServer
from pi_agent.sim.speech import synthesize

from .conftest import FAKE_KEY


@pytest.fixture(scope="module")
def server():
    with FakeLiveServer(api_key=FAKE_KEY, tls=True) as srv:
        yield srv


@pytest.fixture
def card(tmp_path):
    with SimulatedSoundCard(tmp_path / "alsa") as sim:
        yield sim


@pytest.fixture
def factory():
    f = MockFactory(pin_class=MockPWMPin)
    yield f
    f.reset()


def make_config(server, **overrides):
    data = {
        "live": {"endpoint": server.url, "ca_file": server.ca_file, "setup_timeout_s": 5},
        "camera": {"backend": "synthetic"},
        "gpio": {"pin_factory": "mock"},
        "devices": {"button": {"kind": "button", "pin": 17}, "lamp": {"kind": "led", "pin": 27}},
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value}
    return parse_config(data)


def run_check(config, factory, key=FAKE_KEY, **kw):
    out = io.StringIO()
    checker = Checker(
        config,
        environ={"GEMINI_API_KEY": key},
        pin_factory=factory,
        out=out,
        record_seconds=0.3,
        **kw,
    )
    code = checker.run()
    return code, out.getvalue(), {r.name: r for r in checker.results}


def test_check_all_pass(server, card, factory):
    card.speak(synthesize("testing one two three"))
    code, text, results = run_check(make_config(server), factory)
    assert code == 0, text
    for name in (
        "config",
        "api key",
        "microphone",
        "speaker",
        "gpio",
        "camera",
        "dns",
        "tls",
        "live setup",
    ):
        assert results[name].status == "PASS", text
    assert FAKE_KEY not in text
    assert "setupComplete from gemini-3.8-live" in text
    assert "failed" in text.splitlines()[-1] and ", 0 failed" in text


def test_check_bad_key(server, card, factory):
    code, text, results = run_check(make_config(server), factory, key="wrong-key-0000")
    assert code == 1
    assert results["live setup"].status == "FAIL"
    assert "HTTP 400" in results["live setup"].detail
    assert "API key was refused" in text
    assert "wrong-key-0000" not in text


def test_check_missing_key(server, card, factory):
    out = io.StringIO()
    checker = Checker(
        make_config(server), environ={}, pin_factory=factory, out=out, record_seconds=0.3
    )
    assert checker.run(skip_network=True) == 1
    assert "FAIL  api key: no Gemini API key found" in out.getvalue()


def test_check_missing_audio_device(server, card, factory):
    config = make_config(server, audio={"input_device": "usb-mic-that-is-not-here"})
    code, text, results = run_check(config, factory)
    assert code == 1
    assert results["microphone"].status == "FAIL"
    assert "usb-mic-that-is-not-here" in results["microphone"].detail
    assert "pi-agent devices" in text


def test_check_busy_pin(server, card, factory):
    squatter = LED(27, pin_factory=factory)
    try:
        code, _text, results = run_check(make_config(server), factory)
    finally:
        squatter.close()
    assert code == 1
    assert results["gpio"].status == "FAIL"
    assert "27" in results["gpio"].detail and "lamp" in results["gpio"].detail


def test_check_unknown_model(server, card, factory):
    config = make_config(server, live={"model": "gemini-0-gone"})
    code, text, _results = run_check(config, factory)
    assert code == 1
    assert "check live.model" in text


def test_check_cli_offline(server, card, tmp_path, monkeypatch, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("audio: {backend: none}\ncamera: {backend: none}\ngpio: {pin_factory: mock}\n")
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    assert main(["check", "--config", str(path), "--offline"]) == 0
    out = capsys.readouterr().out
    assert "PASS  config: valid" in out and "WARN  audio" in out
