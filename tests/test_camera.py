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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import simplejpeg

from pi_agent.camera import (
    CLOSE_TIMEOUT_S,
    GUARD_S,
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
    """on_frame/on_state sink: each frame with the sampler's clock reading when it arrived."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.frames: list[tuple[float, bytes]] = []
        self.states: list[tuple[str, str]] = []
        self.error = threading.Event()
        self._cond = threading.Condition()

    def on_frame(self, jpeg: bytes) -> None:
        with self._cond:
            self.frames.append((self.clock(), jpeg))
            self._cond.notify_all()

    def on_state(self, state: str, detail: str) -> None:
        self.states.append((state, detail))
        if state == "error":
            self.error.set()

    def wait_frames(self, count: int) -> bool:
        """True once ``count`` frames have arrived (False after TIMEOUT)."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.frames) >= count, TIMEOUT)

    @property
    def times(self) -> list[float]:
        return [when for when, _ in self.frames]


@dataclasses.dataclass(eq=False)
class Sleeper:
    event: threading.Event
    timeout: float | None
    deadline: float | None
    timed_out: bool = False


class FakeClock:
    """Time that moves only when the test says so: FrameSampler's ``clock`` and ``wait``.

    ``wait`` blocks on its Event for real, with no timer of its own; :meth:`advance`
    ends the waits whose deadline it reaches (by setting their Event, as a wake-up
    would). ``waits`` counts the waits begun: each turn of the sampler's loop begins
    one, so it counts the loop's iterations.
    """

    def __init__(self, now: float = 1000.0):
        self.now = now
        self.waits = 0
        self._sleepers: list[Sleeper] = []
        self._cond = threading.Condition()

    def __call__(self) -> float:
        with self._cond:
            return self.now

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        with self._cond:
            deadline = None if timeout is None else self.now + timeout
            sleeper = Sleeper(event, timeout, deadline)
            self.waits += 1
            self._sleepers.append(sleeper)
            self._cond.notify_all()
        try:
            event.wait()
        finally:
            with self._cond:
                self._sleepers.remove(sleeper)
                self._cond.notify_all()
        return not sleeper.timed_out

    def advance(self, seconds: float) -> int:
        """Move time on and end every wait whose deadline is reached; how many ended."""
        with self._cond:
            self.now += seconds
            due = [
                s
                for s in self._sleepers
                if s.deadline is not None and s.deadline <= self.now + 1e-9 and not s.timed_out
            ]
            for sleeper in due:
                sleeper.timed_out = True
                sleeper.event.set()
            return len(due)

    def sleepers(self) -> list[Sleeper]:
        """The waits in progress that nothing has ended yet."""
        with self._cond:
            return [s for s in self._sleepers if not s.event.is_set()]

    def asleep_until(self, deadline: float | None) -> Sleeper | None:
        """Wait (for real, up to TIMEOUT) until a thread sleeps until ``deadline``
        (None: with no deadline at all); that sleeper, or None."""

        def find() -> Sleeper | None:
            for s in self.sleepers():
                if deadline is None or s.deadline is None:
                    if deadline is s.deadline:
                        return s
                elif abs(s.deadline - deadline) < 1e-9:
                    return s
            return None

        with self._cond:
            return self._cond.wait_for(find, TIMEOUT)


class GatedCamera(SyntheticCamera):
    """A synthetic camera whose captures (and, with ``gate_start``, opening) block on
    ``gate``, an Event the test holds.

    ``entered`` is set when a capture starts, ``left`` when one returns or raises.
    ``close`` does not open the gate, like a driver wedged for good. ``on_capture``
    runs inside the capture (a slow camera moves the fake clock there).
    """

    def __init__(self, settings: CameraSettings, *, gated=True, gate_start=False, **kw):
        super().__init__(settings, **kw)
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.gate_start = gate_start
        self.entered = threading.Event()
        self.left = threading.Event()
        self.on_capture: Callable[[], object] = lambda: None

    def start(self) -> None:
        if self.gate_start:
            self.gate.wait(TIMEOUT * 4)  # bounded only so a failing test cannot wedge the run
        super().start()

    def capture_jpeg(self, timeout: float) -> bytes:
        self.entered.set()
        try:
            self.gate.wait(TIMEOUT * 4)
            self.on_capture()
            return super().capture_jpeg(timeout)
        finally:
            self.left.set()


@pytest.fixture
def sampler_factory():
    made: list[FrameSampler] = []
    cameras: list[SyntheticCamera] = []

    def make(backend, s, rec: Recorder, clock: FakeClock | None = None, **kw) -> FrameSampler:
        if clock is not None:
            kw.update(clock=clock, wait=clock.wait)
        sampler = FrameSampler(backend, s, rec.on_frame, on_state=rec.on_state, **kw)
        made.append(sampler)
        cameras.append(backend)
        return sampler

    yield make
    for camera in cameras:
        if isinstance(camera, GatedCamera):
            camera.gate.set()
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


def test_camera_import_loads_no_encoder_until_a_backend_is_started():
    out = _fresh_python(
        "import sys\n"
        "from pi_agent.camera import FrameSampler, camera_enabled, open_camera\n"
        "from pi_agent.config import CameraSettings\n"
        f"{LOADED}\n"
        "assert open_camera(CameraSettings(backend='none')) is None\n"
        f"{LOADED}\n"
        "camera = open_camera(CameraSettings(backend='synthetic'))\n"
        f"{LOADED}\n"
        "camera.start()\n"
        f"{LOADED}\n"
    )
    assert out.splitlines() == [
        "['pi_agent.camera']",
        "['pi_agent.camera']",  # no camera configured: no encoder either
        "['pi_agent.camera']",  # built (the library is there), not imported: the agent connects
        "['numpy', 'pi_agent.camera', 'simplejpeg']",  # started, on the camera's own thread
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
# The sampler runs on a FakeClock: time moves only when a test advances it, so pacing
# and timeouts are proven exactly and no test asserts how long anything took.


class Background:
    """Runs ``fn`` on a thread; ``result`` or ``error`` once ``done`` is set."""

    def __init__(self, fn: Callable[[], object]):
        self.done = threading.Event()
        self.result: object = None
        self.error: BaseException | None = None
        threading.Thread(target=self._run, args=(fn,), daemon=True).start()

    def _run(self, fn: Callable[[], object]) -> None:
        try:
            self.result = fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()


def test_camera_while_talking_paces_frames_at_fps_only_while_held(sampler_factory):
    s = settings(mode="while_talking", fps=2.0)
    clock = FakeClock()
    rec = Recorder(clock)
    sampler = sampler_factory(SyntheticCamera(s), s, rec, clock)
    sampler.start()
    assert sampler.enabled and sampler.state == "idle"
    assert clock.asleep_until(None), "idle: asleep with no deadline"
    assert rec.frames == []

    sampler.start_talking()
    assert rec.wait_frames(1), "the first frame comes at the press, with no time passing"
    for count in (2, 3, 4):
        assert clock.asleep_until(clock.now + 0.5), "asleep until the next frame, 1/fps on"
        assert clock.advance(0.375) == 0 and len(rec.frames) == count - 1  # never early
        assert clock.advance(0.125) == 1
        assert rec.wait_frames(count)
    assert clock.asleep_until(1002.0)
    sampler.stop_talking()
    assert clock.asleep_until(None), "released: asleep with no deadline again"
    assert clock.advance(3600.0) == 0
    assert rec.times == [1000.0, 1000.5, 1001.0, 1001.5]
    assert sampler.frames_sent == 4 and sampler.state == "idle"
    assert [state for state, _ in rec.states] == ["idle", "streaming", "idle"]
    for _, jpeg in rec.frames:
        assert decode(jpeg).shape == (120, 160, 3)

    # A second press starts over with an immediate frame, then 1/fps again.
    pressed = clock.now
    sampler.start_talking()
    assert rec.wait_frames(5) and rec.times[4] == pressed
    assert clock.asleep_until(pressed + 0.5)
    sampler.stop_talking()
    assert clock.asleep_until(None) and len(rec.frames) == 5


def test_camera_a_late_frame_is_followed_one_period_later_not_by_a_burst(sampler_factory):
    s = settings(mode="while_talking", fps=2.0)
    clock = FakeClock()
    rec = Recorder(clock)
    cam = GatedCamera(s, gated=False)
    cam.on_capture = lambda: clock.advance(1.25) if cam.captures == 0 else None
    sampler = sampler_factory(cam, s, rec, clock)
    sampler.start()
    sampler.start_talking()
    # The first capture took 1.25 s, so the frames due at 1000.5 and 1001.0 were missed:
    # one frame makes up for them, then the sampler waits a whole period again.
    assert rec.wait_frames(2)
    assert clock.asleep_until(1001.75)
    assert rec.times == [1001.25, 1001.25]
    assert clock.advance(0.5) == 1 and rec.wait_frames(3)
    assert rec.times[2] == 1001.75
    assert clock.asleep_until(1002.25)


def test_camera_release_during_a_capture_drops_that_frame(sampler_factory):
    s = settings(mode="while_talking")
    clock = FakeClock()
    rec = Recorder(clock)
    cam = GatedCamera(s)
    sampler = sampler_factory(cam, s, rec, clock)
    sampler.start()
    sampler.start_talking()
    assert cam.entered.wait(TIMEOUT)
    sampler.stop_talking()
    # Both calls returned while the capture is held by the test: the caller never waits.
    assert not cam.left.is_set() and sampler.state == "idle"
    cam.gate.set()
    assert cam.left.wait(TIMEOUT)
    assert clock.asleep_until(None), "the picture was taken, dropped, and the thread sleeps"
    assert rec.frames == [] and sampler.frames_sent == 0 and cam.captures == 1


def test_camera_idle_thread_sleeps_without_a_timer(sampler_factory):
    """Idle means asleep: while nobody talks the camera thread never turns its loop."""
    s = settings(mode="while_talking")
    clock = FakeClock()
    rec = Recorder(clock)
    sampler = sampler_factory(SyntheticCamera(s), s, rec, clock)
    sampler.start()
    for _ in range(2):  # after start, and again after a press and release
        idle = clock.asleep_until(None)
        assert idle and idle.timeout is None
        turns = clock.waits
        assert clock.advance(3600.0) == 0, "an hour passes and no wait of the thread ends"
        assert clock.waits == turns and clock.sleepers() == [idle]
        sampler.start_talking()
        assert rec.wait_frames(len(rec.frames) + 1)
        sampler.stop_talking()
    assert clock.asleep_until(None) and len(rec.frames) == 2


def test_camera_on_demand_mode_ignores_the_button(sampler_factory):
    s = settings(mode="on_demand")
    clock = FakeClock()
    rec = Recorder(clock)
    cam = SyntheticCamera(s)
    sampler = sampler_factory(cam, s, rec, clock)
    sampler.start()
    idle = clock.asleep_until(None)
    assert idle
    sampler.start_talking()
    sampler.stop_talking()
    assert clock.sleepers() == [idle], "the press and release did not even wake the thread"
    assert sampler.state == "idle" and rec.frames == [] and cam.captures == 0


def test_camera_look_hands_over_exactly_one_fresh_frame_before_returning(sampler_factory):
    s = settings(mode="on_demand", width=320, height=240)
    now = [5000.0]
    cam = SyntheticCamera(s, clock=lambda: now[0])
    rec = Recorder()
    sampler = sampler_factory(cam, s, rec, FakeClock())
    sampler.start()

    result = sampler.look({})
    assert len(rec.frames) == 1, "on_frame had the photo before look returned"
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
    clock = FakeClock()
    cam = GatedCamera(s)
    rec = Recorder(clock)
    sampler = sampler_factory(cam, s, rec, clock)
    sampler.start()
    cam.set_fault("raise")

    sampler.start_talking()
    assert cam.entered.wait(TIMEOUT)
    # start_talking returned while the capture is held: the caller never waits for the camera.
    assert not cam.left.is_set() and not rec.error.is_set()
    cam.gate.set()
    assert rec.error.wait(TIMEOUT)
    assert clock.now == 1000.0, "a camera that raises is disabled at once, not at its timeout"
    assert not sampler.enabled and sampler.state == "error"
    with pytest.raises(CameraError, match="disabled"):
        sampler.look({})
    sampler.stop_talking()
    sampler.start_talking()  # ignored now
    assert clock.asleep_until(None)
    assert rec.frames == [] and cam.captures == 1

    [line] = _disabled_lines(caplog)
    assert line.levelno == logging.ERROR and line.getMessage().startswith("camera disabled:")
    assert line.exc_info is None
    assert [state for state, _ in rec.states][-1] == "error"
    sampler.stop(TIMEOUT)
    assert sampler.state == "stopped" and cam.closed


def test_camera_that_hangs_in_look_is_abandoned_at_its_timeout(sampler_factory, caplog):
    caplog.set_level(logging.INFO, logger="pi_agent")
    s = settings(mode="on_demand", capture_timeout_s=0.25)
    clock = FakeClock()
    cam = GatedCamera(s)  # the gate stays shut: a capture wedged for good
    rec = Recorder(clock)
    sampler = sampler_factory(cam, s, rec, clock)
    sampler.start()

    look = Background(lambda: sampler.look({}))
    assert cam.entered.wait(TIMEOUT)
    limit = 0.25 + GUARD_S
    assert clock.asleep_until(1000.0 + limit), "the caller waits capture_timeout_s + GUARD_S"
    assert clock.advance(limit - 0.125) == 0 and not look.done.is_set()
    assert clock.advance(0.125) == 1
    assert look.done.wait(TIMEOUT)
    assert isinstance(look.error, CameraError)
    assert "longer than 0.25 s" in str(look.error)
    assert rec.frames == [] and rec.error.is_set()
    assert [r.getMessage() for r in _disabled_lines(caplog)] == [
        "camera disabled: a capture took longer than 0.25 s"
    ]

    sampler.stop(TIMEOUT)  # returns with the capture still held: abandoned, not joined
    assert cam.closed and not cam.left.is_set()
    assert sampler.state == "stopped" and len(_disabled_lines(caplog)) == 1


def test_camera_that_hangs_while_talking_does_not_stall_the_sampler(sampler_factory, caplog):
    caplog.set_level(logging.INFO, logger="pi_agent")
    s = settings(mode="while_talking", capture_timeout_s=0.25)
    clock = FakeClock()
    cam = GatedCamera(s)
    rec = Recorder(clock)
    sampler = sampler_factory(cam, s, rec, clock)
    sampler.start()

    sampler.start_talking()
    assert cam.entered.wait(TIMEOUT)
    assert clock.asleep_until(1000.0 + 0.25 + GUARD_S)
    assert clock.advance(0.25 + GUARD_S) == 1
    assert rec.error.wait(TIMEOUT)
    sampler.stop_talking()
    assert clock.asleep_until(None), "the camera thread itself never hangs: it sleeps again"
    assert sampler.is_alive and not cam.left.is_set()
    assert len(_disabled_lines(caplog)) == 1


def test_camera_that_will_not_open_is_disabled_not_raised(sampler_factory, caplog):
    class WontOpen(SyntheticCamera):
        def start(self):
            raise CameraError("no camera attached")

    s = settings()
    rec = Recorder()
    sampler = sampler_factory(WontOpen(s), s, rec, FakeClock())
    sampler.start()
    assert not sampler.enabled and sampler.state == "error"
    assert "no camera attached" in sampler.failure
    assert len(_disabled_lines(caplog)) == 1


def test_camera_that_hangs_on_open_is_disabled_at_its_open_timeout(sampler_factory, caplog):
    s = settings()
    clock = FakeClock()
    cam = GatedCamera(s, gate_start=True)
    rec = Recorder(clock)
    sampler = sampler_factory(cam, s, rec, clock, open_timeout=4.0)

    starting = Background(sampler.start)
    assert clock.asleep_until(1004.0)
    assert clock.advance(3.5) == 0 and not starting.done.is_set()
    assert clock.advance(0.5) == 1
    assert starting.done.wait(TIMEOUT) and starting.error is None, "disabled, not raised"
    assert sampler.state == "error" and not sampler.enabled
    assert sampler.failure == "the camera did not open within 4 s"
    assert len(_disabled_lines(caplog)) == 1


def test_camera_stop_while_streaming_needs_no_time_to_pass(sampler_factory):
    s = settings(mode="while_talking", fps=0.1)
    clock = FakeClock()
    rec = Recorder(clock)
    cam = SyntheticCamera(s)
    sampler = sampler_factory(cam, s, rec, clock)
    sampler.start()
    assert any(t.name == "pi-agent-camera" for t in threading.enumerate())
    sampler.start_talking()
    assert rec.wait_frames(1)
    assert clock.asleep_until(1010.0)  # the next frame is 10 s away
    sampler.stop(TIMEOUT)  # ZombieThread if the thread slept on until its deadline
    assert clock.now == 1000.0
    assert not sampler.is_alive and cam.closed and sampler.state == "stopped"


def test_camera_stop_during_a_held_capture_gives_up_on_it_at_once(sampler_factory, caplog):
    s = settings(mode="while_talking")
    clock = FakeClock()
    rec = Recorder(clock)
    cam = GatedCamera(s)
    sampler = sampler_factory(cam, s, rec, clock)
    sampler.start()
    sampler.start_talking()
    assert cam.entered.wait(TIMEOUT)
    assert clock.asleep_until(1000.0 + s.capture_timeout_s + GUARD_S)

    stopping = Background(lambda: sampler.stop(TIMEOUT))
    # The camera thread gave up on the capture with no time passing; close waits its turn
    # on the helper behind the held capture, up to CLOSE_TIMEOUT_S.
    assert clock.asleep_until(1000.0 + CLOSE_TIMEOUT_S)
    assert not sampler.is_alive and clock.now == 1000.0
    assert sampler.failure is None, "stopping is not a camera fault"
    assert clock.advance(CLOSE_TIMEOUT_S) == 1
    assert stopping.done.wait(TIMEOUT) and stopping.error is None
    assert sampler.state == "stopped" and rec.frames == [] and not cam.left.is_set()
    assert [r.getMessage() for r in _disabled_lines(caplog)] == [
        "camera did not close within 2.0 s; abandoning it"
    ]


def test_camera_sampler_streams_on_the_real_clock_too(sampler_factory):
    """The defaults (time.monotonic, Event.wait) drive the same loop; no timing asserted."""
    s = settings(mode="while_talking", fps=2.0)
    rec = Recorder()
    sampler = sampler_factory(SyntheticCamera(s), s, rec)
    sampler.start()
    sampler.start_talking()
    assert rec.wait_frames(2)
    sampler.stop_talking()
    sent = len(rec.frames)
    sampler.stop(TIMEOUT)
    assert len(rec.frames) == sent == sampler.frames_sent, "no frame after the release"
    assert rec.times == sorted(rec.times) and sampler.state == "stopped"
