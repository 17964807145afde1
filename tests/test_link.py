"""The reconnect policy: capped exponential backoff with jitter, reset only after setup."""

from __future__ import annotations

from pi_agent.config import parse_config
from pi_agent.errors import FatalSessionError, HandleRefusedError, RetryableSessionError
from pi_agent.link import Link


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class EndedSession:
    is_open = False


def make_link(clock, **agent):
    config = parse_config({"agent": {"backoff_initial_s": 0.5, "backoff_max_s": 30, **agent}})

    class Connector:
        def open(self, request):
            pass

    return Link(config.live, config.agent, Connector(), clock=clock)


def test_link_backoff_doubles_with_jitter_and_is_capped():
    clock = Clock()
    link = make_link(clock)
    delays = [link.failed(RetryableSessionError("down")).delay for _ in range(10)]
    for n, delay in enumerate(delays):
        ceiling = min(30, 0.5 * 2**n)
        assert ceiling / 2 <= delay <= ceiling, (n, delay)  # jitter: 50-100 % of the step
    assert max(delays) <= 30
    assert link.connect_at == clock.now + delays[-1]
    assert link.disconnected_at == 100.0


def test_link_backoff_resets_only_after_setup_complete():
    clock = Clock()
    link = make_link(clock)
    for _ in range(5):
        link.failed(RetryableSessionError("down"))
    assert link.attempt == 5
    link.connecting = True
    link.adopt(session=EndedSession(), handle="h", creds="c")  # setupComplete happened
    assert link.attempt == 0 and link.connect_at is None and link.resumed
    assert link.reconnect_took_ms() == 0.0  # down and back at the same fake instant
    link.lost(link.session)
    clock.now += 2.5
    link.failed(RetryableSessionError("down again"))
    assert link.attempt == 1
    clock.now += 1.0
    assert link.reconnect_took_ms() == 1000.0


def test_link_quota_waits_at_least_a_minute_and_fatal_waits_long():
    clock = Clock()
    link = make_link(clock, fatal_retry_s=300)
    quota = RetryableSessionError("RESOURCE_EXHAUSTED")
    quota.kind = "quota"
    assert link.failed(quota).delay >= 30  # 60 s, jittered down to no less than half
    fatal = link.failed(FatalSessionError("API key not valid"))
    assert fatal.reason == "fatal" and fatal.delay == 300


def test_link_refused_handle_reconnects_at_once_without_it():
    clock = Clock()
    link = make_link(clock)
    link.handle = "old"
    retry = link.failed(HandleRefusedError("session not found"))
    assert retry.reason == "handle" and retry.delay == 0.0 and link.handle is None
    assert link.due()


def test_link_never_redials_while_a_connect_is_in_flight():
    clock = Clock()
    link = make_link(clock)
    link.schedule(0.0)
    assert link.due()
    link.open(setup=lambda handle: {})
    assert link.connecting and not link.due()
    retry = link.connect_failed(RetryableSessionError("refused"))
    assert not link.connecting and retry.delay > 0 and not link.due()
    clock.now += retry.delay
    assert link.due()
