"""Debug recordings: hear what the model heard, one folder per turn.

With ``agent.debug_recording_dir`` set (the idea of wyoming-satellite's
``--debug-recording-dir``), every user turn becomes a folder
``turn-0001-20250101T120000.123Z`` (turn number, UTC start) holding:

- ``sent.wav``: the microphone audio exactly as it went out in ``realtimeInput.audio``
  (16 kHz s16le mono), chunks in order;
- ``received.wav``: the model's answer (24 kHz s16le mono);
- ``messages.json``: every message both ways, one per line, as ``{"t": seconds since the
  turn began, "dir": "sent" | "received", "message": ...}``. Base64 bodies are shown as
  ``{"bytes": N}``, key-like fields (keys, tokens, headers, resumption handles) are left
  out, and every string goes through :func:`pi_agent.logs.redact`.

The recorder is fed from the session's threads (``sent`` on the writer, ``received`` on the
reader) and keeps the open turn in memory; ``end`` hands it to a thread of its own, so the
agent never waits for the SD card. A folder appears whole (written under a hidden name,
then renamed), and only the newest ``max_turns`` are kept. A recorder never raises into
its callers: a failed write (disk full, a read-only path) logs one warning and recording
stops.
"""

from __future__ import annotations

import binascii
import collections
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ZombieThread
from .logs import escape, redact
from .protocol import INPUT_RATE, OUTPUT_RATE, AudioChunk
from .threads import Worker, name_os_thread

log = logging.getLogger(__name__)

MAX_TURN_AUDIO_S = 300.0
"""Audio kept per direction and turn; more is left out of the WAV (a stuck button)."""
MAX_TURN_MESSAGES = 20_000
"""Messages kept per turn (~13 min of 40 ms audio chunks); more are counted, not kept."""
MAX_PENDING = 4
"""Turns waiting to be written; a newer one is dropped (with a warning) while the disk lags."""
_MAX_DEPTH = 64

_NAME = re.compile(r"turn-(\d+)-(\d{8}T\d{6}\.\d{3}Z)(?:-(\d+))?")
_TMP = re.compile(r"\.turn-.*\.tmp")
_RATE = re.compile(r"rate=(\d{1,6})")
_SECRET_KEYS = frozenset(
    {
        "key",
        "apikey",
        "xgoogapikey",
        "authorization",
        "token",
        "accesstoken",
        "idtoken",
        "secret",
        "password",
        "credential",
        "credentials",
        "header",
        "headers",
        "handle",
        "newhandle",
    }
)


def _secret_key(name: str) -> bool:
    return name.replace("_", "").replace("-", "").lower() in _SECRET_KEYS


def _b64_len(text: str) -> int:
    """Bytes a base64 string decodes to (padded or not), without decoding it."""
    return len(text) * 3 // 4 - (len(text) - len(text.rstrip("=")))


def scrub(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON fit for a recording: base64 ``data`` fields and bytes become
    ``{"bytes": N}``, key-like fields are dropped, strings are redacted, a dataclass (a
    protocol event) becomes ``{"event": its class name, ...its fields}``."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": len(value)}
    if depth >= _MAX_DEPTH:
        return "…"
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key)
            if _secret_key(name):
                continue
            if name == "data" and isinstance(item, str):
                out[name] = {"bytes": _b64_len(item)}
            else:
                out[redact(name)] = scrub(item, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [scrub(item, depth + 1) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        event: dict[str, Any] = {"event": type(value).__name__}
        for f in dataclasses.fields(value):
            if not _secret_key(f.name):
                event[f.name] = scrub(getattr(value, f.name), depth + 1)
        return event
    return {"event": type(value).__name__, "text": escape(redact(str(value)))}


_AUDIO_HEAD = '{"realtimeInput":{"audio":{"data":"'
_AUDIO_MIME = '","mimeType":"audio/pcm;rate='


def _audio_frame(frame: str) -> tuple[bytes, int, dict[str, Any]] | None:
    """PCM, rate and recorded message of a frame exactly as ``protocol.audio_message``
    writes it, without a JSON parse (the writer thread sends one every 40 ms)."""
    if not frame.startswith(_AUDIO_HEAD) or not frame.endswith('"}}}'):
        return None
    end = frame.find('"', len(_AUDIO_HEAD))
    if not frame.startswith(_AUDIO_MIME, end):
        return None
    digits = frame[end + len(_AUDIO_MIME) : -4]
    if not (0 < len(digits) <= 6 and digits.isascii() and digits.isdigit()):
        return None
    try:
        pcm = binascii.a2b_base64(frame[len(_AUDIO_HEAD) : end])
    except (binascii.Error, ValueError):
        return None
    mime = "audio/pcm;rate=" + digits
    return (
        pcm,
        int(digits),
        {"realtimeInput": {"audio": {"data": {"bytes": len(pcm)}, "mimeType": mime}}},
    )


def _sent_audio(message: object) -> tuple[bytes, int] | None:
    """The PCM and rate of a ``realtimeInput.audio`` message, else None."""
    if not isinstance(message, dict):
        return None
    realtime = message.get("realtimeInput")
    audio = realtime.get("audio") if isinstance(realtime, dict) else None
    if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
        return None
    try:
        pcm = binascii.a2b_base64(audio["data"])
    except (binascii.Error, ValueError):
        return None
    match = _RATE.search(str(audio.get("mimeType", "")))
    return pcm, int(match[1]) if match else INPUT_RATE


class _Audio:
    """One direction's PCM: the first chunk's rate is the WAV's; other rates are left out."""

    __slots__ = ("left_out", "pcm", "rate")

    def __init__(self) -> None:
        self.pcm = bytearray()
        self.rate: int | None = None
        self.left_out = 0  # bytes

    def add(self, pcm: bytes, rate: int) -> None:
        if self.rate is None:
            self.rate = rate
        if rate != self.rate or len(self.pcm) + len(pcm) > MAX_TURN_AUDIO_S * rate * 2:
            self.left_out += len(pcm)
        else:
            self.pcm += pcm


@dataclasses.dataclass
class _Turn:
    number: int
    wall: float  # the clock at begin: the folder's name
    start: float  # time.monotonic() at begin: "t" of every message
    sent: _Audio = dataclasses.field(default_factory=_Audio)
    received: _Audio = dataclasses.field(default_factory=_Audio)
    messages: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    left_out: int = 0  # messages beyond MAX_TURN_MESSAGES


class TurnRecorder:
    """Records turns into ``directory``; every method is thread-safe and never raises.

    ``begin(n)`` opens turn ``n`` (writing any turn still open), ``sent``/``received``
    add to the open turn (nothing is kept between turns), ``end(n)`` writes it.
    ``close()`` writes the open turn and waits for the writes.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        max_turns: int = 20,
        clock: Callable[[], float] = time.time,
    ):
        self.directory = Path(directory).expanduser()
        self.max_turns = max(1, int(max_turns))
        self._clock = clock
        self._lock = threading.Lock()
        self._turn: _Turn | None = None
        self._closed = False
        self._stopped = False  # after a failed write: nothing more is recorded
        self._bug_logged = False
        self._prune_warned = False
        self._writer = _Writer(self)
        self.turns_written = 0
        try:
            if not self.directory.is_dir():
                self.directory.mkdir(parents=True, mode=0o700)
                os.chmod(self.directory, 0o700)  # mkdir's mode is cut by the umask
            self._sweep()
        except OSError as exc:
            self._fail(exc)
            return
        log.info("recording every turn to %s (the newest %d kept)", self.directory, self.max_turns)

    @property
    def recording(self) -> bool:
        """False once closed or stopped by a failed write."""
        return not (self._closed or self._stopped)

    # ----------------------------------------------------------------- callers' threads

    def begin(self, turn: int) -> None:
        """A user turn starts (press, say); a turn still open is written first."""
        try:
            with self._lock:
                if self._closed or self._stopped:
                    return
                previous = self._turn
                self._turn = _Turn(int(turn), self._clock(), time.monotonic())
            if previous is not None:
                self._writer.submit(previous)
        except Exception:
            self._bug("begin")

    def sent(self, frame: str) -> None:
        """One client frame as it went out on the wire (JSON text); any thread."""
        if self._turn is None:  # between turns, closed or stopped: nothing to do
            return
        try:
            fast = _audio_frame(frame) if isinstance(frame, str) else None
            if fast is not None:
                audio: tuple[bytes, int] | None = fast[:2]
                entry = fast[2]
            else:
                try:
                    message: Any = json.loads(frame)
                except (TypeError, ValueError):
                    message = {"unparsed": {"chars": len(frame)}}
                audio = _sent_audio(message)
                entry = scrub(message)
            with self._lock:
                turn = self._turn
                if turn is None:
                    return
                if audio is not None:
                    turn.sent.add(*audio)
                self._add(turn, "sent", entry)
        except Exception:
            self._bug("sent")

    def received(self, event: object) -> None:
        """One parsed server event (a :mod:`pi_agent.protocol` event); any thread."""
        if self._turn is None:
            return
        try:
            entry = scrub(event)
            with self._lock:
                turn = self._turn
                if turn is None:
                    return
                if isinstance(event, AudioChunk):
                    turn.received.add(event.pcm, event.rate)
                self._add(turn, "received", entry)
        except Exception:
            self._bug("received")

    def end(self, turn: int) -> None:
        """Turn ``turn`` is over (answered or dropped): write it. Another number is ignored."""
        try:
            with self._lock:
                current = self._turn
                if current is None or current.number != turn:
                    return
                self._turn = None
            self._writer.submit(current)
        except Exception:
            self._bug("end")

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every ended turn is on disk (or given up); False on timeout."""
        return self._writer.idle(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write the open turn, finish the writes and stop. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            current, self._turn = self._turn, None
        try:
            if current is not None:
                self._writer.submit(current)
            self._writer.stop(timeout)
        except ZombieThread:
            pass  # logged by Worker.stop; the thread is a daemon
        except Exception:
            self._bug("close")

    # ----------------------------------------------------------------- internals

    def _add(self, turn: _Turn, direction: str, message: Any) -> None:
        if len(turn.messages) >= MAX_TURN_MESSAGES:
            turn.left_out += 1
            return
        t = round(time.monotonic() - turn.start, 4)
        turn.messages.append({"t": t, "dir": direction, "message": message})

    def _bug(self, where: str) -> None:
        if not self._bug_logged:
            self._bug_logged = True
            log.exception(
                "bug: the turn recorder failed in %s; that message is not recorded", where
            )

    def _fail(self, exc: OSError) -> None:
        """A write failed: warn once and record nothing more."""
        with self._lock:
            first = not self._stopped
            self._stopped = True
            self._turn = None
        if first:
            log.warning(
                "cannot write recordings to %s (%s); recording stopped",
                self.directory,
                escape(exc.strerror or exc, 200),
            )

    def _sweep(self) -> None:
        """Remove folders half-written when the agent last died."""
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if _TMP.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)

    def _name(self, turn: _Turn) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(turn.wall))
        base = f"turn-{max(0, turn.number):04d}-{stamp}.{int(turn.wall % 1 * 1000):03d}Z"
        name, n = base, 1
        while (self.directory / name).exists() or (self.directory / f".{name}.tmp").exists():
            n += 1
            name = f"{base}-{n}"
        return name

    def _write(self, turn: _Turn) -> None:
        """Write one turn's folder atomically, then prune (the writer thread)."""
        if self._stopped:
            return
        if turn.left_out or turn.sent.left_out or turn.received.left_out:
            log.warning(
                "turn %d recording cut: %d messages and %d audio bytes left out",
                turn.number,
                turn.left_out,
                turn.sent.left_out + turn.received.left_out,
            )
        tmp: Path | None = None
        try:
            name = self._name(turn)
            tmp = self.directory / f".{name}.tmp"
            tmp.mkdir(mode=0o700)
            _write_wav(tmp / "sent.wav", turn.sent, INPUT_RATE)
            _write_wav(tmp / "received.wav", turn.received, OUTPUT_RATE)
            _write_bytes(tmp / "messages.json", _messages_json(turn.messages))
            os.rename(tmp, self.directory / name)
            tmp = None
            _fsync_dir(self.directory)
        except OSError as exc:
            self._fail(exc)
            return
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        self.turns_written += 1
        log.debug("turn %d recorded in %s", turn.number, name)
        self._prune()

    def _prune(self) -> None:
        """Delete the oldest turn folders beyond ``max_turns`` (only folders named like ours)."""
        try:
            found = []
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    m = _NAME.fullmatch(entry.name)
                    if m and entry.is_dir(follow_symlinks=False):
                        found.append((m[2], int(m[1]), int(m[3] or 1), entry.name))
            found.sort()
            for *_, name in found[: max(0, len(found) - self.max_turns)]:
                shutil.rmtree(self.directory / name)
        except OSError as exc:
            if not self._prune_warned:
                self._prune_warned = True
                log.warning(
                    "cannot delete old recordings in %s: %s",
                    self.directory,
                    escape(exc.strerror or exc, 200),
                )


class _Writer(Worker):
    """Writes ended turns in order, off the callers' threads; started on the first turn."""

    name = "pi-agent-recorder"

    def __init__(self, recorder: TurnRecorder):
        super().__init__()
        self._recorder = recorder
        self._cond = threading.Condition()
        self._pending: collections.deque[_Turn] = collections.deque()
        self._busy = False
        self._started = False

    def submit(self, turn: _Turn) -> None:
        with self._cond:
            if self.stopping.is_set():
                return
            if len(self._pending) >= MAX_PENDING:
                log.warning(
                    "turn %d not recorded: %d turns still being written", turn.number, MAX_PENDING
                )
                return
            self._pending.append(turn)
            self._cond.notify_all()
            if not self._started:
                self._started = True
                self.start()

    def idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def stop(self, timeout: float = 3.0) -> None:
        with self._cond:
            started = self._started
            self.stopping.set()  # no more submits; what is pending is still written
        if started:
            super().stop(timeout)

    def _run(self) -> None:
        name_os_thread()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self.stopping.is_set())
                if not self._pending:
                    return  # stopping, and everything is written
                turn = self._pending.popleft()
                self._busy = True
            try:
                self._recorder._write(turn)
            except Exception:
                log.exception("bug: writing turn %d's recording failed", turn.number)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


def _messages_json(messages: list[dict[str, Any]]) -> bytes:
    """One message per line (readable, greppable), redacted once more as a whole."""
    lines = [json.dumps(m, ensure_ascii=False, separators=(",", ":")) for m in messages]
    text = "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n"
    return redact(text).encode("utf-8", "replace")


def _open_new(path: Path):
    return open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def _write_wav(path: Path, audio: _Audio, rate: int) -> None:
    with _open_new(path) as f:
        with wave.open(f, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(audio.rate or rate)
            w.writeframes(memoryview(audio.pcm)[: len(audio.pcm) // 2 * 2])
        f.flush()
        os.fsync(f.fileno())


def _write_bytes(path: Path, data: bytes) -> None:
    with _open_new(path) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
