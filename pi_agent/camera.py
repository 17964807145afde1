"""The Pi's eyes: camera backends and the worker that feeds frames to the session.

Two seams (``shared/STYLE-BY-EXAMPLE.md`` §10.3):

- A :class:`CameraBackend` makes one JPEG on request: :class:`Picamera2Camera`
  on a Pi (picamera2 imported lazily, so importing pi-agent never needs
  libcamera), :class:`SyntheticCamera` everywhere else (a moving test pattern
  with a clock, encoded to real JPEG, able to fail or hang on demand).
- :class:`FrameSampler` decides *when* to take a picture: at ``camera.fps``
  while the talk button is held (``while_talking``), or when the model calls
  the built-in ``look`` tool (``on_demand``).

Capture and encode never run on an audio or socket thread. Every blocking
camera call runs on a helper thread (``pi-agent-camera-io``) and the caller
waits for it with a timeout, so a wedged camera (picamera2 #711) costs one log
line and the camera, never the conversation.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .config import CameraSettings
from .errors import CameraError, ClosedError
from .threads import Worker, call_logged

if TYPE_CHECKING:
    from types import ModuleType

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
_IDLE_WAIT_S = 0.5

MISSING_PICAMERA2 = (
    "camera.backend is picamera2 but picamera2 is not importable ({error}); "
    "run `sudo apt install python3-picamera2` and use a venv made with "
    "--system-site-packages, or set camera.backend: none"
)
MISSING_SIMPLEJPEG = (
    "the camera needs simplejpeg to encode JPEG ({error}); run "
    "`pip install simplejpeg` (or `sudo apt install python3-simplejpeg` for a "
    "--system-site-packages venv), or set camera.backend: none"
)

LOOK_DECLARATION: dict[str, Any] = {
    "name": "look",
    "description": (
        "Take a fresh photo through the device's camera and look at it. Call this "
        "whenever the user asks what you can see, or when seeing the surroundings "
        "would help. The photo arrives as a video frame just before this call's result."
    ),
    # No "parameters": Gemini rejects an OBJECT schema with empty properties.
}

_MEDIA_RESOLUTIONS = {
    "low": "MEDIA_RESOLUTION_LOW",
    "medium": "MEDIA_RESOLUTION_MEDIUM",
    "high": "MEDIA_RESOLUTION_HIGH",
}


def camera_enabled(settings: CameraSettings) -> bool:
    """True when frames may be sent (the session then wants context compression)."""
    return settings.backend != "none" and settings.mode != "off"


def media_resolution_enum(settings: CameraSettings) -> str | None:
    """``generationConfig.mediaResolution`` for these settings, or None to omit it.

    None when the camera is off (the field would only cost setup bytes) or when
    ``camera.media_resolution`` is null (the model's default).
    """
    if not camera_enabled(settings) or settings.media_resolution is None:
        return None
    return _MEDIA_RESOLUTIONS[settings.media_resolution]


# --------------------------------------------------------------------------- encoding


def _import_simplejpeg() -> ModuleType:
    try:
        import simplejpeg
    except ImportError as exc:
        raise CameraError(MISSING_SIMPLEJPEG.format(error=exc)) from None
    return simplejpeg


def output_size(settings: CameraSettings) -> tuple[int, int]:
    """(width, height) of the frames sent: the sensor size, swapped by 90/270 rotation."""
    if settings.rotation in (90, 270):
        return settings.height, settings.width
    return settings.width, settings.height


def encode_frame(
    frame: np.ndarray,
    *,
    quality: int = 80,
    colorspace: str = "RGB",
    rotation: int = 0,
    hflip: bool = False,
    vflip: bool = False,
) -> bytes:
    """Orient a HxWx3 (or HxWx4) uint8 frame and encode it to 4:2:0 JPEG.

    Flips apply to the sensor image, then ``rotation`` turns it clockwise.
    ``colorspace`` names the channel order in memory: picamera2's "RGB888" is
    "BGR" here, its "XRGB8888" is "BGRX". The transforms are numpy views and
    one copy is made only when simplejpeg's contiguous rows need it. A
    4-byte pixel is moved as one uint32, which makes a 90-degree turn about 3x
    cheaper than with 3-byte pixels.
    """
    if rotation % 90:
        raise ValueError(f"rotation must be a multiple of 90, not {rotation}")
    channels = frame.shape[2]
    pixels = frame.view(np.uint32)[..., 0] if channels == 4 else frame
    if hflip:
        pixels = pixels[:, ::-1]
    if vflip:
        pixels = pixels[::-1]
    if rotation % 360:
        pixels = np.rot90(pixels, k=-(rotation // 90))  # negative k: clockwise
    if hflip or vflip or rotation % 360:
        pixels = np.ascontiguousarray(pixels)
        frame = pixels.view(np.uint8).reshape(*pixels.shape[:2], 4) if channels == 4 else pixels
    elif frame.strides[1] != channels or frame.strides[2] != 1:
        frame = np.ascontiguousarray(frame)  # e.g. a cropped view of a wider buffer
    return _import_simplejpeg().encode_jpeg(
        frame, quality=quality, colorspace=colorspace, colorsubsampling="420", fastdct=True
    )


# --------------------------------------------------------------------------- backends


class CameraBackend(Protocol):
    """What :class:`FrameSampler` needs from a camera."""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the JPEGs made, after rotation."""

    def start(self) -> None:
        """Open and start the camera; idempotent."""

    def capture_jpeg(self, timeout: float) -> bytes:
        """A fresh frame as JPEG; raise rather than block much past ``timeout``."""

    def close(self) -> None:
        """Release the camera; idempotent."""


class _Backend:
    """Shared lifecycle: ``start`` once, ``close`` idempotent, use after close raises."""

    def __init__(self, settings: CameraSettings):
        self.settings = settings
        self._started = False
        self._closed = False

    @property
    def size(self) -> tuple[int, int]:
        return output_size(self.settings)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"{type(self).__name__} is closed")
        if not self._started:
            raise CameraError(f"{type(self).__name__} is not started")

    def _encode(self, frame: np.ndarray, colorspace: str) -> bytes:
        s = self.settings
        return encode_frame(
            frame,
            quality=s.jpeg_quality,
            colorspace=colorspace,
            rotation=s.rotation,
            hflip=s.hflip,
            vflip=s.vflip,
        )

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


# Colour bars without red or magenta, so the red orientation marker stays unique.
# Pixels are RGBX: 4 bytes turn 90 degrees as one uint32 (see encode_frame).
_BARS = np.array(
    [
        (235, 235, 235, 0),
        (235, 235, 16, 0),
        (16, 235, 235, 0),
        (16, 235, 16, 0),
        (16, 16, 235, 0),
        (128, 128, 128, 0),
        (16, 16, 16, 0),
        (96, 64, 160, 0),
    ],
    dtype=np.uint8,
)
MARKER_RGB = (255, 0, 0)
"""The solid square in the sensor image's top-left corner, for orientation checks."""

#  Seven segments a-g, as (top, bottom, left, right) in units of the cell:
#  d = digit height, w = width, t = stroke.  Lambdas keep the table readable.
_SEGMENTS: dict[str, Callable[[int, int, int], tuple[int, int, int, int]]] = {
    "a": lambda d, w, t: (0, t, 0, w),
    "b": lambda d, w, t: (0, d // 2 + t // 2, w - t, w),
    "c": lambda d, w, t: (d // 2 - t // 2, d, w - t, w),
    "d": lambda d, w, t: (d - t, d, 0, w),
    "e": lambda d, w, t: (d // 2 - t // 2, d, 0, t),
    "f": lambda d, w, t: (0, d // 2 + t // 2, 0, t),
    "g": lambda d, w, t: (d // 2 - t // 2, d // 2 - t // 2 + t, 0, w),
}
_DIGITS = ["abcdef", "bc", "abdeg", "abcdg", "bcfg", "acdfg", "acdefg", "abc", "abcdefg", "abcdfg"]


def _glyphs(height: int, width: int) -> dict[str, np.ndarray]:
    """White-on-black 7-segment glyphs for the clock: no font library needed."""
    t = max(height // 8, 1)
    glyphs = {}
    for digit, segments in enumerate(_DIGITS):
        g = np.zeros((height, width, 4), np.uint8)
        for seg in segments:
            top, bottom, left, right = _SEGMENTS[seg](height, width, t)
            g[top:bottom, left:right, :3] = 255
        glyphs[str(digit)] = g
    mid = (width - t) // 2
    colon = np.zeros((height, width, 4), np.uint8)
    for y in (height // 3, 2 * height // 3):
        colon[y - t // 2 : y - t // 2 + t, mid : mid + t, :3] = 255
    dot = np.zeros((height, width, 4), np.uint8)
    dot[height - t :, mid : mid + t, :3] = 255
    glyphs[":"], glyphs["."] = colon, dot
    return glyphs


class SyntheticCamera(_Backend):
    """Generated frames encoded to real JPEG: the camera for tests, demo and bench.

    Scrolling colour bars (so consecutive frames differ), a red marker in the
    sensor's top-left corner (so rotation and flips are visible) and the time
    as 7-segment digits. ``clock`` (seconds, default ``time.time``) drives
    both, so tests can pin it. :meth:`set_fault` makes captures raise or hang,
    to exercise the sampler's timeouts; ``captures`` counts capture calls.
    """

    def __init__(self, settings: CameraSettings, *, clock: Callable[[], float] = time.time):
        super().__init__(settings)
        _import_simplejpeg()
        self.clock = clock
        self.captures = 0
        self._fault: str | None = None
        self._unhang = threading.Event()
        w, h = settings.width, settings.height
        row = _BARS[np.arange(w) * len(_BARS) // w]
        self._bars = np.concatenate([row, row])  # a window into this scrolls
        self._band = min(max(h // 6, 12), h // 3)
        self._marker = max(min(w, h - self._band) // 8, 4)
        digit_h = int(self._band * 0.7)
        while True:  # shrink the clock until "HH:MM:SS.t" fits the width
            self._cell = max(digit_h // 2, 3)
            self._gap = max(self._cell // 3, 1)
            if 10 * (self._cell + self._gap) + self._gap <= w or digit_h <= 5:
                break
            digit_h -= 1
        self._digit_h = digit_h
        self._glyphs = _glyphs(digit_h, self._cell)

    def set_fault(self, fault: str | None) -> None:
        """Make captures ``"raise"`` CameraError or ``"hang"`` until close; None heals."""
        if fault not in (None, "raise", "hang"):
            raise ValueError(f"unknown fault {fault!r}")
        self._fault = fault
        if fault != "hang":
            self._unhang.set()
        else:
            self._unhang.clear()

    def start(self) -> None:
        if self._closed:
            raise ClosedError("SyntheticCamera is closed")
        self._started = True

    def render(self, now: float | None = None) -> np.ndarray:
        """One RGBX frame at the sensor size, for time ``now`` (default: the clock)."""
        now = self.clock() if now is None else now
        w, h = self.settings.width, self.settings.height
        top = h - self._band
        frame = np.empty((h, w, 4), np.uint8)
        offset = int(now * w / 4) % w  # a quarter of the width per second
        frame[:top] = self._bars[offset : offset + w]
        frame[top:] = 0
        frame[: self._marker, : self._marker] = (*MARKER_RGB, 0)
        text = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 10) % 10}"
        y = top + (self._band - self._digit_h) // 2
        x = self._gap
        for char in text:
            frame[y : y + self._digit_h, x : x + self._cell] = self._glyphs[char]
            x += self._cell + self._gap
        return frame

    def capture_jpeg(self, timeout: float) -> bytes:
        self._check_open()
        self.captures += 1
        if self._fault == "raise":
            raise CameraError("synthetic camera fault")
        if self._fault == "hang":
            self._unhang.wait()  # ignores ``timeout``, like a wedged driver
            self._check_open()
        return self._encode(self.render(), "RGBX")

    def close(self) -> None:
        self._closed = True
        self._unhang.set()


class Picamera2Camera(_Backend):
    """A Raspberry Pi camera through picamera2, configured once for a video stream.

    ``picamera2_module`` replaces ``import picamera2`` (tests pass a fake,
    because libcamera cannot exist off a Pi). Frames are captured as arrays
    with a numeric ``wait`` and encoded here with simplejpeg, so rotation and
    quality are ours. picamera2 names formats by word order, so "RGB888"
    arrays are BGR in memory and "XRGB8888" ones BGRX; the 4-byte format is
    asked for only when a 90/270 rotation makes it cheaper to turn.
    """

    def __init__(self, settings: CameraSettings, picamera2_module: Any = None):
        super().__init__(settings)
        if picamera2_module is None:
            try:
                import picamera2 as picamera2_module
            except Exception as exc:  # ImportError, or libcamera failing inside it
                error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise CameraError(MISSING_PICAMERA2.format(error=error)) from None
        _import_simplejpeg()
        self._module = picamera2_module
        self._camera: Any = None

    def start(self) -> None:
        """Open, configure and start the camera (runs on the camera's io thread)."""
        if self._closed:
            raise ClosedError("Picamera2Camera is closed")
        if self._started:
            return
        s = self.settings
        pixel_format = "XRGB8888" if s.rotation in (90, 270) else "RGB888"
        try:
            self._camera = self._module.Picamera2()
            config = self._camera.create_video_configuration(
                main={"size": (s.width, s.height), "format": pixel_format},
                queue=False,  # never hand back a frame taken before the request
            )
            self._camera.configure(config)
            self._camera.start()
        except Exception as exc:
            self._release()
            raise CameraError(f"picamera2 could not start the camera: {exc}") from exc
        self._started = True

    def capture_jpeg(self, timeout: float) -> bytes:
        self._check_open()
        try:
            frame = self._camera.capture_array("main", wait=timeout)
        except Exception as exc:
            name = type(exc).__name__
            raise CameraError(f"picamera2 capture failed: {name}: {exc}") from exc
        return self._encode(frame, "BGRX" if frame.shape[2] == 4 else "BGR")

    def _release(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            try:
                camera.close()  # stops it first
            except Exception as exc:
                log.debug("picamera2 close failed: %s", exc)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._release()


def open_camera(settings: CameraSettings) -> CameraBackend | None:
    """Build the configured backend, or None when the camera is off.

    Missing libraries are found here, at startup, as a one-line CameraError.
    The hardware is opened later by :meth:`FrameSampler.start`, where a broken
    camera only disables itself.
    """
    if not camera_enabled(settings):
        return None
    if settings.backend == "synthetic":
        return SyntheticCamera(settings)
    if settings.backend == "picamera2":
        return Picamera2Camera(settings)
    raise CameraError(f"unknown camera.backend {settings.backend!r}")


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
    """

    def __init__(self, name: str):
        self.stuck = False
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], futures.Future] | None]
        self._jobs = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
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
        """Run ``fn`` on the helper; raise _TimedOut or _Aborted instead of waiting on."""
        future: futures.Future = futures.Future()
        self._jobs.put((fn, future))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if abort is not None and abort.is_set():
                future.cancel()  # if still queued; a running call finishes on its own
                raise _Aborted()
            if remaining <= 0:
                if not future.cancel() and not future.done():
                    self.stuck = True
                raise _TimedOut()
            slice_ = remaining if abort is None else min(remaining, 0.1)
            futures.wait([future], timeout=slice_)
            if future.done():
                return future.result()

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
    ):
        super().__init__()
        self.backend = backend
        self.settings = settings
        self.on_frame = on_frame
        self.on_state = on_state
        self.open_timeout = open_timeout
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
        self._io = _CameraIO("pi-agent-camera-io")
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
            io = _CameraIO("pi-agent-camera-close")
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
        self._changed.set()
        if was_talking:
            self._set_state("idle")

    def _run(self) -> None:
        """The camera thread: paces while_talking captures; idles otherwise."""
        running_gen = -1
        next_due = 0.0
        while not self.stopping.is_set():
            with self._lock:
                talking, gen = self._talking, self._talk_gen
            if not talking:
                self._changed.wait(_IDLE_WAIT_S)
                self._changed.clear()
                continue
            now = time.monotonic()
            if gen != running_gen:  # a new press: the first frame right away
                running_gen, next_due = gen, now
            if now < next_due:
                self._changed.wait(next_due - now)
                self._changed.clear()
                continue
            try:
                jpeg = self._capture()
            except CameraError:
                continue  # disabled (logged once), or stopping
            self._deliver(jpeg, gen)
            next_due = max(next_due + self.period, time.monotonic())  # late: no burst

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
