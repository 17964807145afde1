"""One connection of the fake Live server: protocol state, validation and the fake model's replies.

:class:`Session` is fed client messages by the connection's handler thread (it validates them
with :mod:`pi_agent.sim.live_schema` and raises :class:`~pi_agent.sim.live_schema.Invalid` to close
the connection) and answers turns from its own ``fake-live-reply-N`` worker. Everything it shares
with :class:`~pi_agent.sim.fake_live.FakeLiveServer` (counters, records, handles, scripted
replies) sits behind the server's one condition. The wire rules are described in
``docs/live-protocol.md``; the public reference is https://ai.google.dev/api/live.

Tools follow the model's row in :data:`pi_agent.models.MODELS` (3.8 semantics, [I] where
inferred from the migration guide and the SDK's field docs):

- A function declared NON_BLOCKING, or declared without ``behavior`` on a model whose
  default is NON_BLOCKING (3.8), does not hold the turn: the model says ``Reply.interim``,
  ends its turn, and speaks ``Reply.text`` when the result comes, as its ``scheduling`` says:
  WHEN_IDLE (or none) a turn of its own after the current output, INTERRUPT at once (the
  output being streamed is cut with ``interrupted`` after its first chunk [I]), SILENT not
  at all. A ``willContinue`` result keeps the call open. BLOCKING functions, every function
  on other models, and names the setup did not declare (scripted calls) hold the turn.
- A final result that is not informative (no ``status``; an error without ``reason`` or
  ``retryable``: :func:`pi_agent.models.informative`) makes a 3.8 model call the same tool
  again, at most twice (counted in ``counters["tool_recalls"]``).
- On a model with ``interaction_status`` (extended thinking), every ``turnComplete`` carries
  ``interactionStatus``: IN_PROGRESS while NON_BLOCKING calls or their results are pending,
  else IDLE; when the last one ends in silence, a lone ``{"interactionStatus": "IDLE"}``.

Internal to :mod:`pi_agent.sim.fake_live`, which re-exports :class:`Reply`.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import json
import logging
import math
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection

from ..models import UNKNOWN, capabilities, informative
from .live_schema import Invalid, check_setup, invalid, parse_client_message

if TYPE_CHECKING:
    from .fake_live import ConnectionRecord, FakeLiveServer

__all__ = ["NOT_FOUND", "SESSION_NOT_FOUND", "ConnectionClosedError", "Reply", "Session"]

log = logging.getLogger("pi_agent.sim.fake_live")

NOT_FOUND = "Requested entity was not found."
SESSION_NOT_FOUND = "BidiGenerateContent session not found"

OUT_RATE = 24000  # model audio is always s16le mono 24 kHz (https://ai.google.dev/api/live)
_OUT_MIME = "audio/pcm;rate=24000"
_MAX_REASON = 123  # RFC 6455 section 5.5: control frame payload (125) minus the 2-byte code
_TOKENS_PER_S = 25  # audio tokens per second in the usage the fake reports (an estimate)


@dataclass
class Reply:
    """What the fake model says for one turn.

    ``audio`` is 24 kHz s16le mono PCM; None means a 440 Hz tone of ~60 ms per character of
    ``text`` (at most 3 s). ``pace`` 0 sends as fast as possible, 1.0 in real time. Each of
    ``tool_calls`` (name, args) goes out before the audio as its own ``toolCall``; a BLOCKING
    one holds the turn until it is answered (or the server's ``tool_timeout``), a
    NON_BLOCKING one does not: the model says ``interim`` (a 660 Hz tone unless
    ``interim_audio``) and ends the turn, and says ``text`` once the result comes (see the
    module docstring). ``input_transcription`` None means "(N ms of audio)" when the turn had
    audio; "" means none.
    """

    text: str = "Hello from the fake Live server."
    audio: bytes | None = None
    chunk_ms: int = 40
    pace: float = 0.0
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    input_transcription: str | None = None
    interim: str = "Let me do that."
    interim_audio: bytes | None = None

    def pcm(self) -> bytes:
        """The audio to stream: ``audio`` or the generated tone."""
        if self.audio is not None:
            return self.audio
        return tone(min(3000, 60 * len(self.text)))

    def interim_pcm(self) -> bytes:
        """What is heard while a NON_BLOCKING call runs: ``interim_audio`` or a 660 Hz tone."""
        if self.interim_audio is not None:
            return self.interim_audio
        return tone(min(3000, 60 * len(self.interim)), 660.0)


# --- small helpers ------------------------------------------------------------------------------


def truncate(reason: str, limit: int = _MAX_REASON) -> str:
    """Cut a close reason to ``limit`` UTF-8 bytes without splitting a character."""
    return reason.encode()[:limit].decode("utf-8", "ignore")


def duration(seconds: float) -> str:
    """protobuf JSON Duration: "10s", "0.500s"."""
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{seconds:.3f}s"


def tone(ms: int, freq: float = 440.0) -> bytes:
    """A 24 kHz s16le sine with 5 ms fades, so clicks never hide playback bugs."""
    n = OUT_RATE * ms // 1000
    if n <= 0:
        return b""
    wave = 0.3 * np.sin(2 * np.pi * freq * np.arange(n) / OUT_RATE)
    fade = min(n // 2, OUT_RATE * 5 // 1000)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        wave[:fade] *= ramp
        wave[-fade:] *= ramp[::-1]
    return (wave * 32767).astype("<i2").tobytes()


def _pcm_rate(mime: str) -> int:
    match = re.search(r"rate=(\d+)", mime)
    return int(match.group(1)) if match else 16000


# --- one connection -----------------------------------------------------------------------------


@dataclass
class Conversation:
    """What a resumption handle restores: the model and how far the conversation got."""

    model: str
    turns: int = 0
    context_tokens: int = 0


@dataclass
class Turn:
    source: str  # activity, text, audioStreamEnd, clientContent
    audio_bytes: int = 0
    audio_ms: float = 0.0
    texts: list[str] = field(default_factory=list)


@dataclass
class _Background:
    """A NON_BLOCKING call the model still expects results for."""

    id: str
    name: str
    args: dict[str, Any]
    reply: Reply
    recalls: int = 0


class ConnectionClosedError(ConnectionError):
    pass


class Session:
    """Protocol state of one connection. The handler thread feeds it; its worker speaks."""

    def __init__(
        self, server: FakeLiveServer, conn: ServerConnection, record: ConnectionRecord, version: str
    ) -> None:
        self.server = server
        self.cond = server._cond
        self.conn = conn
        self.record = record
        self.api_version = version
        self.set_up = False
        self.auto_vad = True
        self.barge_in_enabled = True
        self.input_transcription = False
        self.output_transcription = False
        self.resumption = False
        self.history_open = False  # historyConfig: clientContent is history until turnComplete
        self.content_needs_history = False  # gemini-3.1: clientContent only as initial history
        self.conversation = Conversation(model="")
        self.in_activity = False
        self.partial = Turn("activity")
        self.turns: collections.deque[Turn] = collections.deque()
        self.busy = 0  # turns queued or being answered
        self.interrupting = False
        self.pending_tools: dict[str, str] = {}  # id -> function name
        self.cancelled_tools: set[str] = set()
        self.caps = UNKNOWN  # the model's row of pi_agent.models.MODELS
        self.declared: dict[str, str | None] = {}  # function name -> declared behavior
        self.background: dict[str, _Background] = {}  # NON_BLOCKING calls still open
        self.results: collections.deque[tuple[_Background, dict[str, Any]]] = collections.deque()
        self.in_turn = False  # the worker is answering (an INTERRUPT result may cut it)
        self.preempt = False  # an INTERRUPT result stops the output being streamed
        self.closed = False
        self.server_close: tuple[int, str] | None = None
        self.send_lock = threading.Lock()
        self.worker: threading.Thread | None = None

    # sending (any thread)

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":"))
        self.send_raw(data if self.server.text_frames else data.encode(), message)

    def send_raw(
        self, payload: str | bytes, message: dict[str, Any] | None = None, text: bool | None = None
    ) -> None:
        """Send one frame; ``text`` True sends bytes as a text frame, unchecked."""
        with self.send_lock:
            try:
                self.conn.send(payload, text=text)
            except ConnectionClosed:
                raise ConnectionClosedError(f"connection {self.record.id} is closed") from None
            self.server._sent(self.record.id, message)

    def close(self, code: int, reason: str) -> None:
        """Send a close frame and wait for the echo; blocks, so controls run it on a thread."""
        reason = truncate(reason)
        with self.cond:
            if self.server_close is None:
                self.server_close = (code, reason)
        log.info("conn %d: closing %d %s", self.record.id, code, reason)
        self.conn.close(code, reason)

    def drop(self) -> None:
        """Cut the TCP connection with no close frame, like a network failure."""
        with self.cond:
            if self.server_close is None:
                self.server_close = (1006, "")
        log.info("conn %d: dropping the TCP connection", self.record.id)
        try:
            self.conn.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close_socket()

    # receiving (handler thread)

    def on_message(self, msg: dict[str, Any]) -> None:
        """Validate one client message and act on it; raise Invalid to close the connection."""
        kind, body = parse_client_message(msg)
        if kind == "setup":
            if self.set_up:
                raise invalid()
            self.on_setup(body)
            return
        if not self.set_up:
            raise invalid()
        if kind == "realtimeInput":
            self.on_realtime_input(body)
        elif kind == "clientContent":
            self.on_client_content(body)
        elif kind == "toolResponse":
            self.on_tool_response(body)

    def on_setup(self, setup: dict[str, Any]) -> None:
        server = self.server
        with self.cond:
            rejection = server._rejections.popleft() if server._rejections else None
        if rejection:
            raise Invalid(*rejection)
        model = setup.get("model", "")
        if not model:
            raise invalid()
        model_id = model.removeprefix("models/")
        if not model.startswith("models/") or model_id not in server.models:
            raise Invalid(
                1008,
                f"{model} is not found for API version {self.api_version}, or is not supported "
                "for bidiGenerateContent. Call ListModels to see the list of available models "
                "and their supported methods.",
            )
        check_setup(setup, model_id, self.api_version)
        resumed: str | None = None
        handle = setup.get("sessionResumption", {}).get("handle")
        with self.cond:
            if handle:
                known = server._handles.get(handle)
                if known is None:
                    raise Invalid(1008, SESSION_NOT_FOUND)
                if known.model != model_id:
                    raise invalid()
                self.conversation = dataclasses.replace(known)
                resumed = handle
            else:
                self.conversation = Conversation(model=model_id)
            gen = setup.get("generationConfig", {})
            vad = setup.get("realtimeInputConfig", {})
            self.auto_vad = not vad.get("automaticActivityDetection", {}).get("disabled", False)
            self.barge_in_enabled = vad.get("activityHandling") != "NO_INTERRUPTION"
            self.input_transcription = "inputAudioTranscription" in setup
            self.output_transcription = "outputAudioTranscription" in setup
            self.resumption = "sessionResumption" in setup
            history = setup.get("historyConfig", {}).get("initialHistoryInClientContent", False)
            self.history_open = bool(history) and not resumed
            self.content_needs_history = model_id.startswith("gemini-3.1")
            self.caps = capabilities(model_id)
            self.declared = {
                decl.get("name", ""): decl.get("behavior")
                for tool in setup.get("tools", [])
                for decl in tool.get("functionDeclarations", [])
            }
            self.set_up = True
            self.record.resumed_handle = resumed
            server.counters["setups"] += 1
            self.cond.notify_all()
        log.info(
            "conn %d: setup %s, %s VAD%s%s",
            self.record.id,
            model_id,
            "automatic" if self.auto_vad else "manual",
            f", resumed {resumed[:8]}..." if resumed else "",
            f", modalities {gen.get('responseModalities')}"
            if gen.get("responseModalities")
            else "",
        )
        self.send({"setupComplete": {}})
        if server.noise:
            self.send({})
            self._send_handle()
        self.worker = threading.Thread(
            target=self._run, name=f"fake-live-reply-{self.record.id}", daemon=True
        )
        self.worker.start()
        if server._go_away_every is not None:
            server._schedule_rollover(self)

    def on_realtime_input(self, body: dict[str, Any]) -> None:
        if len(body) != 1:
            raise invalid()  # one field per message (the SDKs enforce it)
        ((sub, value),) = body.items()
        if sub == "audio":
            self._on_audio(value)
        elif sub == "video":
            self._check_image(value)
        elif sub == "mediaChunks":
            if not value:
                raise invalid()
            blob = value[0]  # deprecated; only the first element counts
            if blob.get("mimeType", "").startswith("image/"):
                self._check_image(blob)
            else:
                self._on_audio(blob)
        elif sub == "text":
            self._on_text(value)
        elif sub in ("activityStart", "activityEnd"):
            if self.auto_vad:
                raise invalid()  # only with automatic activity detection disabled
            self._on_activity(sub == "activityStart")
        elif sub == "audioStreamEnd":
            if not self.auto_vad:
                raise invalid()  # only with automatic activity detection enabled
            with self.cond:
                if value and self.partial.audio_bytes:
                    self._queue_turn("audioStreamEnd")

    def _on_audio(self, blob: dict[str, Any]) -> None:
        mime, data = blob.get("mimeType", ""), blob.get("data", b"")
        if not mime.startswith("audio/pcm") or len(data) % 2:
            raise invalid()
        with self.cond:
            self.server.counters["audio_in_bytes"] += len(data)
            if self.auto_vad or self.in_activity:
                self.partial.audio_bytes += len(data)
                self.partial.audio_ms += len(data) / 2 / _pcm_rate(mime) * 1000

    @staticmethod
    def _check_image(blob: dict[str, Any]) -> None:
        mime, data = blob.get("mimeType", ""), blob.get("data", b"")
        magic = {"image/jpeg": b"\xff\xd8\xff", "image/png": b"\x89PNG\r\n\x1a\n"}.get(mime)
        if magic is None or not data.startswith(magic):
            raise invalid()

    def _on_text(self, text: str) -> None:
        with self.cond:
            self._barge_in()
            self.partial.texts.append(text)
            if self.auto_vad or not self.in_activity:
                self._queue_turn("text")

    def _on_activity(self, start: bool) -> None:
        with self.cond:
            if start:
                if self.barge_in_enabled:
                    self._barge_in()
                self.in_activity = True
                self.partial = Turn("activity")
            elif self.in_activity:
                self.in_activity = False
                self._queue_turn("activity")
            else:
                log.warning("conn %d: activityEnd without activityStart", self.record.id)

    def on_client_content(self, body: dict[str, Any]) -> None:
        if self.content_needs_history and not self.history_open:
            raise invalid()  # gemini-3.1: clientContent only as initial history (mastra#18363)
        texts: list[str] = []
        for turn in body.get("turns", []):
            if turn.get("role", "user") not in ("user", "model"):
                raise invalid()
            if turn.get("role", "user") == "user":
                texts += [p["text"] for p in turn.get("parts", []) if "text" in p]
        with self.cond:
            if self.history_open:
                if body.get("turnComplete"):
                    self.history_open = False
                return
            self._barge_in()
            self.partial.texts += texts
            if body.get("turnComplete"):
                self._queue_turn("clientContent")

    def on_tool_response(self, body: dict[str, Any]) -> None:
        for response in body.get("functionResponses", []):
            call_id = response.get("id")
            if not call_id:
                raise invalid()
            with self.cond:
                if call_id in self.cancelled_tools:
                    log.info(
                        "conn %d: ignoring the response to cancelled %s", self.record.id, call_id
                    )
                    continue
                name = self.pending_tools.get(call_id)
                if name is None:
                    raise Invalid(1008, NOT_FOUND)
                if response.get("name") != name or not isinstance(response.get("response"), dict):
                    raise invalid()
                if not response.get("willContinue"):
                    del self.pending_tools[call_id]
                self.server._tool_responses[call_id] = response
                self.server.counters["tool_responses"] += 1
                call = self.background.get(call_id)
                if call is not None:
                    if not response.get("willContinue"):
                        del self.background[call_id]
                    self.results.append((call, response))
                    now = response.get("scheduling") == "INTERRUPT"
                    if now and self.in_turn and self._speaks_about(call, response):
                        self.preempt = True
                self.cond.notify_all()

    # turns (called with self.cond held)

    def _queue_turn(self, source: str) -> None:
        turn, self.partial = self.partial, Turn("activity")
        turn.source = source
        self.turns.append(turn)
        self.busy += 1
        self.cond.notify_all()

    def _barge_in(self) -> bool:
        if self.busy and not self.interrupting:
            self.interrupting = True
            self.cond.notify_all()
            return True
        return False

    # the reply worker

    def _run(self) -> None:
        while True:
            with self.cond:
                self.cond.wait_for(
                    lambda: (
                        self.closed or ((self.turns or self.results) and not self.server._paused)
                    )
                )
                if self.closed:
                    return
                result = self.results.popleft() if self.results else None  # results first
                turn = None if result is not None else self.turns.popleft()
            try:
                if result is not None:
                    self._on_result(*result)
                elif turn is not None:
                    self._answer(turn)
            except ConnectionClosedError:
                return
            except Exception:  # a bug here must not hang the test that waits for the reply
                log.exception("conn %d: reply failed", self.record.id)
                return

    def _stopped(self) -> bool:
        return self.interrupting or self.closed

    def _answer(self, turn: Turn) -> None:
        reply = self.server._next_reply()
        log.info(
            "conn %d: turn (%s, %d ms audio) -> %r",
            self.record.id,
            turn.source,
            turn.audio_ms,
            reply.text[:40],
        )
        heard = reply.input_transcription
        if heard is None:
            heard = f"({round(turn.audio_ms)} ms of audio)" if turn.audio_bytes else ""
        if self.input_transcription and heard:
            self.send({"serverContent": {"inputTranscription": {"text": heard, "finished": True}}})
        with self.cond:
            self.in_turn = True
        stopped = waiting = False
        for name, args in reply.tool_calls:
            if self._non_blocking(name):
                self._call(name, args, _Background("", name, args, reply))
                waiting = True
                continue
            call_id = self._call(name, args)
            recalls = 0
            while True:
                stopped = self._await_tool(call_id, self.server.tool_timeout)
                if stopped or not self._recall(name, self.server.tool_response(call_id), recalls):
                    break
                call_id, recalls = self._call(name, args), recalls + 1
            if stopped:
                break
        text, pcm = (reply.interim, reply.interim_pcm()) if waiting else (reply.text, reply.pcm())
        if not stopped:
            stopped = self._stream(reply, pcm, text)
        prompt = math.ceil(turn.audio_ms / 1000 * _TOKENS_PER_S)
        prompt += sum(math.ceil(len(t) / 4) for t in turn.texts)
        self._end_turn(stopped, pcm, prompt)

    def _end_turn(self, stopped: bool, pcm: bytes, prompt: int) -> None:
        """Close a model turn: interrupted (cancelling BLOCKING calls unless it was cut by a
        result), or complete with usage; then a new resumption handle."""
        if stopped:
            with self.cond:
                preempted = self.preempt and not self.interrupting and not self.closed
                held = [i for i in self.pending_tools if i not in self.background]
                ids = [] if preempted else held
                for call_id in ids:
                    del self.pending_tools[call_id]
                self.cancelled_tools.update(ids)
                self.server.counters["preempted" if preempted else "interrupted"] += 1
            if ids:
                self.send({"toolCallCancellation": {"ids": ids}})
            self.send({"serverContent": {"interrupted": True}})
            self.send({"serverContent": self._turn_complete()})
        else:
            self.send({"serverContent": {"generationComplete": True}})
            answer = math.ceil(len(pcm) / 2 / OUT_RATE * _TOKENS_PER_S)
            with self.cond:
                total_prompt = self.conversation.context_tokens + prompt
                self.conversation.context_tokens += prompt + answer
            usage = {
                "promptTokenCount": total_prompt,
                "responseTokenCount": answer,
                "totalTokenCount": total_prompt + answer,
                "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": total_prompt}],
                "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": answer}],
            }
            self.send({"serverContent": self._turn_complete(), "usageMetadata": usage})
            with self.cond:
                self.server.usage.append(usage)
        with self.cond:
            self.conversation.turns += 1
            self.busy -= 1
            self.interrupting = self.preempt = self.in_turn = False
            self.server.counters["turns"] += 1
            self.cond.notify_all()
        if self.resumption:
            self._send_handle()

    def _turn_complete(self) -> dict[str, Any]:
        """``turnComplete``, with ``interactionStatus`` on a model that reports it."""
        content: dict[str, Any] = {"turnComplete": True}
        if self.caps.interaction_status:
            with self.cond:
                working = bool(self.background or self.results)
            content["interactionStatus"] = "IN_PROGRESS" if working else "IDLE"
        return content

    # NON_BLOCKING calls (3.8)

    def _non_blocking(self, name: str) -> bool:
        """True if the model goes on talking while ``name`` runs (declared, on a 3.8 model)."""
        if name not in self.declared or not self.caps.non_blocking:
            return False
        behavior = self.declared[name]
        if behavior is None or behavior == "UNSPECIFIED":
            return self.caps.default_non_blocking
        return behavior == "NON_BLOCKING"

    def _would_recall(self, response: dict[str, Any] | None, recalls: int) -> bool:
        """True if a final result is not informative and the model has re-calls left."""
        if response is None or response.get("willContinue"):
            return False
        return (
            not informative(response.get("response")) and recalls < self.caps.recalls_uninformative
        )

    def _recall(self, name: str, response: dict[str, Any] | None, recalls: int) -> bool:
        """:meth:`_would_recall`, counted and logged."""
        if not self._would_recall(response, recalls):
            return False
        with self.cond:
            self.server.counters["tool_recalls"] += 1
        log.info("conn %d: %s result not informative; calling it again", self.record.id, name)
        return True

    def _speaks_about(self, call: _Background, response: dict[str, Any]) -> bool:
        """True if this result makes the model speak (not SILENT, not re-called)."""
        if response.get("scheduling") == "SILENT":
            return False
        return not self._would_recall(response, call.recalls)

    def _on_result(self, call: _Background, response: dict[str, Any]) -> None:
        """A result of a NON_BLOCKING call: call again, speak as scheduled, or stay silent."""
        if self._recall(call.name, response, call.recalls):
            again = dataclasses.replace(call, recalls=call.recalls + 1)
            self._call(call.name, call.args, again)
            return
        if self._speaks_about(call, response):
            with self.cond:
                self.busy += 1  # a press may interrupt it like any answer
                self.in_turn = True
            reply = call.reply
            pcm = reply.pcm()
            self._end_turn(self._stream(reply, pcm, reply.text), pcm, 0)
        elif self.caps.interaction_status:
            with self.cond:
                idle = not (self.background or self.results)
            if idle:
                self.send({"serverContent": {"interactionStatus": "IDLE"}})

    def _send_handle(self) -> None:
        handle = uuid.uuid4().hex
        with self.cond:
            self.server._handles[handle] = dataclasses.replace(self.conversation)
        self.send({"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})

    def _await_tool(self, call_id: str, timeout: float) -> bool:
        """Block until the call is answered; True if the turn was interrupted meanwhile."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while call_id in self.pending_tools:
                if self._stopped():
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning("conn %d: no response to tool call %s", self.record.id, call_id)
                    self.server.counters["tool_timeouts"] += 1
                    return False
                self.cond.wait(remaining)
            return self._stopped()

    def _stream(self, reply: Reply, pcm: bytes, text: str) -> bool:
        """Send the model audio (with outputTranscription of ``text``); True if interrupted
        (by the user, or after its first chunk by an INTERRUPT result)."""
        step = max(2, OUT_RATE * 2 * reply.chunk_ms // 1000)
        chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)]
        words = re.findall(r"\s*\S+", text) if self.output_transcription else []
        slots = max(1, len(chunks))
        bundled: list[str] = [""] * slots
        for j, word in enumerate(words):
            bundled[j * slots // len(words)] += word
        start = time.monotonic()
        for i in range(slots):
            if self._wait_until(start + i * reply.chunk_ms / 1000 * reply.pace, cut=i > 0):
                return True
            content: dict[str, Any] = {}
            if chunks:
                data = base64.b64encode(chunks[i]).decode()
                content["modelTurn"] = {
                    "parts": [{"inlineData": {"mimeType": _OUT_MIME, "data": data}}]
                }
                with self.cond:
                    self.server.counters["audio_out_bytes"] += len(chunks[i])
            if bundled[i]:
                content["outputTranscription"] = {"text": bundled[i]}
            if content:
                self.send({"serverContent": content})
            if self.server.noise and i % 3 == 1:
                self.send({} if i % 2 else {"serverContent": {}})
        return self._stopped()

    def _wait_until(self, deadline: float, cut: bool = False) -> bool:
        """Sleep until ``deadline``; True if stopped first (with ``cut``, by a preempt too)."""
        with self.cond:
            while not (self._stopped() or (cut and self.preempt)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cond.wait(remaining)
            return True

    # controls (any thread)

    def call_tool(self, name: str, args: dict[str, Any], call_id: str | None = None) -> str:
        return self._call(name, args, call_id=call_id)

    def _call(
        self,
        name: str,
        args: dict[str, Any],
        background: _Background | None = None,
        call_id: str | None = None,
    ) -> str:
        """Send one toolCall; a NON_BLOCKING one is registered before it can be answered."""
        with self.cond:
            self.server._tool_seq += 1
            call_id = call_id or f"function-call-{self.server._tool_seq}"
            self.pending_tools[call_id] = name
            if background is not None:
                background.id = call_id
                self.background[call_id] = background
            self.server.counters["tool_calls"] += 1
        self.send({"toolCall": {"functionCalls": [{"id": call_id, "name": name, "args": args}]}})
        return call_id

    def cancel_tools(self, ids: list[str]) -> None:
        with self.cond:
            for call_id in ids:
                self.pending_tools.pop(call_id, None)
                self.background.pop(call_id, None)
                self.cancelled_tools.add(call_id)
        self.send({"toolCallCancellation": {"ids": list(ids)}})

    def shutdown(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        if self.worker is not None and self.worker is not threading.current_thread():
            self.worker.join(timeout=5)
