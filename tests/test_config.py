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


def test_config_idle_period_is_zero_or_at_least_a_chunk():
    assert problems_of({"audio": {"chunk_ms": 60, "idle_period_ms": 40}}) == [
        "audio.idle_period_ms: 40 is below audio.chunk_ms (60); use 0 to keep one period"
    ]
    assert parse_config({"audio": {"chunk_ms": 60, "idle_period_ms": 0}}).audio.idle_period_ms == 0
    assert problems_of({"audio": {"idle_period_ms": 1001}}) == [
        "audio.idle_period_ms: 1001 is above the maximum 1000"
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


# --------------------------------------------------------------------------- hostile input


def _tool(**extra) -> dict:
    return {"name": "t", "description": "d", "device": "lamp", "verb": "on", **extra}


LAMP = {"lamp": {"kind": "output", "pin": 23}}


@pytest.mark.parametrize(
    "data, problem",
    [
        ({"devices": LAMP, "tools": [_tool(auto_off_s=float("inf"))]},
         "tools[0].auto_off_s: must be a finite number, not inf"),
        ({"devices": LAMP, "tools": [_tool(verb="blink", max_duration_s=float("nan"))]},
         "tools[0].max_duration_s: must be a finite number, not nan"),
        ({"audio": {"volume": float("-inf")}}, "audio.volume: must be a finite number, not -inf"),
        ({"agent": {"fatal_retry_s": 1e12}}, "agent.fatal_retry_s: 1e+12 is too large"),
        ({"devices": {"lamp": {"kind": "output", "pin": 10**400}}}, "devices.lamp.pin: 1000"),
        ({"devices": LAMP, "tools": [_tool(verb="blink", max_count=101)]},
         "tools[0].max_count: 101 is above the maximum 100"),
    ],
)  # fmt: skip
def test_config_numbers_must_be_finite_and_sane(data, problem):
    assert any(p.startswith(problem) for p in problems_of(data)), problems_of(data)


def test_config_inf_from_yaml_names_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "devices: {lamp: {kind: output, pin: 23}}\n"
        "tools: [{name: t, description: d, device: lamp, verb: 'on', auto_off_s: .inf}]\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == ["tools[0].auto_off_s: must be a finite number, not inf"]


def test_config_strings_refuse_nul_and_lone_surrogates():
    problems = problems_of({"live": {"model": "a\x00b", "voice": "\ud800"}})
    assert problems == [
        "live.model: must be text without NUL characters or lone surrogates",
        "live.voice: must be text without NUL characters or lone surrogates",
    ]


def test_config_problems_are_one_printable_line_each():
    problems = problems_of({"live": {"mo\ndel\x1b[31m": 1, "\ud800": 2}, "audio": {"x" * 500: 1}})
    for line in problems:
        assert "\n" not in line and "\x1b" not in line
        line.encode("utf-8")  # no lone surrogate reaches a terminal or the journal
    assert problems[0].startswith("live.mo\\ndel\\x1b[31m: unknown key")
    assert len(problems[2]) < 150  # a huge key is cut short


def test_config_huge_values_are_shown_short():
    (problem,) = problems_of({"live": {"model": [list(range(10_000))] * 10}})
    assert problem.startswith("live.model: must be a string, not [[0, 1, 2")
    assert len(problem) < 200


def test_config_file_size_limit(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * (256 * 1024) + "\n")
    with pytest.raises(ConfigError, match=r"big.yaml: config is larger than 256 KiB"):
        load_config(path)


def test_config_billion_laughs_fails_fast(tmp_path):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    lines.append("live: {model: *i}")
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"laughs.yaml: line \d+ column \d+: invalid YAML: "
                       r"more than 20000 values once aliases are expanded"):  # fmt: skip
        load_config(path)


def test_config_a_few_aliases_are_fine(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text(
        "devices:\n  a: &pwm {kind: pwm_led, pin: 5, max: 0.5}\n  b: {<<: *pwm, pin: 6}\n"
    )
    assert load_config(path).devices["b"].max == 0.5


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[" * 5000 + "]" * 5000, "nested more than 32 levels deep"),
        ("live:" + " {a:" * 40 + " 1" + "}" * 40, "nested more than 32 levels deep"),
        ("x: &r [*r]\n", "alias *r refers to itself"),
        ("live: {model: 2024-13-45}\n", "invalid YAML: ValueError: month must be in 1..12"),
        ("!!python/object/apply:os.system [true]\n", "could not determine a constructor"),
    ],
)
def test_config_hostile_yaml_is_a_config_error(tmp_path, text, problem):
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert problem in str(info.value)
    assert str(info.value).startswith(str(path))


def test_config_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("live: {voice: Kor\xe9}\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}: config is not UTF-8 text (byte 0xe9 at offset 17); save it as UTF-8"
    )


def test_api_key_file_not_utf8_names_the_file(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_bytes(b"\xff\xfe k\x00e\x00y\x00")
    live = parse_config({"live": {"api_key_file": str(key_file)}}).live
    with pytest.raises(ConfigError) as info:
        resolve_api_key(live, {})
    assert str(info.value).startswith(f"live.api_key_file: {key_file} is not UTF-8 text")


@pytest.mark.parametrize(
    "endpoint, ok",
    [
        ("wss://generativelanguage.googleapis.com", True),
        ("wss://192.0.2.7:8443", True),
        ("ws://127.0.0.1:8765", True),
        ("ws://127.8.9.10", True),
        ("ws://localhost:1234", True),
        ("ws://[::1]:8080", True),
        ("ws://192.0.2.7:8765", False),
        ("ws://example.com", False),
        ("ws://[::ffff:192.0.2.7]", False),
        ("http://127.0.0.1", False),
        ("wss://", False),
        ("wss://host:99999", False),
    ],
)
def test_config_ws_endpoint_only_to_loopback(endpoint, ok):
    data = {"live": {"endpoint": endpoint}}
    if ok:
        assert parse_config(data).live.endpoint == endpoint
        return
    (problem,) = problems_of(data)
    assert problem.startswith("live.endpoint: ")
    if endpoint.startswith("ws://") and "//[" not in endpoint[5:6]:
        assert "cleartext" in problem or "URL" in problem


@pytest.mark.parametrize(
    "mode, ok",
    [("0660", True), ("0600", True), ("0640", True), ("660", True), ("0666", False),
     ("0661", False), ("0670", False), ("0760", False), ("0770", False), ("0662", False)],
)  # fmt: skip
def test_config_control_mode_no_wider_than_0660(mode, ok):
    data = {"control": {"mode": mode}}
    if ok:
        assert parse_config(data).control.mode == mode
    else:
        (problem,) = problems_of(data)
        assert problem.startswith(f"control.mode: {mode!r} is wider than 0660")
    assert parse_config({"control": {"mode": "0666", "enabled": False}})


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o700 | 0o004])
def test_key_file_warning_for_group_or_world_access(tmp_path, mode):
    from pi_agent.config import key_file_warning

    key_file = tmp_path / "key"
    key_file.write_text("k-file\n")
    key_file.chmod(mode)
    live = parse_config({"live": {"api_key_file": str(key_file)}}).live
    warning = key_file_warning(live)
    assert warning == (
        f"live.api_key_file {key_file} has mode {mode:04o}: other users can read it; "
        f"fix: chmod 600 {key_file}"
    )
    assert "k-file" not in warning
    key_file.chmod(0o600)
    assert key_file_warning(live) is None
    assert key_file_warning(parse_config({}).live) is None
    missing = parse_config({"live": {"api_key_file": str(tmp_path / "nope")}}).live
    assert key_file_warning(missing) is None


# --------------------------------------------------------------------------- device bounds


def test_config_device_bounds_defaults_and_values():
    from pi_agent.config import device_range

    config = parse_config(
        {
            "devices": {
                "strip": {"kind": "pwm_led", "pin": 12, "max": 0.8},
                "fan": {"kind": "pwm_output", "pin": 13, "min": 0.3, "initial": 0.5},
                "rgb": {"kind": "rgb_led", "pins": [5, 6, 7]},
                "arm": {"kind": "servo", "pin": 19, "min": -45, "max": 30, "safe_angle": 0},
                "lamp": {"kind": "output", "pin": 23},
            }
        }
    )
    ranges = {name: device_range(dev) for name, dev in config.devices.items()}
    assert ranges == {
        "strip": (0.0, 0.8),
        "fan": (0.3, 1.0),
        "rgb": (0.0, 1.0),
        "arm": (-45.0, 30.0),
        "lamp": None,
    }


@pytest.mark.parametrize(
    "device, problem",
    [
        ({"kind": "output", "pin": 5, "max": 0.5},
         "devices.x.max: a output is only on or off; min/max apply to pwm_led, pwm_output, "
         "rgb_led and servo"),
        ({"kind": "pwm_led", "pin": 5, "max": 1.5}, "devices.x.max: 1.5 is outside 0..1"),
        ({"kind": "pwm_led", "pin": 5, "max": 0},
         "devices.x.max: must be above 0, or the device could never switch on"),
        ({"kind": "pwm_led", "pin": 5, "min": 0.6, "max": 0.5},
         "devices.x.max: must not be below min (0.6)"),
        ({"kind": "servo", "pin": 5, "min": -100}, "devices.x.min: -100 is outside -90..90"),
        ({"kind": "pwm_led", "pin": 5, "max": 0.5, "initial": 0.7},
         "devices.x.initial: 0.7 is outside the device's range 0 to 0.5"),
        ({"kind": "pwm_output", "pin": 5, "min": 0.2, "safe": 0.1},
         "devices.x.safe: 0.1 is outside the device's range 0 (off) or 0.2 to 1"),
        ({"kind": "rgb_led", "pins": [5, 6, 7], "max": 0.5, "safe": 1},
         "devices.x.safe: 1 is outside the device's range 0 to 0.5"),
        ({"kind": "servo", "pin": 5, "min": -30, "max": 30, "initial_angle": 45},
         "devices.x.initial_angle: 45 is outside the device's range -30 to 30 degrees"),
        ({"kind": "servo", "pin": 5, "max": 30, "safe_angle": 31},
         "devices.x.safe_angle: 31 is outside the device's range -90 to 30 degrees"),
    ],
)  # fmt: skip
def test_config_device_bounds_rules(device, problem):
    assert problems_of({"devices": {"x": device}}) == [problem]


def test_config_device_bounds_allow_off_and_inner_values():
    devices = {
        "a": {"kind": "pwm_output", "pin": 5, "min": 0.2, "max": 0.8, "initial": 0, "safe": 0.5},
        "b": {"kind": "servo", "pin": 6, "min": -10, "max": 10, "initial_angle": -10},
    }
    assert parse_config({"devices": devices}).devices["a"].safe == 0.5


@pytest.mark.parametrize(
    "tool, problem",
    [
        ({"verb": "value", "max": 0.9},
         "tools[0].max: 0.9 is outside the range of device 'strip' (0 to 0.8, "
         "devices.strip.min/max); a tool may only narrow it"),
        ({"verb": "blink", "max": 1.0}, "tools[0].max: 1 is outside the range of device"),
        ({"verb": "value", "min": -0.1}, "tools[0].min: -0.1 is outside the range of device"),
    ],
)  # fmt: skip
def test_config_tool_bounds_only_narrow_the_device(tool, problem):
    data = {
        "devices": {"strip": {"kind": "pwm_led", "pin": 12, "max": 0.8}},
        "tools": [{"name": "t", "description": "d", "device": "strip", **tool}],
    }
    (found,) = problems_of(data)
    assert found.startswith(problem)


def test_config_tool_bounds_inside_the_device_and_on_off_devices():
    devices = {
        "strip": {"kind": "pwm_led", "pin": 12, "min": 0.2, "max": 0.8},
        "lamp": {"kind": "output", "pin": 23},
    }
    tools = [
        {"name": "a", "description": "d", "device": "strip", "verb": "value", "min": 0, "max": 0.5},
        {"name": "b", "description": "d", "device": "lamp", "verb": "on", "max": 0.5},
    ]  # fmt: skip
    assert problems_of({"devices": devices, "tools": tools}) == [
        "tools[1].max: device 'lamp' is a output, only on or off: it has no range to limit"
    ]
