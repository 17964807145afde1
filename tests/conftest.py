"""Shared fixtures: restore global state, never sleep-and-hope."""

from __future__ import annotations

import logging
import os

import pytest
from hypothesis import HealthCheck, settings

TIMEOUT = 10.0

# Property tests: fixed (derandomized) examples by default so a red run in CI can be
# reproduced; PI_AGENT_HYPOTHESIS=long explores many more, randomly seeded.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=20_000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("PI_AGENT_HYPOTHESIS", "ci"))
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a missing tool is a broken setup, not a reason to skip: scripts/test installs
    espeak-ng, shellcheck and systemd-analyze, so a "not installed" skip there fails."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        if "not installed" in reason:
            report.outcome = "failed"
            report.longrepr = f"CI must not skip: {reason}"
