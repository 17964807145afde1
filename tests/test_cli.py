"""The pi-agent command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pi_agent import __version__
from pi_agent.cli import main
from pi_agent.sim.alsa import SimulatedSoundCard


def test_cli_version_and_module_entry():
    done = subprocess.run(
        [sys.executable, "-m", "pi_agent", "--version"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0 and done.stdout.strip() == f"pi-agent {__version__}"


def test_cli_requires_a_command(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_cli_devices_marks_what_the_config_picks(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("audio: {input_device: mic, output_device: spk}\n")
    with SimulatedSoundCard(tmp_path / "alsa"):
        assert main(["devices", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "mic" in out and "spk" in out
    assert "<- input" in out and "<- output" in out


def test_cli_devices_explains_a_name_that_matches_nothing(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("audio: {input_device: seeed-2mic}\n")
    with SimulatedSoundCard(tmp_path / "alsa"):
        assert main(["devices", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "audio.input_device 'seeed-2mic' matches nothing. Inputs are: 'mic', 'default'." in out


def test_cli_config_errors_exit_2(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("live: {modle: x}\n")
    assert main(["devices", "--config", str(config)]) == 2
    assert "live.modle: unknown key, did you mean 'model'?" in capsys.readouterr().err


def test_cli_debug_shows_tracebacks(tmp_path, monkeypatch, capsys):
    from pi_agent.errors import PiAgentError

    config = tmp_path / "c.yaml"
    config.write_text("audio: {backend: none}\nlive: {token_command: /bin/false}\n")
    monkeypatch.setattr(
        "pi_agent.cli.cmd_run", lambda ns: (_ for _ in ()).throw(PiAgentError("boom"))
    )
    parser_main = main
    assert parser_main(["run", "--config", str(config)]) == 1
    assert capsys.readouterr().err.strip() == "pi-agent: boom"


def test_cli_ctl_help_names_every_command(capsys):
    from pi_agent.cli import CTL_COMMANDS
    from pi_agent.ctl import COMMAND_HELP

    assert CTL_COMMANDS == COMMAND_HELP  # cli.py keeps a copy so --help stays a cheap import
    with pytest.raises(SystemExit) as info:
        main(["ctl", "--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "press | release | talk | say TEXT | mute | unmute | volume V | status | watch" in out
    assert "--no-wait" in out and "--json" in out and "default: 60 for say, 5 otherwise" in out


def test_cli_ctl_options_may_come_after_the_words(monkeypatch):
    seen = {}

    def fake_run_ctl(path, command, words, **options):
        seen.update(path=path, command=command, words=words, **options)
        return 0

    monkeypatch.setattr("pi_agent.ctl.run_ctl", fake_run_ctl)
    argv = ["ctl", "--socket", "/s", "say", "turn", "--no-wait", "on", "the", "lamp", "--json"]
    assert main(argv) == 0
    assert seen == {
        "path": "/s",
        "command": "say",
        "words": ["turn", "on", "the", "lamp"],
        "timeout": None,
        "wait": False,
        "as_json": True,
    }
    with pytest.raises(SystemExit) as info:  # an unknown option is still a usage error
        main(["ctl", "--socket", "/s", "say", "hi", "--bogus"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):  # and other commands take no stray words
        main(["devices", "stray"])
