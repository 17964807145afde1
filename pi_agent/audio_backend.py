"""The PortAudio seam: one process-wide PyAudio, device lookup, quiet native libraries.

Why a hub: PortAudio enumerates devices once, in ``Pa_Initialize``, and that
initialisation is reference-counted for the whole process. A second
``PyAudio()`` while another is alive sees the *old* device list, so a USB mic
plugged in after start is only found once every stream is closed and PortAudio
is initialised again. :class:`PortAudioHub` owns that: workers open streams
through it, a worker that needs a fresh device list calls :meth:`refresh`, and
the others close their streams at their next loop turn (the speaker only when
idle) and reopen afterwards.

``pyaudio`` is imported lazily, so ``audio.backend: none`` works without it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from .config import AudioSettings
from .errors import AudioDeviceError
from .threads import Worker, call_logged

log = logging.getLogger("pi_agent.audio")

#: Rates tried, in order, when the mic cannot do 16 kHz itself.
INPUT_RATES = (16000, 48000, 44100, 32000, 22050)
#: Rates tried, in order, for the speaker (24 kHz is what Gemini sends).
OUTPUT_RATES = (24000, 48000, 44100, 16000, 32000, 22050)
_LISTED_RATES = (16000, 22050, 24000, 32000, 44100, 48000)
#: ``on_state(state, detail)``: 'starting', 'ok', 'missing', 'error' or 'fault', and why.
OnState = Callable[[str, "str | None"], None]
_PA_OUTPUT_UNDERFLOWED = -9980


class DeviceNotFound(AudioDeviceError):
    """No device matches the configured name (unplugged, or a typo)."""


class StaleDevice(AudioDeviceError):
    """PortAudio was re-initialised since the device was looked up: its index may name
    another device now. Look it up again."""


class DeviceFault(AudioDeviceError):
    """The device opened but its audio is wrong (e.g. far faster than real time)."""


# --------------------------------------------------------------------------- noise

_ERROR_HANDLER = ctypes.CFUNCTYPE(
    None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p
)
_JACK_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_char_p)
_handlers: list[Any] = []  # module-level references: a collected callback would crash libasound


def silence_native_noise() -> None:
    """Stop alsa-lib and libjack printing dozens of probe lines to stderr (best-effort).

    Real failures still surface: PortAudio returns them as errors, which the
    workers log. Idempotent; call before the first ``PyAudio()``.
    """
    if _handlers:
        return
    alsa_cb = _ERROR_HANDLER(lambda *args: None)
    jack_cb = _JACK_HANDLER(lambda msg: None)
    _handlers.extend((alsa_cb, jack_cb))
    with contextlib.suppress(OSError, AttributeError, TypeError):
        path = ctypes.util.find_library("asound") or "libasound.so.2"
        ctypes.CDLL(path).snd_lib_error_set_handler(alsa_cb)
    with contextlib.suppress(OSError, AttributeError, TypeError):
        jack = ctypes.CDLL(ctypes.util.find_library("jack") or "libjack.so.0")
        jack.jack_set_error_function(jack_cb)
        jack.jack_set_info_function(jack_cb)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Hide PortAudio's own "Expression ... failed" lines (fd 2) for a moment.

    Process-wide, so only for single-threaded CLI work such as :func:`list_devices`;
    the workers never use it (another thread's log line could vanish).
    """
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class DeviceInfo:
    """What PortAudio says about one device; ``note`` explains an ambiguous match."""

    index: int
    name: str
    max_input_channels: int
    max_output_channels: int
    default_rate: float
    note: str = ""

    def channels(self, input: bool) -> int:
        return self.max_input_channels if input else self.max_output_channels


def device_infos(pa: Any) -> list[DeviceInfo]:
    """Every device of a ``PyAudio`` (or anything with its two lookup methods)."""
    out = []
    for index in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(index)
        out.append(
            DeviceInfo(
                index=index,
                name=str(info["name"]),
                max_input_channels=int(info["maxInputChannels"]),
                max_output_channels=int(info["maxOutputChannels"]),
                default_rate=float(info["defaultSampleRate"]),
            )
        )
    return out


def find_device(pa: Any, name: str, input: bool) -> DeviceInfo:
    """Pick a device by ALSA name: exact first, then case-insensitive substring.

    Never by index: indexes move when a USB device comes or goes. An ambiguous
    substring picks the first match and says so in ``DeviceInfo.note``.
    Raises :class:`DeviceNotFound` naming what does exist.
    """
    kind = "input" if input else "output"
    devices = [d for d in device_infos(pa) if d.channels(input) > 0]
    for dev in devices:
        if dev.name == name:
            return dev
    wanted = name.lower()
    matches = [d for d in devices if wanted in d.name.lower()]
    if not matches:
        raise DeviceNotFound(f"{kind} device {name!r} not found; {_existing(devices, kind)}")
    if len(matches) > 1:
        names = ", ".join(repr(d.name) for d in matches)
        note = f"{name!r} matches {len(matches)} {kind} devices ({names}); using the first"
        return replace(matches[0], note=note)
    return matches[0]


def _existing(devices: list[DeviceInfo], kind: str) -> str:
    if not devices:
        return (
            f"PortAudio sees no {kind} devices at all"
            " (is the card enabled? is the user in the 'audio' group?)"
        )
    return f"{kind}s are: " + ", ".join(repr(d.name) for d in devices)


# --------------------------------------------------------------------------- streams


class Stream:
    """One blocking PyAudio stream, owned by one worker thread.

    Only ``close()`` goes through the hub lock; read/write/abort are called by the
    owning thread alone (PortAudio streams are not thread-safe).
    """

    def __init__(self, hub: PortAudioHub, pa_stream: Any, *, rate: int, channels: int, frames: int):
        self._hub = hub
        self._s = pa_stream
        self.rate = rate
        self.channels = channels
        self.frames = frames
        self.closed = False

    @property
    def latency(self) -> float:
        """Seconds of audio the device buffers (PortAudio's own estimate)."""
        with contextlib.suppress(Exception):
            return float(self._s.get_output_latency() or self._s.get_input_latency())
        return 0.0

    @property
    def is_running(self) -> bool:
        running = getattr(self._s, "_is_running", None)  # PyAudio's own flag: no C call
        return (not self._s.is_stopped()) if running is None else bool(running)

    def read(self, frames: int) -> bytes:
        """Blocking read; an overflow is not an exception (the mic counts lost frames)."""
        return self._s.read(frames, exception_on_overflow=False)

    def write(self, pcm: bytes) -> bool:
        """Blocking write; returns True if the device ran dry before it (an underrun)."""
        try:
            self._s.write(pcm, exception_on_underflow=True)
        except OSError as exc:
            if exc.errno == _PA_OUTPUT_UNDERFLOWED:
                return True  # PortAudio wrote the data, it only reports the earlier gap
            raise
        return False

    def start(self) -> None:
        if not self.is_running:
            self._s.start_stream()

    def drain(self) -> None:
        """Stop after the device has played everything written (Pa_StopStream)."""
        self._s.stop_stream()

    def abort(self) -> None:
        """Stop *now*, dropping what the device still buffers (Pa_AbortStream).

        PyAudio has no public abort, so this uses its C function and keeps its
        ``_is_running`` flag in step; without them it falls back to a drain.
        """
        if not self.is_running:
            return
        try:
            from pyaudio import pa as _pa

            _pa.abort_stream(self._s._stream)
            self._s._is_running = False
        except (ImportError, AttributeError):
            self._s.stop_stream()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._hub._close(self)


class PortAudioHub:
    """The process's one PortAudio instance, shared by the mic and the speaker."""

    #: How long :meth:`refresh` waits for the other workers to close their streams.
    refresh_timeout_s = 2.0

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._pa: Any = None
        self._users = 0
        self._streams: set[Stream] = set()
        self._refreshing = False
        self._wakers: list[Callable[[], None]] = []
        self.generation = 0

    # -- life cycle
    def acquire(self) -> None:
        """Count a user; PortAudio is initialised lazily and terminated with the last user."""
        with self._cond:
            self._users += 1

    def release(self) -> None:
        with self._cond:
            self._users = max(0, self._users - 1)
            if self._users == 0 and not self._streams:
                self._terminate()

    def _ensure(self) -> Any:
        if self._pa is None:
            silence_native_noise()
            try:
                import pyaudio
            except ImportError as exc:
                raise AudioDeviceError(
                    f"PyAudio is not importable ({exc}); install it (it needs portaudio19-dev)"
                    " or set audio.backend: none"
                ) from None
            self._pa = pyaudio.PyAudio()
        return self._pa

    def _terminate(self) -> None:
        if self._pa is not None:
            pa, self._pa = self._pa, None
            with contextlib.suppress(Exception):
                pa.terminate()

    # -- re-enumeration
    def add_waker(self, wake: Callable[[], None]) -> None:
        """Register a worker's wake-up: a worker asleep until it has work is woken for a refresh."""
        with self._cond:
            self._wakers.append(wake)

    def remove_waker(self, wake: Callable[[], None]) -> None:
        with self._cond, contextlib.suppress(ValueError):
            self._wakers.remove(wake)

    @property
    def reinit_pending(self) -> bool:
        """True while a worker waits for everyone to close their streams."""
        return self._refreshing

    def refresh(self, stopping: threading.Event | None = None) -> bool:
        """Re-initialise PortAudio so devices that appeared since are seen.

        Waits up to ``refresh_timeout_s`` for every open stream to be closed (the
        other workers notice :attr:`reinit_pending`); gives up, returning False,
        if one stays open (the speaker mid-reply). Called by a worker that has
        no stream of its own.
        """
        deadline = time.monotonic() + self.refresh_timeout_s
        with self._cond:
            if self._refreshing:  # another worker is at it: wait for its result
                while self._refreshing and time.monotonic() < deadline:
                    self._cond.wait(0.05)
                return not self._refreshing
            self._refreshing = True
            for wake in list(self._wakers):
                call_logged(wake)
            try:
                while self._streams and time.monotonic() < deadline:
                    if stopping is not None and stopping.is_set():
                        return False
                    self._cond.wait(0.02)
                if self._streams:
                    return False
                self._terminate()
                self.generation += 1
                try:
                    self._ensure()
                except Exception:  # the next lookup raises it again, inside the retry loop
                    log.debug("re-initialising PortAudio failed", exc_info=True)
                    return False
                return True
            finally:
                self._refreshing = False
                self._cond.notify_all()

    def wait_refreshed(self, stopping: threading.Event, timeout: float | None = None) -> None:
        """Block a worker that closed its stream for a refresh until the refresh is over."""
        deadline = time.monotonic() + (self.refresh_timeout_s + 5 if timeout is None else timeout)
        with self._cond:
            while self._refreshing and not stopping.is_set() and time.monotonic() < deadline:
                self._cond.wait(0.05)

    # -- queries and streams
    def devices(self) -> list[DeviceInfo]:
        with self._cond:
            return device_infos(self._ensure())

    def find(self, name: str, input: bool) -> DeviceInfo:
        with self._cond:
            return find_device(self._ensure(), name, input)

    def supports(self, index: int, rate: int, channels: int, input: bool) -> bool:
        """``PyAudio.is_format_supported`` as a bool (s16le only)."""
        with self._cond:
            pa = self._ensure()
            import pyaudio

            kwargs: dict[str, Any] = {"rate": rate}
            side = "input" if input else "output"
            kwargs[f"{side}_device"] = index
            kwargs[f"{side}_channels"] = channels
            kwargs[f"{side}_format"] = pyaudio.paInt16
            try:
                return bool(pa.is_format_supported(**kwargs))
            except ValueError:
                return False

    def open(
        self,
        index: int,
        *,
        rate: int,
        channels: int,
        frames: int,
        input: bool,
        start: bool,
        generation: int | None = None,
    ) -> Stream:
        """Open a blocking s16le stream; OSError from PortAudio becomes AudioDeviceError.

        With ``generation`` (:attr:`generation` when ``index`` was looked up), raise
        :class:`StaleDevice` if PortAudio has been re-initialised since.
        """
        with self._cond:
            while self._refreshing:  # a stream opened now would stall the re-enumeration
                self._cond.wait(0.05)
            if generation is not None and generation != self.generation:
                raise StaleDevice(f"device #{index} was looked up before a re-enumeration")
            pa = self._ensure()
            import pyaudio

            kwargs: dict[str, Any] = {
                "format": pyaudio.paInt16,
                "channels": channels,
                "rate": rate,
                "frames_per_buffer": frames,
                "start": start,
            }
            if input:
                kwargs.update(input=True, input_device_index=index)
            else:
                kwargs.update(output=True, output_device_index=index)
            try:
                pa_stream = pa.open(**kwargs)
            except (OSError, ValueError) as exc:
                raise AudioDeviceError(
                    f"cannot open device #{index} at {rate} Hz, {channels} ch: {exc}"
                ) from exc
            stream = Stream(self, pa_stream, rate=rate, channels=channels, frames=frames)
            self._streams.add(stream)
            return stream

    def _close(self, stream: Stream) -> None:
        with self._cond:
            try:
                with contextlib.suppress(Exception):
                    stream.abort()
                stream._s.close()
            except Exception:  # a dying device may fail to close
                log.debug("closing a stream failed", exc_info=True)
            finally:
                self._streams.discard(stream)
                if self._users == 0 and not self._streams:
                    self._terminate()
                self._cond.notify_all()


#: The one hub of this process.
HUB = PortAudioHub()


# --------------------------------------------------------------------------- listing


def list_devices(settings: AudioSettings, hub: PortAudioHub | None = None) -> str:
    """A human-readable report of the audio devices and which ones the config picks.

    For ``pi-agent devices``: rates are probed with ``is_format_supported``, and a
    configured name that matches nothing is explained with what does exist.
    """
    hub = hub or HUB
    hub.acquire()
    try:
        with quiet_stderr():
            return _report(hub, settings)
    except Exception as exc:  # a report, not a crash
        return f"cannot list audio devices: {exc}"
    finally:
        hub.release()


def _report(hub: PortAudioHub, settings: AudioSettings) -> str:
    devices = hub.devices()
    lines: list[str] = []
    picks: dict[bool, DeviceInfo | None] = {}
    problems: list[str] = []
    for input, key in ((True, "input_device"), (False, "output_device")):
        wanted = getattr(settings, key)
        try:
            picks[input] = find_device(_Listing(devices), wanted, input)
            if picks[input].note:
                problems.append(f"audio.{key}: {picks[input].note}")
        except DeviceNotFound as exc:
            picks[input] = None
            problems.append(f"audio.{key} {wanted!r} matches nothing. {_hint(exc, wanted)}")
    for input, title in ((True, "Input devices (microphones)"), (False, "Output devices")):
        lines.append(f"{title}:")
        shown = [d for d in devices if d.channels(input) > 0]
        if not shown:
            lines.append("  (none)")
        for dev in shown:
            rates = [r for r in _LISTED_RATES if hub.supports(dev.index, r, 1, input)]
            rate_text = " ".join(str(r) for r in rates) or "none of the usual rates"
            mark = ""
            pick = picks[input]
            if pick is not None and pick.index == dev.index:
                mark = "   <- input" if input else "   <- output"
            lines.append(
                f"  {dev.name!r}: up to {dev.channels(input)} ch, rates {rate_text}"
                f" (default {dev.default_rate:.0f}){mark}"
            )
        lines.append("")
    lines.append(
        f"Config: input_device {settings.input_device!r}, output_device {settings.output_device!r}"
        " (exact ALSA name, else a case-insensitive part of one)."
    )
    lines.extend(problems)
    return "\n".join(lines).rstrip() + "\n"


def _hint(exc: Exception, wanted: str) -> str:
    text = str(exc).split("; ", 1)[-1]
    hint = f"{text[0].upper()}{text[1:]}." if text else ""
    if wanted.startswith(("plughw:", "hw:", "sysdefault:")):
        hint += (
            " PortAudio lists cards as 'Card name: ... (hw:1,0)'; use the part in"
            " parentheses, e.g. 'hw:1,0' (pi-agent resamples itself), or define a named"
            " PCM in /etc/asound.conf."
        )
    return hint


class _Listing:
    """Adapts a list of DeviceInfo to the two methods find_device needs."""

    def __init__(self, devices: list[DeviceInfo]):
        self._devices = devices

    def get_device_count(self) -> int:
        return len(self._devices)

    def get_device_info_by_index(self, index: int) -> dict[str, Any]:
        d = self._devices[index]
        return {
            "name": d.name,
            "maxInputChannels": d.max_input_channels,
            "maxOutputChannels": d.max_output_channels,
            "defaultSampleRate": d.default_rate,
        }


# --------------------------------------------------------------------------- device workers


class DeviceWorker(Worker):
    """Open a device, serve it, and when it fails retry with backoff, logging state changes only."""

    role = "audio"
    #: First retry delay; doubles up to ``audio.retry_max_s``.
    retry_initial_s = 0.25
    #: A stream that served this long was healthy: the next failure retries at the first delay.
    healthy_after_s = 2.0

    def __init__(
        self, settings: AudioSettings, on_state: OnState | None, name: str, hub: PortAudioHub
    ):
        super().__init__(name)
        self.settings = settings
        self._on_state = on_state
        self._hub = hub
        self._state = "starting"
        self._stream: Stream | None = None
        self._retry_now = threading.Event()  # cuts a retry delay short (stop, reopen)
        self._faults = 0
        self.opens = 0  #: times the device was opened
        self.device_name: str | None = None
        self.device_rate: int | None = None

    @property
    def state(self) -> str:
        """'starting', 'ok', 'missing' (not found or vanished), 'error' (found, unusable)
        or 'fault' (opened, but its audio is wrong: see :class:`PaceGuard`)."""
        return self._state

    @property
    def faults(self) -> int:
        """Times the device went into 'fault' (once per episode, however many reopens it takes)."""
        return self._faults

    def _wake(self) -> None:
        """stop(): end a retry delay and wake the serving loop."""
        self._retry_now.set()
        self._nudge()

    def _nudge(self) -> None:
        """Wake the serving loop so it looks at its flags (stop, a PortAudio refresh)."""

    def _set_state(self, state: str, detail: str) -> None:
        if state == self._state:
            return
        self._state = state
        if state == "fault":
            self._faults += 1
        if state == "ok":
            log.info("%s: %s", self.role, detail)
        else:
            log.warning("%s %s: %s", self.role, state, detail)
        if self._on_state is not None:
            call_logged(self._on_state, state, detail)

    def _run(self) -> None:
        self._hub.acquire()
        self._hub.add_waker(self._nudge)
        try:
            self._supervise()
        finally:
            self._hub.remove_waker(self._nudge)
            self._close_stream()
            self._hub.release()

    def _supervise(self) -> None:
        delay = self.retry_initial_s
        refresh = False
        while not self.stopping.is_set():
            if refresh:  # PortAudio only sees a device that appeared after a re-init
                self._hub.refresh(self.stopping)
            try:
                detail = self._open()
            except DeviceNotFound as exc:
                self._set_state("missing", f"{exc}; retrying")
                refresh = True
            except (AudioDeviceError, OSError, ValueError) as exc:
                self._set_state("error", f"{exc}; retrying")
                refresh = True
            else:
                self.opens += 1
                self._opened(detail)
                opened_at = time.monotonic()
                refresh = True
                try:
                    self._serve()
                except DeviceFault as exc:  # it works, but wrongly: reopen, no re-enumeration
                    self._set_state("fault", f"{exc}; reopening")
                    refresh = False
                except OSError as exc:  # a USB device unplugged mid-stream lands here
                    self._set_state("missing", f"{self.device_name!r} stopped working: {exc}")
                except Exception as exc:  # a bug must not silence the device for good
                    if self._state != "error":
                        log.exception("%s failed", self.role)
                    self._set_state("error", f"{exc!r}; retrying")
                else:
                    self._close_stream()
                    if self._hub.reinit_pending:  # yielded so another worker can re-enumerate
                        self._hub.wait_refreshed(self.stopping)
                    refresh = False
                    continue
                finally:
                    self._close_stream()
                    if time.monotonic() - opened_at >= self.healthy_after_s:
                        delay = self.retry_initial_s  # a failure after a good run starts over
            self._retry_now.wait(delay)  # stop() cuts it short, and reopen() after a loss
            self._retry_now.clear()
            if self.stopping.is_set():
                break
            delay = min(delay * 2, self.settings.retry_max_s)

    def _opened(self, detail: str) -> None:
        """The device is open (thread side); say so."""
        self._set_state("ok", detail)

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def _open(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _serve(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
