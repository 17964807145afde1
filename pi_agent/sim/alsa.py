"""A simulated sound card: real ALSA (and so real PortAudio and PyAudio), no hardware.

alsa-lib's built-in ``file`` plugin over a ``null`` slave is a PCM that any
process can define in its own config (``ALSA_CONFIG_PATH``). Its capture side
reads an ``infile``; its playback side writes a ``file``. One clock thread makes
them behave like hardware:

* capture: the infile is one end of a socket pair (alsa-lib takes a file
  descriptor number as ``infile``). Every 20 ms the clock writes a 20 ms piece
  (a queued phrase, else silence) into the other end. If the reader falls more
  than ``buffer_ms`` behind, pieces are dropped, like a real capture buffer
  that overruns;
* playback: the file is a FIFO; every 20 ms the clock takes 20 ms of audio out
  of it, so the writer is paced by the "device". The pipe is shrunk to one page
  (4 KiB), which is this device's hardware buffer. The kernel frees pipe space
  a page at a time, so a writer blocks in page-sized steps: 85 ms at 24 kHz
  mono, 21 ms at 48 kHz stereo (use the latter to time flushes).

Faithful limits, learned the hard way (alsa-lib 1.2.8, PortAudio 19.6):

* the file plugin fills a capture read with ONE ``read()`` of its infile and
  uses whatever was in its buffer for the bytes that read did not return.
  PortAudio reads up to its whole ALSA buffer (two periods) at once, so a FIFO
  (whose read returns what has arrived so far) gives stale audio for any read
  longer than 20 ms. The socket's ``SO_RCVLOWAT`` is set to its maximum, so
  each ``read()`` waits for every byte it asked for, as a blocking read of a
  real device does: reads of any length are exact and paced;
* :meth:`SimulatedSoundCard.set_eof` makes that read return at once with
  nothing, as a file at its end does: the stream then delivers stale audio far
  faster than real time, which is how a mic whose driver went wrong looks.
  :meth:`SimulatedSoundCard.clear_eof` brings a working device back;
* the infile is only read on the plugin's direct path: open a capture PCM with
  its own channel count (1 for ``mic``), or a ``plug`` conversion in between
  yields silence;
* a device that "only does 48 kHz" is a ``plug`` whose slave is fixed at that
  rate and whose ``rate_converter`` does not exist: at its own rate the plug
  is a no-op, at any other rate ALSA fails to load a converter and refuses the
  hw_params, so ``is_format_supported`` and ``open`` fail for real. PortAudio
  still lists it with 128 channels (as it does any plug device);
* on abort (``Pa_AbortStream``) the file plugin still writes out what ALSA
  held, so "dropped" audio of the ALSA buffer is heard here, not on hardware;
* PortAudio enumerates once per initialisation: a PCM added with
  :meth:`SimulatedSoundCard.add_pcm` is only seen after every ``PyAudio`` is
  terminated and a new one made (the config file is replaced atomically, and
  alsa-lib reloads it then).
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import shutil
import socket
import tempfile
import termios
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

PIECE_MS = 20
_F_SETPIPE_SZ = 1031
_PIPE_BUF = 4096
_RCVLOWAT_MAX = 2**31 - 1


@dataclass(frozen=True)
class SimPcm:
    """One simulated device.

    ``rate`` and ``channels`` are what the clock thread paces and writes (for
    capture) or drains (for playback); with ``only_rate`` ALSA also refuses
    every other rate. ``buffer_ms`` is the capture buffer before overruns.
    """

    name: str
    playback: bool = False
    rate: int = 16000
    channels: int = 1
    only_rate: bool = False
    buffer_ms: int = 200

    @property
    def piece_bytes(self) -> int:
        return self.rate * PIECE_MS // 1000 * self.channels * 2


class _Device:
    def __init__(self, spec: SimPcm, directory: Path):
        if spec.rate * PIECE_MS % 1000:
            raise ValueError(
                f"{spec.name}: rate {spec.rate} is not a whole number of frames per 20 ms"
            )
        self.spec = spec
        self.phrases: deque[bytes] = deque()
        self.current = memoryview(b"")
        self.overruns = 0
        self.played = bytearray()
        self.eof = False
        self._writer: socket.socket | None = None
        self._reader: socket.socket | None = None
        if spec.playback:
            self.fifo = directory / f"{spec.name}.fifo"
            os.mkfifo(self.fifo)
            # O_RDWR: ALSA's blocking open() of the FIFO never waits for the other end.
            self.fd = os.open(self.fifo, os.O_RDWR)
            os.set_blocking(self.fd, False)
            with contextlib.suppress(OSError):
                fcntl.fcntl(self.fd, _F_SETPIPE_SZ, _PIPE_BUF)
        else:
            self._reader, self._writer = self._socket_pair()
            self.fd = self._reader.fileno()  # the number alsa-lib reads from, for good
        self.capacity = max(
            spec.piece_bytes, spec.rate * spec.buffer_ms // 1000 * spec.channels * 2
        )

    @staticmethod
    def _socket_pair() -> tuple[socket.socket, socket.socket]:
        reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, _RCVLOWAT_MAX)
        writer.setblocking(False)
        return reader, writer

    def set_eof(self, eof: bool) -> None:
        """End the input (reads return at once, empty) or plug a fresh one in its place."""
        assert self._writer is not None and self._reader is not None
        if eof and not self.eof:
            self._writer.shutdown(socket.SHUT_WR)
        elif not eof and self.eof:
            reader, writer = self._socket_pair()
            os.dup2(reader.fileno(), self.fd)  # same number: the config and open PCMs stay valid
            reader.close()
            self._writer.close()
            self._writer = writer
        self.eof = eof

    def pending(self) -> int:
        """Bytes sitting in the FIFO."""
        buf = array.array("i", [0])
        fcntl.ioctl(self.fd, termios.FIONREAD, buf)
        return buf[0]

    def conf(self) -> str:
        spec = self.spec
        if spec.playback:
            pcm = f'{{ type file; slave.pcm {{ type null }}; file "{self.fifo}"; format "raw" }}'
        else:
            pcm = (
                f'{{ type file; slave.pcm {{ type null }}; file "/dev/null"; infile {self.fd};'
                ' format "raw" }'
            )
        if spec.only_rate:
            pcm = (
                f"{{ type plug; slave {{ pcm {pcm}; rate {spec.rate}; channels {spec.channels};"
                ' format S16_LE }; rate_converter "pi_agent_sim_no_such_converter" }'
            )
        side = "playback" if spec.playback else "capture"  # one direction, like real hardware
        return f"pcm.{spec.name} {{ type asym; {side}.pcm {pcm} }}\n"

    def tick(self) -> None:
        """One 20 ms step of the hardware clock."""
        size = self.spec.piece_bytes
        if self.spec.playback:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                self.played += os.read(self.fd, size)
            return
        if not self.current and self.phrases:
            self.current = memoryview(self.phrases.popleft())
        piece = bytes(self.current[:size])
        self.current = self.current[size:]
        piece += bytes(size - len(piece))
        if self.eof:
            return
        if self.pending() + size > self.capacity:
            self.overruns += 1  # nobody read in time: the hardware drops it
            return
        assert self._writer is not None
        self._writer.send(piece)

    @property
    def idle(self) -> bool:
        return not self.current and not self.phrases

    def close(self) -> None:
        if self._reader is None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            return
        for sock in (self._writer, self._reader):
            with contextlib.suppress(OSError):
                sock.close()


class SimulatedSoundCard:
    """A per-process ALSA config with a FIFO mic and a FIFO speaker, paced in real time.

    Use as a context manager: it writes ``asound.conf`` into ``directory`` (a
    temporary one if None), points ``ALSA_CONFIG_PATH`` at it (restored on
    exit) and runs the clock thread until closed, so open streams never stall.
    Make it before the first ``PyAudio()`` of the process that uses it.
    """

    def __init__(
        self,
        directory: str | os.PathLike | None = None,
        *,
        mic_rate: int = 16000,
        speaker_rate: int = 24000,
        extra: tuple[SimPcm, ...] | list[SimPcm] = (),
        mic: str = "mic",
        speaker: str = "spk",
    ):
        self._own_dir = directory is None
        self.directory = Path(directory) if directory is not None else None
        self.mic = mic
        self.speaker = speaker
        self._specs = [
            SimPcm(mic, rate=mic_rate),
            SimPcm(speaker, playback=True, rate=speaker_rate),
            *extra,
        ]
        self._devices: dict[str, _Device] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._saved_env: str | None = None
        self.conf_path: Path | None = None

    # -- life cycle
    def __enter__(self) -> SimulatedSoundCard:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("already started")
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="pi-agent-alsa-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.conf_path = self.directory / "asound.conf"
        for spec in self._specs:
            self._devices[spec.name] = _Device(spec, self.directory)
        self._write_conf()
        self._saved_env = os.environ.get("ALSA_CONFIG_PATH")
        os.environ["ALSA_CONFIG_PATH"] = str(self.conf_path)
        self._thread = threading.Thread(target=self._clock, name="pi-agent-sim-alsa", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the clock and restore ``ALSA_CONFIG_PATH``; close streams first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._saved_env is None:
            os.environ.pop("ALSA_CONFIG_PATH", None)
        else:
            os.environ["ALSA_CONFIG_PATH"] = self._saved_env
        for dev in self._devices.values():
            dev.close()
        if self._own_dir and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def pass_fds(self) -> tuple[int, ...]:
        """File descriptors a child process needs to use this card's capture devices.

        The config names each capture input by descriptor number: start a
        ``pi-agent run`` under test with ``subprocess.Popen(..., pass_fds=card.pass_fds)``.
        """
        with self._cond:
            return tuple(d.fd for d in self._devices.values() if not d.spec.playback)

    # -- devices
    def add_pcm(self, spec: SimPcm) -> None:
        """Hot-plug a device (PortAudio sees it after it is initialised again)."""
        with self._cond:
            if spec.name in self._devices:
                raise ValueError(f"{spec.name} already exists")
            assert self.directory is not None, "start() first"
            self._devices[spec.name] = _Device(spec, self.directory)
            self._write_conf()

    def remove_pcm(self, name: str) -> None:
        """Take a device out of the config (streams already open keep running)."""
        with self._cond:
            self._devices.pop(name).close()
            self._write_conf()

    def _write_conf(self) -> None:
        assert self.conf_path is not None
        capture = self.mic if self.mic in self._devices else None
        playback = self.speaker if self.speaker in self._devices else None
        text = "# written by pi_agent.sim.alsa.SimulatedSoundCard\n"
        if capture and playback:
            text += (
                f'pcm.!default {{ type asym; playback.pcm "{playback}";'
                f' capture.pcm "{capture}" }}\n'
            )
        text += "".join(dev.conf() for dev in self._devices.values())
        tmp = self.conf_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.conf_path)  # a new inode: alsa-lib notices and reloads

    # -- capture side
    def speak(self, pcm: bytes, device: str | None = None) -> None:
        """Queue audio (s16le at the device's rate and channels) to be 'heard' next."""
        dev = self._device(device or self.mic, playback=False)
        frame = dev.spec.channels * 2
        if len(pcm) % frame:
            raise ValueError(f"{dev.spec.name}: {len(pcm)} bytes is not whole {frame}-byte frames")
        with self._cond:
            dev.phrases.append(bytes(pcm))

    def wait_spoken(self, timeout: float, device: str | None = None) -> bool:
        """Wait until every queued phrase has entered the device; False on timeout."""
        dev = self._device(device or self.mic, playback=False)
        with self._cond:
            return self._cond.wait_for(lambda: dev.idle, timeout)

    def set_eof(self, device: str | None = None) -> None:
        """Make a capture device behave like a file at its end: every read returns at once.

        PortAudio then hands out stale audio far faster than real time (a mic
        whose driver went wrong). Takes effect for open streams too.
        """
        dev = self._device(device or self.mic, playback=False)
        with self._cond:
            dev.set_eof(True)

    def clear_eof(self, device: str | None = None) -> None:
        """Undo :meth:`set_eof`: a working, real-time input again (open streams included)."""
        dev = self._device(device or self.mic, playback=False)
        with self._cond:
            dev.set_eof(False)

    def overruns(self, device: str | None = None) -> int:
        """Capture pieces dropped because the reader was too late."""
        return self._device(device or self.mic, playback=False).overruns

    # -- playback side
    def played_bytes(self, device: str | None = None) -> bytes:
        """Everything the simulated speaker has played so far."""
        dev = self._device(device or self.speaker, playback=True)
        with self._cond:
            return bytes(dev.played)

    def written_bytes(self, device: str | None = None) -> int:
        """Bytes that have entered the device: played plus still in its buffer."""
        dev = self._device(device or self.speaker, playback=True)
        with self._cond:
            return len(dev.played) + dev.pending()

    def wait_played(self, nbytes: int, timeout: float, device: str | None = None) -> bool:
        """Wait until at least ``nbytes`` have been played; False on timeout."""
        dev = self._device(device or self.speaker, playback=True)
        with self._cond:
            return self._cond.wait_for(lambda: len(dev.played) >= nbytes, timeout)

    def _device(self, name: str, playback: bool) -> _Device:
        dev = self._devices.get(name)
        if dev is None or dev.spec.playback != playback:
            kind = "playback" if playback else "capture"
            raise KeyError(f"no simulated {kind} device {name!r}")
        return dev

    # -- the clock
    def _clock(self) -> None:
        period = PIECE_MS / 1000
        start = time.monotonic()
        ticks = 0
        while not self._stop.is_set():
            ticks += 1
            delay = start + ticks * period - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            with self._cond:
                for dev in list(self._devices.values()):
                    try:
                        dev.tick()
                    except OSError:
                        continue  # closed under us by remove_pcm
                self._cond.notify_all()
