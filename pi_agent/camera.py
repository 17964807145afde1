"""The Pi's eyes: the worker that feeds camera frames to the session.

Two seams:

- A :class:`CameraBackend` makes one JPEG on request: :class:`Picamera2Camera`
  on a Pi, :class:`SyntheticCamera` everywhere else. They (and the settings
  helpers :func:`camera_enabled`, :func:`media_resolution_enum`) live in
  :mod:`pi_agent.camera_backends` and are re-exported here.
- :class:`FrameSampler` decides *when* to take a picture: at ``camera.fps``
  while the talk button is held (``while_talking``), or when the model calls
  the built-in ``look`` tool (``on_demand``).

Capture and encode never run on an audio or socket thread. Every blocking
camera call runs on a helper thread (``pi-agent-camera-io``) and the caller
waits for it with a timeout, so a wedged camera (picamera2 #711) costs one log
line and the camera, never the conversation.

Idle means asleep: no thread here wakes on a tick. The camera thread blocks
until the button goes down or the sampler stops, sleeps exactly until the next
frame is due while it is held, and a caller waiting for the helper wakes only
when the call ends, its deadline passes or the sampler stops. Time comes from
one seam, ``clock`` and ``wait``, so the tests can drive it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

from .camera_backends import (
    MARKER_RGB,
    MISSING_PICAMERA2,
    MISSING_SIMPLEJPEG,
    CameraBackend,
    Picamera2Camera,
    SyntheticCamera,
    _import_simplejpeg,
    camera_enabled,
    encode_frame,
    media_resolution_enum,
    open_camera,
    output_size,
)
from .config import CameraSettings
from .errors import CameraError
from .threads import Worker, call_logged, name_os_thread

Clock = Callable[[], float]
"""Seconds from an arbitrary start that never go back (``time.monotonic``)."""
Wait = Callable[[threading.Event, float | None], bool]
"""Block until ``event`` is set or ``timeout`` seconds of ``Clock`` pass (None: no limit);
True if it was set. ``threading.Event.wait`` for real time."""

__all__ = [
    "CLOSE_TIMEOUT_S",
    "GUARD_S",
    "LOOK_DECLARATION",
    "MARKER_RGB",
    "MAX_FPS",
    "MISSING_PICAMERA2",
    "MISSING_SIMPLEJPEG",
    "OPEN_TIMEOUT_S",
    "CameraBackend",
    "Clock",
    "FrameSampler",
    "Picamera2Camera",
    "SyntheticCamera",
    "Wait",
    "camera_enabled",
    "encode_frame",
    "media_resolution_enum",
    "open_camera",
    "output_size",
]

log = logging.getLogger(__name__)

MAX_FPS = 2.0
"""Hard cap on while_talking frames per second (the API wants about 1 fps)."""
OPEN_TIMEOUT_S = 10.0
"""How long opening the camera may take before it counts as hung."""
CLOSE_TIMEOUT_S = 2.0
"""How long closing may take before the backend is abandoned."""
GUARD_S = 0.25
"""Extra time past ``capture_timeout_s`` before the helper thread is abandoned.

The backend gets ``capture_timeout_s`` itself (picamera2's numeric ``wait``),
so a camera that honours it fails cleanly first and the helper stays usable.
"""

LOOK_DECLARATION: dict[str, Any] = {
    "name": "look",
    "description": (
        "Take a fresh photo through the device's camera and look at it. Call this "
        "whenever the user asks what you can see, or when seeing the surroundings "
        "would help. The photo arrives as a video frame just before this call's result."
    ),
    # No "parameters": Gemini rejects an OBJECT schema with empty properties.
}

# --------------------------------------------------------------------------- sampler


class _TimedOut(Exception):
    pass


class _Aborted(Exception):
    pass


class _CameraIO:
    """A helper thread for blocking camera calls, so the caller can give up on one.

    A call that overruns is abandoned: its thread stays stuck (a daemon) and
    ``stuck`` becomes True. concurrent.futures' pool is not used because its
    workers are joined at interpreter exit, which a hung camera would block.
    A waiting caller sleeps on an Event that the call's end or :meth:`interrupt`
    sets, so an abort is noticed at once without polling.
    """

    def __init__(self, name: str, clock: Clock, wait: Wait):
        self.stuck = False
        self._clock = clock
        self._wait = wait
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], futures.Future] | None]
        self._jobs = queue.SimpleQueue()
        self._waiting_lock = threading.Lock()
        self._waiting: set[threading.Event] = set()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        name_os_thread()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the waiter
                future.set_exception(exc)

    def call(self, fn: Callable[[], Any], timeout: float, abort: threading.Event | None = None):
        """Run ``fn`` on the helper; raise _TimedOut or _Aborted instead of waiting on.

        ``abort`` is checked whenever the caller wakes; set it, then call
        :meth:`interrupt`, to make the caller give up at once.
        """
        future: futures.Future = futures.Future()
        woken = threading.Event()
        future.add_done_callback(lambda _: woken.set())
        with self._waiting_lock:
            self._waiting.add(woken)
        try:
            self._jobs.put((fn, future))
            deadline = self._clock() + timeout
            while not future.done():
                if abort is not None and abort.is_set():
                    future.cancel()  # if still queued; a running call finishes on its own
                    raise _Aborted()
                remaining = deadline - self._clock()
                if remaining <= 0:
                    if future.cancel() or not future.done():
                        self.stuck = True  # still queued behind a hung call, or hung itself
                    raise _TimedOut()
                self._wait(woken, remaining)
                woken.clear()  # the loop re-checks done, abort and time; no wake is lost
        finally:
            with self._waiting_lock:
                self._waiting.discard(woken)
        return future.result()

    def interrupt(self) -> None:
        """Wake every caller waiting in :meth:`call`, so each re-checks its ``abort``."""
        with self._waiting_lock:
            for woken in self._waiting:
                woken.set()

    def shutdown(self) -> None:
        self._jobs.put(None)
        if not self.stuck:
            self._thread.join(1.0)


class FrameSampler(Worker):
    """Takes pictures when they are wanted and hands each JPEG to ``on_frame``.

    ``on_frame(jpeg)`` should only enqueue (the session's droppable video
    slot): it runs on the camera thread for while_talking frames and on the
    caller's thread inside :meth:`look`. ``on_state(state, detail)`` hears
    "idle", "streaming", "error" and "stopped". The sampler owns the backend:
    :meth:`start` opens it and :meth:`stop` closes it.

    A capture that raises or overruns ``camera.capture_timeout_s`` disables
    the camera for good: one error log line, ``on_state("error", detail)``,
    and every later :meth:`look` raises CameraError.

    ``clock`` and ``wait`` are the sampler's only sources of time: frame
    pacing and every open, capture and close timeout use them. Tests pass a
    fake pair to step time by hand.
    """

    name = "pi-agent-camera"

    def __init__(
        self,
        backend: CameraBackend,
        settings: CameraSettings,
        on_frame: Callable[[bytes], object],
        *,
        on_state: Callable[[str, str], object] | None = None,
        open_timeout: float = OPEN_TIMEOUT_S,
        clock: Clock = time.monotonic,
        wait: Wait = threading.Event.wait,
    ):
        super().__init__()
        self.backend = backend
        self.settings = settings
        self.on_frame = on_frame
        self.on_state = on_state
        self.open_timeout = open_timeout
        self.clock = clock
        self._wait = wait
        self.period = 1.0 / min(max(settings.fps, 0.1), MAX_FPS)
        self._lock = threading.RLock()
        self._changed = threading.Event()
        self._io: _CameraIO | None = None
        self._state = "stopped"
        self._failure: str | None = None
        self._talking = False
        self._talk_gen = 0
        self._frames_sent = 0
        self._backend_closed = False

    # ----------------------------------------------------------------- status

    @property
    def state(self) -> str:
        """One of "stopped", "idle", "streaming" or "error"."""
        return self._state

    @property
    def failure(self) -> str | None:
        """Why the camera was disabled, or None."""
        return self._failure

    @property
    def enabled(self) -> bool:
        """True while frames can still be delivered (started, not failed, not stopping)."""
        return (
            self.settings.mode != "off"
            and self._failure is None
            and self.is_alive
            and not self.stopping.is_set()
        )

    @property
    def frames_sent(self) -> int:
        """Frames handed to ``on_frame`` so far."""
        return self._frames_sent

    def _set_state(self, state: str, detail: str = "") -> None:
        with self._lock:
            if state == self._state or (self._state == "error" and state != "stopped"):
                return
            self._state = state
        if self.on_state is not None:
            call_logged(self.on_state, state, detail)

    def _fail(self, detail: str) -> None:
        with self._lock:
            if self._failure is not None:
                return
            self._failure = detail
            self._talking = False
        log.error("camera disabled: %s", detail)
        self._set_state("error", detail)

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Open the camera (bounded by ``open_timeout``) and start the camera thread.

        A camera that fails to open is disabled, not raised: the agent runs on
        without eyes.
        """
        if self._io is not None:
            raise RuntimeError(f"{self.name} already started")
        self._io = _CameraIO("pi-agent-camera-io", self.clock, self._wait)
        try:
            self._io.call(self.backend.start, self.open_timeout)
        except _TimedOut:
            self._fail(f"the camera did not open within {self.open_timeout:g} s")
        except Exception as exc:
            self._fail(f"the camera could not start: {exc}")
        if self._failure is not None:
            return
        w, h = self.backend.size
        log.info(
            "camera ready: %s %dx%d, mode %s",
            type(self.backend).__name__,
            w,
            h,
            self.settings.mode,
        )
        super().start()
        self._set_state("idle")

    def _wake(self) -> None:
        self._changed.set()
        if self._io is not None:  # a capture in flight gives up (stopping is set)
            self._io.interrupt()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop sending, join the thread, close the backend (abandoning a hung one)."""
        with self._lock:
            self._talking = False
        try:
            super().stop(timeout)
        finally:
            self._close_backend(min(timeout, CLOSE_TIMEOUT_S))
            self._set_state("stopped")

    def _close_backend(self, timeout: float) -> None:
        if self._io is None or self._backend_closed:
            return
        self._backend_closed = True
        io = self._io
        if io.stuck:  # a fresh helper, so close is tried even behind a hung capture
            io.shutdown()
            io = _CameraIO("pi-agent-camera-close", self.clock, self._wait)
        try:
            io.call(self.backend.close, timeout)
        except _TimedOut:
            log.warning("camera did not close within %.1f s; abandoning it", timeout)
        except Exception as exc:
            log.warning("camera close failed: %s", exc)
        io.shutdown()

    # ----------------------------------------------------------------- while_talking

    def start_talking(self) -> None:
        """The talk button went down: send a frame now, then every 1/fps s (while_talking)."""
        if self.settings.mode != "while_talking" or not self.enabled:
            return
        with self._lock:
            self._talking = True
            self._talk_gen += 1
        self._changed.set()
        self._set_state("streaming")

    def stop_talking(self) -> None:
        """The talk button came up: once this returns, no frame of that press is sent."""
        with self._lock:  # held by _deliver around on_frame, so none slips out after
            was_talking, self._talking = self._talking, False
        if was_talking:  # a release without a press (on_demand, disabled) wakes nobody
            self._changed.set()
            self._set_state("idle")

    def _run(self) -> None:
        """The camera thread: paces while_talking captures; asleep otherwise.

        Every wait ends with ``_changed`` cleared and the state read again, so a
        press, release or stop that sets it is never lost.
        """
        running_gen = -1
        next_due = 0.0
        while not self.stopping.is_set():
            with self._lock:
                talking, gen = self._talking, self._talk_gen
            if not talking:
                self._wait(self._changed, None)  # no timer: until a press, a release or stop
                self._changed.clear()
                continue
            now = self.clock()
            if gen != running_gen:  # a new press: the first frame right away
                running_gen, next_due = gen, now
            if now < next_due:
                self._wait(self._changed, next_due - now)
                self._changed.clear()
                continue
            try:
                jpeg = self._capture()
            except CameraError:
                continue  # disabled (logged once), or stopping
            self._deliver(jpeg, gen)
            next_due = max(next_due + self.period, self.clock())  # late: no burst

    def _deliver(self, jpeg: bytes, gen: int) -> None:
        with self._lock:
            if not self._talking or gen != self._talk_gen or self._failure is not None:
                return  # the button came up while this frame was taken
            call_logged(self.on_frame, jpeg)
            self._frames_sent += 1

    # ----------------------------------------------------------------- capture and look

    def _capture(self) -> bytes:
        """One fresh JPEG via the io thread; any failure disables the camera."""
        if self._failure is not None:
            raise CameraError(f"the camera is disabled: {self._failure}")
        if self._io is None or self.stopping.is_set():
            raise CameraError("the camera is not running")
        timeout = self.settings.capture_timeout_s
        try:
            jpeg = self._io.call(
                lambda: self.backend.capture_jpeg(timeout), timeout + GUARD_S, self.stopping
            )
        except _Aborted:
            raise CameraError("the camera is stopping") from None
        except _TimedOut:
            detail = f"a capture took longer than {timeout:g} s"
            self._fail(detail)
            raise CameraError(detail) from None
        except Exception as exc:
            detail = f"capture failed: {exc}"
            self._fail(detail)
            raise CameraError(detail) from exc
        if not isinstance(jpeg, bytes) or not jpeg.startswith(b"\xff\xd8"):
            detail = "the camera returned something that is not a JPEG"
            self._fail(detail)
            raise CameraError(detail)
        return jpeg

    def look(self, args: dict | None = None) -> dict:
        """The ``look`` tool: take a fresh photo and hand it to ``on_frame`` first.

        Runs on the caller's (tools) thread and returns only after ``on_frame``
        has taken the frame, so the agent can queue the video frame before the
        toolResponse. Raises CameraError when no photo could be taken.
        """
        if self.settings.mode == "off":
            raise CameraError("the camera is off (camera.mode: off)")
        if self._failure is None and not self.enabled:
            raise CameraError("the camera is not running")
        jpeg = self._capture()
        try:
            self.on_frame(jpeg)
        except Exception as exc:
            raise CameraError(f"the photo could not be handed over: {exc}") from exc
        with self._lock:
            self._frames_sent += 1
        try:
            height, width, _, _ = _import_simplejpeg().decode_jpeg_header(jpeg)
        except Exception:
            width, height = self.backend.size
        return {"result": {"seen": True, "width": width, "height": height, "bytes": len(jpeg)}}
