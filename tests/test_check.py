"""`pi-agent check` against the fake server (TLS) and simulated hardware."""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

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
    kw.setdefault("config_path", "/etc/pi-agent/test.yaml")
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
    assert text.splitlines()[0] == "PASS  config: /etc/pi-agent/test.yaml is valid"
    assert "2 devices ready" in results["gpio"].detail


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
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == f"PASS  config: {path} is valid"  # the file it judged comes first
    assert "WARN  audio" in captured.out
    assert "passed" in lines[-1] and captured.err == ""


def test_check_cli_without_a_config_file_warns_about_defaults(monkeypatch, capsys):
    monkeypatch.delenv("PI_AGENT_CONFIG", raising=False)
    monkeypatch.setattr("pi_agent.cli._config_path", lambda path: None)
    monkeypatch.setattr("pi_agent.check.Checker.check_audio", lambda self: None)
    monkeypatch.setattr("pi_agent.check.Checker.check_camera", lambda self: None)
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    main(["check", "--offline"])
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "WARN  config: no config file: using built-in defaults"
    assert "PASS  config" not in out


def test_check_cli_invalid_config_is_one_fail_naming_file_and_keys(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("audio: {chunk_ms: 5}\ncontrol: {mode: '0666'}\n")
    assert main(["check", "--config", str(path), "--offline"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"FAIL  config: {path} is not valid"
    assert "      audio.chunk_ms: 5 is below the minimum 20" in lines
    assert lines[-1] == "0 passed, 0 warnings, 1 failed"


def test_check_run_agrees_with_the_loader(tmp_path, capsys):
    """What check passes, run loads: both use load_config, so a bad file fails both."""
    path = tmp_path / "config.yaml"
    path.write_bytes(b"agent: {log_level: info}\n# caf\xe9\n")  # Latin-1, not UTF-8
    assert main(["check", "--config", str(path), "--offline"]) == 1
    assert "is not UTF-8 text (byte 0xe9" in capsys.readouterr().out
    assert main(["run", "--config", str(path)]) == 2
    assert "is not UTF-8 text (byte 0xe9" in capsys.readouterr().err


# --------------------------------------------------------------------------- fixes, once


def _offline(config, factory, **kw):
    out = io.StringIO()
    checker = Checker(
        config,
        config_path="/etc/pi-agent/config.yaml",
        environ={"GEMINI_API_KEY": FAKE_KEY},
        pin_factory=factory,
        out=out,
        **kw,
    )
    code = checker.run(skip_network=True)
    return code, out.getvalue(), {r.name: r for r in checker.results}


def test_check_missing_pin_factory_gets_the_install_fix_and_its_warnings_inside(monkeypatch):
    from gpiozero import Device
    from gpiozero.exc import BadPinFactory, PinFactoryFallback

    def no_factory():
        warnings.warn(
            PinFactoryFallback("Falling back from lgpio: No module named 'lgpio'"), stacklevel=2
        )
        logging.getLogger("gpiozero").warning("no pins here")
        raise BadPinFactory("Unable to load any default pin factory!")

    monkeypatch.setattr(Device, "_default_pin_factory", staticmethod(no_factory))
    monkeypatch.setattr(Device, "pin_factory", None)
    config = parse_config(
        {
            "audio": {"backend": "none"},
            "devices": {"lamp": {"kind": "led", "pin": 27}},
        }
    )
    code, text, results = _offline(config, None)
    assert code == 1
    gpio = results["gpio"]
    assert gpio.status == "FAIL"
    assert "no GPIO pin factory could be loaded" in gpio.detail
    assert "python3-lgpio" in gpio.fix and "gpio.pin_factory" in gpio.fix
    assert "free the pin" not in text
    assert text.count("python3-lgpio") == 1  # the fix once, not in the detail as well
    lines = text.splitlines()
    at = lines.index("FAIL  gpio: " + gpio.detail)
    camera = next(i for i, line in enumerate(lines) if line.startswith("PASS  camera"))
    notes = lines[at + 2 : camera]  # under the gpio check, before the next one
    assert notes == [
        "      note: PinFactoryFallback: Falling back from lgpio: No module named 'lgpio'",
        "      note: warning: no pins here",
    ]
    assert lines[-1] == "3 passed, 1 warnings, 1 failed"  # the summary closes the output


def test_check_camera_fix_is_not_repeated(factory):
    config = parse_config({"audio": {"backend": "none"}, "camera": {"backend": "picamera2"}})
    try:
        import picamera2  # noqa: F401
    except Exception:
        pass
    else:  # pragma: no cover - only on a Pi
        pytest.skip("picamera2 is importable here")
    _code, text, results = _offline(config, factory)
    assert results["camera"].status == "FAIL"
    assert text.count("camera.backend: none") == 1
    assert "fix:" not in text.split("FAIL  camera", 1)[1]


@pytest.mark.parametrize("mode, status", [(0o600, "PASS"), (0o400, "PASS"), (0o644, "FAIL"),
                                          (0o640, "FAIL"), (0o604, "FAIL")])  # fmt: skip
def test_check_key_file_mode(tmp_path, factory, mode, status):
    key_file = tmp_path / "key"
    key_file.write_text(FAKE_KEY + "\n")
    key_file.chmod(mode)
    config = parse_config({"audio": {"backend": "none"}, "live": {"api_key_file": str(key_file)}})
    _code, text, results = _offline(config, factory)
    assert results["api key"].status == status, text
    if status == "FAIL":
        assert f"mode {mode:04o}" in results["api key"].detail
        assert results["api key"].fix == f"chmod 600 {key_file}"
    assert FAKE_KEY not in text


# --------------------------------------------------------------------------- mqtt

MQTT_PASSWORD = "check-broker-pass-51c2"  # a throwaway for the test broker


def _mqtt_check(mqtt, environ=None):
    """Only the broker check: PASS/WARN/FAIL and what was printed."""
    out = io.StringIO()
    config = parse_config({"audio": {"backend": "none"}, "mqtt": {"enabled": True, **mqtt}})
    checker = Checker(config, environ=environ or {}, out=out)
    checker.check_mqtt()
    return out.getvalue(), {r.name: r for r in checker.results}


def _lan_address() -> str:
    """This machine's address on its network (not loopback), for a broker reached over it."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # TEST-NET: no packet is sent for a UDP connect
        except OSError:
            pytest.skip("this machine has no network address besides loopback")
        return sock.getsockname()[0]


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """mosquitto with a login, on loopback and on this machine's network address."""
    from .broker import Broker, free_port

    b = Broker(tmp_path_factory.mktemp("mosquitto"), users={"kitchen": MQTT_PASSWORD})
    b.lan, b.lan_port = _lan_address(), free_port()
    with open(b.conf, "a") as conf:
        conf.write(f"listener {b.lan_port} {b.lan}\n")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def password_file(tmp_path):
    path = tmp_path / "mqtt-password"
    path.write_text(MQTT_PASSWORD + "\n")
    return str(path)


def test_check_mqtt_logs_in_to_the_broker(broker, password_file):
    text, results = _mqtt_check(
        {"port": broker.port, "host": "127.0.0.1", "username": "kitchen", "device_id": "k1"},
        environ={"CREDENTIALS_DIRECTORY": str(Path(password_file).parent)},
    )
    assert results["mqtt"].status == "PASS", text
    assert text == f"PASS  mqtt: logged in to 127.0.0.1:{broker.port} as kitchen; device id k1\n"
    assert MQTT_PASSWORD not in text


def test_check_mqtt_warns_when_the_password_crosses_the_network_in_clear(broker, password_file):
    mqtt = {"host": broker.lan, "port": broker.lan_port, "username": "kitchen"}
    text, results = _mqtt_check({**mqtt, "password_file": password_file})
    assert results["mqtt"].status == "WARN", text
    assert "unencrypted" in results["mqtt"].detail and "mqtt.tls.enabled" in results["mqtt"].fix
    assert MQTT_PASSWORD not in text


def test_check_mqtt_fails_with_the_fix(broker, password_file, tmp_path):
    from .broker import free_port

    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    login = {"host": "127.0.0.1", "port": broker.port, "username": "kitchen"}
    text, results = _mqtt_check({**login, "password_file": str(wrong)})
    assert results["mqtt"].status == "FAIL"
    assert results["mqtt"].detail.startswith("the broker refused the login")
    assert "mqtt.password_file" in results["mqtt"].fix and "fix: check mqtt.username" in text
    assert "not-the-password" not in text

    port = free_port()
    _text, results = _mqtt_check({"host": "127.0.0.1", "port": port})
    assert results["mqtt"].status == "FAIL"
    assert results["mqtt"].detail.startswith(f"cannot reach 127.0.0.1:{port}")
    assert "mqtt.host and mqtt.port" in results["mqtt"].fix

    _text, results = _mqtt_check({**login, "password_file": str(tmp_path / "missing")})
    assert results["mqtt"].status == "FAIL" and "mqtt.password_file" in results["mqtt"].detail

    missing_ca = {"enabled": True, "ca_file": str(tmp_path / "ca.pem")}
    _text, results = _mqtt_check({**login, "password_file": password_file, "tls": missing_ca})
    assert results["mqtt"].status == "FAIL" and "mqtt.tls.ca_file" in results["mqtt"].detail
    assert results["mqtt"].fix


def test_check_mqtt_is_a_network_check_and_silent_when_off(server, factory, monkeypatch):
    from .broker import free_port

    off = make_config(server, audio={"backend": "none"}, camera={"backend": "none"})
    _code, text, results = run_check(off, factory)
    assert "mqtt" not in results and "mqtt" not in text
    port = free_port()
    on = make_config(
        server,
        audio={"backend": "none"},
        camera={"backend": "none"},
        mqtt={"enabled": True, "host": "127.0.0.1", "port": port},
    )
    code, text, results = run_check(on, factory)
    assert code == 1 and results["mqtt"].status == "FAIL", text
    assert text.splitlines()[-1].endswith("1 failed")
    _code, text, results = _offline(on, factory)  # --offline: no network, no broker
    assert "mqtt" not in results


def test_check_unreadable_key_file_gets_the_file_fix(tmp_path, factory):
    key_file = tmp_path / "key"
    key_file.write_bytes(b"\xff\xfe")
    key_file.chmod(0o600)
    config = parse_config({"audio": {"backend": "none"}, "live": {"api_key_file": str(key_file)}})
    _code, _text, results = _offline(config, factory)
    key = results["api key"]
    assert key.status == "FAIL"
    assert key.detail.startswith(f"live.api_key_file: {key_file} is not UTF-8 text")
    assert key.fix.startswith(f"put the key on the first line of {key_file}")
    assert "export" not in key.fix
