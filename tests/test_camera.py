"""Camera backends and the FrameSampler, on the synthetic camera and a fake Picamera2.

The only fake standing in for a real library is ``FakePicamera2``: libcamera
cannot exist off a Pi. Everything else encodes and decodes real JPEGs with
simplejpeg.
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import simplejpeg

from pi_agent.camera import (
    LOOK_DECLARATION,
    FrameSampler,
    Picamera2Camera,
    SyntheticCamera,
    camera_enabled,
    encode_frame,
    media_resolution_enum,
    open_camera,
)
from pi_agent.config import CameraSettings
from pi_agent.errors import CameraError, ClosedError

TIMEOUT = 5.0
ROOT = Path(__file__).resolve().parent.parent


def settings(**changes) -> CameraSettings:
    base = CameraSettings(backend="synthetic", mode="on_demand", width=160, height=120)
    return dataclasses.replace(base, **changes)


def decode(jpeg: bytes) -> np.ndarray:
    return simplejpeg.decode_jpeg(jpeg)  # RGB, HxWx3


def is_red(pixel: np.ndarray) -> bool:
    r, g, b = (int(v) for v in pixel)
    return r > 200 and g < 60 and b < 60


class Recorder:
    """on_frame/on_state sink: records with timestamps, signals after ``want`` frames."""

    def __init__(self, want: int = 1):
        self.frames: list[tuple[float, bytes]] = []
        self.states: list[tuple[str, str]] = []
        self.want = want
        self.got = threading.Event()
        self.extra = threading.Event()
        self.error = threading.Event()
        self.lock = threading.Lock()

    def on_frame(self, jpeg: bytes) -> None:
        with self.lock:
            self.frames.append((time.monotonic(), jpeg))
            if len(self.frames) >= self.want:
                self.got.set()
            if len(self.frames) > self.want:
                self.extra.set()

    def on_state(self, state: str, detail: str) -> None:
        self.states.append((state, detail))
        if state == "error":
            self.error.set()


@pytest.fixture
def sampler_factory():
    made: list[FrameSampler] = []

    def make(backend, s, rec: Recorder, **kw) -> FrameSampler:
        sampler = FrameSampler(backend, s, rec.on_frame, on_state=rec.on_state, **kw)
        made.append(sampler)
        return sampler

    yield make
    for sampler in made:
        sampler.stop(TIMEOUT)


# --------------------------------------------------------------------------- backends


def test_camera_synthetic_frames_are_jpegs_of_the_configured_size_and_change():
    now = [1000.0]
    with SyntheticCamera(settings(width=320, height=240), clock=lambda: now[0]) as cam:
        first = cam.capture_jpeg(1.0)
        now[0] += 1.5
        second = cam.capture_jpeg(1.0)
    a, b = decode(first), decode(second)
    assert a.shape == b.shape == (240, 320, 3)
    assert simplejpeg.decode_jpeg_header(first)[:2] == (240, 320)
    assert np.abs(a.astype(int) - b.astype(int)).max() > 100  # bars scrolled, clock ticked
    assert cam.captures == 2 and cam.closed


def test_camera_synthetic_enforces_its_lifecycle():
    cam = SyntheticCamera(settings())
    with pytest.raises(CameraError, match="not started"):
        cam.capture_jpeg(1.0)
    cam.start()
    cam.close()
    cam.close()  # idempotent
    with pytest.raises(ClosedError):
        cam.capture_jpeg(1.0)


# Where the sensor's top-left marker lands (row, column: 0 = start, 1 = end).
@pytest.mark.parametrize(
    "rotation, hflip, vflip, corner",
    [
        (0, False, False, (0, 0)),
        (0, True, False, (0, 1)),
        (0, False, True, (1, 0)),
        (180, False, False, (1, 1)),
        (90, False, False, (0, 1)),  # clockwise: top-left goes to top-right
        (270, False, False, (1, 0)),
        (90, True, False, (1, 1)),  # mirror first, then turn
    ],
)
def test_camera_rotation_and_flips_move_the_marker(rotation, hflip, vflip, corner):
    s = settings(width=320, height=240, rotation=rotation, hflip=hflip, vflip=vflip)
    with SyntheticCamera(s, clock=lambda: 0.0) as cam:
        image = decode(cam.capture_jpeg(1.0))
        assert cam.size == (image.shape[1], image.shape[0])
    expected_shape = (320, 240, 3) if rotation in (90, 270) else (240, 320, 3)
    assert image.shape == expected_shape
    h, w, _ = image.shape
    inset = 8  # the marker is 25 px square; sample well inside it
    corners = {
        (r, c): image[inset if r == 0 else h - 1 - inset, inset if c == 0 else w - 1 - inset]
        for r in (0, 1)
        for c in (0, 1)
    }
    assert {where for where, pixel in corners.items() if is_red(pixel)} == {corner}


def test_camera_encode_frame_reads_bgr_memory_as_picamera2_gives_it():
    bgr = np.zeros((48, 64, 3), np.uint8)
    bgr[..., 2] = 255  # red, stored B, G, R
    assert is_red(decode(encode_frame(bgr, colorspace="BGR"))[24, 32])
    assert not is_red(decode(encode_frame(bgr, colorspace="RGB"))[24, 32])


@pytest.mark.parametrize("channels, colorspace", [(3, "RGB"), (4, "RGBX")])
@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
@pytest.mark.parametrize("hflip, vflip", [(False, False), (True, False), (False, True)])
def test_camera_encode_frame_matches_numpy_for_3_and_4_byte_pixels(
    channels, colorspace, rotation, hflip, vflip
):
    # A padded buffer (rows wider than the image), as picamera2 can hand back.
    buffer = np.zeros((48, 80, channels), np.uint8)
    frame = buffer[:, :64]
    frame[:16, :16, 0] = 255  # a red block top-left, a green one top-right
    frame[:16, -16:, 1] = 255
    expected = frame[:, ::-1] if hflip else frame
    expected = expected[::-1] if vflip else expected
    expected = np.rot90(expected, -(rotation // 90))[..., :3]
    jpeg = encode_frame(
        frame, colorspace=colorspace, rotation=rotation, hflip=hflip, vflip=vflip, quality=95
    )
    image = decode(jpeg)
    assert image.shape == expected.shape
    assert np.abs(image.astype(int) - expected).mean() < 6


class FakePicamera2:
    """Picamera2's method names and BGR-in-memory "RGB888" arrays; records calls."""

    instances: list[FakePicamera2] = []

    def __init__(self, camera_num: int = 0):
        self.calls: list[tuple] = []
        self.config: dict | None = None
        self.closed = False
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main=None, queue=True, **kwargs):
        self.calls.append(("create_video_configuration", main, queue))
        return {"use_case": "video", "main": dict(main), "queue": queue}

    def configure(self, config):
        self.calls.append(("configure",))
        self.config = config

    def start(self, config=None, show_preview=False):
        assert self.config is not None, "configure before start"
        self.calls.append(("start",))

    def capture_array(self, name="main", wait=None, signal_function=None):
        self.calls.append(("capture_array", name, wait))
        width, height = self.config["main"]["size"]
        channels = {"RGB888": 3, "XRGB8888": 4}[self.config["main"]["format"]]
        frame = np.zeros((height, width, channels), np.uint8)
        frame[..., 2] = 255  # pure red as it really lies in memory: B, G, R(, X)
        return frame

    def close(self):
        self.calls.append(("close",))
        self.closed = True


@pytest.mark.parametrize("rotation, pixel_format", [(90, "XRGB8888"), (180, "RGB888")])
def test_camera_picamera2_backend_configures_once_and_encodes_bgr_as_red(rotation, pixel_format):
    FakePicamera2.instances.clear()
    fake = types.SimpleNamespace(Picamera2=FakePicamera2)
    s = settings(backend="picamera2", width=96, height=64, rotation=rotation)
    with Picamera2Camera(s, picamera2_module=fake) as cam:
        cam.start()  # idempotent: configured once
        jpegs = [cam.capture_jpeg(0.7), cam.capture_jpeg(0.7)]
        assert cam.size == ((64, 96) if rotation == 90 else (96, 64))
    [camera] = FakePicamera2.instances
    assert camera.calls[:3] == [
        ("create_video_configuration", {"size": (96, 64), "format": pixel_format}, False),
        ("configure",),
        ("start",),
    ]
    captures = [c for c in camera.calls if c[0] == "capture_array"]
    assert captures == [("capture_array", "main", 0.7)] * 2
    assert camera.closed
    for jpeg in jpegs:
        image = decode(jpeg)
        assert image.shape == ((96, 64, 3) if rotation == 90 else (64, 96, 3))
        assert is_red(image[30, 30])


def test_camera_picamera2_capture_errors_become_camera_errors():
    class Broken(FakePicamera2):
        def capture_array(self, name="main", wait=None, signal_function=None):
            raise TimeoutError("no frame")

    fake = types.SimpleNamespace(Picamera2=Broken)
    cam = Picamera2Camera(settings(backend="picamera2"), picamera2_module=fake)
    with cam, pytest.raises(CameraError, match="TimeoutError"):
        cam.capture_jpeg(0.5)


def test_camera_missing_picamera2_is_a_one_line_startup_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import picamera2 -> ImportError
    with pytest.raises(CameraError) as caught:
        open_camera(settings(backend="picamera2"))
    message = str(caught.value)
    assert "\n" not in message
    assert "sudo apt install python3-picamera2" in message
    assert "--system-site-packages" in message
    assert "camera.backend: none" in message


def test_camera_missing_simplejpeg_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "simplejpeg", None)
    with pytest.raises(CameraError, match="pip install simplejpeg") as caught:
        open_camera(settings(backend="synthetic"))
    assert "\n" not in str(caught.value)


def test_camera_open_camera_picks_the_backend_or_none():
    assert open_camera(settings(backend="none")) is None
    assert open_camera(settings(mode="off")) is None
    assert isinstance(open_camera(settings()), SyntheticCamera)


def test_camera_setup_helpers():
    assert media_resolution_enum(settings(media_resolution="low")) == "MEDIA_RESOLUTION_LOW"
    assert media_resolution_enum(settings(media_resolution="medium")) == "MEDIA_RESOLUTION_MEDIUM"
    assert media_resolution_enum(settings(media_resolution="high")) == "MEDIA_RESOLUTION_HIGH"
    assert media_resolution_enum(settings(media_resolution=None)) is None
    assert media_resolution_enum(settings(backend="none")) is None
    assert camera_enabled(settings()) and not camera_enabled(settings(mode="off"))


def _fresh_python(code: str) -> str:
    """Run ``code`` in a new interpreter (this one has numpy loaded already); its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


LOADED = "print(sorted(m for m in ('numpy', 'simplejpeg', 'pi_agent.camera') if m in sys.modules))"


def test_camera_import_loads_no_encoder_until_a_backend_is_built():
    out = _fresh_python(
        "import sys\n"
        "from pi_agent.camera import FrameSampler, camera_enabled, open_camera\n"
        "from pi_agent.config import CameraSettings\n"
        f"{LOADED}\n"
        "assert open_camera(CameraSettings(backend='none')) is None\n"
        f"{LOADED}\n"
        "open_camera(CameraSettings(backend='synthetic'))\n"
        f"{LOADED}\n"
    )
    assert out.splitlines() == [
        "['pi_agent.camera']",
        "['pi_agent.camera']",  # no camera configured: no encoder either
        "['numpy', 'pi_agent.camera', 'simplejpeg']",
    ]


def test_camera_backends_never_import_the_sampler():
    out = _fresh_python(
        "import sys\n"
        "from pi_agent.camera_backends import camera_enabled, media_resolution_enum, open_camera\n"
        "from pi_agent.config import CameraSettings\n"
        "s = CameraSettings(backend='synthetic', media_resolution='low')\n"
        "assert camera_enabled(s) and media_resolution_enum(s) == 'MEDIA_RESOLUTION_LOW'\n"
        "with open_camera(s) as cam:\n"
        "    assert cam.capture_jpeg(1.0).startswith(b'\\xff\\xd8')\n"
        f"{LOADED}\n"
    )
    assert out.splitlines() == ["['numpy', 'simplejpeg']"]


def test_camera_look_declaration_is_a_plain_function_declaration():
    assert LOOK_DECLARATION["name"] == "look"
    assert "photo" in LOOK_DECLARATION["description"]
    assert set(LOOK_DECLARATION) <= {"name", "description", "parameters"}
    # An OBJECT schema with empty properties is refused by Gemini; none is sent.
    assert "parameters" not in LOOK_DECLARATION


# --------------------------------------------------------------------------- sampler


def test_camera_while_talking_sends_frames_only_between_press_and_release(sampler_factory):
    s = settings(mode="while_talking", fps=2.0)  # 0.5 s apart keeps the test short
    rec = Recorder(want=4)
    sampler = sampler_factory(SyntheticCamera(s), s, rec)
    sampler.start()
    assert sampler.enabled and sampler.state == "idle"
    assert not rec.got.wait(0.3), "no frame before the button is pressed"
    assert rec.frames == []

    pressed = time.monotonic()
    sampler.start_talking()
    assert rec.got.wait(TIMEOUT)
    sampler.stop_talking()
    released = time.monotonic()

    times = [t for t, _ in rec.frames]
    assert times[0] - pressed < 0.2, "the first frame comes right at the press"
    gaps = np.diff(times[:4])
    assert np.all(np.abs(gaps - 0.5) < 0.15), gaps
    assert all(pressed <= t <= released for t in times)
    assert not rec.extra.wait(0.75), "no frame after the release"
    assert sampler.frames_sent == len(rec.frames) == 4
    assert sampler.state == "idle"
    assert [state for state, _ in rec.states] == ["idle", "streaming", "idle"]
    for _, jpeg in rec.frames:
        assert decode(jpeg).shape == (120, 160, 3)

    # A second press starts over with an immediate frame.
    rec.want, rec.got = 5, threading.Event()
    pressed = time.monotonic()
    sampler.start_talking()
    assert rec.got.wait(TIMEOUT)
    sampler.stop_talking()
    assert rec.frames[4][0] - pressed < 0.2


def test_camera_on_demand_mode_ignores_the_button(sampler_factory):
    s = settings(mode="on_demand")
    rec = Recorder()
    sampler = sampler_factory(SyntheticCamera(s), s, rec)
    sampler.start()
    sampler.start_talking()
    assert not rec.got.wait(0.3)
    sampler.stop_talking()
    assert sampler.frames_sent == 0


def test_camera_look_hands_over_exactly_one_fresh_frame_before_returning(sampler_factory):
    s = settings(mode="on_demand", width=320, height=240)
    now = [5000.0]
    cam = SyntheticCamera(s, clock=lambda: now[0])
    rec = Recorder()
    sampler = sampler_factory(cam, s, rec)
    sampler.start()

    result = sampler.look({})
    returned = time.monotonic()
    assert len(rec.frames) == 1 and rec.frames[0][0] <= returned
    jpeg = rec.frames[0][1]
    assert result == {"result": {"seen": True, "width": 320, "height": 240, "bytes": len(jpeg)}}
    assert decode(jpeg).shape == (240, 320, 3)

    now[0] += 2.0
    sampler.look({})
    assert len(rec.frames) == 2 and cam.captures == 2
    assert rec.frames[1][1] != jpeg, "each look takes a new picture"
    assert sampler.frames_sent == 2


def test_camera_look_refuses_when_not_running():
    s = settings()
    sampler = FrameSampler(SyntheticCamera(s), s, lambda jpeg: None)
    with pytest.raises(CameraError, match="not running"):
        sampler.look({})
    off = settings(mode="off")
    with pytest.raises(CameraError, match="off"):
        FrameSampler(SyntheticCamera(off), off, lambda jpeg: None).look({})


def _disabled_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_camera_that_raises_is_disabled_with_one_log_line(sampler_factory, caplog):
    caplog.set_level(logging.INFO, logger="pi_agent")
    s = settings(mode="while_talking", capture_timeout_s=0.5)
    cam = SyntheticCamera(s)
    rec = Recorder()
    sampler = sampler_factory(cam, s, rec)
    sampler.start()
    cam.set_fault("raise")

    started = time.monotonic()
    sampler.start_talking()
    assert time.monotonic() - started < 0.1, "the caller never waits for the camera"
    assert rec.error.wait(TIMEOUT)
    assert time.monotonic() - started < 0.5 + 0.5
    assert not sampler.enabled and sampler.state == "error"
    with pytest.raises(CameraError, match="disabled"):
        sampler.look({})
    sampler.stop_talking()
    sampler.start_talking()  # ignored now
    assert rec.frames == [] and cam.captures == 1

    [line] = _disabled_lines(caplog)
    assert line.levelno == logging.ERROR and line.getMessage().startswith("camera disabled:")
    assert line.exc_info is None
    assert [state for state, _ in rec.states][-1] == "error"
    sampler.stop(TIMEOUT)
    assert sampler.state == "stopped" and cam.closed


def test_camera_that_hangs_in_look_is_abandoned_within_its_timeout(sampler_factory, caplog):
    caplog.set_level(logging.INFO, logger="pi_agent")
    s = settings(mode="on_demand", capture_timeout_s=0.3)
    cam = SyntheticCamera(s)
    rec = Recorder()
    sampler = sampler_factory(cam, s, rec)
    sampler.start()
    cam.set_fault("hang")

    started = time.monotonic()
    with pytest.raises(CameraError, match=r"longer than 0\.3 s"):
        sampler.look({})
    took = time.monotonic() - started
    assert 0.3 <= took < 0.3 + 0.6
    assert rec.frames == [] and rec.error.is_set()
    assert [r.getMessage() for r in _disabled_lines(caplog)] == [
        "camera disabled: a capture took longer than 0.3 s"
    ]

    started = time.monotonic()
    sampler.stop(TIMEOUT)  # the hung io thread is abandoned, not joined
    assert time.monotonic() - started < 1.0
    assert cam.closed and len(_disabled_lines(caplog)) == 1


def test_camera_that_hangs_while_talking_does_not_stall_the_sampler(sampler_factory, caplog):
    caplog.set_level(logging.INFO, logger="pi_agent")
    s = settings(mode="while_talking", capture_timeout_s=0.3)
    cam = SyntheticCamera(s)
    rec = Recorder()
    sampler = sampler_factory(cam, s, rec)
    sampler.start()
    cam.set_fault("hang")

    started = time.monotonic()
    sampler.start_talking()
    assert rec.error.wait(TIMEOUT)
    assert time.monotonic() - started < 0.3 + 0.6
    sampler.stop_talking()
    assert sampler.is_alive, "the camera thread itself never hangs"
    assert len(_disabled_lines(caplog)) == 1


def test_camera_that_will_not_open_is_disabled_not_raised(sampler_factory, caplog):
    class WontOpen(SyntheticCamera):
        def start(self):
            raise CameraError("no camera attached")

    s = settings()
    rec = Recorder()
    sampler = sampler_factory(WontOpen(s), s, rec)
    sampler.start()
    assert not sampler.enabled and sampler.state == "error"
    assert "no camera attached" in sampler.failure
    assert len(_disabled_lines(caplog)) == 1


def test_camera_stop_is_prompt_while_streaming(sampler_factory):
    s = settings(mode="while_talking", fps=0.1)
    rec = Recorder()
    cam = SyntheticCamera(s)
    sampler = sampler_factory(cam, s, rec)
    sampler.start()
    assert any(t.name == "pi-agent-camera" for t in threading.enumerate())
    sampler.start_talking()
    assert rec.got.wait(TIMEOUT)  # now waiting 10 s for the next frame
    started = time.monotonic()
    sampler.stop(TIMEOUT)
    assert time.monotonic() - started < 0.5
    assert not sampler.is_alive and cam.closed and sampler.state == "stopped"
