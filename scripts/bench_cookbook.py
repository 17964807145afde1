#!/usr/bin/env python3
"""A cookbook-style push-to-talk Gemini Live agent: the baseline of scripts/bench_whole.py.

Written the way Google's Live API starter (``Get_started_LiveAPI.py`` in the google-gemini
cookbook) is written, so that "what users would run instead" is measured, not a straw man:
the google-genai SDK, one asyncio event loop and PyAudio through ``asyncio.to_thread``:

* ``listen_audio``: ``await asyncio.to_thread(stream.read, CHUNK)`` in a loop, for ever (a
  push-to-talk agent keeps the mic open); chunks go to ``out_queue`` only while the button is
  held;
* ``get_frames``: while the button is held, one JPEG a second (made in ``asyncio.to_thread``,
  as the starter does with OpenCV + PIL; here numpy + simplejpeg draw and encode a 640x480
  test picture, which is cheaper than OpenCV + PIL, so the baseline is not handicapped);
* ``send_realtime``: ``out_queue`` -> ``session.send_realtime_input`` (activityStart, audio,
  video, activityEnd, in order);
* ``receive_audio``: ``async for response in session.receive()``; audio goes to
  ``audio_in_queue`` (read from ``part.inline_data.data``, the cheaper way: the starter's
  ``response.data`` dumps every part), tool calls switch a gpiozero LED and are answered with
  ``send_tool_response``, transcripts are printed, ``interrupted`` empties the queue;
* ``play_audio``: ``audio_in_queue`` -> ``await asyncio.to_thread(stream.write, data)``.

Its "button" is a gpiozero ``Button`` on mock pins (as every gpiozero tutorial writes it),
pressed through a UNIX socket (``press``/``release`` lines, answered ``{"ok": true}``) served by
``asyncio.start_unix_server``; a gpiozero ``PWMLED`` shows listening/answering at steady levels.
The SDK is allowed here because this is a benchmark, never the product.

    python scripts/bench_cookbook.py CONFIG.json    (written by scripts/bench_whole.py)
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
import time

import numpy as np
import pyaudio
import simplejpeg
from google import genai
from google.genai import types
from gpiozero import LED, PWMLED, Button, Device
from gpiozero.pins.mock import MockFactory, MockPWMPin

FORMAT = pyaudio.paInt16
CHANNELS = 1
SEND_SAMPLE_RATE = 16000
RECEIVE_SAMPLE_RATE = 24000


class AudioLoop:
    """The starter's AudioLoop, with a push-to-talk button instead of automatic VAD."""

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.chunk = SEND_SAMPLE_RATE * cfg["chunk_ms"] // 1000
        self.audio_in_queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.out_queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue(maxsize=25)
        self.talking = asyncio.Event()
        self.session = None
        self.pya = pyaudio.PyAudio()
        Device.pin_factory = MockFactory(pin_class=MockPWMPin)
        self.lamp = LED(cfg["lamp_pin"], active_high=False)
        self.status = PWMLED(cfg["status_pin"])
        self.button = Button(cfg["button_pin"], pull_up=True)
        self.loop = asyncio.get_running_loop()
        self.button.when_pressed = lambda: self.loop.call_soon_threadsafe(self.press)
        self.button.when_released = lambda: self.loop.call_soon_threadsafe(self.release)
        width, height = cfg["camera_width"], cfg["camera_height"]
        bars = np.array([[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0],
                         [255, 0, 255], [255, 0, 0], [0, 0, 255], [0, 0, 0]], np.uint8)  # fmt: skip
        row = bars[np.arange(width) * len(bars) // width]
        self.bars = np.concatenate([row, row])
        self.frame = np.empty((height, width, 3), np.uint8)

    # -- the button
    def press(self) -> None:
        if self.talking.is_set():
            return
        while not self.audio_in_queue.empty():  # barge-in: stop the answer
            self.audio_in_queue.get_nowait()
        self.talking.set()
        self.status.value = 1.0
        self.out_queue.put_nowait(("start", None))

    def release(self) -> None:
        if not self.talking.is_set():
            return
        self.talking.clear()
        self.status.value = 0.3
        self.out_queue.put_nowait(("end", None))

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readline()).decode().strip()
        if line in ("press", '{"cmd": "press"}'):
            self.press()
        elif line in ("release", '{"cmd": "release"}'):
            self.release()
        writer.write(b'{"ok": true}\n')
        await writer.drain()
        writer.close()

    # -- the starter's tasks
    async def listen_audio(self) -> None:
        mic_info = self.pya.get_default_input_device_info()
        stream = await asyncio.to_thread(
            self.pya.open,
            format=FORMAT,
            channels=CHANNELS,
            rate=SEND_SAMPLE_RATE,
            input=True,
            input_device_index=mic_info["index"],
            frames_per_buffer=self.chunk,
        )
        kwargs = {"exception_on_overflow": False}
        while True:
            data = await asyncio.to_thread(stream.read, self.chunk, **kwargs)
            if self.talking.is_set():
                await self.out_queue.put(("audio", data))

    def _get_frame(self) -> bytes:
        width = self.frame.shape[1]
        offset = int(time.time() * width / 4) % width
        self.frame[:] = self.bars[offset : offset + width]
        return simplejpeg.encode_jpeg(
            self.frame, quality=self.cfg["jpeg_quality"], colorspace="RGB"
        )

    async def get_frames(self) -> None:
        while True:
            await self.talking.wait()
            frame = await asyncio.to_thread(self._get_frame)
            if self.talking.is_set():
                await self.out_queue.put(("video", frame))
            await asyncio.sleep(1.0 / self.cfg["camera_fps"])

    async def send_realtime(self) -> None:
        session = self.session
        while True:
            kind, payload = await self.out_queue.get()
            if kind == "audio":
                blob = types.Blob(data=payload, mime_type=f"audio/pcm;rate={SEND_SAMPLE_RATE}")
                await session.send_realtime_input(audio=blob)
            elif kind == "video":
                await session.send_realtime_input(
                    video=types.Blob(data=payload, mime_type="image/jpeg")
                )
            elif kind == "start":
                await session.send_realtime_input(activity_start=types.ActivityStart())
            elif kind == "end":
                await session.send_realtime_input(activity_end=types.ActivityEnd())

    async def receive_audio(self) -> None:
        while True:
            async for response in self.session.receive():
                if response.tool_call and response.tool_call.function_calls:
                    replies = []
                    for call in response.tool_call.function_calls:
                        on = bool((call.args or {}).get("on"))
                        self.lamp.value = on
                        replies.append(
                            types.FunctionResponse(
                                id=call.id, name=call.name, response={"result": "ok", "on": on}
                            )
                        )
                    await self.session.send_tool_response(function_responses=replies)
                content = response.server_content
                if content is None:
                    continue
                if content.model_turn and content.model_turn.parts:
                    for part in content.model_turn.parts:
                        if part.inline_data and part.inline_data.data:
                            self.audio_in_queue.put_nowait(part.inline_data.data)
                if content.input_transcription and content.input_transcription.text:
                    print("you:", content.input_transcription.text, flush=True)
                if content.output_transcription and content.output_transcription.text:
                    print(content.output_transcription.text, end="", flush=True)
                if content.interrupted:
                    while not self.audio_in_queue.empty():
                        self.audio_in_queue.get_nowait()
                if content.turn_complete:
                    self.status.value = 0.0
                    print(flush=True)

    async def play_audio(self) -> None:
        stream = await asyncio.to_thread(
            self.pya.open, format=FORMAT, channels=CHANNELS, rate=RECEIVE_SAMPLE_RATE, output=True
        )
        while True:
            bytestream = await self.audio_in_queue.get()
            await asyncio.to_thread(stream.write, bytestream)

    async def run(self) -> None:
        cfg = self.cfg
        client = genai.Client(
            api_key=cfg["api_key"],
            http_options={
                "base_url": "https://" + cfg["url"].split("://", 1)[1],
                "api_version": "v1beta",
                "async_client_args": {"ssl": ssl.create_default_context(cafile=cfg["ca"])},
            },
        )
        config = types.LiveConnectConfig(
            response_modalities=["AUDIO"],
            media_resolution=types.MediaResolution.MEDIA_RESOLUTION_LOW,  # as pi-agent's default
            system_instruction=cfg["system"],
            speech_config=types.SpeechConfig(
                voice_config=types.VoiceConfig(
                    prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name=cfg["voice"])
                )
            ),
            tools=[types.Tool(function_declarations=[types.FunctionDeclaration(**cfg["tool"])])],
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
        stop = asyncio.Event()
        self.loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with (
            client.aio.live.connect(model=cfg["model"], config=config) as session,
            asyncio.TaskGroup() as tg,
        ):
            self.session = session
            server = await asyncio.start_unix_server(self.control, path=cfg["control_socket"])
            tasks = [
                tg.create_task(f())
                for f in (
                    self.send_realtime,
                    self.listen_audio,
                    self.get_frames,
                    self.receive_audio,
                    self.play_audio,
                )
            ]
            await stop.wait()
            server.close()
            for task in tasks:
                task.cancel()


async def main(path: str) -> None:
    with open(path) as f:
        cfg = json.load(f)
    await AudioLoop(cfg).run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
