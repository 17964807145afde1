"""The model's side of the conversation: answers, transcripts, tool calls, roll-over.

A mixin of :class:`~pi_agent.agent.Agent`, kept apart only for size: these
handlers run on the agent thread and change the same state as the rest of
the state machine. ``self.answers`` holds one flag per answer the server
still owes us, oldest first: True while the user still wants it, False once
a press or a cancel made it unwanted (its audio is dropped, its
``turnComplete`` only closes it). Audio when no answer is due is the model
speaking on its own (after a tool result, a timer, proactive audio): it is
played, shown and logged as its own turn.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from . import models, protocol
from .errors import ClosedError, ProtocolError, SessionError
from .logs import escape
from .status import ms

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger("pi_agent.agent")


class ModelAnswers:
    """Handlers for server content and tool calls (agent thread only)."""

    def _on_answer_event(self: Agent, session: Any, item: object) -> None:
        if isinstance(item, protocol.AudioChunk):
            self._on_model_audio(session, item)
        elif isinstance(item, protocol.InputTranscription):
            self._transcript["user"].append(item.text)
        elif isinstance(item, protocol.OutputTranscription):
            self._transcript["model"].append(item.text)
        elif isinstance(item, protocol.ModelText):
            if not item.thought:
                self._transcript["model"].append(item.text)
        elif isinstance(item, protocol.Interrupted):
            self._on_interrupted()
        elif isinstance(item, protocol.GenerationComplete):
            self.parts.speaker.end_turn()
        elif isinstance(item, protocol.TurnComplete):
            self._on_turn_complete(item)
        elif isinstance(item, protocol.ToolCall):
            self._on_tool_call(session, item)
        elif isinstance(item, protocol.ToolCallCancellation):
            self.parts.runner.cancel(list(item.ids))
            self.ledger.cancel(item.ids)
            log.info("tool calls cancelled by the server: %s", escape(", ".join(item.ids)))
        elif isinstance(item, protocol.GoAway):
            left = f"{item.time_left_s:.0f} s" if item.time_left_s is not None else "soon"
            log.info("server roll-over announced (goAway, %s left)", left)
            if self._in_flight():
                self.link.rollover_pending = True
            else:
                self.link.schedule(0.0)
        elif isinstance(item, protocol.Usage):
            self.counters["prompt_tokens"] += item.prompt_tokens
            self.counters["response_tokens"] += item.response_tokens
            self.counters["total_tokens"] += item.total_tokens
        elif isinstance(item, protocol.InteractionStatus):
            self.working = item.status == "IN_PROGRESS"

    def _on_model_audio(self: Agent, session: Any, item: protocol.AudioChunk) -> None:
        """Audio that did not take the fast path: unwanted, or the model speaking by itself."""
        if self.answers and not self.answers[0]:
            return  # an answer the user interrupted or cancelled
        if self.talking and not self.config.live.hands_free:
            return  # the user is talking: the server will interrupt itself
        if not self.answers:
            self.playback.open(session)  # the model speaks on its own: play it, fast path on
        self.parts.speaker.play(item.pcm)
        self._answer_started(session)

    def _on_interrupted(self: Agent) -> None:
        start = self._clock()
        self.parts.speaker.flush()
        took = ms(start, self._clock())
        self.playback.rearm()
        self.speaking = False
        if self._metrics is not None:
            self._metrics.interrupt_to_silence_ms = took
        log.info("model interrupted; playback flushed in %s ms", took)
        self._log_transcripts(interrupted=True)

    def _on_turn_complete(self: Agent, item: protocol.TurnComplete) -> None:
        wanted = self.answers.popleft() if self.answers else None
        self.playback.rearm()  # the next answer's first chunk is news again
        self.parts.speaker.end_turn()
        self.speaking = self.speaking and self.parts.speaker.is_playing
        if wanted is False:
            self._transcript = {"user": [], "model": []}
            return
        if wanted is None:
            self._log_transcripts(unprompted=True)
            return
        if self.parts.recorder is not None:
            self.parts.recorder.end(self.turn)
        if not self.answers:
            self.awaiting_since = None
        pending = self._pending
        if pending is not None and pending.ended:
            pending.completed = True
        said = self._log_transcripts()
        metrics = self._metrics
        if metrics is not None:
            log.info(
                "turn %d metrics: %s",
                metrics.turn,
                ", ".join(f"{k}={v}" for k, v in metrics.as_dict().items() if k != "turn"),
            )
        if item.reason:
            log.info("turn %d ended: %s", self.turn, escape(item.reason, 100))
        calls, requests = self.counters["tool_calls"], self.counters["user_requests"]
        if requests:
            log.info(
                "turn %d tool calls: %d in %d request(s), %.2f per request",
                self.turn,
                calls,
                requests,
                calls / requests,
            )
        usage = {k: self.counters[k] for k in ("prompt_tokens", "response_tokens", "total_tokens")}
        self._publish(
            {
                "event": "turn",
                "turn": self.turn,
                "metrics": metrics.as_dict() if metrics else {},
                "usage": usage,
            }
        )
        self._answer_waiters(
            {
                "ok": True,
                "turn": self.turn,
                "you": said["user"],
                "gemini": said["model"],
                "tools": list(self._tool_log),
            },
            self.turn,
        )
        if self.link.rollover_pending and not self._in_flight():
            self.link.rollover_pending = False
            self.link.schedule(0.05)  # after the sessionResumptionUpdate that follows

    def _log_transcripts(
        self: Agent, interrupted: bool = False, unprompted: bool = False
    ) -> dict[str, str]:
        said = {who: "".join(parts).strip() for who, parts in self._transcript.items()}
        self._transcript = {"user": [], "model": []}
        for who in ("user", "model"):
            text = said[who]
            if not text:
                continue
            self._publish({"event": "transcript", "turn": self.turn, "who": who, "text": text})
            if self.config.agent.log_transcripts:
                name = (
                    "you" if who == "user" else "gemini" + (" (unprompted)" if unprompted else "")
                )
                tail = " [interrupted]" if interrupted and who == "model" else ""
                log.info("turn %d %s: %s%s", self.turn, name, escape(text, 2000), tail)
        return said

    # ----------------------------------------------------------------- tools

    def _on_tool_call(self: Agent, session: Any, item: protocol.ToolCall) -> None:
        for call in item.calls:
            if not call.id or not call.name:
                self.counters["malformed"] += 1
                log.warning("ignoring a tool call without an id: it could never be answered")
                continue
            self.counters["tool_calls"] += 1
            log.info(
                "turn %d tool call %s(%s) id=%s",
                self.turn,
                escape(call.name, 80),
                escape(call.args, 300),
                escape(call.id, 80),
            )
            self._publish(
                {
                    "event": "tool_call",
                    "turn": self.turn,
                    "id": call.id,
                    "name": call.name,
                    "args": call.args,
                }
            )
            action, result = self.ledger.ask(session, call.id, call.name, call.args)
            if action == "run":
                self.parts.runner.submit(call.id, call.name, call.args)
            elif action == "answer":
                log.info("tool %s already ran for this turn; sending its result", call.name)
                asker = self.ledger.answered(call.id)
                if asker is not None:
                    self._send_tool_result(asker.session, call.id, call.name, result)

    def _on_tool_finished(self: Agent, event: Any) -> None:
        """A result from the runner: answer every connection that asked for it.

        A first report of a long NON_BLOCKING call (``willContinue``) keeps the
        askers for the final one, if the model takes ``willContinue``; if not,
        it is the answer, and the final report is only logged and published.
        """
        response = event.response
        call_id, name = str(response.get("id", "")), str(response.get("name", ""))
        result = response.get("response", {})
        if result.get("status") == "error":
            log.warning("tool %s failed: %s", name, escape(result.get("reason", result), 300))
        else:
            log.info("tool %s -> %s", name, escape(result, 300))
        self._tool_log.append({"name": name, "result": result})
        self._publish(
            {
                "event": "tool_result",
                "turn": self.turn,
                "id": call_id,
                "name": name,
                "result": result,
            }
        )
        extra = models.response_fields(self.config.live.model, response)
        more = bool(extra.get("willContinue"))
        for asker in self.ledger.finished(call_id, result, more=more):
            self._send_tool_result(asker.session, asker.id, asker.name, result, extra)

    def _send_tool_result(
        self: Agent,
        asked: Any,
        call_id: str,
        name: str,
        result: dict[str, Any],
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Answer ``call_id`` only on the connection that asked, if it still lives.

        A resumed session does not know calls made after its handle, and a result on
        a connection that did not ask hangs 3.x sessions; the resent turn makes the
        model ask again instead, and the ledger answers from memory.
        """
        session = self.link.session
        if asked is None or asked is not session or not session.is_open:
            log.info("tool %s finished after its connection ended; kept for the resent turn", name)
            return
        try:
            item = {"id": call_id, "name": name, "response": result, **(extra or {})}
            session.send(protocol.tool_response([item]))
        except (ClosedError, SessionError):
            log.info("tool %s result not sent: the connection just ended", name)
        except ProtocolError as exc:
            log.error("tool %s result could not be encoded: %s", escape(name, 80), exc)
