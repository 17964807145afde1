"""The link's events in the conversation: connected, failed, lost, rolled over.

A mixin of :class:`~pi_agent.agent.Agent` (agent thread only), apart for size:
the :class:`~pi_agent.link.Link` decides when and how to reconnect; these
handlers decide what that means for the user's turn: resend it on the new
connection, keep it while offline, or report it lost when a key or model
error means it can never be delivered.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from . import events as ev
from .errors import SessionError
from .link import Retry
from .status import fix_for

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger("pi_agent.agent")


class LinkEvents:
    def _maybe_connect(self: Agent) -> None:
        if self._stop_requested or not self.link.due():
            return
        self.link.open(self._setup_for)

    def _setup_for(self: Agent, handle: str | None) -> dict[str, Any]:
        from .status import setup_message

        return setup_message(self.config, self.parts, handle)

    def _urgent(self: Agent) -> bool:
        pending = self._pending
        return self.talking or (pending is not None and not pending.completed)

    def _on_connected(self: Agent, event: ev.Connected) -> None:
        session = event.session
        if self._stop_requested:
            self.link.discard(session)
            return
        if self.link.is_open and self._in_flight():
            # A turn is in flight on the old connection; the new one would resume from a
            # handle older than that turn. Drop it and roll over when the turn is done.
            log.info("roll-over deferred until turn %d is complete", self.turn)
            self.link.discard(session)
            self.link.rollover_pending = True
            return
        old = self.link.adopt(session, event.handle, event.credentials)
        if self.parts.recorder is not None:
            session.on_sent = self.parts.recorder.sent
        if old is not None:
            self.counters["rollovers"] += 1
            old.close()
            log.info("rolled over to a new connection (resumed=%s)", self.link.resumed)
        took = self.link.reconnect_took_ms()
        if took is not None:
            self.reconnect_durations_ms = [*self.reconnect_durations_ms[-99:], took]
            log.info("reconnected after %.0f ms (resumed=%s)", took, self.link.resumed)
        self.parts.ready_gate.session_ready()
        if not self._connected_once:
            self._connected_once = True
            self.parts.speaker.play_chime("connected")
        self._publish({"event": "connection", "connected": True})
        if self.config.live.hands_free:
            self.playback.open(session)
            if not self.muted:
                self.uplink.stream(True)
                self.parts.mic.start_capture(gated=True)
        pending = self._pending
        if pending is not None and pending.completed:
            self.uplink.forget()  # answered already; only its handle was missing
        resent = self.uplink.attach(session, resend=True)
        if resent is not None:
            self.counters["resent_turns"] += 1
            self._transcript = {"user": [], "model": []}  # the cut-off answer is said again
            if resent.ended:
                self._expect_answer(self._clock())

    def _on_connect_failed(self: Agent, event: ev.ConnectFailed) -> None:
        error = event.error
        self._link_failed(self.link.connect_failed(error, urgent=self._urgent()), error)

    def _link_failed(self: Agent, retry: Retry, error: SessionError) -> None:
        """Show what the link decided after a failed connect or a lost connection."""
        if self._stop_requested:
            return
        if retry.reason == "rollover":
            log.warning("roll-over connection failed (%s); trying again", error)
            return
        self.last_error = str(error)
        if retry.reason == "handle":
            log.warning("the server no longer knows our session; starting a fresh one")
            return
        if retry.reason == "fatal":
            log.error("%s. %s", error, fix_for(error))
            self._on_release()
            self._fail_pending(f"the session cannot be opened: {error.kind} error")
            return
        self.counters["reconnects"] += 1
        log.warning("connection lost (%s); retrying in %.1f s", error, retry.delay)

    def _connection_gone(self: Agent) -> None:
        self.uplink.detach()
        self.playback.close()
        self.answers.clear()
        self.awaiting_since = None
        self.working = False
        self.parts.speaker.end_turn()  # what already arrived plays out
        self._publish({"event": "connection", "connected": False})

    def _session_ended(self: Agent, session: Any, error: SessionError | None) -> None:
        if not self.link.lost(session):
            return  # an old connection after a roll-over
        self._connection_gone()
        if self._stop_requested:
            return
        error = error or SessionError("the server closed the connection")
        pending = self._pending
        if pending is not None:
            if error.kind == "protocol" and pending.resends >= 2:
                self._fail_pending(f"the server refused it: {error}")
            else:
                log.info("turn %d not answered yet; keeping its words", pending.number)
        self._link_failed(self.link.failed(error, urgent=self._urgent()), error)

    def _in_flight(self: Agent) -> bool:
        """The server's side of a turn is open (an answer still playing locally is not)."""
        return self.talking or bool(self.answers) or self.ledger.running > 0

    def _expect_answer(self: Agent, now: float) -> None:
        self.answers.append(True)
        self.awaiting_since = now
        session = self.link.session
        if session is not None:
            self.playback.open(session)

    def _fail_pending(self: Agent, why: str) -> None:
        pending = self.uplink.forget()
        if pending is None:
            return
        self.counters["lost_turns"] += 1
        log.error("turn %d could not be delivered (%s); please ask again", pending.number, why)
        self._publish({"event": "error", "part": "turn", "detail": f"turn {pending.number}: {why}"})
        self.parts.speaker.play_chime("error")
        self._answer_waiters({"ok": False, "error": f"not delivered: {why}"}, pending.number)
