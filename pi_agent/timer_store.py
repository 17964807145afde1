"""Where pending timers live: one JSON file, written atomically, read defensively.

Kept apart from :mod:`pi_agent.timers` (the tools and the worker) for size.
A file that cannot be used (unreadable, not JSON, wrong shape or version) is
reported and moved aside for a person to look at, never a crash; valid
entries of a partly bad file are kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger("pi_agent.timers")

Kind = Literal["timer", "alarm", "reminder"]
KINDS: tuple[str, ...] = ("timer", "alarm", "reminder")
STATE_VERSION = 1


@dataclass(frozen=True)
class Timer:
    """One pending timer, alarm or reminder (for a reminder, ``label`` is what to say)."""

    id: str
    kind: Kind
    label: str
    due: float  # epoch seconds, wall clock
    created: float  # epoch seconds, wall clock
    duration_s: float | None  # what was asked for; None for a time of day


def write_state(path: Path, next_id: int, timers: list[Timer]) -> None:
    """Write the state file atomically (tmp, fsync, rename, fsync the dir); OSError if it fails."""
    tmp = path.with_name(path.name + ".tmp")
    state = {
        "version": STATE_VERSION,
        "next_id": next_id,
        "timers": [dataclasses.asdict(t) for t in timers],
    }
    data = json.dumps(state, indent=1, ensure_ascii=False).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_state(path: Path, clock: Callable[[], float]) -> tuple[dict[str, Timer], int, bool]:
    """(timers by id, next id, whether the file must be written again) from ``path``.

    A missing file is an empty state; an unusable one is set aside.
    """
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():  # a crash between write and rename: the real file is intact
        log.info("timers: ignoring %s left by an interrupted save", tmp)
        _unlink(tmp)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}, 1, False
    except OSError as exc:
        set_aside(path, f"cannot read it: {exc.strerror or exc}", clock)
        return {}, 1, False
    try:
        state = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        set_aside(path, f"not valid JSON: {exc}", clock)
        return {}, 1, False
    if not isinstance(state, dict) or not isinstance(state.get("timers"), list):
        set_aside(path, "not a timers file (no 'timers' list)", clock)
        return {}, 1, False
    if state.get("version") != STATE_VERSION:
        set_aside(path, f"unknown version {state.get('version')!r}", clock)
        return {}, 1, False
    timers: dict[str, Timer] = {}
    problems = []
    for i, entry in enumerate(state["timers"]):
        try:
            timer = _timer_from(entry)
        except ValueError as exc:
            problems.append(f"timers[{i}]: {exc}")
            continue
        if timer.id in timers:
            problems.append(f"timers[{i}]: id {timer.id!r} appears twice")
            continue
        timers[timer.id] = timer
    numbers = [int(t.id[1:]) for t in timers.values() if t.id[1:].isdigit()]
    next_id = state.get("next_id")
    if not isinstance(next_id, int) or isinstance(next_id, bool):
        next_id = 1
    next_id = max([next_id, *(n + 1 for n in numbers)])
    if problems:
        set_aside(path, f"{'; '.join(problems)} (kept the {len(timers)} valid entries)", clock)
    log.info("timers: %d pending from %s", len(timers), path)
    return timers, next_id, bool(problems)


def set_aside(path: Path, why: str, clock: Callable[[], float]) -> None:
    """Report a bad state file and move it out of the way, keeping it for a person."""
    stamp = datetime.fromtimestamp(clock(), UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        os.rename(path, target)
        done = f"moved it to {target.name}"
    except OSError as exc:
        done = f"could not move it aside ({exc.strerror or exc}); starting without it"
    log.warning("timers: state file %s is unusable (%s); %s", path, why, done)


def _timer_from(entry: Any) -> Timer:
    """A Timer from its JSON form; ValueError names what is wrong."""
    if not isinstance(entry, dict):
        raise ValueError(f"must be an object, not {type(entry).__name__}")
    missing = sorted({f.name for f in dataclasses.fields(Timer)} - set(entry))
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    checks = {
        "id": lambda v: isinstance(v, str) and bool(v),
        "kind": lambda v: v in KINDS,
        "label": lambda v: isinstance(v, str),
        "due": is_number,
        "created": is_number,
        "duration_s": lambda v: v is None or is_number(v),
    }
    for key, good in checks.items():
        if not good(entry[key]):
            raise ValueError(f"bad {key} {entry[key]!r}")
    return Timer(**{key: entry[key] for key in checks})


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable: fsync the directory (not possible everywhere, e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError as exc:
        log.warning("timers: cannot remove %s: %s", path, exc.strerror or exc)
