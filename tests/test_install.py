"""install.sh, uninstall.sh and check-unit, run for real (dry runs where they change things)."""

from __future__ import annotations

import functools
import grp
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
INSTALL = SCRIPTS / "install.sh"
UNINSTALL = SCRIPTS / "uninstall.sh"
CHECK_UNIT = SCRIPTS / "check-unit"
UNIT = ROOT / "systemd" / "pi-agent.service"
SHELL_SCRIPTS = [INSTALL, UNINSTALL, CHECK_UNIT]  # -x checks install-lib.sh through them
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
    assert not result.stdout.startswith("#")


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


def test_uninstall_dry_run_purge():
    result = run_script(UNINSTALL, "--dry-run", "--purge")
    assert result.returncode == 0, result.stderr
    plan = actions(result.stdout)
    assert "rm -rf /etc/pi-agent" in plan
    assert "userdel pi-agent" in plan
    assert plan.index("systemctl disable --now pi-agent.service") < plan.index("userdel pi-agent")


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
