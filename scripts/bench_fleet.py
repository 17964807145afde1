#!/usr/bin/env python3
"""A fleet of pi-agents on one MQTT broker: time to discovery, and what the bridge costs.

Every agent is a real ``python -m pi_agent run --config FILE`` process (tests/fleet.py:
mock GPIO pins, no audio, timers off, its own control socket and ``mqtt.device_id``).
One fake Live server (``FakeLiveServer``) runs in this process, one ``mosquitto`` on
loopback, and a paho client plays Home Assistant, stamping when each discovery
message arrives.

1. **Alone**: ``--alone`` agents started one after another; process start -> the
   retained discovery message at Home Assistant.
2. **Together**: ``--agents`` agents started at once (as after a power cut); the
   same time for each, median and max.
3. **Idle cost**: the same number of agents *without* MQTT join them; once every
   agent is ready and ``--settle`` seconds have passed, each process's CPU time
   (user + system, /proc) over ``--idle-seconds`` and its RSS are read. The two
   groups idle side by side, so both see the same machine.
4. **Broker restart**: mosquitto is killed and started again; the time until every
   agent's discovery and ``online`` are back.

    scripts/bench_fleet.py [--agents 10] [--idle-seconds 60] [--json PATH] [--no-write]

The figures go into BENCHMARKS.md (section "Home Assistant fleet") unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench import _loadavg  # noqa: E402  (scripts/bench.py, stdlib only at import)
from bench import machine as bench_machine  # noqa: E402

from pi_agent.sim.fake_live import FakeLiveServer  # noqa: E402
from tests.broker import Broker, HomeAssistant, wait_until  # noqa: E402
from tests.fleet import API_KEY, AgentProcess, Fleet, median  # noqa: E402

SECTION = "## Home Assistant fleet"
START_TIMEOUT_S = 120.0  # generous: a Pi Zero starting ten Pythons at once is slow


def machine() -> dict[str, Any]:
    """What the figures were measured on: ``bench.machine()`` plus paho and mosquitto."""
    try:
        out = subprocess.run([_mosquitto(), "-h"], capture_output=True, text=True, timeout=10)
        mosquitto = re.search(r"version (\S+)", out.stdout)
    except OSError:
        mosquitto = None
    return {
        **bench_machine(),
        "paho_mqtt": metadata.version("paho-mqtt"),
        "mosquitto": mosquitto.group(1) if mosquitto else None,
    }


def _mosquitto() -> str:
    import shutil

    return (
        shutil.which("mosquitto")
        or shutil.which("mosquitto", path="/usr/sbin:/sbin")
        or "mosquitto"
    )


# --------------------------------------------------------------------------- phases


def discovered_at(ha: HomeAssistant, dev_id: str, after: float, timeout: float) -> float:
    """When Home Assistant got the discovery message of ``dev_id`` (monotonic)."""
    topic = f"homeassistant/device/{dev_id}/config"
    return ha.wait_for(topic, lambda m: bool(m.payload), after=after, timeout=timeout).at


def alone(base: Path, count: int, url: str, broker: Broker, ha: HomeAssistant) -> list[float]:
    times = []
    for i in range(count):
        agent = AgentProcess(base / f"alone{i}", f"alone{i}", url, broker.port).start()
        try:
            at = discovered_at(ha, agent.device_id, agent.started_at, START_TIMEOUT_S)
            times.append(at - agent.started_at)
        finally:
            agent.stop()
    return times


def idle_cost(groups: dict[str, Fleet], seconds: float) -> dict[str, dict[str, Any]]:
    """CPU s/min and RSS of every process over ``seconds`` of idling, per group."""
    agents = [a for fleet in groups.values() for a in fleet]
    before = {a.pid: (a.run_seconds(), a.cpu_seconds()) for a in agents}
    t0 = time.monotonic()
    threading.Event().wait(seconds)
    took = time.monotonic() - t0
    out: dict[str, dict[str, Any]] = {}
    for name, fleet in groups.items():
        run_s = [(a.run_seconds() - before[a.pid][0]) / took * 60 for a in fleet]
        ticks = [(a.cpu_seconds() - before[a.pid][1]) / took * 60 for a in fleet]
        out[name] = {
            "cpu_s_per_min": [round(c, 4) for c in run_s],
            "cpu_s_per_min_ticks": [round(c, 3) for c in ticks],  # /proc/PID/stat, a check
            "rss_mb": [round(a.rss_kib() / 1024, 1) for a in fleet],
        }
    out["window_s"] = {"seconds": round(took, 1)}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "machine": machine(),
        "agents": args.agents,
        "settle_s": args.settle,
        "broker_down_s": args.broker_down,
    }
    with tempfile.TemporaryDirectory(prefix="fleet-") as tmp:
        base = Path(tmp)
        (base / "broker").mkdir()
        broker = Broker(base / "broker").start()
        ha = HomeAssistant(broker.port).start()
        try:
            with FakeLiveServer(api_key=API_KEY) as live:
                print(f"alone: {args.alone} agents, one after another", flush=True)
                result["alone_s"] = [
                    round(t, 3) for t in alone(base, args.alone, live.url, broker, ha)
                ]

                print(f"together: {args.agents} agents at once", flush=True)
                mqtt = Fleet(base / "mqtt", args.agents, live.url, broker.port)
                plain = Fleet(base / "plain", args.agents, live.url, None, prefix="plain")
                try:
                    mqtt.start()
                    found = [
                        discovered_at(ha, a.device_id, a.started_at, START_TIMEOUT_S) - a.started_at
                        for a in mqtt
                    ]
                    result["together_s"] = [round(t, 3) for t in found]
                    plain.start()
                    for fleet in (mqtt, plain):
                        for agent in fleet:
                            wait_until(agent.ready, START_TIMEOUT_S, f"{agent.device_id} ready")
                    print(
                        f"idle: settle {args.settle:g} s, measure {args.idle_seconds:g} s",
                        flush=True,
                    )
                    threading.Event().wait(args.settle)
                    result["idle"] = idle_cost({"mqtt": mqtt, "no_mqtt": plain}, args.idle_seconds)

                    print("broker restart", flush=True)
                    broker.kill()
                    threading.Event().wait(args.broker_down)
                    back = time.monotonic()
                    broker.start()
                    returned = []
                    for agent in mqtt:
                        discovered_at(ha, agent.device_id, back, START_TIMEOUT_S)
                        online = ha.wait_for(
                            f"pi-agent/{agent.device_id}/availability",
                            lambda m: m.text == "online",
                            after=back,
                            timeout=START_TIMEOUT_S,
                        )
                        returned.append(online.at - back)
                    result["restart_s"] = [round(t, 3) for t in returned]
                finally:
                    codes = mqtt.stop() + plain.stop()
                    result["exit_codes_ok"] = all(code == 0 for code in codes)
        finally:
            ha.stop()
            broker.stop()
    result["machine"]["loadavg_end"] = _loadavg()
    return result


# --------------------------------------------------------------------------- the report


def _row(name: str, values: list[float], unit: str, digits: int) -> str:
    mean = sum(values) / len(values)
    cells = (f"{v:.{digits}f} {unit}" for v in (median(values), mean, max(values)))
    return f"| {name} | " + " | ".join(cells) + " |"


def section(r: dict[str, Any]) -> str:
    """The BENCHMARKS.md section: method, machine, figures."""
    m, n, idle = r["machine"], r["agents"], r["idle"]
    cpu, rss = ("cpu_s_per_min", "rss_mb")
    bridge_cpu = _mean(idle["mqtt"][cpu]) - _mean(idle["no_mqtt"][cpu])
    bridge_rss = median(idle["mqtt"][rss]) - median(idle["no_mqtt"][rss])
    board = f" ({m['board']})" if m.get("board") else ""
    load = (m.get("loadavg_start") or ["-"])[0], (m.get("loadavg_end") or ["-"])[0]
    rows = [
        _row("start -> discovered, one at a time", r["alone_s"], "s", 2),
        _row(f"start -> discovered, {n} at once", r["together_s"], "s", 2),
        _row(f"broker back -> discovered + online, {n} agents", r["restart_s"], "s", 2),
        _row("idle CPU per agent, with MQTT", idle["mqtt"][cpu], "s/min", 3),
        _row("idle CPU per agent, without MQTT", idle["no_mqtt"][cpu], "s/min", 3),
        _row("RSS per agent, with MQTT", idle["mqtt"][rss], "MB", 1),
        _row("RSS per agent, without MQTT", idle["no_mqtt"][rss], "MB", 1),
    ]
    table = "\n".join(["| figure | median | mean | max |", "|---|---|---|---|", *rows])
    clean = "every agent exited with code 0" if r["exit_codes_ok"] else "SOME AGENTS FAILED"
    return f"""{SECTION}

`scripts/bench_fleet.py` measures a fleet of real agents on one broker: each agent is
`python -m pi_agent run --config FILE` with its own `mqtt.device_id`, mock GPIO pins, no audio
and timers off (tests/fleet.py); one `mosquitto` and one fake Live server run on loopback, and a
paho client plays Home Assistant, stamping the arrival of every message.
tests/test_mqtt_agent.py checks the same fleet for correctness; this script only measures.

```
scripts/setup-env test,sim && .venv/bin/python scripts/bench_fleet.py  # rewrites this section
```

### Method

- **Time to discovery**: from starting the process to Home Assistant receiving its retained
  `homeassistant/device/<id>/config`. This covers Python start-up, the imports (paho only when
  `mqtt.enabled`), config, GPIO, the broker login and the first publish. *One at a time*:
  {len(r["alone_s"])} agents started one after another; on a real fleet each agent has its own
  Pi, so this is the figure to expect per Pi. *At once*: {n} started together on this machine's
  {m["nproc"]} cores, so they queue for CPU.
- **Idle cost**: {n} agents with MQTT and {n} without idle side by side, so both groups see the
  same machine. They are connected to the fake Live server and nobody talks; the bridge re-reads
  the GPIO devices every `mqtt.device_poll_s` (1 s) and pings the broker every 60 s. Once every
  agent is ready and {r["settle_s"]:g} s have passed, each process's CPU time is read over
  {idle["window_s"]["seconds"]:g} s from its threads' `/proc/<pid>/task/*/schedstat`
  (nanoseconds; `/proc/<pid>/stat`'s 10 ms ticks are kept in the JSON as a check), and its
  RSS from `/proc/<pid>/status` at the end. The bridge's cost is the difference of the group means
  (CPU) and medians (RSS).
- **Broker restart**: mosquitto is killed (persistence off: every retained message is gone) and
  started again {r["broker_down_s"]:g} s later. The figure is the time from its return until each
  agent's discovery and `online` are back, with the shipped reconnect settings (1 s doubling to
  8 s: an agent retries 1, 3, 7, 15, 23... s after the loss, so a return at
  {r["broker_down_s"]:g} s waits for the next try).

### Machine

- {m["nproc"]} x {m["cpu_model"]}{board}, kernel {m["kernel"]}.
- Python {m["python"]}, paho-mqtt {m["paho_mqtt"]}, mosquitto {m["mosquitto"]}.
- Load average {load[0]} at the start and {load[1]} at the end: the machine was shared with other
  work, which stretches the start-up times more than the idle figures.

### Figures

{table}

While idle, the bridge costs about **{bridge_cpu:.3f} s of CPU a minute** per agent
({bridge_cpu / 60 * 100:.2f} % of one core) and **{bridge_rss:.1f} MB** of RSS; {clean}.
"""


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def write_section(path: Path, text: str) -> None:
    """Replace the section (up to the next ``## `` heading) or append it."""
    doc = path.read_text()
    start = doc.find(SECTION + "\n")
    if start < 0:
        doc = doc.rstrip("\n") + "\n\n" + text
    else:
        end = doc.find("\n## ", start + len(SECTION))
        doc = doc[:start] + text + (doc[end:] if end >= 0 else "")
    path.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=10, help="agents with MQTT (and without)")
    parser.add_argument("--alone", type=int, default=5, help="agents started one at a time")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="CPU window")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before the window")
    parser.add_argument("--broker-down", type=float, default=10.0, help="seconds without broker")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    result = run(args)
    text = section(result)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    if not args.no_write:
        write_section(ROOT / "BENCHMARKS.md", text)
        print(f"wrote the figures to {ROOT / 'BENCHMARKS.md'} ({SECTION[3:]})")
    return 0 if result["exit_codes_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
