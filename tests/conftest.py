"""Shared fixtures: restore global state, never sleep-and-hope."""

from __future__ import annotations

import logging

import pytest

TIMEOUT = 10.0
FAKE_KEY = "fake-key-for-tests-0123456789"


@pytest.fixture(autouse=True)
def _restore_logging():
    """Tests may install pi-agent's handler; take it away again afterwards."""
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    yield
    for handler in list(root.handlers):
        if handler not in before:
            root.removeHandler(handler)
    root.setLevel(level)
