"""Timers, alarms and reminders that ring in the room, with or without a network.

The model sets them with five built-in tools (:meth:`Timers.declarations`,
:meth:`Timers.call`). A ``pi-agent-timers`` thread sleeps until the next one
is due and hands it to ``on_due``; ringing the chime and the light and telling
the model are the agent's job. Nothing here needs the Live session, so a timer
set before the Wi-Fi went down still rings.

Persistence: every change rewrites the state file atomically (temporary file,
fsync, rename, fsync of the directory), so a power cut leaves the old file or
the new one, never half of one. The file is read back at start, and a timer
whose time passed while the agent was down fires on the first :meth:`Timers.poll`.
A file that cannot be read or parsed is moved aside to
``<name>.corrupt-<UTC time>`` and reported in the log; it never stops the agent.

Times are wall-clock epoch seconds: alarms are times of day, and a timer must
survive a reboot (the monotonic clock starts again at zero). The worker sleeps
at most :data:`MAX_WAIT_S` at a time, so a clock step (NTP after boot) is
noticed that soon; a step moves countdown timers with it, as their due time
is stored on the same clock.

Every tool result has one shape (:func:`ok_result`, :func:`error_result`),
meant for every tool the model calls, so it can tell at once whether calling
again could help::

    {"status": "ok", ...details}
        e.g. "timer": {"id": "t3", "kind": "timer", "label": "pasta",
                       "rings_at": "14:05", "day": "today", "in": "10 minutes", ...},
             "rings_at": "14:05", "in": "10 minutes",
             "warning": "..."   # only if the change is done but could not be saved

    {"status": "error",
     "reason": "what was wrong, in words that name the argument",
     "retryable": false,        # true only when the SAME call may succeed later
     "valid_options": [...],    # when the answer is one of a set (ids, argument names)
     "allowed_range": {"min": 1, "max": 86400, "unit": "seconds"},  # when it is a number
     "hint": "what to do instead"}                                  # optional
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, tzinfo
from datetime import time as dtime
from pathlib import Path
from typing import Any

from .config import TimerSettings
from .threads import Worker, call_logged
from .timer_store import KINDS, Kind, Timer, is_number, read_state, write_state

log = logging.getLogger(__name__)

TOOL_NAMES: tuple[str, ...] = (
    "set_timer",
    "set_alarm",
    "set_reminder",
    "list_timers",
    "cancel_timer",
)
MAX_WAIT_S = 60.0  # longest sleep of the worker: a wall-clock step is noticed this soon
MIN_DURATION_S = 1.0
_UNITS = {"hours": 3600.0, "minutes": 60.0, "seconds": 1.0}
_TIME_OF_DAY = re.compile(
    r"\s*(\d{1,2})(?:[:.h](\d{2}))?(?::(\d{2}))?\s*(?:([ap])\.?\s*m\.?)?\s*", re.IGNORECASE
)
_ALL = frozenset({"all", "*", "everything"})


# --------------------------------------------------------------------------- results


def ok_result(**details: Any) -> dict[str, Any]:
    """A success result: ``{"status": "ok", **details}``."""
    return {"status": "ok", **details}


def error_result(
    reason: str,
    *,
    retryable: bool = False,
    valid_options: list[Any] | None = None,
    allowed_range: Mapping[str, Any] | None = None,
    hint: str | None = None,
) -> dict[str, Any]:
    """An error result that tells the model whether and how a new call could succeed."""
    out: dict[str, Any] = {"status": "error", "reason": reason, "retryable": retryable}
    if valid_options is not None:
        out["valid_options"] = list(valid_options)
    if allowed_range is not None:
        out["allowed_range"] = dict(allowed_range)
    if hint:
        out["hint"] = hint
    return out


class _Refused(Exception):
    """Raised inside a tool to answer with :func:`error_result`."""

    def __init__(self, reason: str, **extra: Any):
        super().__init__(reason)
        self.result = error_result(reason, **extra)


# --------------------------------------------------------------------------- helpers


def resolve_state_path(settings: TimerSettings, environ: Mapping[str, str] | None = None) -> Path:
    """``timers.state_file``, else ``$STATE_DIRECTORY/timers.json`` (systemd's
    ``StateDirectory=``), else ``$XDG_STATE_HOME`` or ``~/.local/state`` ``/pi-agent/timers.json``.
    """
    env = os.environ if environ is None else environ
    if settings.state_file:
        return Path(settings.state_file).expanduser()
    state_dir = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state_dir:
        return Path(state_dir) / "timers.json"
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "pi-agent" / "timers.json"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def human_duration(seconds: float) -> str:
    """``"1 hour 5 minutes"``, ``"1 minute 30 seconds"``, ``"45 seconds"`` (seconds dropped
    above an hour)."""
    total = max(0, round(seconds))
    if total < 60:
        return _plural(total, "second")
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(_plural(hours, "hour"))
    if minutes:
        parts.append(_plural(minutes, "minute"))
    if secs and not hours:
        parts.append(_plural(secs, "second"))
    return " ".join(parts)


def parse_time_of_day(text: str) -> tuple[int, int, int]:
    """``"07:30"``, ``"7:30"``, ``"19:30:15"``, ``"7:30 pm"``, ``"7pm"`` -> (hour, minute, second).

    Raises ValueError: a bare ``"7"`` is refused (7 in the morning or the evening?).
    """
    m = _TIME_OF_DAY.fullmatch(text)
    if m is None:
        raise ValueError(text)
    hour, minute, second, half = m.groups()
    if minute is None and half is None:
        raise ValueError(text)
    h, mi, s = int(hour), int(minute or 0), int(second or 0)
    if half is not None:
        if not 1 <= h <= 12:
            raise ValueError(text)
        h = h % 12 + (12 if half.lower() == "p" else 0)
    if not (0 <= h <= 23 and 0 <= mi <= 59 and 0 <= s <= 59):
        raise ValueError(text)
    return h, mi, s


def _clean_text(text: str) -> str:
    """One line of printable text: the label reaches logs and the model."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


# --------------------------------------------------------------------------- timers


class Timers(Worker):
    """Pending timers, alarms and reminders: the model's tools, the state file, the worker.

    Thread-safe: :meth:`call` runs on the tool thread, :meth:`poll` on the
    ``pi-agent-timers`` thread (or the owner's), :meth:`list` anywhere.
    ``on_due(timer)`` runs on the polling thread, outside the lock, once per
    timer (which is already removed and saved by then); an exception in it is
    logged. A due timer may be late: ``clock() - timer.due`` says by how much
    (the agent was off when it came due).

    With ``settings.enabled`` false this is a null object: no declarations, no
    state file, no thread, and :meth:`call` answers with an error.
    """

    name = "pi-agent-timers"

    def __init__(
        self,
        settings: TimerSettings,
        *,
        state_path: Path,
        on_due: Callable[[Timer], None],
        clock: Callable[[], float] = time.time,
        tz: tzinfo | None = None,
    ):
        super().__init__()
        self.settings = settings
        self.state_path = Path(state_path)
        self._on_due = on_due
        self._clock = clock
        self._tz = tz  # None = the system's local time zone
        self._cond = threading.Condition()
        self._timers: dict[str, Timer] = {}
        self._next_id = 1
        self._save_failed = False
        if settings.enabled:
            self._load()

    # -- public API

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def list(self) -> list[Timer]:
        """Pending timers, soonest first."""
        with self._cond:
            return self._sorted_locked()

    def next_due(self) -> float | None:
        """Epoch time of the soonest pending timer, or None."""
        with self._cond:
            return self._next_due_locked()

    def poll(self) -> list[Timer]:
        """Fire everything due at ``clock()``: remove it, save, call ``on_due``; return it."""
        with self._cond:
            now = self._clock()
            due = [t for t in self._sorted_locked() if t.due <= now]
            if not due:
                return []
            for timer in due:
                del self._timers[timer.id]
            self._save()
            self._cond.notify_all()
        for timer in due:
            late = f", {human_duration(now - timer.due)} late" if now - timer.due >= 1 else ""
            log.info("%s is due%s", _name(timer), late)
            call_logged(self._on_due, timer)
        return due

    def describe(self, timer: Timer) -> dict[str, Any]:
        """The model's view of one timer (times in local time, durations in words)."""
        now = self._clock()
        out: dict[str, Any] = {"id": timer.id, "kind": timer.kind, "label": timer.label}
        out["rings_at"] = self._hhmm(timer.due)
        out["day"] = self._day(timer.due, now)
        out["in"] = human_duration(timer.due - now) if timer.due > now else "now"
        if timer.duration_s is not None:
            out["duration"] = human_duration(timer.duration_s)
        return out

    def announcement(self, timer: Timer) -> str:
        """What the model should be told when ``timer`` rings, e.g. to say it out loud."""
        name = f"'{timer.label}' " if timer.label else ""
        if timer.kind == "timer":
            length = human_duration(timer.duration_s or 0)
            text = f"The {name}timer ({length}) has finished and is ringing."
        elif timer.kind == "alarm":
            text = f"The {name}alarm set for {self._hhmm(timer.due)} is ringing."
        else:
            text = f"A reminder is ringing; tell the user: {timer.label}"
        late = self._clock() - timer.due
        if late >= 60:
            text += (
                f" It came due at {self._hhmm(timer.due)} ({human_duration(late)} ago) "
                "while the assistant was off."
            )
        return text

    # -- the model's tools

    def declarations(self) -> list[dict[str, Any]]:
        """FunctionDeclarations for the built-in tools (none when timers are disabled)."""
        if not self.enabled:
            return []
        s = self.settings
        longest = human_duration(s.max_duration_s)
        limits = f"At most {s.max_count} timers, alarms and reminders can be pending at once."
        label = {
            "type": "STRING",
            "description": f"What it is for, e.g. pasta (optional, at most "
            f"{s.max_label_chars} characters).",
        }
        amounts = {
            unit: {
                "type": "NUMBER",
                "description": f"{unit.capitalize()} to wait; hours, minutes and seconds add up.",
                "minimum": 0,
                "maximum": round(s.max_duration_s / size, 3),
            }
            for unit, size in _UNITS.items()
        }
        at = {
            "type": "STRING",
            "description": "Time of day in 24-hour local time, HH:MM, e.g. 07:30 or 18:45.",
        }
        return [
            {
                "name": "set_timer",
                "description": "Start a countdown timer that rings on this device's speaker "
                "when it ends, even without internet. Give the duration as hours, minutes "
                f"and/or seconds, e.g. minutes=10; at most {longest}. {limits}",
                "parameters": {"type": "OBJECT", "properties": {**amounts, "label": label}},
            },
            {
                "name": "set_alarm",
                "description": "Set an alarm that rings at a time of day (local time), the next "
                "time that time comes: today if it is still ahead, otherwise tomorrow. "
                f"{limits}",
                "parameters": {
                    "type": "OBJECT",
                    "properties": {"time": at, "label": label},
                    "required": ["time"],
                },
            },
            {
                "name": "set_reminder",
                "description": "Remind the user of something later: after a delay (hours, "
                "minutes, seconds) or at a time of day (at). It rings, and you are given the "
                f"text to say. {limits}",
                "parameters": {
                    "type": "OBJECT",
                    "properties": {
                        "text": {
                            "type": "STRING",
                            "description": "What to remind the user of, e.g. take the bread "
                            f"out (at most {s.max_label_chars} characters).",
                        },
                        **amounts,
                        "at": {**at, "description": at["description"] + " Instead of a delay."},
                    },
                    "required": ["text"],
                },
            },
            {
                "name": "list_timers",
                "description": "List the pending timers, alarms and reminders: their ids, "
                "labels, when they ring and how long until then.",
            },
            {
                "name": "cancel_timer",
                "description": "Cancel pending timers, alarms or reminders, by id, by label or "
                "all of them. A press of the device's button stops one that is ringing.",
                "parameters": {
                    "type": "OBJECT",
                    "properties": {
                        "which": {
                            "type": "STRING",
                            "description": "An id from list_timers (e.g. t3), a label (e.g. "
                            "pasta), a kind (timer, alarm, reminder) when only one of it is "
                            "pending, or all.",
                        },
                        "kind": {
                            "type": "STRING",
                            "description": "Only cancel this kind (e.g. which=all, kind=alarm).",
                            "enum": list(KINDS),
                        },
                    },
                    "required": ["which"],
                },
            },
        ]

    def call(self, name: str, args: Any) -> dict[str, Any]:
        """Run one built-in tool; always an ``ok_result`` or an ``error_result``, never a raise."""
        if not self.enabled:
            return error_result("timers are switched off on this device (timers.enabled: false)")
        handler = {
            "set_timer": self._set_timer,
            "set_alarm": self._set_alarm,
            "set_reminder": self._set_reminder,
            "list_timers": self._list_timers,
            "cancel_timer": self._cancel_timer,
        }.get(name)
        if handler is None:
            return error_result(f"unknown tool {name!r}", valid_options=list(TOOL_NAMES))
        if args is None:
            args = {}
        if not isinstance(args, dict):
            return error_result(f"the arguments of {name} must be an object, not {args!r}")
        try:
            return handler(args)
        except _Refused as refusal:
            log.info("%s refused: %s", name, refusal)
            return refusal.result
        except Exception as exc:  # a bug must still produce an answer
            log.exception("%s failed", name)
            return error_result(f"{name} failed: {exc}")

    # -- tools (tool thread)

    def _set_timer(self, args: dict) -> dict[str, Any]:
        self._only(args, "set_timer", {*_UNITS, "label"})
        duration = self._duration("set_timer", args, required=True)
        label = self._label("set_timer", args, "label")
        return self._add("timer", label, self._clock() + duration, duration)

    def _set_alarm(self, args: dict) -> dict[str, Any]:
        self._only(args, "set_alarm", {"time", "label"})
        due = self._time_of_day("set_alarm", args, "time", required=True)
        label = self._label("set_alarm", args, "label")
        return self._add("alarm", label, due, None)

    def _set_reminder(self, args: dict) -> dict[str, Any]:
        self._only(args, "set_reminder", {*_UNITS, "at", "text"})
        text = self._label("set_reminder", args, "text", required=True)
        duration = self._duration("set_reminder", args, required=False)
        due = self._time_of_day("set_reminder", args, "at", required=False)
        if (duration is None) == (due is None):
            raise _Refused(
                "set_reminder needs exactly one of: a delay (hours, minutes, seconds) or a time "
                "of day (at)",
                valid_options=[*_UNITS, "at"],
            )
        if duration is not None:
            return self._add("reminder", text, self._clock() + duration, duration)
        assert due is not None
        return self._add("reminder", text, due, None)

    def _list_timers(self, args: dict) -> dict[str, Any]:
        self._only(args, "list_timers", set())
        timers = [self.describe(t) for t in self.list()]
        return ok_result(
            count=len(timers),
            timers=timers,
            max_count=self.settings.max_count,
            now=self._hhmm(self._clock()),
        )

    def _cancel_timer(self, args: dict) -> dict[str, Any]:
        self._only(args, "cancel_timer", {"which", "kind"})
        which = args.get("which")
        if not isinstance(which, str) or not which.strip():
            raise _Refused(
                "cancel_timer needs 'which': an id, a label, a kind or all",
                valid_options=["all", *self._choices()],
            )
        kind = args.get("kind")
        if kind is not None and kind not in KINDS:
            raise _Refused(
                f"argument 'kind' of cancel_timer is {kind!r}", valid_options=list(KINDS)
            )
        with self._cond:
            pool = [t for t in self._sorted_locked() if kind is None or t.kind == kind]
            key = _clean_text(which).casefold()
            first, _, rest = key.partition(" ")
            if first in _ALL and rest.rstrip("s") in KINDS:  # "all alarms"
                pool = [t for t in pool if t.kind == rest.rstrip("s")]
                key = first
            if key in _ALL:
                chosen = pool
            else:
                chosen = self._match(key, pool, which, kind)
            for timer in chosen:
                del self._timers[timer.id]
            saved = self._save() if chosen else True
            self._cond.notify_all()
            left = len(self._timers)
        for timer in chosen:
            log.info("%s cancelled", _name(timer))
        result = ok_result(cancelled=[self.describe(t) for t in chosen], remaining=left)
        return result if saved else self._unsaved(result)

    def _match(self, key: str, pool: list[Timer], which: str, kind: str | None) -> list[Timer]:
        """Timers named by id, label, or kind (lock held); _Refused when none or ambiguous."""
        what = f"pending {kind}s" if kind else "pending timers, alarms or reminders"
        if not pool:
            raise _Refused(f"there are no {what} to cancel")
        for timer in pool:
            if timer.id.casefold() == key:
                return [timer]
        found = [t for t in pool if t.label.casefold() == key]
        if not found and len(key) >= 3:
            found = [t for t in pool if key in t.label.casefold()]
        if not found and key.rstrip("s") in KINDS:
            found = [t for t in pool if t.kind == key.rstrip("s")]
        if len(found) == 1:
            return found
        options = [t.id for t in found] if found else ["all", *self._choices(pool)]
        if found:
            names = ", ".join(f"{t.id} ({t.label or t.kind}, {self._hhmm(t.due)})" for t in found)
            raise _Refused(
                f"{which!r} matches {len(found)} {what}: {names}",
                valid_options=options,
                hint="give the id of the one to cancel, or which=all",
            )
        raise _Refused(f"no {what} match {which!r}", valid_options=options)

    # -- argument checks

    @staticmethod
    def _only(args: dict, tool: str, allowed: set[str]) -> None:
        extra = sorted(set(args) - allowed)
        if extra:
            raise _Refused(
                f"unexpected argument {extra[0]!r} for {tool}", valid_options=sorted(allowed)
            )

    def _duration(self, tool: str, args: dict, *, required: bool) -> float | None:
        limit = self.settings.max_duration_s
        total, given = 0.0, False
        for unit, size in _UNITS.items():
            value = args.get(unit)
            if value is None:
                continue
            if not is_number(value) or value < 0:
                raise _Refused(
                    f"argument {unit!r} of {tool} must be a number of at least 0, not {value!r}",
                    allowed_range={"min": 0, "max": round(limit / size, 3), "unit": unit},
                )
            total += value * size
            given = True
        if not given:
            if required:
                raise _Refused(
                    f"{tool} needs a duration: hours, minutes and/or seconds",
                    valid_options=list(_UNITS),
                )
            return None
        if not MIN_DURATION_S <= total <= limit:
            later = "for a time of day use set_alarm, or set_reminder with at"
            raise _Refused(
                f"a {tool.removeprefix('set_')} of {human_duration(total)} is outside the "
                f"allowed {human_duration(MIN_DURATION_S)} to {human_duration(limit)}",
                allowed_range={"min": MIN_DURATION_S, "max": limit, "unit": "seconds"},
                hint=later if total > limit else None,
            )
        return total

    def _time_of_day(self, tool: str, args: dict, key: str, *, required: bool) -> float | None:
        value = args.get(key)
        if value is None:
            if required:
                raise _Refused(f"missing argument {key!r} for {tool}: a time of day like 07:30")
            return None
        try:
            if not isinstance(value, str):
                raise ValueError(value)
            hour, minute, second = parse_time_of_day(value)
        except ValueError:
            bare = str(value).strip()
            hint = None
            if bare.isdigit() and 1 <= int(bare) <= 12:  # "7": morning or evening?
                h = int(bare) % 12
                hint = f"{bare} could be {h:02d}:00 or {h + 12:02d}:00: ask the user which"
            raise _Refused(
                f"argument {key!r} of {tool} must be a time of day in 24-hour HH:MM, not {value!r}",
                valid_options=["HH:MM from 00:00 to 23:59, e.g. 07:30 or 18:45"],
                hint=hint,
            ) from None
        return self._next_occurrence(hour, minute, second)

    def _label(self, tool: str, args: dict, key: str, *, required: bool = False) -> str:
        value = args.get(key)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise _Refused(f"argument {key!r} of {tool} must be text, not {value!r}")
        text = _clean_text(value)
        limit = self.settings.max_label_chars
        if len(text) > limit:
            raise _Refused(
                f"argument {key!r} of {tool} is {len(text)} characters long; at most {limit}",
                allowed_range={"min": 1 if required else 0, "max": limit, "unit": "characters"},
                hint="say it in fewer words",
            )
        if required and not text:
            raise _Refused(f"missing argument {key!r} for {tool}")
        return text

    # -- state changes (lock held unless said otherwise)

    def _add(self, kind: Kind, label: str, due: float, duration: float | None) -> dict[str, Any]:
        with self._cond:
            limit = self.settings.max_count
            if len(self._timers) >= limit:
                raise _Refused(
                    f"{len(self._timers)} timers, alarms and reminders are already pending, "
                    f"the most allowed (timers.max_count: {limit})",
                    hint="cancel one first with cancel_timer, or list them with list_timers",
                )
            timer = Timer(
                id=f"t{self._next_id}",
                kind=kind,
                label=label,
                due=due,
                created=self._clock(),
                duration_s=duration,
            )
            self._next_id += 1
            self._timers[timer.id] = timer
            saved = self._save()
            self._cond.notify_all()
        info = self.describe(timer)
        when = f"{info['rings_at']} {info['day']}, in {info['in']}"
        log.info("%s set: rings at %s", _name(timer), when)
        result = ok_result(timer=info, rings_at=info["rings_at"], **{"in": info["in"]})
        return result if saved else self._unsaved(result)

    @staticmethod
    def _unsaved(result: dict[str, Any]) -> dict[str, Any]:
        result["warning"] = "could not be saved: this change will not survive a restart"
        return result

    def _next_due_locked(self) -> float | None:
        return min((t.due for t in self._timers.values()), default=None)

    def _sorted_locked(self) -> list[Timer]:
        return sorted(self._timers.values(), key=lambda t: (t.due, t.created))

    def _choices(self, pool: list[Timer] | None = None) -> list[str]:
        timers = self._sorted_locked() if pool is None else pool
        return [t.id for t in timers] + sorted({t.label for t in timers if t.label})

    # -- time of day

    def _local(self, ts: float) -> datetime:
        return datetime.fromtimestamp(ts, self._tz)  # naive local time when tz is None

    def _hhmm(self, ts: float) -> str:
        return self._local(ts).strftime("%H:%M")

    def _day(self, ts: float, now: float) -> str:
        days = (self._local(ts).date() - self._local(now).date()).days
        if days == 0:
            return "today"
        if days == 1:
            return "tomorrow"
        return self._local(ts).strftime("%A %Y-%m-%d")

    def _next_occurrence(self, hour: int, minute: int, second: int) -> float:
        """Epoch time of the next local ``hour:minute:second`` strictly after now."""
        now = self._clock()
        today = self._local(now).date()
        for days in range(3):  # 3: a day may lose an hour to daylight saving
            day = today + timedelta(days=days)
            when = datetime.combine(day, dtime(hour, minute, second), tzinfo=self._tz)
            ts = when.timestamp()
            if ts > now:
                return ts
        raise AssertionError("no next occurrence")  # pragma: no cover

    # -- persistence

    def _save(self) -> bool:
        """Write the state file atomically; False (and a log line) if it failed."""
        path = self.state_path
        try:
            write_state(path, self._next_id, self._sorted_locked())
        except OSError as exc:
            if not self._save_failed:
                log.error("timers: cannot save %s: %s; changes live in memory only", path, exc)
            self._save_failed = True
            return False
        if self._save_failed:
            log.info("timers: %s saved again", path)
        self._save_failed = False
        return True

    def _load(self) -> None:
        timers, self._next_id, rewrite = read_state(self.state_path, self._clock)
        self._timers.update(timers)
        if rewrite:
            self._save()

    # -- worker thread

    def start(self) -> None:
        """Start the ``pi-agent-timers`` thread (nothing to do when disabled)."""
        if self.enabled:
            super().start()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.poll()
            except Exception:  # keep ringing the others; retry after a pause
                log.exception("timers: poll failed")
                self.stopping.wait(1.0)
            with self._cond:
                if self.stopping.is_set():
                    break
                soonest = self._next_due_locked()
                delay = MAX_WAIT_S
                if soonest is not None:
                    delay = min(MAX_WAIT_S, max(0.0, soonest - self._clock()))
                if delay > 0:
                    self._cond.wait(delay)


def _name(timer: Timer) -> str:
    """``timer t3 (pasta)`` for the log."""
    return f"{timer.kind} {timer.id} ({timer.label or 'no label'})"


__all__ = [
    "KINDS",
    "MAX_WAIT_S",
    "TOOL_NAMES",
    "Timer",
    "Timers",
    "error_result",
    "human_duration",
    "ok_result",
    "parse_time_of_day",
    "resolve_state_path",
]
