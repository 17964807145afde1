"""``pi-agent check``: a self-test a user runs after installing, or when something is wrong.

Each check prints one line, PASS, WARN or FAIL, and a failure says how to fix
it. The exit code is non-zero when anything failed. Nothing here prints the
API key.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import ssl
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit

from . import protocol
from .config import DEFAULT_CONFIG_PATH, Config, key_file_problem, load_config, resolve_api_key
from .errors import ConfigError, PiAgentError, SessionError
from .session import Credentials, LiveSession, fetch_token

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"


@dataclass
class Result:
    status: str
    name: str
    detail: str
    fix: str = ""
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        text = f"{self.status:4}  {self.name}: {self.detail}"
        if self.fix and self.status != PASS:
            text += f"\n      fix: {self.fix}"
        return text


class _Capture(logging.Handler):
    """Holds library warnings and log records raised during one check, to print inside it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.notes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.notes.append(f"{record.levelname.lower()}: {record.getMessage()}")
        except Exception:  # a broken record must not break the self-test
            self.notes.append(f"{record.levelname.lower()}: {record.msg!r}")

    def take(self, caught: list[warnings.WarningMessage]) -> list[str]:
        notes = [f"{w.category.__name__}: {w.message}" for w in caught] + self.notes
        caught.clear()
        self.notes = []
        return list(dict.fromkeys(notes))  # each once, in order


@contextlib.contextmanager
def _captured() -> Iterator[tuple[_Capture, list[warnings.WarningMessage]]]:
    """Route warnings and root log records into a capture while the checks run."""
    root = logging.getLogger()
    handler = _Capture()
    saved = root.handlers[:]
    root.handlers[:] = [handler]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield handler, caught
    finally:
        root.handlers[:] = saved


class Checker:
    """Runs the checks in order; later checks skip what an earlier failure made pointless."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: str | os.PathLike | None = None,
        environ: dict[str, str] | None = None,
        pin_factory: Any = None,
        sslopt: dict[str, Any] | None = None,
        out: TextIO | None = None,
        record_seconds: float = 1.0,
    ):
        self.config = config
        self.config_path = config_path
        self.environ = environ
        self.pin_factory = pin_factory
        self.sslopt = dict(sslopt or {})
        if config.live.ca_file:
            self.sslopt.setdefault("ca_certs", config.live.ca_file)
        self.out = out or sys.stdout
        self.record_seconds = record_seconds
        self.results: list[Result] = []
        self.credentials: Credentials | None = None

    def report(self, status: str, name: str, detail: str, fix: str = "") -> Result:
        result = Result(status, name, detail, fix)
        self.results.append(result)
        print(result.line(), file=self.out, flush=True)
        return result

    def run(self, *, skip_network: bool = False) -> int:
        """Every check in order, each line as it finishes; nothing is printed after the summary.

        Library warnings and log records raised during a check are shown under
        that check (as ``note:`` lines), never after the summary.
        """
        if self.config_path is not None:
            self.report(PASS, "config", f"{self.config_path} is valid")
        else:
            self.report(
                WARN,
                "config",
                "no config file: using built-in defaults",
                f"write {DEFAULT_CONFIG_PATH} (see config/pi-agent.yaml) or pass --config FILE",
            )
        steps: list[Callable[[], None]] = [self.check_key, self.check_audio, self.check_gpio]
        steps.append(self.check_camera)
        if not skip_network:
            steps += [self.check_network, self.check_setup, self.check_mqtt]
        with _captured() as (capture, caught):
            for step in steps:
                first = len(self.results)
                try:
                    step()
                except Exception as exc:  # a check must report, never crash the self-test
                    name = step.__name__.removeprefix("check_")
                    self.report(FAIL, name, f"unexpected error: {exc}")
                self._notes(self.results[first:], capture.take(caught))
        return self.summary()

    def _notes(self, results: list[Result], notes: list[str]) -> None:
        """Print a check's captured notes under it, leaving out what its lines already say."""
        for note in notes:
            if any(r.detail and r.detail in note for r in results):
                continue
            if results:
                results[-1].notes.append(note)
            print(f"      note: {note}", file=self.out, flush=True)

    def summary(self) -> int:
        failed = [r for r in self.results if r.status == FAIL]
        warned = [r for r in self.results if r.status == WARN]
        summary = f"{len(self.results) - len(failed) - len(warned)} passed"
        summary += f", {len(warned)} warnings, {len(failed)} failed"
        print(summary, file=self.out)
        return 1 if failed else 0

    # ------------------------------------------------------------ key

    def check_key(self) -> None:
        live = self.config.live
        if live.token_command:
            try:
                self.credentials = Credentials(token=fetch_token(live.token_command))
            except SessionError as exc:
                self.report(FAIL, "api key", str(exc), "fix live.token_command")
                return
            self.report(PASS, "api key", "ephemeral token fetched with live.token_command")
            return
        try:
            key = resolve_api_key(live, self.environ)
        except ConfigError as exc:
            if live.api_key_file:  # the file is the only place looked at then
                fix = (
                    f"put the key on the first line of {live.api_key_file} (UTF-8, readable "
                    "by the pi-agent user, chmod 600), or remove live.api_key_file"
                )
            else:
                fix = (
                    f"export {live.api_key_env}=... or run scripts/install.sh to store it as a "
                    "systemd credential"
                )
            self.report(FAIL, "api key", str(exc), fix)
            return
        self.credentials = Credentials(api_key=key)
        found = f"found ({len(key)} characters, not shown)"
        problem = key_file_problem(live)
        if problem is not None:
            self.report(FAIL, "api key", f"{found}, but {problem[0]}", problem[1])
            return
        self.report(PASS, "api key", found)

    # ------------------------------------------------------------ audio

    def check_audio(self) -> None:
        settings = self.config.audio
        if settings.backend == "none":
            self.report(WARN, "audio", "audio.backend is none: text only")
            return
        from .audio import measure_input, play_test_tone

        try:
            level = measure_input(settings, self.record_seconds)
        except PiAgentError as exc:
            self.report(
                FAIL,
                "microphone",
                str(exc),
                "see `pi-agent devices` and set audio.input_device to a listed name",
            )
        else:
            detail = f"{level.device} at {level.rate} Hz: level {level.dbfs:.0f} dBFS"
            if level.dbfs < -70:
                self.report(WARN, "microphone", detail + " (silent?)", "check the mic and its gain")
            else:
                self.report(PASS, "microphone", detail)
        try:
            played = play_test_tone(settings)
        except PiAgentError as exc:
            self.report(
                FAIL,
                "speaker",
                str(exc),
                "see `pi-agent devices` and set audio.output_device to a listed name",
            )
        else:
            self.report(PASS, "speaker", f"played a chime on {played}")

    # ------------------------------------------------------------ gpio

    def check_gpio(self) -> None:
        if not self.config.devices:
            self.report(WARN, "gpio", "no devices configured")
            return
        from .devices import Devices, make_pin_factory
        from .tools import ToolBox

        try:
            factory = self.pin_factory
            if factory is None:
                factory = make_pin_factory(self.config.gpio)
            devices = Devices(self.config, pin_factory=factory)
        except PiAgentError as exc:  # DeviceError says what went wrong and its own fix
            fix = getattr(exc, "fix", "") or "check devices: in the config"
            self.report(FAIL, "gpio", getattr(exc, "problem", str(exc)), fix)
            return
        except Exception as exc:
            self.report(
                FAIL,
                "gpio",
                f"{type(exc).__name__}: {exc}",
                "is the user in the gpio group? is python3-lgpio installed?",
            )
            return
        try:
            ToolBox(self.config.tools, devices)  # what run builds too
        except ConfigError as exc:
            self.report(FAIL, "gpio", "; ".join(exc.problems), "fix tools: in the config")
            return
        finally:
            devices.close()
        tools = f", {len(self.config.tools)} tools" if self.config.tools else ""
        self.report(PASS, "gpio", f"{len(self.config.devices)} devices ready{tools}")

    # ------------------------------------------------------------ camera

    def check_camera(self) -> None:
        settings = self.config.camera
        from .camera import open_camera

        try:
            backend = open_camera(settings)
        except PiAgentError as exc:
            text = str(exc)
            fix = "" if _names_its_fix(text) else "set camera.backend: none"
            self.report(FAIL, "camera", text, fix)
            return
        if backend is None:
            self.report(PASS, "camera", "off")
            return
        try:
            backend.start()
            jpeg = backend.capture_jpeg(settings.capture_timeout_s)
            w, h = backend.size
            self.report(PASS, "camera", f"{settings.backend}: {w}x{h} frame, {len(jpeg)} bytes")
        except Exception as exc:
            text = str(exc)
            if _names_its_fix(text):  # a library that is there but fails to import
                self.report(FAIL, "camera", text, "")
            else:
                self.report(FAIL, "camera", f"capture failed: {text}", "check the ribbon cable")
        finally:
            backend.close()

    # ------------------------------------------------------------ network

    def check_network(self) -> None:
        url = urlsplit(self.config.live.endpoint)
        host = url.hostname or ""
        port = url.port or (443 if url.scheme == "wss" else 80)
        try:
            addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            self.report(FAIL, "dns", f"cannot resolve {host}: {exc}", "check Wi-Fi and DNS")
            return
        self.report(PASS, "dns", f"{host} -> {addresses[0][4][0]}")
        try:
            with socket.create_connection((host, port), timeout=10) as raw:
                if url.scheme == "wss":
                    context = ssl.create_default_context(cafile=self.sslopt.get("ca_certs"))
                    with context.wrap_socket(raw, server_hostname=host) as tls:
                        version = tls.version()
                    self.report(PASS, "tls", f"{host}:{port} {version}, certificate valid")
                else:
                    self.report(WARN, "tls", f"{url.scheme}:// is not encrypted (test server?)")
        except ssl.SSLCertVerificationError as exc:
            self.report(
                FAIL,
                "tls",
                f"certificate check failed: {exc.verify_message}",
                "is the clock right? (timedatectl)",
            )
        except OSError as exc:
            self.report(FAIL, "tls", f"cannot connect to {host}:{port}: {exc}", "check network")

    def check_setup(self) -> None:
        if self.credentials is None:
            self.report(FAIL, "live setup", "skipped: no API key")
            return
        live = self.config.live
        options = protocol.SetupOptions(model=live.model, voice=live.voice)
        started = time.monotonic()
        session = LiveSession(
            protocol.live_url(
                live.endpoint, api_version=live.api_version, ephemeral=self.credentials.ephemeral
            ),
            self.credentials,
            protocol.build_setup(options),
            on_event=lambda _s, _e: None,
            sslopt=self.sslopt,
            setup_timeout=live.setup_timeout_s,
        )
        try:
            session.open()
        except SessionError as exc:
            self.report(FAIL, "live setup", str(exc), _setup_fix(exc))
            return
        took = (time.monotonic() - started) * 1000
        session.close()
        self.report(PASS, "live setup", f"setupComplete from {live.model} in {took:.0f} ms")

    # ------------------------------------------------------------ mqtt

    def check_mqtt(self) -> None:
        """Home Assistant's broker (only with ``mqtt.enabled``): can this agent log in?"""
        settings = self.config.mqtt
        if not settings.enabled:
            return
        from . import mqtt

        if mqtt.paho is None:
            fix = "pip install 'pi-agent[mqtt]', or set mqtt.enabled: false"
            self.report(FAIL, "mqtt", "mqtt.enabled is true but paho-mqtt is not installed", fix)
            return
        try:
            password = mqtt.mqtt_password(settings, self.environ)
        except ConfigError as exc:
            fix = "put the broker password on the first line of that file (docs/home-assistant.md)"
            self.report(FAIL, "mqtt", "; ".join(exc.problems), fix)
            return
        ok, line = mqtt.check_broker(settings, password, timeout=MQTT_TIMEOUT_S)
        if not ok:
            self.report(FAIL, "mqtt", *_split_fix(line))
            return
        if password is not None and not settings.tls.enabled and not _local(settings.host):
            self.report(
                WARN,
                "mqtt",
                f"{line}; the password crosses the network unencrypted",
                "set mqtt.tls.enabled: true and mqtt.port: 8883 (docs/home-assistant.md, TLS)",
            )
            return
        self.report(PASS, "mqtt", line)


MQTT_TIMEOUT_S = 5.0
_BROKER_LOG = (
    "read the broker's log (the Mosquitto add-on: Settings > Add-ons > Mosquitto broker > Log)"
)


def _split_fix(line: str) -> tuple[str, str]:
    """``check_broker``'s one line ("what; fix") as (detail, fix); every FAIL gets a fix."""
    detail, sep, fix = line.rpartition("; ")
    if sep:
        return detail, fix
    if line.startswith("mqtt."):  # a config key that cannot be used, named in the line
        return line, "correct that setting in the config"
    return line, _BROKER_LOG


def _local(host: str) -> bool:
    """Loopback: a broker on this Pi, where a plain connection never leaves the machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _setup_fix(exc: SessionError) -> str:
    if exc.kind == "auth":
        return "the API key was refused: create a new key and store it again"
    if exc.code == 1008:
        return "check live.model (e.g. gemini-3.8-live)"
    if exc.code == 1007:
        return "the server rejected the setup: check live.* options"
    return "check the network; the agent retries by itself"


def run_check(
    config: Config | None = None,
    *,
    config_path: str | os.PathLike | None = None,
    skip_network: bool = False,
    out: TextIO | None = None,
    **kwargs: Any,
) -> int:
    """Run every check, print the report, return the exit code.

    Without ``config`` the file at ``config_path`` is loaded with the same
    loader ``run`` uses (None = built-in defaults); a config that does not load
    is the one FAIL, with every problem listed.
    """
    out = out or sys.stdout
    if config is None:
        try:
            config = load_config(config_path)
        except ConfigError as exc:
            where = config_path if config_path is not None else "built-in defaults"
            print(f"{FAIL}  config: {where} is not valid", file=out)
            for problem in exc.problems:
                print(f"      {problem}", file=out)
            print("      fix: correct the lines above, then run pi-agent check again", file=out)
            print("0 passed, 0 warnings, 1 failed", file=out)
            return 1
    checker = Checker(config, config_path=config_path, out=out, **kwargs)
    return checker.run(skip_network=skip_network)


def _names_its_fix(text: str) -> bool:
    """The camera's missing-library messages (``camera_backends.MISSING_*``) end with their fix."""
    return "camera.backend: none" in text
