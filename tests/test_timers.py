"""Timers, alarms and reminders: a fake wall clock drives everything but the worker test."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pi_agent.config import TimerSettings, parse_config
from pi_agent.sim.live_schema import check_setup, parse_client_message
from pi_agent.timers import (
    TOOL_NAMES,
    Timer,
    Timers,
    error_result,
    human_duration,
    ok_result,
    parse_time_of_day,
    resolve_state_path,
)
from pi_agent.tools import check_declaration

from .conftest import TIMEOUT

# 2024-06-01 10:00:00 UTC, a Saturday
T0 = datetime(2024, 6, 1, 10, 0, tzinfo=UTC).timestamp()
ERROR_KEYS = {"status", "reason", "retryable", "valid_options", "allowed_range", "hint"}


class FakeClock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Rig:
    """A Timers on a state file in tmp_path, recording what rang."""

    def __init__(self, path: Path, clock: FakeClock | None = None, tz=UTC, **options):
        self.path = path
        self.clock = clock or FakeClock()
        self.rang: list[Timer] = []
        self.settings = TimerSettings(**options)
        self.timers = self.make(tz)

    def make(self, tz=UTC) -> Timers:
        return Timers(
            self.settings,
            state_path=self.path,
            on_due=self.rang.append,
            clock=self.clock,
            tz=tz,
        )

    def call(self, name: str, **args) -> dict:
        return self.timers.call(name, args)

    def ok(self, name: str, **args) -> dict:
        result = self.call(name, **args)
        assert result["status"] == "ok", result
        return result

    def error(self, name: str, **args) -> dict:
        result = self.call(name, **args)
        assert_error_shape(result)
        return result


def assert_error_shape(result: dict) -> None:
    assert result["status"] == "error", result
    assert set(result) <= ERROR_KEYS, result
    assert isinstance(result["reason"], str) and result["reason"]
    assert isinstance(result["retryable"], bool)


@pytest.fixture
def rig(tmp_path):
    return Rig(tmp_path / "state" / "timers.json")


def saved(path: Path) -> list[dict]:
    return json.loads(path.read_text())["timers"]


# --------------------------------------------------------------------------- firing


def test_timers_timer_fires_within_a_second_of_its_time(rig):
    result = rig.ok("set_timer", minutes=2, label="pasta")
    assert result["in"] == "2 minutes" and result["rings_at"] == "10:02"
    assert result["timer"]["id"] == "t1" and result["timer"]["label"] == "pasta"
    assert rig.timers.next_due() == T0 + 120
    fired_at = None
    while fired_at is None and rig.clock.now < T0 + 200:  # the worker's polls, 0.5 s apart
        rig.clock.advance(0.5)
        if rig.timers.poll():
            fired_at = rig.clock.now
    assert fired_at is not None and 0 <= fired_at - (T0 + 120) < 1
    assert [t.label for t in rig.rang] == ["pasta"]
    assert rig.rang[0].kind == "timer" and rig.rang[0].duration_s == 120
    assert rig.timers.list() == [] and rig.timers.next_due() is None
    assert saved(rig.path) == []  # a fired timer does not ring again after a restart
    assert rig.timers.poll() == []


def test_timers_due_during_an_outage_fires_on_the_first_poll_after(rig):
    rig.ok("set_timer", seconds=120, label="tea")
    rig.clock.advance(90)
    assert rig.timers.poll() == []
    rig.clock.advance(60)  # 60 s with no poll at all (agent busy, link down: irrelevant)
    fired = rig.timers.poll()
    assert [t.label for t in fired] == ["tea"] == [t.label for t in rig.rang]
    text = rig.timers.announcement(fired[0])
    assert "'tea' timer (2 minutes)" in text and "while the assistant was off" not in text


def test_timers_several_due_fire_in_order_and_a_failing_callback_loses_none(tmp_path, caplog):
    clock = FakeClock()
    rang: list[str] = []

    def on_due(timer: Timer) -> None:
        rang.append(timer.label)
        if timer.label == "first":
            raise RuntimeError("speaker gone")

    timers = Timers(TimerSettings(), state_path=tmp_path / "t.json", on_due=on_due, clock=clock)
    timers.call("set_timer", {"seconds": 30, "label": "second"})
    timers.call("set_timer", {"seconds": 10, "label": "first"})
    timers.call("set_timer", {"seconds": 90, "label": "later"})
    clock.advance(45)
    with caplog.at_level(logging.ERROR):
        assert [t.label for t in timers.poll()] == ["first", "second"]
    assert rang == ["first", "second"]
    assert "speaker gone" in caplog.text
    assert [t.label for t in timers.list()] == ["later"]


def test_timers_survive_a_restart_and_ring_after_it(rig):
    rig.ok("set_timer", minutes=2, label="eggs")
    rig.ok("set_alarm", time="10:30", label="meeting")
    before = rig.timers.list()
    rig.timers.stop()  # the agent stops (never started: stop is still safe)
    rig.clock.advance(30)
    after = rig.make()  # a new process on the same state file
    assert after.list() == before
    rig.clock.advance(95)
    assert [t.label for t in after.poll()] == ["eggs"]
    third = after.call("set_timer", {"seconds": 10})
    assert third["timer"]["id"] == "t3"  # ids are never reused across a restart


def test_timers_due_while_powered_off_ring_at_start_and_say_so(rig):
    rig.ok("set_reminder", text="call the plumber", minutes=10)
    rig.clock.advance(3 * 3600)  # a power cut for three hours
    after = rig.make()
    fired = after.poll()
    assert [t.kind for t in fired] == ["reminder"]
    text = after.announcement(fired[0])
    assert "call the plumber" in text
    assert "came due at 10:10 (2 hours 50 minutes ago) while the assistant was off" in text
    assert saved(rig.path) == []


# --------------------------------------------------------------------------- alarms


def test_timers_alarm_today_when_ahead_else_tomorrow(rig):
    today = rig.ok("set_alarm", time="10:30", label="stretch")
    assert today["timer"]["day"] == "today" and today["in"] == "30 minutes"
    assert today["timer"]["kind"] == "alarm" and "duration" not in today["timer"]
    earlier = rig.ok("set_alarm", time="09:15")
    assert earlier["timer"]["day"] == "tomorrow" and earlier["in"] == "23 hours 15 minutes"
    now = rig.ok("set_alarm", time="10:00")  # this very minute has begun: the next one
    assert now["timer"]["day"] == "tomorrow" and now["in"] == "24 hours"
    evening = rig.ok("set_alarm", time="7:45 pm")
    assert evening["rings_at"] == "19:45" and evening["timer"]["day"] == "today"
    dues = {t.label: t.due for t in rig.timers.list()}
    assert dues["stretch"] == T0 + 1800
    rig.clock.advance(1800)
    assert [t.label for t in rig.timers.poll()] == ["stretch"]
    assert rig.timers.announcement(rig.rang[0]) == "The 'stretch' alarm set for 10:30 is ringing."


def test_timers_alarm_in_local_time_across_a_daylight_saving_change(tmp_path):
    berlin = ZoneInfo("Europe/Berlin")
    # 23:00 on the night the clocks go forward (02:00 -> 03:00 CEST)
    clock = FakeClock(datetime(2024, 3, 30, 23, 0, tzinfo=berlin).timestamp())
    rig = Rig(tmp_path / "t.json", clock, tz=berlin)
    result = rig.ok("set_alarm", time="07:00")
    assert result["rings_at"] == "07:00" and result["timer"]["day"] == "tomorrow"
    assert result["in"] == "7 hours"  # not 8: an hour is skipped tonight
    due = rig.timers.list()[0].due
    assert datetime.fromtimestamp(due, UTC) == datetime(2024, 3, 31, 5, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("07:30", (7, 30, 0)),
        ("7:30", (7, 30, 0)),
        ("23:59:30", (23, 59, 30)),
        ("00:00", (0, 0, 0)),
        ("7:30 pm", (19, 30, 0)),
        ("7pm", (19, 0, 0)),
        ("12 a.m.", (0, 0, 0)),
        ("12:15 PM", (12, 15, 0)),
        ("6.45", (6, 45, 0)),
    ],
)
def test_timers_parse_time_of_day(text, expected):
    assert parse_time_of_day(text) == expected


@pytest.mark.parametrize("text", ["7", "24:00", "12:60", "13pm", "0am", "noon", "", "7:5"])
def test_timers_parse_time_of_day_refuses(text):
    with pytest.raises(ValueError):
        parse_time_of_day(text)


@pytest.mark.parametrize("value", ["7", "25:00", 730, None])
def test_timers_bad_alarm_time_is_an_informative_error(rig, value):
    result = rig.error("set_alarm", time=value) if value is not None else rig.error("set_alarm")
    assert "'time'" in result["reason"]
    assert result["retryable"] is False
    if value is not None:
        assert "HH:MM" in result["valid_options"][0]
    if value == "7":
        assert result["hint"] == "7 could be 07:00 or 19:00: ask the user which"
    assert rig.timers.list() == []


# --------------------------------------------------------------------------- reminders


def test_timers_reminder_after_a_delay_or_at_a_time(rig):
    later = rig.ok("set_reminder", text="  take the\nbread out ", hours=1, minutes=30)
    assert later["in"] == "1 hour 30 minutes"
    assert later["timer"]["label"] == "take the bread out"  # one clean line
    at = rig.ok("set_reminder", text="water the plants", at="18:00")
    assert at["rings_at"] == "18:00" and "duration" not in at["timer"]
    both = rig.error("set_reminder", text="x", minutes=5, at="18:00")
    assert both["valid_options"] == ["hours", "minutes", "seconds", "at"]
    neither = rig.error("set_reminder", text="x")
    assert "exactly one of" in neither["reason"]
    assert "'text'" in rig.error("set_reminder", minutes=5)["reason"]
    assert "'text'" in rig.error("set_reminder", text="   ", minutes=5)["reason"]
    rig.clock.advance(5400)
    (fired,) = rig.timers.poll()
    assert (
        rig.timers.announcement(fired) == "A reminder is ringing; tell the user: take the bread out"
    )


# --------------------------------------------------------------------------- list and cancel


def test_timers_list_shows_everything_soonest_first(rig):
    assert rig.ok("list_timers") == {
        "status": "ok",
        "count": 0,
        "timers": [],
        "max_count": 10,
        "now": "10:00",
    }
    rig.ok("set_timer", minutes=10, label="pasta")
    rig.ok("set_alarm", time="07:00", label="wake up")
    rig.ok("set_reminder", text="stir", minutes=5)
    rig.clock.advance(60)
    listed = rig.ok("list_timers")
    assert listed["count"] == 3 and listed["now"] == "10:01"
    assert [t["label"] for t in listed["timers"]] == ["stir", "pasta", "wake up"]
    assert listed["timers"][1] == {
        "id": "t1",
        "kind": "timer",
        "label": "pasta",
        "rings_at": "10:10",
        "day": "today",
        "in": "9 minutes",
        "duration": "10 minutes",
    }
    assert listed["timers"][2]["day"] == "tomorrow"
    assert [t.id for t in rig.timers.list()] == ["t3", "t1", "t2"]
    assert "'x'" in rig.error("list_timers", x=1)["reason"]


def test_timers_cancel_by_id_label_kind_and_all(rig):
    rig.ok("set_timer", minutes=10, label="Pasta")
    rig.ok("set_timer", minutes=12, label="pasta sauce")
    rig.ok("set_alarm", time="07:00", label="wake up")
    rig.ok("set_reminder", text="stir", minutes=5)
    rig.ok("set_alarm", time="08:00")
    by_id = rig.ok("cancel_timer", which="T4")
    assert [t["label"] for t in by_id["cancelled"]] == ["stir"] and by_id["remaining"] == 4
    by_label = rig.ok("cancel_timer", which="pasta")  # the exact label wins over "pasta sauce"
    assert [t["id"] for t in by_label["cancelled"]] == ["t1"]
    by_part = rig.ok("cancel_timer", which="sauce")
    assert [t["id"] for t in by_part["cancelled"]] == ["t2"]
    assert [t.id for t in rig.timers.list()] == ["t3", "t5"]
    two_alarms = rig.error("cancel_timer", which="alarm")
    assert two_alarms["valid_options"] == ["t3", "t5"] and "which=all" in two_alarms["hint"]
    alarms = rig.ok("cancel_timer", which="all alarms")
    assert {t["id"] for t in alarms["cancelled"]} == {"t3", "t5"} and alarms["remaining"] == 0
    assert saved(rig.path) == []
    nothing = rig.error("cancel_timer", which="pasta")
    assert "no pending timers, alarms or reminders" in nothing["reason"]
    assert rig.ok("cancel_timer", which="all")["cancelled"] == []


def test_timers_cancel_refusals_name_the_options(rig):
    rig.ok("set_timer", minutes=10, label="pasta")
    rig.ok("set_alarm", time="07:00", label="wake up")
    unknown = rig.error("cancel_timer", which="rice")
    assert unknown["valid_options"] == ["all", "t1", "t2", "pasta", "wake up"]
    assert unknown["retryable"] is False
    wrong_kind = rig.error("cancel_timer", which="pasta", kind="alarm")
    assert wrong_kind["valid_options"] == ["all", "t2", "wake up"]
    assert rig.error("cancel_timer", which="all", kind="alarms")["valid_options"] == [
        "timer",
        "alarm",
        "reminder",
    ]
    assert "'which'" in rig.error("cancel_timer")["reason"]
    assert len(rig.timers.list()) == 2
    only_timers = rig.ok("cancel_timer", which="all", kind="timer")
    assert [t["label"] for t in only_timers["cancelled"]] == ["pasta"]


# --------------------------------------------------------------------------- limits


def test_timers_limits_are_enforced_with_informative_errors(tmp_path):
    rig = Rig(tmp_path / "t.json", max_count=2, max_duration_s=3600, max_label_chars=10)
    too_long = rig.error("set_timer", hours=1, seconds=1)
    assert too_long["allowed_range"] == {"min": 1.0, "max": 3600, "unit": "seconds"}
    assert "1 hour" in too_long["reason"] and too_long["retryable"] is False
    assert "set_alarm" in too_long["hint"]
    too_short = rig.error("set_timer", seconds=0.5)
    assert "outside the allowed 1 second to 1 hour" in too_short["reason"]
    negative = rig.error("set_timer", minutes=-5)
    assert negative["allowed_range"] == {"min": 0, "max": 60.0, "unit": "minutes"}
    for bad in ("ten", True, float("nan"), float("inf"), [5]):
        assert "'minutes'" in rig.error("set_timer", minutes=bad)["reason"]
    missing = rig.error("set_timer", label="x")
    assert missing["valid_options"] == ["hours", "minutes", "seconds"]
    label = rig.error("set_timer", minutes=1, label="a very long label")
    assert label["allowed_range"] == {"min": 0, "max": 10, "unit": "characters"}
    assert "17 characters" in label["reason"]
    assert "'label'" in rig.error("set_timer", minutes=1, label=5)["reason"]
    extra = rig.error("set_timer", minutes=1, duration=60)
    assert extra["valid_options"] == ["hours", "label", "minutes", "seconds"]
    assert rig.timers.list() == []
    rig.ok("set_timer", minutes=60)  # exactly the maximum is fine
    rig.ok("set_alarm", time="11:00")
    full = rig.error("set_reminder", text="x", minutes=1)
    assert "timers.max_count: 2" in full["reason"] and "cancel_timer" in full["hint"]
    assert len(rig.timers.list()) == 2
    rig.ok("cancel_timer", which="t1")
    rig.ok("set_reminder", text="x", minutes=1)  # room again


def test_timers_unknown_tool_and_bad_arguments_object(rig):
    unknown = rig.timers.call("set_timers", {})
    assert_error_shape(unknown)
    assert unknown["valid_options"] == list(TOOL_NAMES)
    assert_error_shape(rig.timers.call("set_timer", ["minutes", 5]))
    assert rig.timers.call("list_timers", None)["status"] == "ok"


_ARG_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=2),
)
_ARG_NAMES = st.sampled_from(
    ["hours", "minutes", "seconds", "label", "text", "time", "at", "which", "kind", "bogus"]
)


@settings(max_examples=100)
@given(
    name=st.sampled_from([*TOOL_NAMES, "nope"]),
    args=st.dictionaries(_ARG_NAMES, _ARG_VALUES, max_size=4),
)
def test_timers_any_call_answers_in_the_one_result_shape(tmp_path_factory, name, args):
    path = tmp_path_factory.mktemp("t") / "timers.json"
    timers = Timers(
        TimerSettings(max_count=3),
        state_path=path,
        on_due=lambda t: None,
        clock=FakeClock(),
        tz=UTC,
    )
    timers.call("set_timer", {"minutes": 5, "label": "pasta"})
    before = timers.list()
    result = timers.call(name, args)
    json.dumps(result)  # goes to the model as JSON
    if result["status"] == "ok":
        assert set(result) - {"status"}
    else:
        assert_error_shape(result)
        assert timers.list() == before  # a refused call changes nothing
    assert len(timers.list()) <= 3
    assert Timers(timers.settings, state_path=path, on_due=lambda t: None).list() == timers.list()


# --------------------------------------------------------------------------- persistence


def test_timers_state_file_is_private_json(rig):
    rig.ok("set_timer", minutes=3, label="tea ☕")
    state = json.loads(rig.path.read_text(encoding="utf-8"))
    assert state["version"] == 1 and state["next_id"] == 2
    assert state["timers"] == [
        {
            "id": "t1",
            "kind": "timer",
            "label": "tea ☕",
            "due": T0 + 180,
            "created": T0,
            "duration_s": 180.0,
        }
    ]
    assert rig.path.stat().st_mode & 0o777 == 0o600
    assert not rig.path.with_name("timers.json.tmp").exists()


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe garbage",
        b"",
        b"[]",
        b'{"version": 99, "timers": []}',
        b'{"version": 1, "timers": {}}',
    ],
)
def test_timers_corrupt_state_file_is_moved_aside_and_reported(tmp_path, caplog, content):
    path = tmp_path / "timers.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="pi_agent.timers"):
        rig = Rig(path)
    assert rig.timers.list() == []
    aside = path.with_name("timers.json.corrupt-20240601T100000Z")
    assert aside.read_bytes() == content  # kept for a person to look at
    assert not path.exists()
    assert str(path) in caplog.text and "unusable" in caplog.text and aside.name in caplog.text
    rig.ok("set_timer", minutes=1)  # and the timers work
    assert len(saved(path)) == 1


def test_timers_bad_entries_are_reported_and_the_good_ones_kept(tmp_path, caplog):
    path = tmp_path / "timers.json"
    good = {
        "id": "t7",
        "kind": "alarm",
        "label": "",
        "due": T0 + 60,
        "created": T0,
        "duration_s": None,
    }
    entries = [
        good,
        {**good, "id": "t8", "kind": "egg"},
        {**good, "id": "t9", "due": "soon"},
        "nonsense",
        {"id": "t10"},
        good,
    ]
    path.write_text(json.dumps({"version": 1, "next_id": 3, "timers": entries}))
    with caplog.at_level(logging.WARNING, logger="pi_agent.timers"):
        rig = Rig(path)
    assert [t.id for t in rig.timers.list()] == ["t7"]
    for problem in (
        "timers[1]: bad kind 'egg'",
        "timers[2]: bad due 'soon'",
        "timers[3]: must be an object",
        "timers[4]: missing created, due",
        "timers[5]: id 't7' appears twice",
        "kept the 1 valid entries",
    ):
        assert problem in caplog.text
    assert (
        json.loads(path.with_name("timers.json.corrupt-20240601T100000Z").read_text())["timers"]
        == entries
    )
    assert [e["id"] for e in saved(path)] == ["t7"]
    assert rig.ok("set_timer", minutes=1)["timer"]["id"] == "t8"  # after the highest id seen


def test_timers_an_older_corrupt_copy_is_never_overwritten(tmp_path):
    path = tmp_path / "timers.json"
    first = path.with_name("timers.json.corrupt-20240601T100000Z")
    first.write_text("older")
    path.write_text("newer")
    Rig(path)
    assert first.read_text() == "older"
    assert path.with_name("timers.json.corrupt-20240601T100000Z-1").read_text() == "newer"


def test_timers_unreadable_state_file_is_reported_not_a_crash(tmp_path, caplog):
    path = tmp_path / "timers.json"
    path.mkdir()  # reading a directory fails with an OSError, even for root
    with caplog.at_level(logging.WARNING, logger="pi_agent.timers"):
        rig = Rig(path)
    assert rig.timers.list() == []
    assert "cannot read it" in caplog.text and str(path) in caplog.text
    assert path.with_name("timers.json.corrupt-20240601T100000Z").is_dir()


def test_timers_crash_between_write_and_rename_keeps_the_old_file(rig, monkeypatch):
    rig.ok("set_timer", minutes=5, label="old")
    good = rig.path.read_bytes()

    def power_cut(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", power_cut)
    result = rig.ok("set_timer", minutes=9, label="new")
    assert "will not survive a restart" in result["warning"]
    assert rig.path.read_bytes() == good  # the real file is untouched
    tmp = rig.path.with_name("timers.json.tmp")
    assert tmp.exists()  # the half-done save is left behind...
    tmp.write_bytes(tmp.read_bytes()[:20])  # ...and may be torn
    monkeypatch.undo()
    after = rig.make()  # the next start ignores and removes it
    assert [t.label for t in after.list()] == ["old"]
    assert not tmp.exists()


def test_timers_unwritable_state_keeps_working_in_memory(tmp_path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with caplog.at_level(logging.ERROR, logger="pi_agent.timers"):
        rig = Rig(blocker / "timers.json")
        first = rig.ok("set_timer", minutes=1)
        second = rig.ok("set_timer", minutes=2)
    assert "warning" in first and "warning" in second
    assert caplog.text.count("cannot save") == 1  # said once, not on every change
    rig.clock.advance(60)
    assert len(rig.timers.poll()) == 1


def test_timers_state_path_follows_config_then_systemd_then_xdg(tmp_path):
    configured = TimerSettings(state_file="~/x/timers.json")
    assert resolve_state_path(configured, {}) == Path.home() / "x" / "timers.json"
    default = TimerSettings()
    assert resolve_state_path(default, {"STATE_DIRECTORY": "/var/lib/pi-agent:/other"}) == Path(
        "/var/lib/pi-agent/timers.json"
    )
    assert resolve_state_path(default, {"XDG_STATE_HOME": "/xdg"}) == Path(
        "/xdg/pi-agent/timers.json"
    )
    assert resolve_state_path(default, {}) == (
        Path.home() / ".local" / "state" / "pi-agent" / "timers.json"
    )


# --------------------------------------------------------------------------- worker thread


def test_timers_worker_rings_on_time_with_the_real_clock(tmp_path):
    rang = threading.Event()
    got: list[Timer] = []

    def on_due(timer: Timer) -> None:
        got.append(timer)
        rang.set()

    timers = Timers(TimerSettings(), state_path=tmp_path / "t.json", on_due=on_due)
    timers.start()
    try:
        # The worker is asleep with nothing to do (up to MAX_WAIT_S = 60 s, far beyond
        # TIMEOUT): setting a timer must wake it, or this wait times out.
        result = timers.call("set_timer", {"seconds": 1, "label": "quick"})
        assert result["status"] == "ok"
        assert rang.wait(TIMEOUT)
        assert got[0].label == "quick" and time.time() >= got[0].due
        assert timers.list() == []
    finally:
        timers.stop(TIMEOUT)
    assert not timers.is_alive and timers.error is None


def test_timers_worker_rings_one_left_from_before_a_restart(tmp_path):
    path = tmp_path / "t.json"
    first = Timers(TimerSettings(), state_path=path, on_due=lambda t: None)
    first.call("set_timer", {"seconds": 1, "label": "left over"})
    rang = threading.Event()
    second = Timers(TimerSettings(), state_path=path, on_due=lambda t: rang.set())
    second.start()
    try:
        assert rang.wait(TIMEOUT)
    finally:
        second.stop(TIMEOUT)


# --------------------------------------------------------------------------- declarations


def test_timers_declarations_are_what_the_live_api_accepts(rig):
    decls = rig.timers.declarations()
    assert [d["name"] for d in decls] == list(TOOL_NAMES)
    for decl in decls:
        check_declaration(decl)
    setup = {"model": "models/gemini-3.8-live", "tools": [{"functionDeclarations": decls}]}
    kind, body = parse_client_message({"setup": setup})
    assert kind == "setup"
    check_setup(body, "gemini-3.8-live", "v1beta")
    by_name = {d["name"]: d for d in decls}
    minutes = by_name["set_timer"]["parameters"]["properties"]["minutes"]
    assert minutes["maximum"] == 1440 and minutes["minimum"] == 0
    assert "At most 10" in by_name["set_alarm"]["description"]
    assert "parameters" not in by_name["list_timers"]


def test_timers_disabled_is_a_null_object(tmp_path):
    path = tmp_path / "timers.json"
    path.write_text("{broken")
    timers = Timers(TimerSettings(enabled=False), state_path=path, on_due=lambda t: None)
    assert timers.declarations() == []
    result = timers.call("set_timer", {"minutes": 1})
    assert_error_shape(result)
    assert "timers.enabled" in result["reason"]
    assert timers.poll() == [] and timers.next_due() is None and timers.list() == []
    timers.start()
    assert not timers.is_alive
    timers.stop()
    assert path.read_text() == "{broken"  # not touched while disabled


def test_timers_config_section_defaults_and_bounds():
    config = parse_config({})
    assert config.timers == TimerSettings()
    assert config.timers.enabled and config.timers.max_count == 10
    assert config.timers.max_duration_s == 86400 and config.timers.state_file is None
    problem = "timers.max_count: 0 is below the minimum 1"
    with pytest.raises(Exception, match=problem):
        parse_config({"timers": {"max_count": 0}})


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 seconds"),
        (1, "1 second"),
        (59.6, "1 minute"),
        (90, "1 minute 30 seconds"),
        (600, "10 minutes"),
        (3600, "1 hour"),
        (3661, "1 hour 1 minute"),
        (86400, "24 hours"),
        (-5, "0 seconds"),
    ],
)
def test_timers_human_duration(seconds, text):
    assert human_duration(seconds) == text


def test_timers_result_helpers_have_the_documented_shape():
    assert ok_result(timer={"id": "t1"}) == {"status": "ok", "timer": {"id": "t1"}}
    assert error_result("x") == {"status": "error", "reason": "x", "retryable": False}
    full = error_result(
        "busy", retryable=True, valid_options=("a",), allowed_range={"min": 0}, hint="wait"
    )
    assert full == {
        "status": "error",
        "reason": "busy",
        "retryable": True,
        "valid_options": ["a"],
        "allowed_range": {"min": 0},
        "hint": "wait",
    }
    assert dataclasses.is_dataclass(Timer)
