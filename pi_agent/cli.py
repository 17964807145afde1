"""The ``pi-agent`` command: run, demo, ctl, devices, check, mqtt-clear.

``main(args=None) -> int`` so tests call it directly. Errors are one line
(``DEBUG=1`` shows the traceback); a config mistake exits with code 2 and one
line per problem.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .config import DEFAULT_CONFIG_PATH, Config, ControlSettings, load_config, resolve_api_key
from .errors import ConfigError, PiAgentError
from .logs import add_secret, setup_logging

log = logging.getLogger("pi_agent")

EXIT_OK, EXIT_ERROR, EXIT_CONFIG = 0, 1, 2
CTL_COMMANDS = "press | release | talk | say TEXT | mute | unmute | volume V | status | watch"


def _config_path(path: str | None) -> str | None:
    if path:
        return path
    env = os.environ.get("PI_AGENT_CONFIG")
    if env:
        return env
    return DEFAULT_CONFIG_PATH if os.path.exists(DEFAULT_CONFIG_PATH) else None


def _load(args: argparse.Namespace) -> Config:
    return load_config(_config_path(getattr(args, "config", None)))


def cmd_run(args: argparse.Namespace) -> int:
    """Run the agent until SIGINT/SIGTERM/SIGHUP (SIGHUP reloads the config)."""
    from .parts import build_agent

    path = _config_path(getattr(args, "config", None))
    config = load_config(path)
    setup_logging(args.log_level or config.agent.log_level)
    if path is None:
        log.warning(
            "no config file (looked at --config, $PI_AGENT_CONFIG and %s): running on the "
            "built-in defaults; see config/pi-agent.yaml",
            DEFAULT_CONFIG_PATH,
        )
    from .config import key_file_warning

    warning = key_file_warning(config.live)
    if warning:
        log.warning("%s", warning)
    api_key = None if config.live.token_command else resolve_api_key(config.live)
    add_secret(api_key)
    log.info("%s", startup_summary(config, path))
    agent = build_agent(config, api_key=api_key)
    if path is not None:
        agent.load_config = lambda: load_config(path)
    return run_until_signal(agent)


def startup_summary(config: Config, path: str | None) -> str:
    """One line for the journal: what this agent is and what it will use."""
    devices = ", ".join(f"{n} ({d.kind})" for n, d in config.devices.items()) or "none"
    tools = ", ".join(t.name for t in config.tools) or "none"
    audio = (
        "none"
        if config.audio.backend == "none"
        else f"in {config.audio.input_device!r}, out {config.audio.output_device!r}"
    )
    camera = "none" if config.camera.backend == "none" else f"{config.camera.backend}"
    mode = "hands-free" if config.live.hands_free else f"push-to-talk ({config.ptt.mode})"
    return (
        f"pi-agent {__version__} starting: config {path or 'built-in defaults'}; "
        f"model {config.live.model}; {mode}; audio {audio}; camera {camera}; "
        f"devices {devices}; tools {tools}"
    )


def run_until_signal(agent: Any) -> int:
    """Run ``agent.run()`` on this thread; signals only put events (never block)."""
    from .events import Reload, Signals

    def stop(name: str) -> None:
        agent.stop(name)

    reload = (lambda: agent.inbox.put(Reload())) if hasattr(agent, "inbox") else None
    signals = Signals(stop, reload)
    signals.install()
    try:
        return agent.run()
    finally:
        signals.restore()


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``demo`` subcommand's options (here, so ``pi-agent run`` never imports the demo)."""
    parser.add_argument("--script", action="store_true", help="non-interactive: scripted turns")
    parser.add_argument("--live", action="store_true", help="talk to the real Gemini Live API")
    parser.add_argument(
        "--mic",
        action="store_true",
        help="use this machine's default microphone and speaker instead of the simulated card",
    )
    parser.add_argument(
        "--turns",
        type=int,
        help="turns in --script mode (default: the kitchen script, or each tool of --config once)",
    )
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--log-file", help="write the agent's log here instead of the screen")


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


def cmd_ctl(args: argparse.Namespace) -> int:
    """Send one command to a running agent over its control socket (see ctl.py)."""
    from .ctl import run_ctl

    if args.socket:
        path = args.socket
    elif args.config or _config_path(None):
        path = _load(args).control.socket
    else:
        path = ControlSettings().socket
    return run_ctl(
        path,
        args.command,
        args.words,
        timeout=args.timeout,
        wait=not args.no_wait,
        as_json=args.json,
    )


def cmd_devices(args: argparse.Namespace) -> int:
    """List audio devices and mark the ones the config would pick."""
    from .audio import list_devices

    config = _load(args)
    print(list_devices(config.audio))
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from .check import run_check

    return run_check(config_path=_config_path(args.config), skip_network=args.offline)


def cmd_mqtt_clear(args: argparse.Namespace) -> int:
    """Remove this agent's device from Home Assistant (``uninstall.sh --purge`` runs it)."""
    from .mqtt import clear_discovery, mqtt_password
    from .mqtt_discovery import device_id

    settings = _load(args).mqtt
    if not settings.enabled:
        print("pi-agent: mqtt is not enabled in the config; nothing to remove")
        return EXIT_OK
    try:
        cleared = clear_discovery(settings, mqtt_password(settings), timeout=args.timeout)
    except ConnectionError as exc:
        print(f"pi-agent: mqtt-clear: {exc}", file=sys.stderr)
        return EXIT_ERROR
    name = device_id(settings)
    print(f"removed {name} from Home Assistant ({cleared} retained messages cleared)")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pi-agent", description="Gemini Live push-to-talk voice agent for the Raspberry Pi."
    )
    parser.add_argument("--version", action="version", version=f"pi-agent {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def add(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        p.add_argument(
            "--config",
            "-c",
            help=f"YAML config (default: $PI_AGENT_CONFIG or {DEFAULT_CONFIG_PATH} if present)",
        )
        return p

    p = add("run", cmd_run, "Run the agent (what the systemd service does).")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))

    p = add(
        "demo",
        cmd_demo,
        "Try a config without a Pi: mock pins, a simulated sound card, a fake Live server.",
    )
    add_demo_arguments(p)

    p = add("ctl", cmd_ctl, "Control a running agent over its control socket.")
    p.epilog = (
        "examples: pi-agent ctl say turn on the lamp | pi-agent ctl volume 60% | "
        "pi-agent ctl status --json | pi-agent ctl watch"
    )
    p.add_argument("--socket", help="control socket path (default: from the config)")
    p.add_argument(
        "--timeout",
        type=float,
        help="seconds to wait for the answer (default: 60 for say, 5 otherwise)",
    )
    p.add_argument(
        "--no-wait", action="store_true", help="say: return at once, without waiting for the answer"
    )
    p.add_argument("--json", action="store_true", help="print the reply as JSON")
    p.add_argument("command", help=CTL_COMMANDS)
    p.add_argument("words", nargs="*", help="the text of say, the value of volume (0.6, 60, 60%%)")

    add("devices", cmd_devices, "List audio devices and what the config picks.")

    p = add(
        "mqtt-clear",
        cmd_mqtt_clear,
        "Remove this agent's device from Home Assistant (empties its retained MQTT topics).",
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the broker")

    p = add("check", cmd_check, "Self-test: config, key, audio, GPIO, camera, network, setup.")
    p.add_argument("--offline", action="store_true", help="skip the network checks")
    return parser


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the ``pi-agent`` command."""
    parser = build_parser()
    ns, extra = parser.parse_known_args(args)
    if extra and ns.cmd == "ctl" and not any(word.startswith("-") for word in extra):
        ns.words = [*ns.words, *extra]  # words after an option: ctl say --no-wait hello
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not logging.getLogger().handlers:
        setup_logging(getattr(ns, "log_level", None) or "INFO")
    try:
        return ns.func(ns)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"pi-agent: config: {line}", file=sys.stderr)
        return EXIT_CONFIG
    except PiAgentError as exc:
        if os.environ.get("DEBUG"):
            raise
        print(f"pi-agent: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK
