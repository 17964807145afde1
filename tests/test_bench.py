"""Smoke test of scripts/bench.py in a tiny mode: it runs end to end and its JSON is complete.

No timing assertions: this machine's speed is not the product's business. The figures only have
to exist, be positive and be consistent with the workload.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ("pi-agent", "sdk", "floor")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    pytest.importorskip("google.genai", reason="google-genai not installed")
    pytest.importorskip("simplejpeg", reason="simplejpeg not installed")
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    args = ["--turns", "2", "--seconds-per-turn", "1", "--json", str(out)]
    args += ["--audio-seconds", "0.5", "--camera-frames", "10"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(out.read_text()), done.stdout


def positive(value):
    return isinstance(value, (int, float)) and value > 0


def test_every_client_ran_the_same_workload(bench):
    result, _ = bench
    assert set(result["clients"]) == set(CLIENTS)
    counts = [result["clients"][name]["counts"] for name in CLIENTS]
    for c in counts:
        assert "error" not in c
        assert c["audio_chunks_sent"] == 2 * 25  # 2 turns x 1 s in 40 ms chunks
        assert c["video_frames_sent"] == 2
        assert c["tool_calls_answered"] == 2
        assert c["audio_chunks_received"] > 0
        assert c["interrupts"] == 1  # the barge-in
    assert len({c["audio_chunks_sent"] for c in counts}) == 1


def test_each_client_has_sane_positive_figures(bench):
    result, _ = bench
    for name in CLIENTS:
        r = result["clients"][name]
        for key in ("cpu_s_per_min", "peak_rss_mb", "import_s", "connect_s", "conversation_s"):
            assert positive(r[key]), (name, key, r[key])
        assert r["conversation_s"] >= 2 * 1.0  # driven in real time
        assert r["peak_rss_mb"] >= r["rss_after_import_mb"] > 1
        for key in ("chunk_to_wire_ms", "recv_to_sink_ms", "interrupt_to_flush_ms"):
            dist = r[key]
            assert dist["n"] > 0 and positive(dist["p50"]), (name, key, dist)
            assert dist["p99"] >= dist["p50"]
        for key in ("chunk_to_server_ms", "server_to_sink_ms"):
            assert "error" not in r[key], (name, key, r[key])


def test_table_ratios_goals_and_sub_benches(bench):
    result, stdout = bench
    table = result["table"]
    for key in ("cpu_s_per_min", "peak_rss_mb", "import_connect_s", "chunk_to_wire_p99"):
        assert positive(table[key]["pi-agent/sdk"]) and positive(table[key]["pi-agent/floor"])
    assert len(result["goals"]) == 6
    assert all(isinstance(g["met"], bool) for g in result["goals"])
    assert result["machine"]["nproc"] >= 1 and result["machine"]["python"]
    headline = result["headline"]
    assert positive(headline["cpu_per_min_pi_agent_vs_sdk"])
    assert positive(headline["peak_rss_pi_agent_vs_sdk"])
    # The micro-benchmarks either report rows or say why they failed; the bench never crashes.
    for sub in ("audio", "camera"):
        assert result[sub].get("rows") or result[sub].get("error"), (sub, result[sub])
    if result["audio"].get("rows"):
        assert positive(headline["audio_cpu_s_per_min"])
    if result["camera"].get("rows"):
        assert positive(headline["camera_cpu_ms_per_frame"])
    assert "pi/SDK" in stdout and "CPU s per min of conversation" in stdout


def test_a_failing_sub_bench_is_reported_not_fatal(monkeypatch):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import bench as bench_module
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    monkeypatch.setattr(bench_module, "ROOT", ROOT / "no-such-dir")
    assert "error" in bench_module.audio_bench(0.1)
    assert "error" in bench_module.camera_bench(1)


# --------------------------------------------------------------------------- whole agent

AGENTS = ("pi-agent", "cookbook")


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """scripts/bench_whole.py in a tiny mode: 2 turns of 1 s, a 2 s idle phase."""
    pytest.importorskip("google.genai", reason="google-genai not installed")
    pytest.importorskip("simplejpeg", reason="simplejpeg not installed")
    pytest.importorskip("pyaudio", reason="PyAudio not installed")
    out = tmp_path_factory.mktemp("whole") / "whole.json"
    args = ["--turns", "2", "--seconds-per-turn", "1", "--idle-s", "2", "--settle-s", "0.5"]
    args += ["--idle-settle-s", "0.5", "--gap-s", "0.5", "--starts", "1", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_whole.py"), *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    return json.loads(out.read_text()), done.stdout


@pytest.mark.timeout(300)
def test_whole_agents_did_the_same_turns(whole):
    result, _ = whole
    assert set(result["agents"]) == set(AGENTS)
    for name in AGENTS:
        c = result["agents"][name]["counts"]
        assert c["connections"] == 1, (name, c)
        assert c["activity_starts"] == c["activity_ends"] == 2, (name, c)
        assert c["tool_responses"] == 2 and c["answers"] == 2, (name, c)
        assert c["interrupted"] == 1, (name, c)  # the barge-in of turn 1
        assert c["video_frames_sent"] >= 2, (name, c)  # at least one frame per turn
        # 1 s a turn in 40 ms chunks, less a chunk at either edge: an agent sees the press and
        # the release a little after the harness sends them (the cookbook has no pre-roll)
        assert c["audio_chunks_sent"] >= 2 * (25 - 2), (name, c)
        assert c["played_s"] > 0, (name, c)  # the answers came out of the simulated speaker


@pytest.mark.timeout(300)
def test_whole_figures_and_ratios_exist(whole):
    result, stdout = whole
    for name in AGENTS:
        r = result["agents"][name]
        assert positive(r["conversation"]["cpu_s_per_min"]), name
        assert positive(r["peak_rss_mb"]) and r["peak_rss_mb"] >= r["rss_end_mb"] > 1, name
        assert positive(r["start_to_setup_s"]), name
        assert len(r["start_samples_s"]) == 2 and all(map(positive, r["start_samples_s"])), name
        for phase in ("conversation", "idle"):
            ph = r[phase]
            assert ph["wall_s"] > 0 and ph["cpu_s_per_min"] >= 0, (name, phase)
            assert ph["threads"], (name, phase)
    table = result["table"]
    for key in ("cpu_s_per_min", "peak_rss_mb", "start_to_setup_s"):
        row = table[key]
        assert positive(row["ratio"]), key
        assert row["ratio"] == pytest.approx(row["pi-agent"] / row["cookbook"]), key
    assert [g["goal"] for g in result["goals"]] == [
        "CPU per minute of conversation <= 0.5x cookbook",
        "idle CPU <= 0.1 s/min",
        "peak RSS <= 0.75x cookbook",
        "start -> setupComplete <= 0.5x cookbook",
    ]
    assert all(isinstance(g["met"], bool) for g in result["goals"])
    assert "CPU s per min of conversation" in stdout and "by thread" in stdout


@pytest.mark.timeout(300)
def test_whole_agent_threads_are_seen_by_their_os_names(whole):
    result, _ = whole
    threads = result["agents"]["pi-agent"]["conversation"]["threads"]
    assert any(name.startswith("main (") for name in threads)
    named = {name for name in threads if name.startswith("pi-agent-")}
    assert len(named) >= 3, threads  # reader, writer, speaker, ... as top -H shows them
    assert [(f["period_ms"], f["read_ms"]) for f in result["mic_floor"]] == [(300, 300), (20, 100)]
    assert all("idle" in f for f in result["mic_floor"]), result["mic_floor"]
