"""Fake parts, a fake link connector and a fake clock: the state machine with no threads.

``Conversation`` builds a real :class:`~pi_agent.agent.Agent` and a real
:class:`~pi_agent.link.Link` around fakes that record what they were asked.
Tests feed events with ``step`` and move time with ``advance``; nothing runs
in the background, so every test is exact and takes milliseconds.
"""

from __future__ import annotations

import json
from typing import Any

from pi_agent import events as ev
from pi_agent import protocol
from pi_agent.agent import Agent, State
from pi_agent.config import parse_config
from pi_agent.errors import ClosedError, RetryableSessionError, SessionError
from pi_agent.link import Link
from pi_agent.parts import NullCamera, NullControl, NullPushToTalk, Parts
from pi_agent.session import MalformedMessage, SessionEnded


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeSession:
    """Records what the agent sends; ``stall`` makes outgoing data stop draining."""

    def __init__(self, clock: FakeClock, name: str):
        self.clock = clock
        self.name = name
        self.sent: list[dict[str, Any]] = []
        self.is_open = True
        self.last_rx = clock()
        self.stalled_since: float | None = None
        self.aborted: SessionError | None = None
        self.closed = False

    def __repr__(self) -> str:
        return f"<FakeSession {self.name}>"

    def send(self, message: Any) -> None:
        if not self.is_open:
            raise ClosedError("closed")
        self.sent.append(json.loads(protocol.encode(message)))

    def send_audio(self, pcm: bytes) -> None:
        self.send(protocol.audio_message(pcm))

    def send_video(self, jpeg: bytes) -> None:
        self.sent.append({"video": len(jpeg)})

    def stalled_s(self, now: float) -> float:
        return 0.0 if self.stalled_since is None else now - self.stalled_since

    def abort(self, error: SessionError) -> None:
        self.aborted = error
        self.is_open = False

    def close(self, timeout: float = 1.0) -> None:
        self.closed = True
        self.is_open = False

    def kinds(self) -> list[str]:
        """What was sent, one word per message (activityStart, audio, text, toolResponse...)."""
        out = []
        for m in self.sent:
            if "realtimeInput" in m:
                out.append(next(iter(m["realtimeInput"])))
            else:
                out.append(next(iter(m)))
        return out


class FakeConnector:
    def __init__(self):
        self.requests: list[Any] = []

    def open(self, request: Any) -> None:
        self.requests.append(request)


class FakeSpeaker:
    state = "ok"
    underruns = 0

    def __init__(self):
        self.played: list[bytes] = []
        self.chimes: list[str] = []
        self.flushes = 0
        self.volume = 1.0
        self.is_playing = False

    def start(self) -> None: ...
    def stop(self, timeout: float = 1.0) -> None: ...

    def play(self, pcm: bytes) -> None:
        self.played.append(pcm)
        self.is_playing = True

    def end_turn(self) -> None: ...

    def flush(self) -> float:
        self.flushes += 1
        self.is_playing = False
        return 0.0

    def play_chime(self, name: str) -> None:
        self.chimes.append(name)


class FakeMic:
    overflows = 0

    def __init__(self, clock: FakeClock, uplink: Any):
        self.clock = clock
        self.uplink = uplink
        self.state = "ok"
        self.capturing = False
        self.last_chunk_time: float | None = clock()
        self.reopens = 0

    def start(self) -> None: ...
    def stop(self, timeout: float = 1.0) -> None: ...

    def start_capture(self, *, gated: bool = False, deliver_preroll: bool = False) -> list:
        self.capturing = True
        return []

    def stop_capture(self) -> None:
        self.capturing = False

    def reopen(self) -> None:
        self.reopens += 1

    def speak(self, pcm: bytes = b"\1\0" * 640) -> None:
        """One chunk from the mic thread (it only reaches the uplink while capturing)."""
        self.last_chunk_time = self.clock()
        if self.capturing:
            self.uplink.feed(pcm)


class FakeLight:
    def __init__(self):
        self.shown: list[str] = []

    def show(self, state: str) -> None:
        if not self.shown or self.shown[-1] != state:
            self.shown.append(state)


class FakeNotifier:
    def __init__(self):
        self.statuses: list[str] = []
        self.readies = 0

    def status(self, text: str) -> None:
        self.statuses.append(text)

    def stopping(self) -> None: ...

    def ready(self) -> None:
        self.readies += 1


class FakeGate:
    def devices_up(self) -> None: ...
    def session_ready(self) -> None: ...
    def tick(self) -> None: ...

    def next_due(self) -> None:
        return None


class FakeRunner:
    def __init__(self):
        self.submitted: list[tuple[str, str, dict]] = []
        self.cancelled: list[str] = []

    def start(self) -> None: ...
    def stop(self, timeout: float = 1.0) -> None: ...

    def submit(self, call_id: str, name: str, args: dict) -> None:
        self.submitted.append((call_id, name, args))

    def cancel(self, ids: list[str]) -> list[str]:
        self.cancelled += ids
        return ids


class FakeDevices:
    def states(self) -> dict:
        return {}

    def safe_state(self) -> None: ...
    def close(self) -> None: ...


class FakeToolbox:
    def function_declarations(self, model: str | None = None) -> list:
        return []


def conversation_config(**sections: Any):
    data: dict[str, Any] = {
        "audio": {"backend": "none"},
        "agent": {"backoff_initial_s": 0.5, "backoff_max_s": 30, "fatal_retry_s": 300},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return parse_config(data)


class Conversation:
    """A real Agent and Link on fakes. ``step`` feeds one event; ``advance`` moves time."""

    def __init__(self, config: Any = None):
        self.config = config or conversation_config()
        self.clock = FakeClock()
        self.connector = FakeConnector()
        self.link = Link(
            self.config.live, self.config.agent, self.connector, clock=self.clock, jitter=lambda: 1
        )
        self.speaker = FakeSpeaker()
        self.light = FakeLight()
        self.notifier = FakeNotifier()
        self.runner = FakeRunner()
        self.observed: list[dict] = []
        self.parts = Parts(
            devices=FakeDevices(),
            light=self.light,
            ptt=NullPushToTalk(),
            toolbox=FakeToolbox(),
            runner=self.runner,
            sampler=NullCamera(),
            mic=None,
            speaker=self.speaker,
            control=NullControl(),
            notifier=self.notifier,
            watchdog=FakeGate(),
            ready_gate=FakeGate(),
            observers=[self.observed.append],
        )
        self.agent = Agent(self.config, self.parts, self.link, clock=self.clock)
        self.mic = FakeMic(self.clock, self.agent.uplink)
        self.parts.mic = self.mic
        self.sessions: list[FakeSession] = []
        self.agent.start()
        self.step()

    # -- driving
    def step(self, event: object | None = None) -> None:
        self.agent.step(event)

    def advance(self, seconds: float, *, mic: bool = True) -> None:
        """Let time pass in small steps; the mic keeps delivering if it is healthy."""
        end = self.clock.now + seconds
        while self.clock.now < end - 1e-9:
            self.clock.now = min(end, self.clock.now + 0.1)
            if mic and self.mic.state == "ok":
                self.mic.speak()
            self.step()

    def press(self) -> None:
        self.step(ev.Press())

    def release(self) -> None:
        self.step(ev.Release())

    def say(self, text: str = "hello", wait: bool = False) -> list[dict]:
        replies: list[dict] = []
        self.step(ev.Command({"cmd": "say", "text": text, "wait": wait}, replies.append))
        return replies

    # -- the link
    @property
    def session(self) -> FakeSession | None:
        return self.link.session

    def connect(self) -> FakeSession:
        """Answer the newest connect request with a working session."""
        assert self.link.connecting, "no connection attempt is under way"
        request = self.connector.requests[-1]
        session = FakeSession(self.clock, request.name)
        self.sessions.append(session)
        self.step(ev.Connected(session, request.handle, object()))
        return session

    def refuse(self, error: SessionError | None = None) -> None:
        assert self.link.connecting
        self.step(ev.ConnectFailed(error or RetryableSessionError("connection refused")))

    def until_connecting(self, limit: float = 120.0) -> None:
        """Advance until the link asks for a connection (it is due)."""
        waited = 0.0
        while not self.link.connecting:
            assert waited < limit, "the link never tried to connect"
            self.advance(0.1)
            waited += 0.1

    def server(self, *events: object, session: FakeSession | None = None) -> None:
        session = session or self.session
        for item in events:
            self.clock.now += 0.001
            session.last_rx = self.clock.now
            self.step(ev.FromServer(session, item))

    def drop(self, error: SessionError | None = None, session: FakeSession | None = None) -> None:
        session = session or self.session
        session.is_open = False
        self.step(ev.FromServer(session, SessionEnded(error or RetryableSessionError("reset"))))

    def answer(self, text: str = "ok", session: FakeSession | None = None) -> None:
        """The server's whole answer to the current turn, then a fresh handle."""
        self.server(
            protocol.AudioChunk(b"\0\0" * 480),
            protocol.OutputTranscription(text),
            protocol.GenerationComplete(),
            protocol.TurnComplete(),
            protocol.SessionResumptionUpdate(f"h{len(self.observed)}", True),
            session=session,
        )
        self.step(ev.SpeakerIdle())

    @property
    def state(self) -> State:
        return self.agent.state


__all__ = ["Conversation", "FakeSession", "MalformedMessage", "conversation_config"]
