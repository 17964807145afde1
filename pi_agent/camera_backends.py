"""Camera backends: make one JPEG on request, and nothing else.

Split from :mod:`pi_agent.camera` along its seam: this module knows *how* to
take a picture, :class:`~pi_agent.camera.FrameSampler` decides *when*, and the
sampler is the only caller (always from a helper thread, with a timeout). The
settings helpers both need (:func:`camera_enabled`, :func:`media_resolution_enum`)
live here too, so this module never imports :mod:`pi_agent.camera`: the import
goes one way only.

- :class:`Picamera2Camera` on a Pi: picamera2 is imported lazily, so importing
  pi-agent never needs libcamera.
- :class:`SyntheticCamera` everywhere else: a moving test pattern with a clock,
  encoded to real JPEG, able to fail or hang on demand.
- :func:`encode_frame` orients and encodes a frame with simplejpeg, so rotation
  and quality are ours whichever backend made it.

numpy and simplejpeg are imported only when a backend is built or a frame is
encoded: a config without a camera never loads them (about 15 MB of peak RSS
on x86-64 with numpy 2; measured with ``python -c "import pi_agent.camera"``).

Import these names from :mod:`pi_agent.camera`, which re-exports them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .config import CameraSettings
from .errors import CameraError, ClosedError

if TYPE_CHECKING:
    from types import ModuleType

    import numpy as np

__all__ = [
    "MARKER_RGB",
    "MISSING_PICAMERA2",
    "MISSING_SIMPLEJPEG",
    "CameraBackend",
    "Picamera2Camera",
    "SyntheticCamera",
    "camera_enabled",
    "encode_frame",
    "media_resolution_enum",
    "open_camera",
    "output_size",
]

log = logging.getLogger("pi_agent.camera")

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


# --------------------------------------------------------------------------- settings

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


def _require(module: str, message: str) -> None:
    """Fail at startup, as one line, when a library is missing, without importing it yet.

    The import itself (numpy comes with simplejpeg, libcamera with picamera2:
    a large part of a start) happens in ``start()`` on the camera's own thread,
    after the agent has begun connecting.
    """
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise CameraError(message.format(error=f"No module named {module!r}"))


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
    import numpy as np

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
_BARS = (
    (235, 235, 235, 0),
    (235, 235, 16, 0),
    (16, 235, 235, 0),
    (16, 235, 16, 0),
    (16, 16, 235, 0),
    (128, 128, 128, 0),
    (16, 16, 16, 0),
    (96, 64, 160, 0),
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
    import numpy as np

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
        _require("simplejpeg", MISSING_SIMPLEJPEG)
        self.clock = clock
        self.captures = 0
        self._fault: str | None = None
        self._unhang = threading.Event()
        self._bars: np.ndarray | None = None

    def _prepare(self) -> None:
        """Build the bars and glyphs once (numpy is imported here, not at construction)."""
        if self._bars is not None:
            return
        import numpy as np

        w, h = self.settings.width, self.settings.height
        row = np.array(_BARS, np.uint8)[np.arange(w) * len(_BARS) // w]
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
        _import_simplejpeg()
        self._prepare()
        self._started = True

    def render(self, now: float | None = None) -> np.ndarray:
        """One RGBX frame at the sensor size, for time ``now`` (default: the clock)."""
        import numpy as np

        self._prepare()
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
            _require("picamera2", MISSING_PICAMERA2)
        _require("simplejpeg", MISSING_SIMPLEJPEG)
        self._module = picamera2_module
        self._camera: Any = None

    def start(self) -> None:
        """Import picamera2, open, configure and start the camera (on the camera's io thread)."""
        if self._closed:
            raise ClosedError("Picamera2Camera is closed")
        if self._started:
            return
        if self._module is None:
            try:
                import picamera2
            except Exception as exc:  # ImportError, or libcamera failing inside it
                error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise CameraError(MISSING_PICAMERA2.format(error=error)) from None
            self._module = picamera2
        _import_simplejpeg()
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
    The hardware is opened later by :meth:`~pi_agent.camera.FrameSampler.start`, where a broken
    camera only disables itself.
    """
    if not camera_enabled(settings):
        return None
    if settings.backend == "synthetic":
        return SyntheticCamera(settings)
    if settings.backend == "picamera2":
        return Picamera2Camera(settings)
    raise CameraError(f"unknown camera.backend {settings.backend!r}")
