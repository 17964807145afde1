"""The configuration loader: YAML text -> validated :class:`~pi_agent.config.Config`.

Kept apart from the settings (``config.py``) for size. The loader walks the
dataclasses' type hints, so validation, "did you mean" and the docs test come
for free; it always answers with a :class:`~pi_agent.errors.ConfigError`
naming the key (bounded size, nesting and aliases; finite numbers; decoding
errors named with the file); cross-field rules are in ``_check``.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import reprlib
import stat
import types
import typing
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from .config import (
    Config,
    DeviceSettings,
    LiveSettings,
    ToolSettings,
)
from .errors import ConfigError
from .safe_yaml import (
    MAX_CONFIG_BYTES,
    load_yaml,
    printable,
    read_text,
)

# --------------------------------------------------------------------------- loader


MAX_PROBLEMS = 50
MAX_NUMBER = 1e9  # no option needs more; threading timers overflow not far above


class _Problems(list):
    def add(self, path: str, message: str) -> None:
        if len(self) == MAX_PROBLEMS:
            self.append("... more problems not shown: fix these first")
        if len(self) > MAX_PROBLEMS:
            return
        self.append(printable(f"{path}: {message}" if path else message))


def _short(value: Any) -> str:
    """``repr`` cut to one short line, even for a huge or deeply nested value."""
    return _REPR.repr(value)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 3


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _key_text(key: Any) -> str:
    return key if isinstance(key, str) and len(key) <= 60 else _short(key)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint is type(None):
        return "null"
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is tuple:
        return "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, str(hint)
    )


_FAIL = object()
_SURROGATE = re.compile("[\ud800-\udfff]")


def _convert(value: Any, hint: Any, path: str, problems: _Problems, meta: dict) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None:
            if type(None) in args:
                return None
            problems.add(path, f"must be {_type_name(hint)}, not null")
            return _FAIL
        for arg in args:
            if arg is type(None):
                continue
            trial = _Problems()
            result = _convert(value, arg, path, trial, meta)
            if not trial:
                return result
        non_null = [a for a in args if a is not type(None)]
        if len(non_null) == 1:  # one real type: report its precise problem
            return _convert(value, non_null[0], path, problems, meta)
        problems.add(path, f"must be {_type_name(hint)}, not {_short(value)}")
        return _FAIL
    if origin is Literal:
        choices = typing.get_args(hint)
        if value in choices and type(value) in {type(c) for c in choices}:
            return value
        hint_text = ""
        if isinstance(value, str):
            close = difflib.get_close_matches(value, [str(c) for c in choices], n=1)
            hint_text = f", did you mean {close[0]!r}?" if close else ""
        problems.add(
            path, f"{_short(value)} is not one of {', '.join(map(repr, choices))}{hint_text}"
        )
        return _FAIL
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path, problems)
    if origin is tuple:
        (item_hint, _ellipsis) = typing.get_args(hint)
        if value is None:
            return ()
        if not isinstance(value, list):
            problems.add(path, f"must be a list, not {type(value).__name__}")
            return _FAIL
        items = [_convert(v, item_hint, f"{path}[{i}]", problems, {}) for i, v in enumerate(value)]
        return tuple(items)
    if origin is dict:
        _key_hint, item_hint = typing.get_args(hint)
        if value is None:
            return {}
        if not isinstance(value, dict):
            problems.add(path, f"must be a mapping, not {type(value).__name__}")
            return _FAIL
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
                problems.add(_join(path, _key_text(k)), "names must be letters, digits and _")
                continue
            out[k] = _convert(v, item_hint, _join(path, k), problems, {})
        return out
    if hint is bool:
        if isinstance(value, bool):
            return value
        problems.add(path, f"must be true or false, not {_short(value)}")
        return _FAIL
    if hint in (int, float):
        ok = isinstance(value, int) and not isinstance(value, bool)
        if hint is float:
            ok = ok or isinstance(value, float)
        if not ok:
            problems.add(path, f"must be {_type_name(hint)}, not {_short(value)}")
            return _FAIL
        if isinstance(value, float) and not math.isfinite(value):
            problems.add(path, f"must be a finite number, not {value}")
            return _FAIL
        if abs(value) > MAX_NUMBER:
            shown = f"{value:g}" if isinstance(value, float) else _short(value)
            problems.add(path, f"{shown} is too large (the limit is {MAX_NUMBER:g})")
            return _FAIL
        low, high = meta.get("min"), meta.get("max")
        if low is not None and value < low:
            problems.add(path, f"{value} is below the minimum {low}")
            return _FAIL
        if high is not None and value > high:
            problems.add(path, f"{value} is above the maximum {high}")
            return _FAIL
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            problems.add(path, f"must be a string, not {_short(value)}")
            return _FAIL
        if "\x00" in value or _SURROGATE.search(value):
            problems.add(path, "must be text without NUL characters or lone surrogates")
            return _FAIL
        return value
    raise TypeError(f"unsupported config type {hint!r} at {path}")  # pragma: no cover


def _build(cls: type, data: Any, path: str, problems: _Problems) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.add(path, f"must be a mapping, not {type(data).__name__}")
        return _FAIL
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f", did you mean {close[0]!r}?" if close else ""
            problems.add(_join(path, _key_text(key)), f"unknown key{hint}")
            continue
        result = _convert(value, hints[key], _join(path, key), problems, dict(fields[key].metadata))
        if result is not _FAIL:
            kwargs[key] = result
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # pragma: no cover - defaults always construct
        problems.add(path, str(exc))
        return _FAIL


_FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,62}")
_PIN_KINDS_SINGLE = {"button", "led", "pwm_led", "buzzer", "output", "pwm_output", "servo", "input"}
_PWM_KINDS = {"pwm_led", "pwm_output", "servo", "rgb_led"}
_FIXED_PULL_PINS = {2, 3}  # I2C pins with fixed 1.8 kOhm pull-ups on every Pi
_VERBS_BY_KIND = {
    "led": {"on", "off", "toggle", "set", "blink", "read"},
    "pwm_led": {"on", "off", "toggle", "set", "value", "blink", "pulse", "read"},
    "rgb_led": {"on", "off", "toggle", "set", "value", "blink", "pulse", "read"},
    "buzzer": {"on", "off", "toggle", "set", "blink", "read"},
    "output": {"on", "off", "toggle", "set", "blink", "read"},
    "pwm_output": {"on", "off", "toggle", "set", "value", "blink", "pulse", "read"},
    "servo": {"angle", "read"},
    "input": {"read"},
    "button": {"read"},
}


_LEVEL_KINDS = frozenset({"pwm_led", "pwm_output", "rgb_led"})


def device_range(settings: DeviceSettings) -> tuple[float, float] | None:
    """The (low, high) a device's level may take: PWM duty 0-1 or servo degrees; None = on/off.

    For PWM kinds 0 (off) is always allowed besides ``low..high``.
    """
    if settings.kind in _LEVEL_KINDS:
        full = (0.0, 1.0)
    elif settings.kind == "servo":
        full = (-90.0, 90.0)
    else:
        return None
    low = full[0] if settings.min is None else float(settings.min)
    high = full[1] if settings.max is None else float(settings.max)
    return low, high


def describe_range(kind: str, low: float, high: float) -> str:
    """``0 (off) or 0.2 to 0.8`` / ``0 to 0.8`` / ``-60 to 60 degrees`` for error messages."""
    if kind == "servo":
        return f"{low:g} to {high:g} degrees"
    if low > 0:
        return f"0 (off) or {low:g} to {high:g}"
    return f"0 to {high:g}"


def _check_device_range(path: str, dev: DeviceSettings, problems: _Problems) -> None:
    """min/max fit the kind; initial and safe values lie inside them."""
    span = device_range(dev)
    if span is None:
        for key in ("min", "max"):
            if getattr(dev, key) is not None:
                problems.add(
                    f"{path}.{key}",
                    f"a {dev.kind} is only on or off; min/max apply to pwm_led, pwm_output, "
                    "rgb_led and servo",
                )
        return
    full = (-90.0, 90.0) if dev.kind == "servo" else (0.0, 1.0)
    low, high = span
    bad = False
    for key, value in (("min", dev.min), ("max", dev.max)):
        if value is not None and not full[0] <= value <= full[1]:
            problems.add(f"{path}.{key}", f"{value:g} is outside {full[0]:g}..{full[1]:g}")
            bad = True
    if bad:
        return
    if low > high:
        problems.add(f"{path}.max", f"must not be below min ({low:g})")
        return
    if dev.kind != "servo" and high <= 0:
        problems.add(f"{path}.max", "must be above 0, or the device could never switch on")
        return
    allowed = describe_range(dev.kind, low, high)
    if dev.kind == "servo":
        checks = (("initial_angle", dev.initial_angle), ("safe_angle", dev.safe_angle))
    else:
        checks = (("initial", dev.initial), ("safe", dev.safe))
    for key, value in checks:
        if value is None or (dev.kind != "servo" and value == 0):
            continue
        if not low <= value <= high:
            problems.add(f"{path}.{key}", f"{value:g} is outside the device's range {allowed}")


def _check_tool_range(
    path: str, tool: ToolSettings, name: str, dev: DeviceSettings, problems: _Problems
) -> None:
    """A tool's min/max may only narrow its device's range."""
    span = device_range(dev)
    if span is None:
        for key in ("min", "max"):
            if getattr(tool, key) is not None:
                problems.add(
                    f"{path}.{key}",
                    f"device {name!r} is a {dev.kind}, only on or off: it has no range to limit",
                )
        return
    low, high = span
    for key, bound in (("min", tool.min), ("max", tool.max)):
        if key == "min" and bound == 0 and dev.kind != "servo":
            continue  # 0 = off is always allowed
        if bound is not None and not low <= bound <= high:
            problems.add(
                f"{path}.{key}",
                f"{bound:g} is outside the range of device {name!r} ({low:g} to {high:g}, "
                f"devices.{name}.min/max); a tool may only narrow it",
            )


def _check_endpoint(endpoint: str, problems: _Problems) -> None:
    """ws:// carries the API key in cleartext, so it may only reach this machine."""
    try:
        url = urlsplit(endpoint)
        url.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        problems.add("live.endpoint", f"{endpoint!r} is not a valid URL: {exc}")
        return
    if url.scheme not in ("ws", "wss") or not url.hostname:
        problems.add("live.endpoint", f"{endpoint!r} must be a wss:// (or ws://) URL with a host")
        return
    if url.scheme == "ws" and not _is_loopback(url.hostname):
        problems.add(
            "live.endpoint",
            f"ws:// to {url.hostname} would send the API key in cleartext; use wss://, "
            "or ws:// only to this machine (127.0.0.1, ::1, localhost)",
        )


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check(config: Config, problems: _Problems) -> None:
    """Cross-field rules that a type cannot express."""
    audio = config.audio
    if 0 < audio.idle_period_ms < audio.chunk_ms:
        problems.add(
            "audio.idle_period_ms",
            f"{audio.idle_period_ms} is below audio.chunk_ms ({audio.chunk_ms}); use 0 to keep"
            " one period",
        )
    used: dict[int, str] = {}
    for name, dev in config.devices.items():
        path = f"devices.{name}"
        pins = list(dev.pins) if dev.kind == "rgb_led" else [dev.pin]
        if dev.kind == "rgb_led":
            if len(dev.pins) != 3:
                problems.add(f"{path}.pins", "an rgb_led needs exactly 3 pins: [red, green, blue]")
                pins = []
            if dev.pin is not None:
                problems.add(f"{path}.pin", "an rgb_led uses 'pins', not 'pin'")
        elif dev.pin is None:
            problems.add(f"{path}.pin", f"a {dev.kind} needs a pin")
            pins = []
        elif dev.pins:
            problems.add(f"{path}.pins", f"a {dev.kind} uses 'pin', not 'pins'")
        for pin in pins:
            if pin is None:
                continue
            if not 2 <= pin <= 27:
                problems.add(f"{path}.pin", f"{pin} is not a usable BCM GPIO pin (2-27)")
            elif pin in used:
                problems.add(f"{path}.pin", f"GPIO{pin} is already used by '{used[pin]}'")
            else:
                used[pin] = name
            if (
                pin in _FIXED_PULL_PINS
                and dev.kind in ("button", "input")
                and dev.pull_up is not True
            ):
                problems.add(
                    f"{path}.pull_up",
                    f"GPIO{pin} has a fixed pull-up resistor; pull_up must be true",
                )
        if dev.min_pulse_ms >= dev.max_pulse_ms:
            problems.add(f"{path}.max_pulse_ms", "must be greater than min_pulse_ms")
        if dev.kind in ("led", "buzzer", "output"):
            for key, value in (("initial", dev.initial), ("safe", dev.safe)):
                if value not in (None, 0, 1):
                    problems.add(f"{path}.{key}", f"must be 0 (off) or 1 (on) for a {dev.kind}")
        _check_device_range(path, dev, problems)
    for section, ref, kinds in (
        ("ptt.device", config.ptt.device, {"button"}),
        ("status_light.device", config.status_light.device, {"led", "pwm_led", "rgb_led"}),
    ):
        if ref is None:
            continue
        dev = config.devices.get(ref)
        if dev is None:
            problems.add(section, f"no device named {ref!r} in devices{_did_you_mean(ref, config)}")
        elif dev.kind not in kinds:
            problems.add(section, f"device {ref!r} is a {dev.kind}, expected {' or '.join(kinds)}")
    names: set[str] = set()
    for i, tool in enumerate(config.tools):
        path = f"tools[{i}]"
        if not _FUNCTION_NAME.fullmatch(tool.name):
            problems.add(f"{path}.name", f"{tool.name!r} is not a valid function name")
        elif tool.name in names:
            problems.add(f"{path}.name", f"{tool.name!r} is declared twice")
        names.add(tool.name)
        if not tool.description:
            problems.add(f"{path}.description", "tools need a description for the model")
        dev = config.devices.get(tool.device)
        if dev is None:
            problems.add(
                f"{path}.device",
                f"no device named {tool.device!r} in devices{_did_you_mean(tool.device, config)}",
            )
        elif tool.verb not in _VERBS_BY_KIND[dev.kind]:
            allowed = ", ".join(sorted(_VERBS_BY_KIND[dev.kind]))
            problems.add(f"{path}.verb", f"a {dev.kind} cannot {tool.verb!r}; allowed: {allowed}")
        if tool.min is not None and tool.max is not None and tool.min > tool.max:
            problems.add(f"{path}.max", "must not be below min")
        if dev is not None:
            _check_tool_range(path, tool, tool.device, dev, problems)
        if tool.auto_off_s is not None and dev is not None and dev.kind in ("servo", "input"):
            problems.add(f"{path}.auto_off_s", f"a {dev.kind} cannot be switched off")
    if config.control.enabled:
        mode = config.control.mode
        if not re.fullmatch(r"0?[0-7]{3}", mode):
            problems.add("control.mode", f"{mode!r} is not an octal mode like 0660")
        elif int(mode, 8) & ~0o660:
            problems.add(
                "control.mode",
                f"{mode!r} is wider than 0660: anyone outside the pi-agent group (or any "
                "execute bit) could drive the agent; use 0660 or 0600",
            )
    _check_endpoint(config.live.endpoint, problems)
    if config.camera.backend != "none" and config.camera.mode == "on_demand" and "look" in names:
        problems.add("tools", "'look' is the camera's built-in tool name; rename your tool")


def _did_you_mean(name: str, config: Config) -> str:
    close = difflib.get_close_matches(name, list(config.devices), n=1)
    return f", did you mean {close[0]!r}?" if close else ""


def parse_config(data: Any) -> Config:
    """Validate an already-loaded YAML document; raise ConfigError with every problem."""
    problems = _Problems()
    config = _build(Config, data, "", problems)
    if not problems:
        _check(config, problems)
    if problems:
        raise ConfigError(list(problems))
    return config


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Load and validate a YAML file (``None`` = built-in defaults).

    Every failure is a ConfigError naming the file: unreadable, over
    ``MAX_CONFIG_BYTES``, not UTF-8, bad YAML, too deep or alias-bombed, or
    invalid values.
    """
    if path is None:
        return parse_config({})
    text = read_text(path, str(path), "config", MAX_CONFIG_BYTES)
    return parse_config(load_yaml(text, path))


def replace(config: Config, **sections: Any) -> Config:
    """Copy ``config`` with some sections replaced (for CLI overrides and tests)."""
    return dataclasses.replace(config, **sections)


# --------------------------------------------------------------------------- secrets


def resolve_api_key(live: LiveSettings, environ: typing.Mapping[str, str] | None = None) -> str:
    """Find the API key: ``live.api_key_file``, then the systemd credential, then the env var.

    The error names every place that was looked at, never a value.
    """
    env = os.environ if environ is None else environ
    if live.api_key_file:
        return _read_secret(Path(live.api_key_file), "live.api_key_file")
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        cred = Path(cred_dir) / live.credential_name
        if cred.exists():
            return _read_secret(cred, f"systemd credential {live.credential_name!r}")
    key = env.get(live.api_key_env, "").strip()
    if key:
        return key
    places = [f"environment variable {live.api_key_env} (live.api_key_env)"]
    places.append("a file named by live.api_key_file")
    places.append(
        f"systemd credential {live.credential_name!r} in $CREDENTIALS_DIRECTORY"
        + ("" if cred_dir else " (not set)")
    )
    raise ConfigError("no Gemini API key found; looked in: " + "; ".join(places))


def _read_secret(path: Path, what: str) -> str:
    text = read_text(path, what, str(path), 64 * 1024)
    secret = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise ConfigError(f"{what}: {path} is empty")
    return secret


def key_file_problem(live: LiveSettings) -> tuple[str, str] | None:
    """(problem, fix) when ``live.api_key_file`` is open to group or others; else None.

    The key itself is never read here.
    """
    if not live.api_key_file:
        return None
    try:
        mode = stat.S_IMODE(os.stat(live.api_key_file).st_mode)
    except (OSError, ValueError):
        return None  # resolve_api_key reports a missing file
    if not mode & 0o077:
        return None
    return (
        f"live.api_key_file {live.api_key_file} has mode {mode:04o}: other users can read it",
        f"chmod 600 {live.api_key_file}",
    )


def key_file_warning(live: LiveSettings) -> str | None:
    """One line for the start-up log when the key file is readable by others; else None."""
    problem = key_file_problem(live)
    return None if problem is None else f"{problem[0]}; fix: {problem[1]}"


# --------------------------------------------------------------------------- docs


def iter_options(cls: type = Config, prefix: str = "") -> typing.Iterator[tuple[str, Any, str]]:
    """Yield (dotted path, default, doc) for every option; tests use it to keep docs honest."""
    for f in dataclasses.fields(cls):
        path = _join(prefix, f.name)
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            yield from iter_options(hint, path)
            continue
        origin = typing.get_origin(hint)
        item = typing.get_args(hint)[-1] if origin in (dict, tuple) else None
        if origin is tuple:
            item = typing.get_args(hint)[0]
        if item is not None and dataclasses.is_dataclass(item):
            marker = "[]" if origin is tuple else ".*"
            yield from iter_options(item, path + marker)
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        yield path, default, f.metadata.get("doc", "")
