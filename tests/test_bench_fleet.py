"""Smoke test of scripts/bench_fleet.py in a tiny mode: it runs end to end, its JSON is complete.

No timing assertions: the figures only have to exist, be positive and be consistent (the bridge
adds memory, never removes it).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from .broker import need

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "bench_fleet.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_fleet", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_fleet_runs_and_reports_every_figure(tmp_path):
    need("mosquitto")
    out = tmp_path / "fleet.json"
    args = ["--agents", "2", "--alone", "1", "--idle-seconds", "2", "--settle", "0"]
    args += ["--broker-down", "0", "--no-write", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["exit_codes_ok"] is True
    assert len(result["alone_s"]) == 1 and len(result["together_s"]) == 2
    assert len(result["restart_s"]) == 2
    assert all(t > 0 for key in ("alone_s", "together_s", "restart_s") for t in result[key])
    idle = result["idle"]
    for group in ("mqtt", "no_mqtt"):
        assert len(idle[group]["cpu_s_per_min"]) == 2
        assert all(c >= 0 for c in idle[group]["cpu_s_per_min"])
        assert all(r > 0 for r in idle[group]["rss_mb"])
    assert min(idle["mqtt"]["rss_mb"]) > max(idle["no_mqtt"]["rss_mb"])  # paho is loaded
    assert result["machine"]["paho_mqtt"] and result["machine"]["nproc"]
    assert "## Home Assistant fleet" in done.stdout and "| idle CPU per agent" in done.stdout


def test_the_section_is_replaced_in_place_and_nothing_else_changes(tmp_path):
    bench = _module()
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\n## Method\n\ntext\n\n## Results\n\nfigures\n")
    bench.write_section(doc, "## Home Assistant fleet\n\nfirst\n")
    assert doc.read_text().endswith("figures\n\n## Home Assistant fleet\n\nfirst\n")
    doc.write_text(doc.read_text() + "\n## Later\n\nkept\n")
    bench.write_section(doc, "## Home Assistant fleet\n\nsecond\n")
    text = doc.read_text()
    assert "first" not in text and text.count("## Home Assistant fleet") == 1
    assert "## Home Assistant fleet\n\nsecond\n\n## Later\n\nkept\n" in text
    assert text.startswith("# Benchmarks\n\n## Method\n\ntext\n\n## Results\n\nfigures\n")
