"""A stand-in for the agent behind the control socket: it answers like the real one.

It takes ``ControlRequest``s through ``submit`` (never blocking), answers them on
its own thread, and answers ``say`` later, from yet another thread, once
``gate`` is open, publishing the turn's events first, the way the conversation
core does. Tests drive the real ``ControlServer`` with it, never the Agent.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator
from typing import Any

from hypothesis import settings

from pi_agent.control import ControlRequest, ControlServer

from .conftest import TIMEOUT

STATUS: dict[str, Any] = {
    "state": "ready",
    "light": "no_mic",
    "cause": "no microphone",
    "problems": [{"part": "mic", "problem": "missing", "detail": "no capture device 'seeed'"}],
    "muted": False,
    "turn": 3,
    "connection": {
        "connected": True,
        "resumable": True,
        "model": "models/gemini-live-test",
        "reconnecting_in_s": None,
    },
    "audio": {"mic": "missing", "speaker": "ok", "volume": 0.6},
    "camera": "off",
    "devices": {"lamp": {"on": True}},
    "counters": {"frames_sent": 12, "malformed": 0},
    "last_turn": {"turn": 3, "first_audio_ms": 412.0},
    "firmware": "v9",
}


class FakeAgent:
    """Answers control requests: at once, or (``say``) once ``gate`` is set."""

    def __init__(self) -> None:
        self.server: ControlServer | None = None
        self.seen: list[dict[str, Any]] = []
        self.status: dict[str, Any] = dict(STATUS)
        self.gate = threading.Event()
        self.gate.set()
        self.turn = 3
        self._queue: queue.Queue[ControlRequest | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="fake-agent", daemon=True)
        self._thread.start()

    def submit(self, request: ControlRequest) -> None:
        self._queue.put(request)

    def close(self) -> None:
        self._queue.put(None)
        self.gate.set()
        self._thread.join(TIMEOUT)

    def publish(self, event: dict[str, Any]) -> None:
        if self.server is not None:
            self.server.publish(event)

    def _run(self) -> None:
        while (req := self._queue.get()) is not None:
            self.seen.append(req.request)
            cmd = req.request["cmd"]
            if cmd == "status":
                req.respond({"ok": True, "status": self.status})
            elif cmd == "say":
                self.turn += 1
                if not req.request["wait"]:
                    req.respond({"ok": True, "turn": self.turn})
                threading.Thread(target=self._answer, args=(req, self.turn), daemon=True).start()
            elif cmd == "volume":
                req.respond({"ok": True, "volume": req.request["value"]})
                self.publish({"event": "volume", "volume": req.request["value"]})
            elif cmd == "mute":
                req.respond({"ok": False, "error": "there is no microphone to mute"})
            elif cmd == "talk":
                req.respond({"ok": True, "talking": True})
            else:
                req.respond({"ok": True})

    def _answer(self, req: ControlRequest, turn: int) -> None:
        """The model's answer, later: events first, then the reply (a second call is ignored)."""
        if not self.gate.wait(TIMEOUT):
            return
        text = req.request["text"]
        args, result = {"on": True}, {"ok": True, "on": True}
        self.publish({"event": "state", "state": "thinking", "light": "thinking", "cause": None})
        self.publish({"event": "transcript", "turn": turn, "who": "user", "text": text})
        self.publish(
            {"event": "tool_call", "turn": turn, "id": "t1", "name": "set_lamp", "args": args}
        )
        self.publish(
            {"event": "tool_result", "turn": turn, "id": "t1", "name": "set_lamp", "result": result}
        )
        self.publish(
            {"event": "transcript", "turn": turn, "who": "model", "text": "The lamp is on."}
        )
        self.publish({"event": "turn", "turn": turn, "metrics": {}, "usage": {"total_tokens": 9}})
        answer = {
            "ok": True,
            "turn": turn,
            "you": text,
            "gemini": "The lamp is on.",
            "tools": [{"name": "set_lamp", "args": args, "result": result}],
        }
        req.respond(answer)
        req.respond({"ok": False, "error": "a second answer must be ignored"})


@contextlib.contextmanager
def serving(
    path: Any, agent: FakeAgent, mode: int = 0o660, **limits: Any
) -> Iterator[ControlServer]:
    """A started ControlServer on ``path`` feeding ``agent``; stopped on exit."""
    srv = ControlServer(str(path), mode, agent.submit, **limits)
    agent.server = srv
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def budget(examples: int) -> settings:
    """A small example budget for CI; PI_AGENT_HYPOTHESIS=long lifts it to the long profile's."""
    if os.environ.get("PI_AGENT_HYPOTHESIS", "ci") == "ci":
        return settings(max_examples=examples)
    return settings()
