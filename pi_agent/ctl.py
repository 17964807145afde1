"""``pi-agent ctl``: drive a running agent from a shell, over its control socket.

``say`` waits for the model's answer and prints the exchange, ``status`` reads
like a summary (``--json`` for scripts), ``watch`` streams the agent's events
as JSON lines. Mistakes are caught before anything is sent (``ctl sya hello``
suggests ``say``), and an unreachable agent is explained, including the one
fix a new user needs most: joining the ``pi-agent`` group.

Exit codes: 0 done, 1 the agent refused or could not be reached, 2 usage error.
"""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from .control import COMMANDS, check_command, parse_volume, validate

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
SAY_TIMEOUT_S = 60.0
TIMEOUT_S = 5.0
MAX_REPLY = 16 * 1024 * 1024

_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class CtlError(Exception):
    """A failure worth one line on stderr; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code


def build_request(command: str, words: Sequence[str], *, wait: bool = True) -> dict[str, Any]:
    """The request for ``pi-agent ctl COMMAND WORDS...``; CtlError (usage) if it is wrong."""
    try:
        cmd = check_command(command.lower())
        if cmd == "say":
            return validate({"cmd": cmd, "text": " ".join(words), "wait": wait})
        if cmd == "volume":
            if len(words) != 1:
                raise ValueError("volume takes one value: 0-1 or a percentage (0.6, 60 or 60%)")
            return validate({"cmd": cmd, "value": parse_volume(words[0])})
        if words:
            raise ValueError(f"{cmd} takes no argument")
        return validate({"cmd": cmd})
    except ValueError as exc:
        raise CtlError(str(exc), EXIT_USAGE) from None


def connect(path: str, timeout: float) -> socket.socket:
    """A connected socket, or a CtlError that says why not and what to do."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        if isinstance(exc, PermissionError):
            raise CtlError(
                f"permission denied on {path}: add yourself to the pi-agent group: "
                "sudo adduser $USER pi-agent (then log out and in)"
            ) from None
        if isinstance(exc, FileNotFoundError):
            raise CtlError(f"no agent is listening on {path} (is pi-agent running?)") from None
        if isinstance(exc, ConnectionRefusedError):
            raise CtlError(f"no agent is running on {path} (the socket is left over)") from None
        if isinstance(exc, TimeoutError):
            raise CtlError(f"the agent on {path} did not accept within {timeout:g} s") from None
        raise CtlError(f"cannot reach the agent on {path}: {exc.strerror or exc}") from None
    return sock


def _read_reply(reader: Any, path: str, timeout: float) -> dict[str, Any]:
    try:
        line = reader.readline(MAX_REPLY)
    except TimeoutError:
        raise CtlError(
            f"the agent did not answer within {timeout:g} s (--timeout to wait longer)"
        ) from None
    except OSError as exc:
        raise CtlError(f"lost the connection to the agent on {path}: {exc}") from None
    if not line:
        raise CtlError(f"the agent on {path} closed the connection without answering")
    try:
        reply = json.loads(line)
    except ValueError:
        raise CtlError(f"the agent on {path} sent a reply that is not JSON") from None
    if not isinstance(reply, dict):
        raise CtlError(f"the agent on {path} sent a reply that is not an object")
    return reply


def request(path: str, req: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send one request and return the agent's reply (CtlError if it cannot)."""
    with connect(path, timeout) as sock:
        try:
            sock.sendall(json.dumps(req).encode() + b"\n")
        except OSError as exc:
            raise CtlError(f"lost the connection to the agent on {path}: {exc}") from None
        with sock.makefile("rb") as reader:
            return _read_reply(reader, path, timeout)


def watch(path: str, timeout: float, out: TextIO) -> int:
    """Print every event the agent publishes, one JSON line each, until EOF or Ctrl-C."""
    try:
        with connect(path, timeout) as sock:
            sock.sendall(b'{"cmd": "watch"}\n')
            with sock.makefile("rb") as reader:
                reply = _read_reply(reader, path, timeout)
                if not reply.get("ok"):
                    raise CtlError(str(reply.get("error", "the agent refused to stream events")))
                sock.settimeout(None)
                while True:
                    try:
                        line = reader.readline(MAX_REPLY)
                    except OSError as exc:
                        lost = f"lost the connection to the agent on {path}: {exc}"
                        raise CtlError(lost) from None
                    if not line:
                        break  # the agent stopped
                    out.write(line.decode("ascii", "replace"))
                    out.flush()
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    return EXIT_OK


# --------------------------------------------------------------------------- printing


def printable(text: object) -> str:
    """``text`` safe for a terminal: control characters and lone surrogates escaped."""
    return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], str(text))


def _json(value: Any) -> str:
    try:
        return printable(json.dumps(value, ensure_ascii=False, sort_keys=True))
    except (TypeError, ValueError):
        return printable(repr(value))


def _value(value: Any) -> str:
    """One value on one line: strings as they are, dicts as ``k=v, ...``, the rest as JSON."""
    if isinstance(value, str):
        return printable(value)
    if value is None:
        return "-"
    if isinstance(value, dict):
        if not value:
            return "-"
        return ", ".join(f"{printable(k)}={_scalar(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_scalar(v) for v in value) if value else "-"
    return _json(value)


def _scalar(value: Any) -> str:
    return printable(value) if isinstance(value, str) else _json(value)


def _number(value: Any, spec: str) -> str | None:
    """``value`` formatted with ``spec`` if it is a number that fits a float, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return format(float(value), spec)
    except OverflowError:
        return None


def _percent(value: Any) -> str:
    number = _number(value * 100 if _number(value, "f") else None, ".0f")
    return f"{number}%" if number else _value(value)


def _problem(problem: Any) -> str:
    if not isinstance(problem, dict):
        return _value(problem)
    known = ("part", "problem", "detail")
    head = " ".join(printable(problem[k]) for k in known[:2] if problem.get(k))
    detail = problem.get("detail")
    text = f"{head}: {printable(detail)}" if detail and head else head or _value(detail)
    extra = {k: v for k, v in problem.items() if k not in known}
    return f"{text} ({_value(extra)})" if extra else text


def _connection(conn: Any) -> str:
    if not isinstance(conn, dict):
        return _value(conn)
    rest = dict(conn)
    words = ["connected" if rest.pop("connected", False) else "not connected"]
    retry = rest.pop("reconnecting_in_s", None)
    if _number(retry, ".1f"):
        words.append(f"reconnecting in {_number(retry, '.1f')} s")
    elif retry is not None:
        words.append(f"reconnecting in {_value(retry)}")
    resumable = rest.pop("resumable", None)
    if resumable is not None:
        words.append("resumable" if resumable else "not resumable")
    model = rest.pop("model", None)
    if model:
        words.append(f"model {printable(model)}")
    if rest:
        words.append(_value(rest))
    return ", ".join(words)


def _audio(audio: Any, muted: Any) -> str:
    words = []
    if isinstance(audio, dict):
        rest = dict(audio)
        for part in ("mic", "speaker"):
            if part in rest:
                words.append(f"{part} {_value(rest.pop(part))}")
        if "volume" in rest:
            words.append(f"volume {_percent(rest.pop('volume'))}")
        if rest:
            words.append(_value(rest))
    elif audio is not None:
        words.append(_value(audio))
    if muted is not None:
        words.append("muted" if muted else "not muted")
    return ", ".join(words) or "-"


def format_status(status: dict[str, Any]) -> str:
    """``ctl status`` for people: what is wrong first, then the parts, then anything new."""
    rest = dict(status)
    lines: list[tuple[str, str]] = []
    state, light = rest.pop("state", None), rest.pop("light", None)
    head = _value(state) if state is not None else "unknown"
    if light is not None:
        head += f" (light: {_value(light)})"
    lines.append(("state", head))
    cause = rest.pop("cause", None)
    if cause:
        lines.append(("cause", _value(cause)))
    problems = rest.pop("problems", None)
    if isinstance(problems, list):
        for i, problem in enumerate(problems or ["none"]):
            lines.append(("problems" if i == 0 else "", _problem(problem)))
    elif problems is not None:
        lines.append(("problems", _value(problems)))
    if "connection" in rest:
        lines.append(("connection", _connection(rest.pop("connection"))))
    if "audio" in rest or "muted" in rest:
        lines.append(("audio", _audio(rest.pop("audio", None), rest.pop("muted", None))))
    if "camera" in rest:
        lines.append(("camera", _value(rest.pop("camera"))))
    devices = rest.pop("devices", None)
    if isinstance(devices, dict) and devices:
        for i, (name, state_) in enumerate(devices.items()):
            lines.append(("devices" if i == 0 else "", f"{printable(name)}: {_value(state_)}"))
    elif devices is not None:
        lines.append(("devices", _value(devices)))
    for key, label in (("counters", "counters"), ("turn", "turns"), ("last_turn", "last turn")):
        if key in rest:
            lines.append((label, _value(rest.pop(key))))
    for key, value in rest.items():
        lines.append((printable(key).replace("_", " "), _value(value)))
    width = max(len(label) for label, _ in lines) + 2
    return "\n".join(f"{label + ':' if label else '':<{width}}{text}" for label, text in lines)


def format_say(reply: dict[str, Any]) -> str:
    """The exchange of one ``say``: what you typed, the tools the model called, its answer."""
    lines = [f"you: {printable(reply.get('you', ''))}"]
    tools = reply.get("tools")
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, dict):
            call = f"{printable(tool.get('name', '?'))} {_json(tool.get('args', {}))}"
            lines.append(f"tool: {call} -> {_json(tool.get('result'))}")
    answer = reply.get("gemini")
    lines.append(f"gemini: {printable(answer) if answer else '(no transcript)'}")
    return "\n".join(lines)


def _print_reply(cmd: str, reply: dict[str, Any], as_json: bool, out: TextIO) -> None:
    if as_json:
        value = reply.get("status", {}) if cmd == "status" else reply
        print(json.dumps(value, indent=2, sort_keys=True), file=out)
    elif cmd == "status":
        status = reply.get("status")
        print(format_status(status) if isinstance(status, dict) else _value(status), file=out)
    elif cmd == "say" and "you" in reply:
        print(format_say(reply), file=out)
    elif cmd == "say":
        turn = reply.get("turn")
        print(f"sent (turn {_value(turn)})" if turn is not None else "sent", file=out)
    elif cmd == "volume" and "volume" in reply:
        print(f"volume {_percent(reply['volume'])}", file=out)
    else:
        for key, value in reply.items():
            if key != "ok":
                print(f"{printable(key)}: {_value(value)}", file=out)


def run_ctl(
    path: str,
    command: str,
    words: Sequence[str] = (),
    *,
    timeout: float | None = None,
    wait: bool = True,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run one ``pi-agent ctl`` command against the socket at ``path``; return the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if timeout is not None and not timeout > 0:
            error = f"--timeout must be a positive number of seconds, not {timeout:g}"
            raise CtlError(error, EXIT_USAGE)
        req = build_request(command, words, wait=wait)
        if not wait and req["cmd"] != "say":
            raise CtlError("--no-wait only applies to say", EXIT_USAGE)
        cmd = req["cmd"]
        if timeout is None:
            timeout = SAY_TIMEOUT_S if cmd == "say" and wait else TIMEOUT_S
        if cmd == "watch":
            return watch(path, timeout, out)
        reply = request(path, req, timeout)
        if not reply.get("ok"):
            raise CtlError(printable(reply.get("error", "the agent refused the command")))
        _print_reply(cmd, reply, as_json, out)
    except CtlError as exc:
        print(f"pi-agent ctl: {exc}", file=err)
        return exc.code
    return EXIT_OK


_ARGS = {"say": " TEXT", "volume": " V"}
COMMAND_HELP = " | ".join(cmd + _ARGS.get(cmd, "") for cmd in COMMANDS)
