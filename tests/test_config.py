"""Config: YAML -> frozen dataclasses, every problem named by its key path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pi_agent.config import (
    Config,
    iter_options,
    load_config,
    parse_config,
    resolve_api_key,
)
from pi_agent.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent / "config" / "pi-agent.yaml"


def problems_of(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def test_config_defaults():
    config = parse_config({})
    assert isinstance(config, Config)
    assert config.live.model == "gemini-3.8-live"
    assert config.live.endpoint == "wss://generativelanguage.googleapis.com"
    assert config.audio.chunk_ms == 40
    assert config.devices == {} and config.tools == ()


def test_config_example_loads_and_documents_every_option():
    config = load_config(EXAMPLE)
    assert config.ptt.device == "talk_button"
    assert {t.name for t in config.tools} >= {"set_lamp", "dim_counter_light"}
    text = EXAMPLE.read_text()
    missing = []
    for path, _default, doc in iter_options():
        assert doc, f"{path} has no doc"
        leaf = re.split(r"[.\[\]*]+", path.rstrip("]*."))[-1]
        if not re.search(rf"\b{re.escape(leaf)}\b", text):
            missing.append(path)
    assert not missing, f"options not documented in config/pi-agent.yaml: {missing}"


def test_config_unknown_key_names_path_and_suggestion():
    problems = problems_of({"audio": {"chunck_ms": 20}, "live": {"modle": "x"}})
    assert "audio.chunck_ms: unknown key, did you mean 'chunk_ms'?" in problems
    assert "live.modle: unknown key, did you mean 'model'?" in problems


def test_config_unknown_key_in_list_item():
    problems = problems_of(
        {"devices": {"lamp": {"kind": "led", "pin": 5}}, "tools": [{"name": "a", "devic": "x"}]}
    )
    assert "tools[0].devic: unknown key, did you mean 'device'?" in problems


def test_config_all_problems_at_once():
    problems = problems_of(
        {
            "audio": {"chunk_ms": 5, "volume": 2, "input_channel": "mx"},
            "live": {"hands_free": "yes", "api_version": "v2"},
            "camera": {"fps": "fast"},
        }
    )
    assert problems == [
        "audio.chunk_ms: 5 is below the minimum 20",
        "audio.volume: 2 is above the maximum 1",
        "audio.input_channel: must be an integer or 'mix', not 'mx'",
        "live.hands_free: must be true or false, not 'yes'",
        "live.api_version: 'v2' is not one of 'v1beta', 'v1alpha', 'v1'",
        "camera.fps: must be a number, not 'fast'",
    ]


def test_config_wrong_section_type():
    assert problems_of({"audio": [1, 2]}) == ["audio: must be a mapping, not list"]
    assert problems_of([1]) == ["must be a mapping, not list"]


def test_config_bool_is_not_a_number():
    assert problems_of({"audio": {"volume": True}}) == ["audio.volume: must be a number, not True"]


def test_config_pins_validated():
    problems = problems_of(
        {
            "devices": {
                "a": {"kind": "led", "pin": 17},
                "b": {"kind": "button", "pin": 17},
                "c": {"kind": "led", "pin": 40},
                "d": {"kind": "input", "pin": 3, "pull_up": False},
                "e": {"kind": "rgb_led", "pins": [5, 6]},
                "f": {"kind": "led"},
            }
        }
    )
    assert "devices.b.pin: GPIO17 is already used by 'a'" in problems
    assert "devices.c.pin: 40 is not a usable BCM GPIO pin (2-27)" in problems
    assert "devices.d.pull_up: GPIO3 has a fixed pull-up resistor; pull_up must be true" in problems
    assert "devices.e.pins: an rgb_led needs exactly 3 pins: [red, green, blue]" in problems
    assert "devices.f.pin: a led needs a pin" in problems


def test_config_references_checked():
    problems = problems_of(
        {
            "devices": {"lamp": {"kind": "output", "pin": 5}, "door": {"kind": "input", "pin": 6}},
            "ptt": {"device": "lamp"},
            "status_light": {"device": "lmap"},
            "tools": [
                {"name": "x", "description": "d", "device": "lmp", "verb": "on"},
                {"name": "2bad", "description": "d", "device": "door", "verb": "on"},
            ],
        }
    )
    assert "ptt.device: device 'lamp' is a output, expected button" in problems
    assert (
        "status_light.device: no device named 'lmap' in devices, did you mean 'lamp'?" in problems
    )
    assert "tools[0].device: no device named 'lmp' in devices, did you mean 'lamp'?" in problems
    assert "tools[1].name: '2bad' is not a valid function name" in problems
    assert "tools[1].verb: a input cannot 'on'; allowed: read" in problems


def test_config_yaml_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("live:\n  model: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "line 3" in str(info.value) or "line 2" in str(info.value)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_config_is_frozen():
    config = parse_config({})
    with pytest.raises(AttributeError):
        config.audio.chunk_ms = 20  # type: ignore[misc]


def test_api_key_from_env_file_and_credential(tmp_path):
    live = parse_config({}).live
    assert resolve_api_key(live, {"GEMINI_API_KEY": " k-env \n"}) == "k-env"
    cred = tmp_path / "creds"
    cred.mkdir()
    (cred / "gemini-api-key").write_text("k-cred\n")
    env = {"GEMINI_API_KEY": "k-env", "CREDENTIALS_DIRECTORY": str(cred)}
    assert resolve_api_key(live, env) == "k-cred"
    key_file = tmp_path / "key"
    key_file.write_text("k-file\n")
    live_file = parse_config({"live": {"api_key_file": str(key_file)}}).live
    assert resolve_api_key(live_file, env) == "k-file"
    other = parse_config({"live": {"api_key_env": "MY_KEY"}}).live
    assert resolve_api_key(other, {"MY_KEY": "mine"}) == "mine"


def test_api_key_missing_names_every_source():
    with pytest.raises(ConfigError) as info:
        resolve_api_key(parse_config({}).live, {})
    message = str(info.value)
    assert "GEMINI_API_KEY" in message
    assert "live.api_key_file" in message
    assert "CREDENTIALS_DIRECTORY" in message


def test_api_key_empty_file(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("\n")
    live = parse_config({"live": {"api_key_file": str(key_file)}}).live
    with pytest.raises(ConfigError, match="is empty"):
        resolve_api_key(live, {})
