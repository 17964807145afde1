"""install.sh, uninstall.sh and check-unit, run for real (dry runs where they change things)."""

from __future__ import annotations

import functools
import grp
import os
import pty
import pwd
import re
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
INSTALL = SCRIPTS / "install.sh"
UNINSTALL = SCRIPTS / "uninstall.sh"
CHECK_UNIT = SCRIPTS / "check-unit"
UNIT = ROOT / "systemd" / "pi-agent.service"
LIB = SCRIPTS / "install-lib.sh"
# -x checks install-lib.sh through the ones that source it
SHELL_SCRIPTS = [
    INSTALL,
    UNINSTALL,
    CHECK_UNIT,
    SCRIPTS / "setup-env",
    SCRIPTS / "demo",
    SCRIPTS / "test",
]
TIMEOUT = 60

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


@functools.cache
def _as_unprivileged() -> dict:
    """subprocess.run arguments that drop root, so a dry run proves it needs none.

    Empty when not root already, or when nobody/nogroup cannot read the tree
    (a checkout under a private directory): then the dry run runs as is.
    """
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam("nobody")
        grp.getgrnam("nogroup")
    except KeyError:
        return {}
    drop = {"user": "nobody", "group": "nogroup", "extra_groups": []}
    probe = subprocess.run(
        ["bash", "-c", 'test -r "$0" && test -r "$1"', str(INSTALL), str(UNIT)],
        cwd="/",
        capture_output=True,
        **drop,
    )
    return drop if probe.returncode == 0 else {}


def run_script(script: Path, *args: str, unprivileged: bool = True) -> subprocess.CompletedProcess:
    kwargs = _as_unprivileged() if unprivileged else {}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
    return subprocess.run(
        ["bash", str(script), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,  # a dry run must never wait for a key
        env=env,
        cwd="/",
        **kwargs,
    )


def actions(stdout: str) -> list[str]:
    return [line[2:] for line in stdout.splitlines() if line.startswith("+ ")]


def index_of(lines: list[str], pattern: str) -> int:
    for i, line in enumerate(lines):
        if re.search(pattern, line):
            return i
    raise AssertionError(f"no action matches {pattern!r} in:\n" + "\n".join(lines))


# ------------------------------------------------------------------- lint


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_install_scripts_parse(script):
    assert os.access(script, os.X_OK), f"{script.name} is not executable"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_install_scripts_are_shellcheck_clean(script):
    result = subprocess.run(
        ["shellcheck", "-x", "--severity=style", str(script)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -------------------------------------------------------------- install.sh


@pytest.fixture
def key_file():
    """A key file the unprivileged dry run can read (pytest's tmp_path is 0700 root)."""
    folder = Path(tempfile.mkdtemp(prefix="pi-agent-test-"))
    folder.chmod(0o755)
    path = folder / "key"
    path.write_text("fake-dry-run-secret-do-not-print\n")
    path.chmod(0o644)
    yield path
    shutil.rmtree(folder)


def test_install_dry_run_plan(key_file):
    secret = key_file.read_text().strip()
    etc_existed = Path("/etc/pi-agent").exists()

    result = run_script(INSTALL, "--dry-run", "--camera", "--key-file", str(key_file))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    plan = actions(out)
    assert secret not in out and secret not in result.stderr
    if not etc_existed:
        assert not Path("/etc/pi-agent").exists()  # a dry run changes nothing

    # apt: the prebuilt PyAudio where apt has it, else the build fallback
    assert "apt-get update" in plan
    install_line = plan[index_of(plan, r"apt-get install -y")]
    for package in ("python3-venv", "python3-numpy", "python3-yaml", "python3-picamera2"):
        assert package in install_line.split()
    assert "python3-pyaudio" in install_line or "portaudio19-dev" in install_line
    assert "espeak-ng" not in install_line

    # the service account
    assert any(
        re.fullmatch(r"(adduser --system --group|useradd --system).*pi-agent", a) for a in plan
    )
    assert "usermod --append --groups audio\\,video\\,gpio pi-agent" in plan

    # venv with system packages, the code from this tree, a command on PATH
    venv = plan[index_of(plan, r"-m venv")]
    assert venv.endswith("--system-site-packages /opt/pi-agent/venv")
    assert venv.startswith("/usr/bin/python3 ")
    pip = plan[index_of(plan, r"/opt/pi-agent/venv/bin/pip install")]
    assert "--upgrade" in pip
    assert f"cp -R {ROOT}/setup.cfg {ROOT}/pi_agent" in "\n".join(plan)
    assert "ln -sfn /opt/pi-agent/venv/bin/pi-agent /usr/local/bin/pi-agent" in plan

    # /etc/pi-agent 0750 root:pi-agent, config 0640, never overwriting
    assert "install -d -m 0750 -o root -g pi-agent /etc/pi-agent" in plan
    config = f"install -m 0640 -o root -g pi-agent {ROOT}/config/pi-agent.yaml /etc/pi-agent/"
    if Path("/etc/pi-agent/config.yaml").exists():
        assert "keeping your /etc/pi-agent/config.yaml" in out
    else:
        assert config + "config.yaml" in plan
    assert config + "config.example.yaml" in plan

    # the key: root-only, written without a command line
    assert f"API key: from {key_file} into /etc/pi-agent/gemini-api-key (0600 root:root" in out
    assert any("shell builtin printf" in a for a in plan)

    # the unit, enabled and (re)started
    assert (
        f"install -m 0644 {ROOT}/systemd/pi-agent.service /etc/systemd/system/pi-agent.service"
        in plan
    )
    order = [
        index_of(plan, r"^apt-get update"),
        index_of(plan, r"^adduser|^useradd"),
        index_of(plan, r"-m venv"),
        index_of(plan, r"/bin/pip install"),
        index_of(plan, r"/etc/pi-agent/config\.yaml$"),
        index_of(plan, r"shell builtin printf"),
        index_of(plan, r"/etc/systemd/system/pi-agent\.service$"),
        index_of(plan, r"^systemctl daemon-reload$"),
        index_of(plan, r"^systemctl enable pi-agent\.service$"),
        index_of(plan, r"^systemctl restart pi-agent\.service$"),
    ]
    assert order == sorted(order), plan

    # how to check on it
    for hint in (
        "systemctl status pi-agent",
        "journalctl -u pi-agent -f",
        "pi-agent check",
        "pi-agent ctl status",
    ):
        assert hint in out


def test_install_dry_run_without_key_file_plans_to_ask(tmp_path):
    result = run_script(INSTALL, "--dry-run", "--no-start")
    assert result.returncode == 0, result.stderr
    if Path("/etc/pi-agent/gemini-api-key").exists():
        assert "API key: keeping /etc/pi-agent/gemini-api-key" in result.stdout
    else:
        assert "API key: from the terminal or standard input" in result.stdout
    plan = actions(result.stdout)
    assert "systemctl enable pi-agent.service" in plan
    assert not any(a.startswith("systemctl restart") for a in plan)
    assert "python3-picamera2" not in result.stdout  # only with --camera


def test_install_dry_run_no_key():
    result = run_script(INSTALL, "--dry-run", "--no-key")
    assert result.returncode == 0, result.stderr
    assert "API key: none installed (--no-key)" in result.stdout
    assert not any("gemini-api-key" in a for a in actions(result.stdout))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown option: --bogus"),
        (["--key-file", "/nonexistent/key"], "--key-file: cannot read /nonexistent/key"),
        (["--source", "/"], "does not look like the pi-agent source tree"),
        (["--source"], "--source needs a directory"),
        (["--key-file", "/etc/hostname", "--no-key"], "exclude each other"),
    ],
)
def test_install_rejects_bad_arguments(args, message):
    result = run_script(INSTALL, "--dry-run", *args)
    assert result.returncode != 0
    assert message in result.stderr


def test_install_needs_root_outside_a_dry_run():
    if not _as_unprivileged() and os.geteuid() == 0:
        pytest.skip("cannot drop root here to show the refusal")
    result = run_script(INSTALL, "--no-key")
    assert result.returncode != 0
    assert "run as root" in result.stderr
    assert not actions(result.stdout)


def test_install_help():
    result = run_script(INSTALL, "--help")
    assert result.returncode == 0
    assert "--dry-run" in result.stdout and "--key-file FILE" in result.stdout
    assert "--mqtt HOST" in result.stdout and "--mqtt-user USER" in result.stdout
    assert not result.stdout.startswith("#")


def test_install_dry_run_mqtt_with_a_user():
    result = run_script(
        INSTALL, "--dry-run", "--no-key", "--mqtt", "broker.lan", "--mqtt-user", "ha"
    )
    assert result.returncode == 0, result.stderr
    out, plan = result.stdout, actions(result.stdout)
    assert "MQTT: Home Assistant through the broker broker.lan as ha" in out
    edit = plan[index_of(plan, r"^set mqtt: enabled: true, host: broker\.lan, username: ha in")]
    assert "comments kept" in edit and "check it with pi_agent.config" in edit
    # the password: read like the key (never argv), root-only, a systemd credential
    assert (
        "write the password to /etc/pi-agent/mqtt-password.new (umask 077, shell builtin "
        "printf), mv -f it to /etc/pi-agent/mqtt-password" in plan
    )
    assert (
        "write /etc/systemd/system/pi-agent.service.d/mqtt-password.conf: [Service] "
        "LoadCredential=mqtt-password:/etc/pi-agent/mqtt-password" in plan
    )
    order = [
        index_of(plan, r"/bin/pip install .*\\\[mqtt\\\]$"),  # with paho-mqtt (%q quoted)
        index_of(plan, r"/etc/pi-agent/config\.yaml$"),
        index_of(plan, r"^set mqtt:"),
        index_of(plan, r"^write the password"),
        index_of(plan, r"mqtt-password\.conf: "),
        index_of(plan, r"^systemctl daemon-reload$"),
        index_of(plan, r"^systemctl restart"),
    ]
    assert order == sorted(order), plan
    assert "Home Assistant: the device appears once the agent reaches broker.lan" in out


def test_install_dry_run_mqtt_anonymous_stores_no_password():
    result = run_script(INSTALL, "--dry-run", "--no-key", "--no-start", "--mqtt", "10.0.0.2")
    assert result.returncode == 0, result.stderr
    plan = actions(result.stdout)
    assert any(
        a.startswith("set mqtt: enabled: true, host: 10.0.0.2, username: null") for a in plan
    )
    assert "MQTT password: none (no --mqtt-user)" in result.stdout
    assert (
        "rm -f /etc/pi-agent/mqtt-password "
        "/etc/systemd/system/pi-agent.service.d/mqtt-password.conf" in plan
    )
    assert not any(a.startswith("write the password") for a in plan)


def test_install_without_mqtt_leaves_it_alone():
    result = run_script(INSTALL, "--dry-run", "--no-key", "--no-start")
    assert result.returncode == 0, result.stderr
    assert "MQTT" not in result.stdout
    assert not any("mqtt" in a for a in actions(result.stdout) if "pip install" not in a)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mqtt-user", "ha"], "--mqtt-user needs --mqtt HOST"),
        (["--mqtt"], "--mqtt needs the broker's host name or address"),
        (["--mqtt", "broker;reboot"], "is not a host name or address"),
        (["--mqtt", "-x.lan"], "is not a host name or address"),
        (["--mqtt", "b", "--mqtt-user"], "--mqtt-user needs a user name"),
    ],
)
def test_install_rejects_bad_mqtt_arguments(args, message):
    result = run_script(INSTALL, "--dry-run", "--no-key", *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert not actions(result.stdout)


# ------------------------------------------------------------ uninstall.sh


def test_uninstall_dry_run_keeps_config_by_default():
    result = run_script(UNINSTALL, "--dry-run")
    assert result.returncode == 0, result.stderr
    plan = actions(result.stdout)
    assert "systemctl disable --now pi-agent.service" in plan
    assert "rm -f /etc/systemd/system/pi-agent.service" in plan
    assert "rm -rf /opt/pi-agent" in plan
    assert "rm -rf /etc/pi-agent" not in plan
    assert not any(a.startswith(("userdel", "groupdel")) for a in plan)
    assert "kept /etc/pi-agent" in result.stdout
    assert not any("mqtt-clear" in a for a in plan)  # only --purge removes the device


def test_uninstall_dry_run_purge():
    result = run_script(UNINSTALL, "--dry-run", "--purge")
    assert result.returncode == 0, result.stderr
    plan = actions(result.stdout)
    assert "rm -rf /etc/pi-agent" in plan
    assert "userdel pi-agent" in plan
    assert plan.index("systemctl disable --now pi-agent.service") < plan.index("userdel pi-agent")
    # the device leaves Home Assistant first, through the program that is about to go, with
    # the password found where systemd would put it
    clear = (
        "env CREDENTIALS_DIRECTORY=/etc/pi-agent /opt/pi-agent/venv/bin/pi-agent mqtt-clear "
        "--config /etc/pi-agent/config.yaml"
    )
    assert plan.index("systemctl disable --now pi-agent.service") < plan.index(clear)
    assert plan.index(clear) < plan.index("rm -rf /opt/pi-agent")
    assert "rm -f /etc/systemd/system/pi-agent.service.d/mqtt-password.conf" in plan


def test_uninstall_rejects_bad_arguments():
    result = run_script(UNINSTALL, "--dry-run", "--everything")
    assert result.returncode != 0
    assert "unknown option: --everything" in result.stderr


# ---------------------------------------------------------------- the unit


@needs_systemd_analyze
def test_install_unit_passes_check_unit():
    result = run_script(CHECK_UNIT, unprivileged=False)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "clean" in result.stdout
    score = float(re.search(r"^exposure: ([0-9.]+) \(limit 2\.5\)$", result.stdout, re.M)[1])
    assert score <= 2.5


@needs_systemd_analyze
def test_install_check_unit_fails_on_any_verify_output(tmp_path):
    broken = tmp_path / "pi-agent.service"
    broken.write_text(UNIT.read_text().replace("After=sound.target", "Afterr=sound.target"))
    result = run_script(CHECK_UNIT, str(broken), unprivileged=False)
    assert result.returncode != 0
    assert "Unknown key 'Afterr'" in result.stdout
    assert "verify is not clean (exit status 0)" in result.stderr


@needs_systemd_analyze
def test_install_check_unit_fails_above_the_exposure_limit():
    result = run_script(CHECK_UNIT, "--max-exposure", "0.5", unprivileged=False)
    assert result.returncode != 0
    assert "is above 0.5" in result.stderr


def test_install_unit_matches_the_config_defaults():
    """The unit and pi_agent.config must agree on the paths and names they share."""
    from pi_agent.config import AgentSettings, ControlSettings, LiveSettings

    text = UNIT.read_text()
    directives = re.findall(r"^(\w+)=(.*)$", text, re.M)
    values: dict[str, list[str]] = {}
    for key, value in directives:
        values.setdefault(key, []).append(value)
    assert values["LoadCredential"] == [
        f"{LiveSettings().credential_name}:/etc/pi-agent/gemini-api-key"
    ]
    socket_dir = os.path.dirname(ControlSettings().socket)
    assert socket_dir == "/run/" + values["RuntimeDirectory"][0]
    assert values["WorkingDirectory"] == [socket_dir]
    assert values["Type"] == ["notify"] and values["NotifyAccess"] == ["main"]
    watchdog_s = int(values["WatchdogSec"][0])
    start_timeout = values["TimeoutStartSec"][0]
    assert start_timeout.endswith("min")
    assert AgentSettings().ready_timeout_s < int(start_timeout[:-3]) * 60
    assert watchdog_s == 30


# ------------------------------------------------------- install-lib.sh helpers


def lib(snippet: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run ``snippet`` in bash with install-lib.sh sourced (PROG=t, DRY_RUN=0)."""
    script = f'PROG=t; DRY_RUN=0; . "{LIB}"; {snippet}'
    kwargs.setdefault("env", {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    return subprocess.run(
        ["bash", "-c", script, "lib", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        **kwargs,
    )


def set_mqtt(path: Path, host: str, user: str | None) -> str:
    """install.sh's way: quote, export, rewrite; returns the new text."""
    result = lib(
        'MQTT_HOST_YAML=$(yaml_quote "$2"); MQTT_USER_YAML=null; '
        '[ -z "$3" ] || MQTT_USER_YAML=$(yaml_quote "$3"); '
        'export MQTT_HOST_YAML MQTT_USER_YAML; set_mqtt_config "$1"',
        str(path),
        host,
        user or "",
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_set_mqtt_config_keeps_the_example_config_and_its_comments(tmp_path):
    from pi_agent.config import load_config

    example = (ROOT / "config" / "pi-agent.yaml").read_text()
    path = tmp_path / "config.yaml"
    path.write_text(example)
    user = 'h"a\\x'
    new = set_mqtt(path, "broker.lan", user)
    path.write_text(new)
    config = load_config(path)
    assert config.mqtt.enabled and config.mqtt.host == "broker.lan"
    assert config.mqtt.username == user
    assert config.mqtt.port == 1883 and not config.mqtt.tls.enabled  # the rest as it was
    before, after = example.splitlines(), new.splitlines()
    assert len(before) == len(after)
    changed = [b for a, b in zip(before, after, strict=True) if a != b]
    assert [b.split("#")[0].strip() for b in changed] == [
        "enabled: true",
        'host: "broker.lan"',
        'username: "h\\"a\\\\x"',
    ]
    assert all("#" in b for b in changed[1:])  # their trailing comments stay
    assert lib('mqtt_enabled "$1"', str(path)).returncode == 0
    path.write_text(example)
    assert lib('mqtt_enabled "$1"', str(path)).returncode == 1


def test_set_mqtt_config_adds_what_is_missing_at_the_right_indentation(tmp_path):
    from pi_agent.config import load_config

    path = tmp_path / "config.yaml"
    path.write_text("agent:\n  log_level: info\n")  # no mqtt section at all
    path.write_text(set_mqtt(path, "10.0.0.2", None))
    config = load_config(path)
    assert (config.mqtt.enabled, config.mqtt.host, config.mqtt.username) == (True, "10.0.0.2", None)
    assert config.agent.log_level == "info"

    path.write_text(
        "mqtt:  # four spaces here\n"
        "    port: 1884\n"
        "    tls:\n"
        "        enabled: false\n"
        "    enabled: no\n"
        "agent:\n"
        "    log_level: debug\n"
    )
    path.write_text(set_mqtt(path, "hub", "me"))
    config = load_config(path)
    assert (config.mqtt.enabled, config.mqtt.host, config.mqtt.username) == (True, "hub", "me")
    assert config.mqtt.port == 1884 and not config.mqtt.tls.enabled  # nested key untouched
    assert config.agent.log_level == "debug"
    assert lib('mqtt_enabled "$1"', str(path)).returncode == 0
    assert lib('mqtt_enabled "$1"', str(tmp_path / "missing.yaml")).returncode == 1

    path.write_text("mqtt: {enabled: false}\n")  # one line: left to a person, not appended to
    result = lib('MQTT_HOST_YAML=h MQTT_USER_YAML=null set_mqtt_config "$1"', str(path))
    assert result.returncode == 3 and result.stdout == ""


def test_secret_from_stdin_is_stored_0600_and_never_shown(tmp_path):
    secret = "s3cret with spaces & $dollars"
    target = tmp_path / "mqtt-password"
    result = lib(
        'read_secret "Password: " pw && write_secret "$1" "$pw"',
        str(target),
        input=secret + "\r\n",
    )
    assert result.returncode == 0, result.stderr
    assert target.read_text() == secret + "\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "mqtt-password.new").exists()
    assert secret not in result.stdout + result.stderr


def test_secret_typed_at_a_terminal_is_not_echoed(tmp_path):
    secret = "typed-secret-1234"
    target = tmp_path / "pw"
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [
            "bash",
            "-c",
            f'. "{LIB}"; read_secret "Password (hidden): " pw; write_secret "$1" "$pw"',
            "lib",
            str(target),
        ],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        close_fds=True,
    )
    os.close(secondary)
    screen = b""
    try:
        deadline = time.monotonic() + TIMEOUT
        while b"Password (hidden): " not in screen and time.monotonic() < deadline:
            if select.select([primary], [], [], 0.1)[0]:
                screen += os.read(primary, 1024)
        os.write(primary, secret.encode() + b"\n")
        assert proc.wait(TIMEOUT) == 0
        while select.select([primary], [], [], 0.2)[0]:
            try:
                chunk = os.read(primary, 1024)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(primary)
    assert b"Password (hidden): " in screen
    assert secret.encode() not in screen
    assert target.read_text() == secret + "\n"


def test_progress_is_quiet_on_success_and_shows_the_output_on_failure():
    ok = lib('progress "working on it" bash -c "echo noisy output"')
    assert ok.returncode == 0
    assert "working on it" in ok.stderr and re.search(r"done \(\d+ s\)", ok.stderr)
    assert "noisy output" not in ok.stdout + ok.stderr

    bad = lib('progress "breaking it" bash -c "echo what went wrong; exit 3"')
    assert bad.returncode == 3
    assert "what went wrong" in bad.stderr
    assert "breaking it: failed (exit status 3, its output is above)" in bad.stderr

    dry = lib('DRY_RUN=1; progress "planned" apt-get install -y "a b"')
    assert dry.returncode == 0 and dry.stdout == "+ apt-get install -y a\\ b\n"


# ------------------------------------------------------------------ mqtt-clear


def test_mqtt_clear_removes_the_device_with_the_installed_credential(tmp_path, monkeypatch):
    """What uninstall.sh --purge runs: the password found as the credential mqtt-password."""
    import paho.mqtt.client as mqtt

    from pi_agent.cli import main

    from .broker import Broker, retained

    owner = ("ha", "broker-pass")
    broker = Broker(tmp_path, users=dict([owner])).start()
    try:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="installer-test")
        client.username_pw_set(*owner)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        for topic in ("homeassistant/device/loft/config", "pi-agent/loft/state"):
            client.publish(topic, b"{}", qos=1, retain=True).wait_for_publish(TIMEOUT)
        client.disconnect()
        client.loop_stop()
        assert len(retained(broker.port, "#", user=owner)) == 2
        etc = tmp_path / "etc"
        etc.mkdir()
        (etc / "mqtt-password").write_text("broker-pass\n")
        config = etc / "config.yaml"
        config.write_text(
            f"mqtt:\n  enabled: true\n  host: 127.0.0.1\n  port: {broker.port}\n"
            "  username: ha\n  device_id: loft\n"
        )
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(etc))
        assert main(["mqtt-clear", "--config", str(config)]) == 0
        assert retained(broker.port, "#", user=owner) == {}

        config.write_text("mqtt:\n  enabled: false\n")
        assert main(["mqtt-clear", "--config", str(config)]) == 0  # nothing to do, no error
    finally:
        broker.stop()


def test_mqtt_clear_without_a_broker_fails_with_a_clear_line(tmp_path, capsys):
    from pi_agent.cli import main

    from .broker import free_port

    config = tmp_path / "config.yaml"
    config.write_text(f"mqtt:\n  enabled: true\n  host: 127.0.0.1\n  port: {free_port()}\n")
    assert main(["mqtt-clear", "--config", str(config), "--timeout", "2"]) == 1
    assert "mqtt-clear: cannot reach the MQTT broker at 127.0.0.1:" in capsys.readouterr().err
