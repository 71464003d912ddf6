"""A /v1/stream (native dialect) client: the start message, client audio in every encoding (and a DTMF
call of two utterances, 16 kHz pcm16), and a whole DTMF session read to its end."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np

from tests.support import signals
from tests.support.harness import RunningGateway, Transcript, next_message, read_all, ws_connect

DTMF = signals.to_pcm16(signals.utterances(["123", "456"], 16000))


def start_message(encoding: str = "pcm16", rate: int = 16000, channels: int = 1, **extra: Any) -> str:
    audio = {"encoding": encoding, "sampleRate": rate, "channels": channels}
    return json.dumps({"type": "start", "project": "demo", "audio": audio, **extra})


def client_audio(samples: np.ndarray, encoding: str) -> bytes:
    from gateway.audio.convert import encode

    frames = samples if samples.ndim == 2 else samples[:, None]
    return encode(frames.astype(np.float32), encoding)  # type: ignore[arg-type]


async def send_audio(ws: Any, data: bytes, frame_bytes: int, pace_s: float = 0.0) -> None:
    for offset in range(0, len(data), frame_bytes):
        await ws.send(data[offset : offset + frame_bytes])
        if pace_s:
            await asyncio.sleep(pace_s)


async def dtmf_session(gw: RunningGateway, digits: list[str], encoding: str, rate: int, channels: int = 1,
                       frame_ms: int = 20, **extra: Any) -> Transcript:  # fmt: skip
    samples = signals.utterances(digits, rate)
    data = client_audio(samples, encoding)
    width = {"pcm16": 2, "f32": 4, "mulaw": 1, "alaw": 1}[encoding]
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message(encoding, rate, channels, **extra))
        started = await next_message(ws, "started")
        assert started["audio"] == {"encoding": encoding, "sampleRate": rate, "channels": channels}
        upstream_rate = 8000 if rate <= 8000 else 16000  # 8 kHz is never upsampled
        assert started["upstreamAudio"] == {"encoding": "pcm16", "sampleRate": upstream_rate, "channels": channels}
        await send_audio(ws, data, rate * frame_ms // 1000 * width * channels)
        await ws.send(json.dumps({"type": "finalize"}))
        return await read_all(ws)
