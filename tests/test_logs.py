"""Log lines: untrusted text escaped, priorities for the journal, timestamps elsewhere,
secrets redacted everywhere (tracebacks too)."""

from __future__ import annotations

import logging
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pi_agent import logs
from pi_agent.logs import escape, setup_logging

from .conftest import FAKE_KEY

log = logging.getLogger("pi_agent.test_logs")


def test_logs_escape_makes_one_visible_line():
    assert escape("turn on the lamp") == "turn on the lamp"
    assert escape("a\nINFO pi_agent: forged") == "a\\nINFO pi_agent: forged"
    assert escape("\r\t\x1b[2J\x00\x7f") == "\\r\\t\\x1b[2J\\x00\\x7f"
    assert escape("\x85\x9b\u2028\u2029") == "\\x85\\x9b\\u2028\\u2029"
    assert escape("abc\u202edcba\u2066") == "abc\\u202edcba\\u2066"
    assert escape("x\ud800y") == "x\\ud800y"
    assert escape("C:\\path é ✓ 😀") == "C:\\path é ✓ 😀"  # backslashes and plain Unicode stay
    assert escape({"on": "\n"}) == "{'on': '\\n'}"
    assert escape(None) == "None"


def test_logs_escape_truncates_without_splitting_an_escape():
    assert escape("x" * 600) == "x" * 500 + "…"
    assert escape("x" * 500) == "x" * 500
    assert escape("abcdef", limit=4) == "abcd…"
    assert escape("ab\ncd", limit=4) == "ab\\n…"
    assert escape("abc\ncd", limit=4) == "abc…"  # "\n" would need two characters
    assert escape("abc\x1b", limit=5) == "abc…"
    assert escape("ab\n", limit=4) == "ab\\n"
    assert escape("a\\bc", limit=2) == "a\\…"


@settings(max_examples=300)
@given(st.text(st.characters(exclude_categories=()), max_size=80), st.integers(1, 60))
def test_logs_escape_property(text, limit):
    out = escape(text, limit)
    assert len(out) <= limit + 1
    assert out.splitlines() in ([], [out])  # no line break of any kind survives
    out.encode("utf-8")  # no lone surrogate survives
    assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]", out)
    full = escape(text, limit=10_000)
    if len(full) <= limit:
        assert out == full
    else:  # cut only where needed, and never inside an escape
        assert out.endswith("…")
        assert any(escape(text[:k], 10_000) == out[:-1] for k in range(len(text)))


def _records():
    log.debug("debug line")
    log.info("info line")
    log.warning("warning line")
    log.error("error line\nsecond line of it")
    log.critical("critical line")
    try:
        raise RuntimeError(f"token {FAKE_KEY} refused")
    except RuntimeError:
        log.exception("call failed with %s", FAKE_KEY)


def test_logs_journal_gets_a_priority_on_every_line(tmp_path, monkeypatch):
    path = tmp_path / "journal"
    with path.open("w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        logs.add_secret(FAKE_KEY)
        setup_logging("DEBUG", stream=stream)
        _records()
    lines = path.read_text().splitlines()
    assert lines[:6] == [
        "<7>DEBUG pi_agent.test_logs: debug line",
        "<6>INFO pi_agent.test_logs: info line",
        "<4>WARNING pi_agent.test_logs: warning line",
        "<3>ERROR pi_agent.test_logs: error line",
        "<3>second line of it",
        "<2>CRITICAL pi_agent.test_logs: critical line",
    ]
    traceback = lines[6:]
    assert traceback[0] == "<3>ERROR pi_agent.test_logs: call failed with [REDACTED]"
    assert "<3>Traceback (most recent call last):" in traceback
    assert traceback[-1] == "<3>RuntimeError: token [REDACTED] refused"
    assert all(line.startswith("<3>") for line in traceback)
    assert FAKE_KEY not in path.read_text()


def test_logs_other_stream_than_the_journal_gets_iso_timestamps(tmp_path, monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")  # the journal is some other file
    path = tmp_path / "log"
    with path.open("w") as stream:
        setup_logging("INFO", stream=stream)
        log.warning("to a file")
    line = path.read_text()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"
    assert re.fullmatch(stamp + r" WARNING pi_agent.test_logs: to a file\n", line), line


def test_logs_terminal_gets_short_local_timestamps(monkeypatch):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as stream:
            setup_logging("INFO", stream=stream)
            log.info("on a terminal")
            stream.flush()
        out = os.read(master, 4096).decode()
    finally:
        os.close(master)
        os.close(slave)
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} INFO pi_agent.test_logs: on a terminal\r?\n", out)


def test_logs_secret_redacted_inside_a_traceback_whatever_the_sink(tmp_path, monkeypatch):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    logs.add_secret(FAKE_KEY)
    path = tmp_path / "log"
    with path.open("w") as stream:
        setup_logging("INFO", stream=stream)
        try:
            try:
                raise KeyError(FAKE_KEY)
            except KeyError as exc:
                raise ValueError(f"helper printed {FAKE_KEY}") from exc
        except ValueError:
            log.error("token helper failed", exc_info=True, stack_info=True)
    text = path.read_text()
    assert FAKE_KEY not in text
    assert "KeyError: '[REDACTED]'" in text and "ValueError: helper printed [REDACTED]" in text
    assert "Stack (most recent call last):" in text


def test_logs_setup_replaces_its_own_handler_only():
    other = logging.NullHandler()
    root = logging.getLogger()
    root.addHandler(other)
    first = setup_logging("INFO")
    second = setup_logging("DEBUG")
    assert other in root.handlers and second in root.handlers and first not in root.handlers
    assert root.level == logging.DEBUG


@pytest.mark.parametrize(
    ("level", "priority"),
    [(5, 7), (10, 7), (20, 6), (25, 6), (30, 4), (40, 3), (50, 2), (60, 2)],
)
def test_logs_syslog_priorities(level, priority):
    record = logging.LogRecord("x", level, __file__, 1, "m", None, None)
    assert logs.LineFormatter("journal").format(record).startswith(f"<{priority}>")
