#!/usr/bin/env python3
"""pi-agent's Live session vs the google-genai SDK vs the json+base64+socket floor, side by side.

One run, one fake Gemini Live server (``FakeLiveServer(tls=True)`` in this process), the same
workload for three clients, each in its own subprocess so that its CPU time, peak RSS and
import cost are its own:

* ``pi-agent``: ``LiveSession`` + ``protocol`` + ``turns``, wired like ``pi_agent/agent.py``:
  audio bypasses the agent thread (mic thread -> ``Uplink`` -> writer thread; reader thread ->
  ``Playback`` -> speaker sink), everything else goes reader -> event queue -> agent thread.
* ``sdk``: google-genai's ``client.aio.live.connect`` in asyncio, shaped like Google's Live API
  cookbook (a producer task -> ``asyncio.Queue`` -> a sender task calling
  ``send_realtime_input``; a receiver task iterating ``session.receive()`` that answers tool
  calls with ``send_tool_response`` and hands audio to the sink).
* ``floor``: websocket-client, ``json`` and ``base64`` only, one thread, a ``select`` loop: what
  the same bytes cost with no protocol layer at all.

The workload, driven in real time: N push-to-talk turns of ``--seconds-per-turn`` of 16 kHz audio
in 40 ms chunks (activityStart, audio, activityEnd) with one 640x480 JPEG per second; the server
answers every turn with one toolCall (the client answers it) and then the same length of 24 kHz
audio at real-time pace in 40 ms chunks. In one turn the user barges in (starts the next turn)
one second into the answer; the client flushes its sink on ``interrupted``.

    scripts/bench [--turns 6] [--seconds-per-turn 3] [--json bench-results/bench.json]

Every figure is defined in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLIENTS = ("pi-agent", "sdk", "floor")
IN_RATE, OUT_RATE = 16000, 24000
MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"
API_KEY = "bench-key"
SYSTEM = "You are a helpful Raspberry Pi voice assistant."
REPLY_TEXT = "Okay, I switched the light on for you. Anything else I can do?"
TOOL: dict[str, Any] = {
    "name": "set_light",
    "description": "Turn the LED on or off.",
    "parameters": {
        "type": "OBJECT",
        "properties": {"on": {"type": "BOOLEAN", "description": "true = on"}},
        "required": ["on"],
    },
}
LIVE_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
AUDIO_PREFIX = '{"realtimeInput":{"audio"'
WAIT_TIMEOUT = 30.0  # no single wait in the script may take longer than this

GOALS = {
    "cpu_vs_sdk": 0.5,
    "rss_vs_sdk": 0.5,
    "cpu_vs_floor": 2.0,
    "chunk_to_wire_p99_ms": 5.0,
    "recv_to_sink_p99_ms": 10.0,
    "interrupt_to_flush_p99_ms": 50.0,
}


# =============================================================================== client side
# Everything down to the "parent side" marker runs inside one client subprocess. Only the
# standard library is imported at module level, so each client's RSS and import time are its own.


def _status_kb(name: str) -> int:
    """A field of /proc/self/status in kB (VmHWM = peak RSS, VmRSS = current); 0 elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu() -> tuple[float, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


def _thread_cpu(thread: Any) -> float:
    """CPU seconds a running thread has used (0 if it is gone or the OS cannot tell)."""
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except (AttributeError, OSError, TypeError):
        return 0.0


class Progress:
    """What the receive side has seen so far; the script waits on it.

    The receive side wakes the script only when a wait may end (a turnComplete, or the answer
    crossing the barge-in point), not for every chunk: the harness must not add thread
    wake-ups that the product would not have.
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.turns_done = 0  # turnComplete messages received
        self.reply_bytes = 0  # model audio received since the last turnComplete
        self.barge_bytes = int(cfg["barge_after_s"] * OUT_RATE * 2)

    def audio(self, n: int) -> bool:
        """Count model audio; True if the script should look again."""
        before = self.reply_bytes
        self.reply_bytes += n
        return before < self.barge_bytes <= self.reply_bytes

    def turn_complete(self) -> bool:
        self.turns_done += 1
        self.reply_bytes = 0
        return True


class Recorder:
    """Timestamps (time.monotonic, comparable across processes on Linux) and the speaker sink."""

    def __init__(self) -> None:
        self.produced: list[float] = []  # when each mic chunk was made, in order
        self.wire: list[float] = []  # chunk made -> its send call returned, seconds, in order
        self.played: list[tuple[float, float, int]] = []  # (frame read, sink got it, bytes)
        self.flushes: list[tuple[float, float]] = []  # (interrupted frame read, sink flushed)
        self.tool_calls = 0
        self.video_frames = 0
        self.buffered = 0  # bytes "in the speaker"

    def play(self, pcm: bytes, t_rx: float) -> None:
        """The speaker sink: takes a piece of model audio (no device: it records time+length)."""
        self.buffered += len(pcm)
        self.played.append((t_rx, time.monotonic(), len(pcm)))

    def flush(self, t_rx: float) -> None:
        self.buffered = 0
        self.flushes.append((t_rx, time.monotonic()))


Wait = float | Callable[[], bool]


def script(
    cfg: dict[str, Any],
    pcm: bytes,
    jpeg: bytes,
    emit: Callable[[str, Any], None],
    progress: Progress,
    rec: Recorder,
) -> Iterator[Wait]:
    """The workload, identical for every client. Yields what to wait for next: an absolute
    ``time.monotonic()`` deadline or a condition on ``progress``; ``emit`` hands inputs over
    (``start``, ``audio`` (t, pcm), ``video`` jpeg, ``end``) without blocking."""
    dt = cfg["chunk_ms"] / 1000.0
    step = IN_RATE * 2 * cfg["chunk_ms"] // 1000
    n = len(pcm) // step
    per_frame = max(1, round(1.0 / dt))
    for turn in range(1, cfg["turns"] + 1):
        emit("start", None)
        t0 = time.monotonic()
        for j in range(n):
            yield t0 + j * dt
            t = time.monotonic()
            if j % per_frame == 0:
                rec.video_frames += 1
                emit("video", jpeg)
            rec.produced.append(t)
            emit("audio", (t, pcm[j * step : (j + 1) * step]))
        yield t0 + n * dt
        emit("end", None)
        if turn == cfg["barge_turn"]:  # the next turn starts while the model is speaking
            yield (
                lambda t=turn: (
                    progress.reply_bytes >= progress.barge_bytes or progress.turns_done >= t
                )
            )
        else:
            yield lambda t=turn: progress.turns_done >= t


def _result(
    rec: Recorder,
    *,
    import_s: float,
    connect_s: float,
    wall: tuple[float, float],
    cpu: tuple[tuple[float, float], tuple[float, float]],
    spawn_t: float,
    ready_t: float,
    rss_import: int,
    rss_ready: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    (u0, s0), (u1, s1) = cpu
    return {
        "import_s": import_s,
        "connect_s": connect_s,
        "start_to_ready_s": ready_t - spawn_t if spawn_t else None,
        "conversation_s": wall[1] - wall[0],
        "cpu_user_s": u1 - u0,
        "cpu_sys_s": s1 - s0,
        "peak_rss_kb": _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "rss_after_import_kb": rss_import,
        "rss_ready_kb": rss_ready,
        "produced": rec.produced,
        "wire": rec.wire,
        "played": rec.played,
        "flushes": rec.flushes,
        "tool_calls": rec.tool_calls,
        "video_frames": rec.video_frames,
        **(extra or {}),
    }


def client_pi_agent(cfg: dict[str, Any], pcm: bytes, jpeg: bytes, spawn_t: float) -> dict:
    t0 = time.perf_counter()
    import queue
    import threading

    import websocket

    from pi_agent import protocol
    from pi_agent.session import Credentials, LiveSession, SessionEnded
    from pi_agent.turns import PendingTurn, Playback, Uplink

    import_s = time.perf_counter() - t0
    rss_import = _status_kb("VmRSS")

    # Frame arrival: when websocket-client's recv_data_frame returned in the reader thread
    # (the frame is read off the TLS socket and unmasked). on_event runs right after, in the
    # same thread, for each event of that frame, so it reads the stamp.
    last_rx = [0.0]
    recv_data_frame = websocket.WebSocket.recv_data_frame

    def stamped_recv(self: Any, control_frame: bool = False) -> Any:
        frame = recv_data_frame(self, control_frame)
        last_rx[0] = time.monotonic()
        return frame

    websocket.WebSocket.recv_data_frame = stamped_recv  # type: ignore[method-assign]

    rec, progress = Recorder(), Progress(cfg)
    cond = threading.Condition()
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    unsent: collections.deque[float] = collections.deque()
    failure: list[str] = []

    def on_sent(text: str) -> None:  # writer thread, after ws.send() returned
        if text.startswith(AUDIO_PREFIX):
            rec.wire.append(time.monotonic() - unsent.popleft())

    t1 = time.perf_counter()
    setup = protocol.build_setup(
        protocol.SetupOptions(model=MODEL, system_instruction=SYSTEM, function_declarations=[TOOL])
    )
    session = LiveSession(
        protocol.live_url(cfg["url"]),
        Credentials(api_key=cfg["api_key"]),
        setup,
        on_event=lambda s, event: on_event(s, event),
        sslopt={"ca_certs": cfg["ca"]},
        name="bench",
    )
    session.on_sent = on_sent

    def play(pcm: bytes) -> None:  # reader thread, through Playback (as the product does)
        rec.play(pcm, last_rx[0])
        with cond:
            if progress.audio(len(pcm)):
                cond.notify_all()

    playback = Playback(play)
    uplink = Uplink(manual_activity=True, max_buffered_s=30)

    def on_event(s: Any, event: object) -> None:  # reader thread: the product's fast path
        if type(event) is protocol.AudioChunk and playback.offer(s, event.pcm) is not None:
            return
        events.put(("server", (last_rx[0], event)))

    session.open()
    uplink.attach(session, resend=False)
    connect_s = time.perf_counter() - t1
    ready_t = time.monotonic()
    rss_ready = _status_kb("VmRSS")

    stop = threading.Event()

    def on_server(t_rx: float, event: object) -> None:
        if isinstance(event, protocol.AudioChunk):  # not expected: the playback was closed
            play(event.pcm)
        elif isinstance(event, protocol.Interrupted):
            playback.rearm()
            rec.flush(t_rx)
        elif isinstance(event, protocol.ToolCall):
            rec.tool_calls += 1
            responses = [
                {"id": c.id, "name": c.name, "response": {"result": "ok"}} for c in event.calls
            ]
            session.send(protocol.tool_response(responses))
        elif isinstance(event, protocol.TurnComplete):
            playback.rearm()
            with cond:
                progress.turn_complete()
                cond.notify_all()
        elif isinstance(event, SessionEnded) and not stop.is_set():
            failure.append(f"session ended: {event.error}")
            with cond:
                cond.notify_all()

    def handler() -> None:  # the agent thread: the only one that sends
        while not stop.is_set():
            try:
                kind, payload = events.get(timeout=0.25)
            except queue.Empty:
                continue
            if kind == "server":
                on_server(*payload)
            elif kind == "video":
                session.send_video(payload)

    agent = threading.Thread(target=handler, name="agent", daemon=True)
    agent.start()
    threads = {
        "mic (main)": threading.main_thread(),
        "agent": agent,
        "reader": session._reader,
        "writer": session._writer,
    }
    tcpu0 = {k: _thread_cpu(t) for k, t in threads.items()}
    wall0, cpu0 = time.monotonic(), _cpu()
    turn_number = [0]

    def emit(kind: str, payload: Any) -> None:
        """The "mic" thread: audio through the Uplink, as Microphone -> Uplink.feed does."""
        if kind == "audio":
            t, chunk = payload
            unsent.append(t)
            uplink.feed(chunk)
        elif kind == "start":  # a press: the agent closes playback, flushes, begins a turn
            playback.close()
            turn_number[0] += 1
            uplink.begin(PendingTurn(turn_number[0]))
        elif kind == "end":  # a release: activityEnd, then the answer may play directly
            uplink.end(time.monotonic())
            playback.open(session)
        else:
            events.put((kind, payload))

    try:
        for wait in script(cfg, pcm, jpeg, emit, progress, rec):  # this thread is the "mic"
            if callable(wait):
                with cond:
                    ok = cond.wait_for(lambda w=wait: w() or bool(failure), WAIT_TIMEOUT)
                if failure:
                    raise RuntimeError(failure[0])
                if not ok:
                    raise TimeoutError(f"stuck after {progress.turns_done} turns")
            else:
                delay = wait - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        wall1, cpu1 = time.monotonic(), _cpu()
        thread_cpu = {k: _thread_cpu(t) - tcpu0[k] for k, t in threads.items()}
    finally:
        stop.set()
        session.close()
        agent.join(2)
    return _result(
        rec,
        import_s=import_s,
        connect_s=connect_s,
        wall=(wall0, wall1),
        cpu=(cpu0, cpu1),
        spawn_t=spawn_t,
        ready_t=ready_t,
        rss_import=rss_import,
        rss_ready=rss_ready,
        extra={"video_dropped": session.video_dropped, "thread_cpu_s": thread_cpu},
    )


def client_sdk(cfg: dict[str, Any], pcm: bytes, jpeg: bytes, spawn_t: float) -> dict:
    t0 = time.perf_counter()
    import asyncio
    import ssl  # noqa: F401

    from google import genai  # noqa: F401
    from google.genai import types  # noqa: F401

    import_s = time.perf_counter() - t0
    return asyncio.run(_sdk(cfg, pcm, jpeg, spawn_t, import_s, _status_kb("VmRSS")))


async def _sdk(
    cfg: dict[str, Any], pcm: bytes, jpeg: bytes, spawn_t: float, import_s: float, rss_import: int
) -> dict:
    import asyncio
    import ssl

    from google import genai
    from google.genai import types
    from websockets.asyncio import connection as ws_connection
    from websockets.frames import DATA_OPCODES

    # Frame arrival: when websockets parsed a data frame out of the bytes the event loop just
    # received (Connection.process_event, called from data_received). session.receive() yields
    # one LiveServerMessage per WebSocket message, in order, so each pops one stamp.
    arrivals: collections.deque[float] = collections.deque()
    process_event = ws_connection.Connection.process_event

    def stamped_event(self: Any, event: Any) -> None:
        if event.opcode in DATA_OPCODES:
            arrivals.append(time.monotonic())
        process_event(self, event)

    ws_connection.Connection.process_event = stamped_event  # type: ignore[method-assign]

    t1 = time.perf_counter()
    base = "https://" + cfg["url"].split("://", 1)[1]
    client = genai.Client(
        api_key=cfg["api_key"],
        http_options={
            "base_url": base,
            "api_version": "v1beta",
            "async_client_args": {"ssl": ssl.create_default_context(cafile=cfg["ca"])},
        },
    )
    config = types.LiveConnectConfig(
        response_modalities=["AUDIO"],
        system_instruction=SYSTEM,
        tools=[types.Tool(function_declarations=[types.FunctionDeclaration(**TOOL)])],
        input_audio_transcription=types.AudioTranscriptionConfig(),
        output_audio_transcription=types.AudioTranscriptionConfig(),
        realtime_input_config=types.RealtimeInputConfig(
            automatic_activity_detection=types.AutomaticActivityDetection(disabled=True)
        ),
        session_resumption=types.SessionResumptionConfig(),
        context_window_compression=types.ContextWindowCompressionConfig(
            sliding_window=types.SlidingWindow()
        ),
    )
    rec, progress = Recorder(), Progress(cfg)
    async with client.aio.live.connect(model=MODEL, config=config) as session:
        connect_s = time.perf_counter() - t1
        ready_t = time.monotonic()
        rss_ready = _status_kb("VmRSS")
        arrivals.clear()  # setupComplete
        cond = asyncio.Condition()
        out: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        async def sender() -> None:
            while True:
                kind, payload = await out.get()
                if kind == "audio":
                    t, chunk = payload
                    blob = types.Blob(data=chunk, mime_type="audio/pcm;rate=16000")
                    await session.send_realtime_input(audio=blob)
                    rec.wire.append(time.monotonic() - t)  # its last step is await ws.send()
                elif kind == "video":
                    blob = types.Blob(data=payload, mime_type="image/jpeg")
                    await session.send_realtime_input(video=blob)
                elif kind == "start":
                    await session.send_realtime_input(activity_start=types.ActivityStart())
                elif kind == "end":
                    await session.send_realtime_input(activity_end=types.ActivityEnd())

        async def receiver() -> None:
            while True:
                async for msg in session.receive():  # ends after each turnComplete
                    t_rx = arrivals.popleft()
                    changed = False
                    if msg.tool_call and msg.tool_call.function_calls:
                        rec.tool_calls += 1
                        await session.send_tool_response(
                            function_responses=[
                                types.FunctionResponse(
                                    id=c.id, name=c.name, response={"result": "ok"}
                                )
                                for c in msg.tool_call.function_calls
                            ]
                        )
                    content = msg.server_content
                    if content is None:
                        continue
                    if content.model_turn and content.model_turn.parts:
                        for part in content.model_turn.parts:
                            if part.inline_data and part.inline_data.data:
                                rec.play(part.inline_data.data, t_rx)
                                changed |= progress.audio(len(part.inline_data.data))
                    if content.interrupted:
                        rec.flush(t_rx)
                    if content.turn_complete:
                        changed = progress.turn_complete()
                    if changed:
                        async with cond:
                            cond.notify_all()

        async def drive() -> None:
            emit = lambda kind, payload: out.put_nowait((kind, payload))  # noqa: E731
            for wait in script(cfg, pcm, jpeg, emit, progress, rec):
                if callable(wait):
                    async with cond:
                        await asyncio.wait_for(cond.wait_for(wait), WAIT_TIMEOUT)
                else:
                    delay = wait - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)

        wall0, cpu0 = time.monotonic(), _cpu()
        tasks = [asyncio.create_task(f()) for f in (drive, sender, receiver)]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        wall1, cpu1 = time.monotonic(), _cpu()
        for task in tasks:
            task.cancel()
        for task in done:
            task.result()  # raises what ended it early
        if tasks[0] not in done:
            raise RuntimeError("a task ended before the script did")
    return _result(
        rec,
        import_s=import_s,
        connect_s=connect_s,
        wall=(wall0, wall1),
        cpu=(cpu0, cpu1),
        spawn_t=spawn_t,
        ready_t=ready_t,
        rss_import=rss_import,
        rss_ready=rss_ready,
    )


def client_floor(cfg: dict[str, Any], pcm: bytes, jpeg: bytes, spawn_t: float) -> dict:
    t0 = time.perf_counter()
    import base64
    import select

    import websocket

    import_s = time.perf_counter() - t0
    rss_import = _status_kb("VmRSS")

    t1 = time.perf_counter()
    ws = websocket.create_connection(
        cfg["url"] + LIVE_PATH,
        header=[f"x-goog-api-key: {cfg['api_key']}"],
        sslopt={"ca_certs": cfg["ca"]},
        skip_utf8_validation=True,
    )
    ws.send(cfg["setup_json"])
    while "setupComplete" not in json.loads(ws.recv()):
        pass
    connect_s = time.perf_counter() - t1
    ready_t = time.monotonic()
    rss_ready = _status_kb("VmRSS")
    rec, progress = Recorder(), Progress(cfg)
    sock = ws.sock

    def emit(kind: str, payload: Any) -> None:
        if kind == "audio":
            t, chunk = payload
            data = base64.b64encode(chunk).decode("ascii")
            ws.send(
                '{"realtimeInput":{"audio":{"data":"'
                + data
                + '","mimeType":"audio/pcm;rate=16000"}}}'
            )
            rec.wire.append(time.monotonic() - t)
        elif kind == "video":
            data = base64.b64encode(payload).decode("ascii")
            ws.send('{"realtimeInput":{"video":{"data":"' + data + '","mimeType":"image/jpeg"}}}')
        elif kind == "start":
            ws.send('{"realtimeInput":{"activityStart":{}}}')
        elif kind == "end":
            ws.send('{"realtimeInput":{"activityEnd":{}}}')

    def readable(timeout: float) -> bool:
        if sock.pending():  # decrypted bytes already inside the TLS layer
            return True
        return bool(select.select([sock], [], [], max(0.0, timeout))[0])

    def read_one() -> None:
        opcode, frame = ws.recv_data_frame(True)
        t_rx = time.monotonic()
        if opcode == 8:
            raise RuntimeError(f"server closed: {frame.data!r}")
        if opcode not in (1, 2):
            return
        msg = json.loads(frame.data)
        content = msg.get("serverContent")
        if content:
            turn = content.get("modelTurn")
            if turn:
                for part in turn.get("parts", ()):
                    inline = part.get("inlineData")
                    if inline:
                        chunk = base64.b64decode(inline["data"])
                        rec.play(chunk, t_rx)
                        progress.audio(len(chunk))
            if content.get("interrupted"):
                rec.flush(t_rx)
            if content.get("turnComplete"):
                progress.turn_complete()
        call = msg.get("toolCall")
        if call:
            rec.tool_calls += 1
            responses = [
                {"id": c["id"], "name": c["name"], "response": {"result": "ok"}}
                for c in call["functionCalls"]
            ]
            ws.send(json.dumps({"toolResponse": {"functionResponses": responses}}))

    wall0, cpu0 = time.monotonic(), _cpu()
    for wait in script(cfg, pcm, jpeg, emit, progress, rec):
        if callable(wait):
            deadline = time.monotonic() + WAIT_TIMEOUT
            while not wait():
                if not readable(deadline - time.monotonic()):
                    raise TimeoutError(f"stuck after {progress.turns_done} turns")
                read_one()
        else:
            while (left := wait - time.monotonic()) > 0:
                if readable(left):
                    read_one()
    wall1, cpu1 = time.monotonic(), _cpu()
    ws.close()
    return _result(
        rec,
        import_s=import_s,
        connect_s=connect_s,
        wall=(wall0, wall1),
        cpu=(cpu0, cpu1),
        spawn_t=spawn_t,
        ready_t=ready_t,
        rss_import=rss_import,
        rss_ready=rss_ready,
    )


def child_main(name: str, config_path: str, spawn_t: float) -> int:
    cfg = json.loads(Path(config_path).read_text())
    pcm = Path(cfg["pcm_file"]).read_bytes()
    jpeg = Path(cfg["jpeg_file"]).read_bytes()
    run = {"pi-agent": client_pi_agent, "sdk": client_sdk, "floor": client_floor}[name]
    result = run(cfg, pcm, jpeg, spawn_t)
    result["client"] = name
    Path(cfg["out"]).write_text(json.dumps(result))
    return 0


# =============================================================================== parent side


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def dist_ms(seconds: list[float]) -> dict[str, Any]:
    ms = [v * 1000.0 for v in seconds]
    return {
        "n": len(ms),
        "p50": percentile(ms, 50),
        "p99": percentile(ms, 99),
        "max": max(ms) if ms else None,
    }


def make_workload(directory: Path, seconds: float, chunk_ms: int) -> dict[str, Any]:
    """The user's speech (16 kHz), the model's answer (24 kHz) and one 640x480 JPEG."""
    import numpy as np
    import simplejpeg

    rng = np.random.default_rng(8)
    step = IN_RATE * 2 * chunk_ms // 1000
    n_in = round(seconds * 1000 / chunk_ms) * step // 2
    t = np.arange(n_in) / IN_RATE
    voice = 0.25 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    voice += 0.02 * rng.standard_normal(n_in)
    user = (np.clip(voice, -1, 1) * 32767).astype("<i2").tobytes()
    n_out = round(seconds * OUT_RATE)
    t = np.arange(n_out) / OUT_RATE
    reply = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes()
    y, x = np.mgrid[0:480, 0:640]
    img = np.stack([x * 255 // 639, y * 255 // 479, (x + y) * 255 // 1118], axis=-1)
    img = np.clip(img + rng.integers(-4, 5, img.shape), 0, 255).astype(np.uint8)
    jpeg = simplejpeg.encode_jpeg(np.ascontiguousarray(img), quality=80, colorspace="RGB")
    (directory / "user.pcm").write_bytes(user)
    (directory / "frame.jpg").write_bytes(jpeg)
    return {
        "pcm_file": str(directory / "user.pcm"),
        "jpeg_file": str(directory / "frame.jpg"),
        "reply_pcm": reply,
        "jpeg_bytes": len(jpeg),
    }


def run_client(
    name: str, cfg: dict[str, Any], server: Any, workdir: Path, timeout: float
) -> dict[str, Any]:
    """One client in its own process; adds the server's view of the same connection."""
    cfg = dict(cfg, out=str(workdir / f"{name}.out.json"))
    cfg_path = workdir / f"{name}.cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    first_conn = len(server.connections)
    first_rx, first_tx = len(server.received), len(server.sent)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_client", name, "--_config"]
    cmd += [str(cfg_path), "--_spawn-t", repr(time.monotonic())]
    started = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"client": name, "error": f"timed out after {timeout:.0f} s"}
    took = time.monotonic() - started
    if done.returncode != 0 or not Path(cfg["out"]).exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-6:]
        return {"client": name, "error": f"exit {done.returncode}: " + " | ".join(tail)}
    raw = json.loads(Path(cfg["out"]).read_text())
    conn_ids = {c.id for c in server.connections[first_conn:]}
    received = [r for r in server.received[first_rx:] if r.conn_id in conn_ids]
    sent = [s for s in server.sent[first_tx:] if s.conn_id in conn_ids]
    return summarize(name, raw, received, sent, took)


def _is_model_audio(message: dict[str, Any] | None) -> bool:
    content = (message or {}).get("serverContent") or {}
    return bool(content.get("modelTurn"))


def summarize(
    name: str, raw: dict[str, Any], received: list, sent: list, took: float
) -> dict[str, Any]:
    minutes = raw["conversation_s"] / 60.0
    cpu = raw["cpu_user_s"] + raw["cpu_sys_s"]
    played = raw["played"]
    out: dict[str, Any] = {
        "client": name,
        "process_wall_s": took,
        "import_s": raw["import_s"],
        "connect_s": raw["connect_s"],
        "import_connect_s": raw["import_s"] + raw["connect_s"],
        "start_to_ready_s": raw["start_to_ready_s"],
        "conversation_s": raw["conversation_s"],
        "cpu_s": cpu,
        "cpu_user_s": raw["cpu_user_s"],
        "cpu_sys_s": raw["cpu_sys_s"],
        "cpu_s_per_min": cpu / minutes if minutes else None,
        "peak_rss_mb": raw["peak_rss_kb"] / 1024.0,
        "rss_after_import_mb": raw["rss_after_import_kb"] / 1024.0,
        "rss_ready_mb": raw["rss_ready_kb"] / 1024.0,
        "chunk_to_wire_ms": dist_ms(raw["wire"]),
        "recv_to_sink_ms": dist_ms([s - r for r, s, _ in played]),
        "interrupt_to_flush_ms": dist_ms([f - r for r, f in raw["flushes"]]),
        "thread_cpu_s": raw.get("thread_cpu_s"),
        "counts": {
            "audio_chunks_sent": len(raw["produced"]),
            "video_frames_sent": raw["video_frames"],
            "tool_calls_answered": raw["tool_calls"],
            "audio_chunks_received": len(played),
            "audio_bytes_received": sum(n for _, _, n in played),
            "interrupts": len(raw["flushes"]),
        },
    }
    # Cross-check against the server's clock (same CLOCK_MONOTONIC): includes loopback TLS and
    # the server's own work, identical for every client. Matched by order on one connection.
    at_server = [r.t for r in received if r.kind == "realtimeInput" and r.sub == "audio"]
    if len(at_server) == len(raw["produced"]):
        out["chunk_to_server_ms"] = dist_ms(
            [s - p for s, p in zip(at_server, raw["produced"], strict=True)]
        )
    else:
        out["chunk_to_server_ms"] = {
            "error": f"{len(at_server)} at server, {len(raw['produced'])} made"
        }
    from_server = [s.t for s in sent if _is_model_audio(s.message)]
    if len(from_server) == len(played):
        out["server_to_sink_ms"] = dist_ms(
            [p[1] - s for s, p in zip(from_server, played, strict=True)]
        )
    else:
        out["server_to_sink_ms"] = {"error": f"{len(from_server)} sent, {len(played)} played"}
    return out


def run_sub_bench(argv: list[str], timeout: float) -> tuple[str | None, str]:
    """(stdout, error) of a colleague's micro-benchmark; never raises."""
    try:
        done = subprocess.run(
            [sys.executable, *argv], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return None, f"exit {done.returncode}: " + " | ".join(tail)
    return done.stdout, ""


def audio_bench(seconds: float) -> dict[str, Any]:
    script_path = ROOT / "scripts" / "bench_audio.py"
    stdout, error = run_sub_bench(
        [str(script_path), "--seconds", str(seconds), "--json"], 60 + 8 * seconds
    )
    if stdout is None:
        return {"error": error}
    try:
        rows = json.loads(stdout[stdout.index("[") :])
    except ValueError as exc:
        return {"error": f"unreadable output: {exc}"}
    return {"seconds_per_row": seconds, "rows": rows}


_CAMERA_ROW = re.compile(r"^(?P<path>\S.*?)\s+(?P<cpu>[\d.]+)\s+(?P<wall>[\d.]+)\s+(?P<x>[\d.]+)$")


def camera_bench(frames: int) -> dict[str, Any]:
    script_path = ROOT / "scripts" / "bench_camera.py"
    stdout, error = run_sub_bench(
        [str(script_path), "--frames", str(frames), "--repeats", "3"], 120
    )
    if stdout is None:
        return {"error": error}
    lines = stdout.strip().splitlines()
    rows = []
    for line in lines:
        m = _CAMERA_ROW.match(line.strip())
        if m:
            rows.append(
                {
                    "path": m["path"].strip(),
                    "cpu_ms": float(m["cpu"]),
                    "wall_ms": float(m["wall"]),
                    "ratio": float(m["x"]),
                }
            )
    if not rows:
        return {"error": "no rows in its output: " + " | ".join(lines[-3:])}
    return {"header": lines[0] if lines else "", "rows": rows}


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


METRICS: list[tuple[str, str, Callable[[dict[str, Any]], float | None]]] = [
    ("CPU s per min of conversation", "cpu_s_per_min", lambda r: r.get("cpu_s_per_min")),
    ("peak RSS MB", "peak_rss_mb", lambda r: r.get("peak_rss_mb")),
    ("import s", "import_s", lambda r: r.get("import_s")),
    ("connect -> setupComplete s", "connect_s", lambda r: r.get("connect_s")),
    ("import + connect s", "import_connect_s", lambda r: r.get("import_connect_s")),
    ("process start -> ready s", "start_to_ready_s", lambda r: r.get("start_to_ready_s")),
    ("chunk -> wire p50 ms", "chunk_to_wire_p50", lambda r: _dist(r, "chunk_to_wire_ms", "p50")),
    ("chunk -> wire p99 ms", "chunk_to_wire_p99", lambda r: _dist(r, "chunk_to_wire_ms", "p99")),
    ("received -> sink p50 ms", "recv_to_sink_p50", lambda r: _dist(r, "recv_to_sink_ms", "p50")),
    ("received -> sink p99 ms", "recv_to_sink_p99", lambda r: _dist(r, "recv_to_sink_ms", "p99")),
    (
        "interrupted -> flushed p50 ms",
        "interrupt_p50",
        lambda r: _dist(r, "interrupt_to_flush_ms", "p50"),
    ),
    (
        "interrupted -> flushed p99 ms",
        "interrupt_p99",
        lambda r: _dist(r, "interrupt_to_flush_ms", "p99"),
    ),
    (
        "x-check chunk -> server p50 ms",
        "chunk_to_server_p50",
        lambda r: _dist(r, "chunk_to_server_ms", "p50"),
    ),
    (
        "x-check chunk -> server p99 ms",
        "chunk_to_server_p99",
        lambda r: _dist(r, "chunk_to_server_ms", "p99"),
    ),
    (
        "x-check server -> sink p50 ms",
        "server_to_sink_p50",
        lambda r: _dist(r, "server_to_sink_ms", "p50"),
    ),
    (
        "x-check server -> sink p99 ms",
        "server_to_sink_p99",
        lambda r: _dist(r, "server_to_sink_ms", "p99"),
    ),
]


def _dist(r: dict[str, Any], key: str, q: str) -> float | None:
    value = r.get(key)
    return value.get(q) if isinstance(value, dict) else None


def compare(clients: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    table: dict[str, dict[str, float | None]] = {}
    pi, sdk, floor = (clients.get(n, {}) for n in CLIENTS)
    for _label, key, get in METRICS:
        a, b, c = get(pi), get(sdk), get(floor)
        table[key] = {
            "pi-agent": a,
            "sdk": b,
            "floor": c,
            "pi-agent/sdk": _ratio(a, b),
            "pi-agent/floor": _ratio(a, c),
        }
    return table


def goals(table: dict[str, dict[str, float | None]]) -> list[dict[str, Any]]:
    checks = [
        (
            "CPU per minute <= 0.5x the SDK's",
            table["cpu_s_per_min"]["pi-agent/sdk"],
            GOALS["cpu_vs_sdk"],
        ),
        ("peak RSS <= 0.5x the SDK's", table["peak_rss_mb"]["pi-agent/sdk"], GOALS["rss_vs_sdk"]),
        (
            "CPU per minute within 2x of the floor",
            table["cpu_s_per_min"]["pi-agent/floor"],
            GOALS["cpu_vs_floor"],
        ),
        (
            "chunk -> wire p99 <= 5 ms",
            table["chunk_to_wire_p99"]["pi-agent"],
            GOALS["chunk_to_wire_p99_ms"],
        ),
        (
            "received -> sink p99 <= 10 ms",
            table["recv_to_sink_p99"]["pi-agent"],
            GOALS["recv_to_sink_p99_ms"],
        ),
        (
            "interrupted -> flushed p99 <= 50 ms",
            table["interrupt_p99"]["pi-agent"],
            GOALS["interrupt_to_flush_p99_ms"],
        ),
    ]
    return [
        {
            "goal": text,
            "value": value,
            "limit": limit,
            "met": None if value is None else value <= limit,
        }
        for text, value, limit in checks
    ]


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The figures quoted in BENCHMARKS.md: ratios first, then the device paths."""
    table = result["table"]
    out: dict[str, Any] = {
        "cpu_per_min_pi_agent_vs_sdk": table["cpu_s_per_min"]["pi-agent/sdk"],
        "peak_rss_pi_agent_vs_sdk": table["peak_rss_mb"]["pi-agent/sdk"],
        "import_connect_pi_agent_vs_sdk": table["import_connect_s"]["pi-agent/sdk"],
        "cpu_per_min_pi_agent_vs_floor": table["cpu_s_per_min"]["pi-agent/floor"],
    }
    for row in result["audio"].get("rows", ()):
        if row.get("path", "").startswith("pi-agent") and row.get("setup", "").startswith("16k"):
            out["audio_cpu_s_per_min"] = row["cpu_s_per_min"]
            out["audio_cpu_vs_bare_pyaudio"] = row["ratio"]
            out["mic_chunk_to_queue_p50_ms"] = row["latency_p50_ms"]
            out["mic_chunk_to_queue_p99_ms"] = row["latency_p99_ms"]
    for row in result["camera"].get("rows", ()):
        if row["path"].startswith("FrameSampler.look"):
            out["camera_cpu_ms_per_frame"] = row["cpu_ms"]
            out["camera_cpu_vs_bare_encode"] = row["ratio"]
    return out


def _loadavg() -> list[float] | None:
    """1/5/15-minute load: other work on the machine disturbs the figures."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        fields: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())
        model = fields.get("model name") or fields.get("model") or fields.get("hardware") or model
    except OSError:
        pass
    try:
        board = Path("/proc/device-tree/model").read_text().strip("\0\n ")
    except OSError:
        board = None
    versions: dict[str, str | None] = {}
    from importlib import metadata

    for dist in ("websocket-client", "google-genai", "websockets", "pydantic"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "board": board,
        "machine": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "loadavg_start": _loadavg(),
    }


def _fmt(value: float | None, ratio: bool = False) -> str:
    if value is None:
        return "-"
    if ratio:
        return f"{value:.2f}x"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"


def print_report(result: dict[str, Any]) -> None:
    w = result["workload"]
    m = result["machine"]
    print(
        f"\npi-agent benchmark: {w['turns']} turns x {w['seconds_per_turn']:g} s speech + "
        f"{w['seconds_per_turn']:g} s answer, {w['chunk_ms']} ms chunks, 1 JPEG/s "
        f"({w['jpeg_bytes'] / 1024:.1f} KiB), 1 tool call/turn, "
        f"barge-in in turn {w['barge_turn'] or '-'}"
    )
    print(
        f"machine: {m['nproc']} x {m['cpu_model']}, Python {m['python']}, {m['machine']}, "
        f"load {m.get('loadavg_start')} -> {m.get('loadavg_end')}"
    )
    for name in CLIENTS:
        r = result["clients"].get(name)
        if r and "error" in r:
            print(f"  {name}: FAILED: {r['error']}")
    head = f"{'metric':34} {'pi-agent':>9} {'SDK':>9} {'floor':>9} {'pi/SDK':>8} {'pi/floor':>8}"
    print("\n" + head + "\n" + "-" * len(head))
    table = result["table"]
    for label, key, _ in METRICS:
        row = table[key]
        if key == "chunk_to_server_p50":
            print("  (cross-checks on the server's clock: include loopback TLS and the server)")
        print(
            f"{label:34} {_fmt(row['pi-agent']):>9} {_fmt(row['sdk']):>9} {_fmt(row['floor']):>9}"
            f" {_fmt(row['pi-agent/sdk'], True):>8} {_fmt(row['pi-agent/floor'], True):>8}"
        )
    threads = (result["clients"].get("pi-agent") or {}).get("thread_cpu_s")
    conv = (result["clients"].get("pi-agent") or {}).get("conversation_s")
    if threads and conv:
        parts = ", ".join(f"{k} {v / conv * 60:.3f}" for k, v in threads.items())
        print(f"\npi-agent CPU s/min by thread: {parts}")
    print("\ngoals (pi-agent):")
    for g in result["goals"]:
        state = "n/a " if g["met"] is None else ("met " if g["met"] else "MISS")
        print(f"  [{state}] {g['goal']:42} value {_fmt(g['value'])} (limit {g['limit']:g})")

    audio = result["audio"]
    print("\naudio (scripts/bench_audio.py, simulated ALSA card):")
    if "error" in audio:
        print(f"  FAILED: {audio['error']}")
    elif audio.get("skipped"):
        print("  skipped")
    else:
        for r in audio["rows"]:
            print(
                f"  {r['setup']:22} {r['path']:32} CPU {r['cpu_s_per_min']:.3f} s/min"
                f" ({r['ratio']:.2f}x base)  mic->queue p50 {r['latency_p50_ms']:.3f}"
                f" p99 {r['latency_p99_ms']:.3f} ms"
            )
    camera = result["camera"]
    print("\ncamera (scripts/bench_camera.py):")
    if "error" in camera:
        print(f"  FAILED: {camera['error']}")
    elif camera.get("skipped"):
        print("  skipped")
    else:
        print(f"  {camera['header']}")
        print(
            "  (FrameSampler.look + base64 + JSON = one frame captured, encoded, wrapped to send)"
        )
        for r in camera["rows"]:
            print(f"  {r['path']:40} CPU {r['cpu_ms']:.3f} ms/frame ({r['ratio']:.2f}x base)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument(
        "--seconds-per-turn", type=float, default=3.0, help="speech held per turn = answer length"
    )
    parser.add_argument("--chunk-ms", type=int, default=40)
    parser.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated subset")
    parser.add_argument("--json", default=str(ROOT / "bench-results" / "bench.json"))
    parser.add_argument("--audio-seconds", type=float, default=4.0, help="bench_audio, 0 = skip")
    parser.add_argument("--camera-frames", type=int, default=100, help="bench_camera, 0 = skip")
    parser.add_argument("--_client", help=argparse.SUPPRESS)
    parser.add_argument("--_config", help=argparse.SUPPRESS)
    parser.add_argument("--_spawn-t", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._client:
        return child_main(args._client, args._config, args._spawn_t)

    from pi_agent.protocol import SetupOptions, build_setup
    from pi_agent.sim.fake_live import FakeLiveServer, Reply

    names = [n.strip() for n in args.clients.split(",") if n.strip()]
    for n in names:
        if n not in CLIENTS:
            parser.error(f"unknown client {n!r}; choose from {', '.join(CLIENTS)}")
    turns = max(1, args.turns)
    barge_turn = turns // 2 if turns >= 2 else 0
    seconds = args.seconds_per_turn
    workload = {
        "turns": turns,
        "seconds_per_turn": seconds,
        "chunk_ms": args.chunk_ms,
        "barge_turn": barge_turn,
        "barge_after_s": min(1.0, seconds / 3),
    }
    started = time.monotonic()
    result: dict[str, Any] = {"machine": machine(), "workload": workload, "clients": {}}
    with tempfile.TemporaryDirectory(prefix="pi-agent-bench-") as tmp:
        workdir = Path(tmp)
        files = make_workload(workdir, seconds, args.chunk_ms)
        workload["jpeg_bytes"] = files["jpeg_bytes"]
        reply = Reply(
            text=REPLY_TEXT,
            audio=files["reply_pcm"],
            chunk_ms=args.chunk_ms,
            pace=1.0,
            tool_calls=[("set_light", {"on": True})],
        )
        setup = build_setup(
            SetupOptions(model=MODEL, system_instruction=SYSTEM, function_declarations=[TOOL])
        )
        with FakeLiveServer(tls=True, api_key=API_KEY, default_reply=reply) as server:
            cfg = {
                **workload,
                "url": server.url,
                "ca": server.ca_file,
                "api_key": API_KEY,
                "setup_json": json.dumps(setup, separators=(",", ":")),
                "pcm_file": files["pcm_file"],
                "jpeg_file": files["jpeg_file"],
            }
            timeout = 60 + turns * (2 * seconds + 10)
            for name in names:
                print(f"bench: running {name} ...", file=sys.stderr, flush=True)
                r = run_client(name, cfg, server, workdir, timeout)
                result["clients"][name] = r
                if "error" in r:
                    print(f"bench: {name} failed: {r['error']}", file=sys.stderr, flush=True)
    if args.audio_seconds > 0:
        print("bench: running scripts/bench_audio.py ...", file=sys.stderr, flush=True)
        result["audio"] = audio_bench(args.audio_seconds)
    else:
        result["audio"] = {"skipped": True}
    if args.camera_frames > 0:
        print("bench: running scripts/bench_camera.py ...", file=sys.stderr, flush=True)
        result["camera"] = camera_bench(args.camera_frames)
    else:
        result["camera"] = {"skipped": True}
    ok_clients = {n: r for n, r in result["clients"].items() if "error" not in r}
    result["table"] = compare(ok_clients)
    result["goals"] = goals(result["table"])
    result["headline"] = headline(result)
    result["total_s"] = time.monotonic() - started
    result["machine"]["loadavg_end"] = _loadavg()
    print_report(result)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nJSON: {out}  (total {result['total_s']:.0f} s)")
    return 0 if len(ok_clients) == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
