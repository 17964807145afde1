#!/usr/bin/env python3
"""CPU cost of one camera frame on its way to the wire, against a bare JPEG encode.

Each row is CPU time (all threads of this process) per frame, and its ratio
to the baseline measured in the same run: ``simplejpeg.encode_jpeg`` of a
ready-made frame, the floor any camera path pays. The rows add, in turn:
drawing the synthetic frame, base64 + the ``realtimeInput.video`` JSON
wrapper, and the FrameSampler's hand-off through its io thread (``look``).
A Pi 4 core is several times slower than an x86 core; the ratios travel
better than the milliseconds.

Last, the import footprint: the peak RSS of a fresh interpreter that imports
``pi_agent.camera``, and of one that also builds the synthetic backend (numpy
and simplejpeg load only then).

    .venv/bin/python scripts/bench_camera.py [--frames 200 --repeats 5] [--width 640 --height 480]
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import simplejpeg

from pi_agent.camera import FrameSampler, SyntheticCamera, encode_frame
from pi_agent.config import CameraSettings


def video_message(jpeg: bytes) -> str:
    """The wire text for one frame, built as pi_agent.protocol does (no json.dumps)."""
    data = base64.b64encode(jpeg).decode("ascii")
    return '{"realtimeInput":{"video":{"data":"' + data + '","mimeType":"image/jpeg"}}}'


def measure(fn: Callable[[], object], frames: int, repeats: int) -> tuple[float, float]:
    """(CPU ms, wall ms) per call: the best of ``repeats`` runs, after a warm-up.

    The best run is the one least disturbed by whatever else the machine does.
    """
    for _ in range(min(20, frames)):
        fn()
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(frames):
            fn()
        run = (
            (time.process_time() - cpu) * 1000 / frames,
            (time.perf_counter() - wall) * 1000 / frames,
        )
        best = min(best, run)
    return best


def peak_rss_mb(code: str) -> float:
    """Peak RSS (MB) of a fresh interpreter that runs ``code`` in the repository.

    Read from /proc (VmHWM, per address space): ``ru_maxrss`` would carry over
    the peak of this, the forking, process.
    """
    script = (
        f"{code}\nfrom pathlib import Path\n"
        "print(next(line for line in Path('/proc/self/status').read_text().splitlines()"
        " if line.startswith('VmHWM:')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.split()[-2]) / 1024  # "VmHWM:  16804 kB"


def import_footprint() -> str:
    """One line: peak RSS after ``import pi_agent.camera``, without and with a backend built."""
    imported = "import pi_agent.camera"
    built = (
        f"{imported}\nfrom pi_agent.config import CameraSettings\n"
        "pi_agent.camera.open_camera(CameraSettings(backend='synthetic'))"
    )
    runs = 3  # the lowest of a few fresh interpreters
    bare = min(peak_rss_mb(imported) for _ in range(runs))
    with_backend = min(peak_rss_mb(built) for _ in range(runs))
    return (
        f"peak RSS, fresh interpreter: import pi_agent.camera {bare:.1f} MB, "
        f"+ synthetic backend built {with_backend:.1f} MB (encoder loaded)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--quality", type=int, default=80)
    args = parser.parse_args(argv)

    settings = CameraSettings(
        backend="synthetic",
        mode="on_demand",
        width=args.width,
        height=args.height,
        jpeg_quality=args.quality,
        capture_timeout_s=5.0,
    )
    camera = SyntheticCamera(settings)
    camera.start()
    rgbx = camera.render()  # the synthetic camera draws 4-byte pixels
    rgb = np.ascontiguousarray(rgbx[..., :3])  # as picamera2's "RGB888" delivers
    jpeg = camera.capture_jpeg(1.0)
    q = args.quality
    encode_4 = partial(encode_frame, quality=q, colorspace="RGBX")

    def baseline() -> bytes:
        return simplejpeg.encode_jpeg(
            rgb, quality=q, colorspace="RGB", colorsubsampling="420", fastdct=True
        )

    def wrapped() -> str:
        return video_message(camera.capture_jpeg(1.0))

    def wrapped_json_dumps() -> str:
        data = base64.b64encode(camera.capture_jpeg(1.0)).decode("ascii")
        return json.dumps({"realtimeInput": {"video": {"data": data, "mimeType": "image/jpeg"}}})

    rotated_camera = SyntheticCamera(dataclasses.replace(settings, rotation=90))
    rotated_camera.start()

    sent: list[str] = []
    sampler = FrameSampler(camera, settings, lambda j: sent.append(video_message(j)))
    sampler.start()

    def look() -> None:
        sampler.look({})
        sent.clear()

    rows = [
        ("bare simplejpeg encode (baseline)", baseline),
        ("encode_frame 3-byte, rotation 0", partial(encode_frame, rgb, quality=q)),
        ("encode_frame 3-byte, rotation 90", partial(encode_frame, rgb, quality=q, rotation=90)),
        ("encode_frame 4-byte, rotation 0", partial(encode_4, rgbx)),
        ("encode_frame 4-byte, rotation 90", partial(encode_4, rgbx, rotation=90)),
        ("synthetic capture (draw + encode)", lambda: camera.capture_jpeg(1.0)),
        ("capture + base64 + JSON wrapper", wrapped),
        ("  same, via json.dumps", wrapped_json_dumps),
        ("  same, rotated 90", lambda: video_message(rotated_camera.capture_jpeg(1.0))),
        ("FrameSampler.look + base64 + JSON", look),
    ]
    print(
        f"{args.width}x{args.height}, quality {args.quality}, JPEG {len(jpeg) / 1024:.1f} KiB, "
        f"best of {args.repeats} x {args.frames} frames per row"
    )
    print(f"{'path':40} {'CPU ms':>8} {'wall ms':>8} {'x base':>7}")
    base_cpu = None
    try:
        for name, fn in rows:
            cpu, wall = measure(fn, args.frames, args.repeats)
            base_cpu = base_cpu or cpu
            print(f"{name:40} {cpu:8.3f} {wall:8.3f} {cpu / base_cpu:7.2f}")
    finally:
        sampler.stop()
        rotated_camera.close()
    print(import_footprint())
    return 0


if __name__ == "__main__":
    sys.exit(main())
