"""Uplink and Playback: the audio paths that bypass the agent thread keep order."""

from __future__ import annotations

import threading

from pi_agent import protocol
from pi_agent.errors import ClosedError
from pi_agent.turns import PendingTurn, Playback, Uplink


class RecordingSession:
    """Stands in for LiveSession's two send methods (our own class, not a library)."""

    def __init__(self, fail_after: int | None = None):
        self.sent: list[str] = []
        self.fail_after = fail_after

    def send(self, message):
        self._check()
        self.sent.append(next(iter(message["realtimeInput"])))

    def send_audio(self, pcm):
        self._check()
        self.sent.append(pcm)

    def _check(self):
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise ClosedError("gone")


def test_uplink_push_to_talk_order_and_keeping():
    uplink = Uplink(manual_activity=True, max_buffered_s=1)
    session = RecordingSession()
    uplink.attach(session, resend=False)
    uplink.feed(b"before")  # no turn: dropped
    assert uplink.begin(PendingTurn(1))
    uplink.feed(b"a")
    uplink.feed(b"b")
    assert uplink.end(5.0)
    uplink.feed(b"late")  # after activityEnd: never sent, never kept
    assert session.sent == ["activityStart", b"a", b"b", "activityEnd"]
    assert uplink.turn.chunks == [b"a", b"b"] and uplink.turn.ended_at == 5.0


def test_uplink_resend_after_a_drop_then_live():
    uplink = Uplink(manual_activity=True, max_buffered_s=1)
    first = RecordingSession(fail_after=2)
    uplink.attach(first, resend=False)
    uplink.begin(PendingTurn(1))
    uplink.feed(b"a")  # sent
    uplink.feed(b"b")  # the session fails: kept only
    uplink.feed(b"c")
    second = RecordingSession()
    resent = uplink.attach(second, resend=True)
    assert resent is uplink.turn
    uplink.feed(b"d")
    uplink.end(1.0)
    assert second.sent == ["activityStart", b"a", b"b", b"c", b"d", "activityEnd"]


def test_uplink_a_turn_begun_offline_is_opened_on_attach():
    uplink = Uplink(manual_activity=True, max_buffered_s=1)
    assert not uplink.begin(PendingTurn(1))  # no session yet
    session = RecordingSession()
    assert uplink.attach(session, resend=True) is uplink.turn
    uplink.feed(b"a")
    uplink.end(0)
    assert session.sent == ["activityStart", b"a", "activityEnd"]


def test_uplink_bounded_buffer_and_typed_turns():
    uplink = Uplink(manual_activity=True, max_buffered_s=0.001)  # 32 bytes
    uplink.begin(PendingTurn(1))
    uplink.feed(b"x" * 30)
    uplink.feed(b"y" * 30)
    assert uplink.turn.bytes == 30 and uplink.turn.truncated
    session = RecordingSession()
    uplink.attach(session, resend=False)
    assert uplink.say(PendingTurn(2, text="hi", ended=True))
    assert session.sent == ["activityStart", "text", "activityEnd"]
    hands_free = Uplink(manual_activity=False, max_buffered_s=1)
    hf_session = RecordingSession()
    hands_free.attach(hf_session, resend=False)
    hands_free.feed(b"ignored")
    hands_free.stream(True)
    hands_free.feed(b"streamed")
    hands_free.send(protocol.audio_stream_end())
    assert hf_session.sent == [b"streamed", "audioStreamEnd"]


def test_uplink_concurrent_feed_never_splits_a_resend():
    """Chunks fed from another thread during a resend are neither lost nor reordered."""
    uplink = Uplink(manual_activity=True, max_buffered_s=10)
    uplink.begin(PendingTurn(1))
    stop, some = threading.Event(), threading.Event()
    fed = []

    def mic():
        i = 0
        while not stop.is_set() and i < 20000:
            chunk = i.to_bytes(2, "big")
            uplink.feed(chunk)
            fed.append(chunk)
            i += 1
            if i == 100:
                some.set()

    thread = threading.Thread(target=mic)
    thread.start()
    assert some.wait(5)
    session = RecordingSession()
    uplink.attach(session, resend=True)
    stop.set()
    thread.join(5)
    uplink.end(0)
    audio = [m for m in session.sent if isinstance(m, bytes)]
    assert audio == fed, "every chunk exactly once, in order"
    assert session.sent[0] == "activityStart" and session.sent[-1] == "activityEnd"


def test_playback_only_for_the_open_session_and_first_chunk_reported_once():
    played = []
    playback = Playback(played.append)
    a, b = object(), object()
    assert playback.offer(a, b"0") is None  # closed: the agent decides
    playback.open(a)
    assert playback.offer(b, b"x") is None  # another session
    assert playback.offer(a, b"1") is True
    assert playback.offer(a, b"2") is False
    playback.rearm()
    assert playback.offer(a, b"3") is True
    playback.close()
    assert playback.offer(a, b"4") is None
    assert played == [b"1", b"2", b"3"]
