"""A VoiceAI Connect (AudioCodes) client for the /v1/audiocodes tests: the start message, audio in 20 ms
frames, every message up to one of a type, and one whole recognition (start, audio, stop, until end)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection

from tests.support import signals

FRAME_MS = 20


def start(rate: int = 16000, audio_format: str = "raw", **extra: Any) -> str:
    return json.dumps({
        "type": "start", "language": "en-US", "conversationId": "8745555-8f1a-48ba-9ec9-46e90dc5aa18",
        "format": audio_format, "encoding": "LINEAR16", "sampleRateHz": rate, "sttContextId": "ctx-1",
        "sttSpeechContexts": [{"phrases": ["one two three"], "boost": 5}], **extra,
    })  # fmt: skip


async def send_frames(ws: ClientConnection, data: bytes, rate: int) -> None:
    step = rate * FRAME_MS // 1000 * 2
    for offset in range(0, len(data), step):
        await ws.send(data[offset : offset + step])


async def until(ws: ClientConnection, kind: str, timeout: float = 10) -> list[dict[str, Any]]:
    """Every message up to and including the first of type ``kind``."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while not seen or seen[-1]["type"] != kind:
            frame = await ws.recv()
            assert isinstance(frame, str), "VoiceAI Connect gets no binary frames"
            seen.append(json.loads(frame))
    return seen


async def recognize(ws: ClientConnection, digits: str, rate: int, audio_format: str) -> list[dict[str, Any]]:
    """One recognition session as VoiceAI Connect runs it: start, audio, stop, until end."""
    await ws.send(start(rate, audio_format))
    assert await until(ws, "started") == [{"type": "started"}]
    samples = signals.utterances([digits], rate)
    audio = signals.wav_bytes(samples, rate) if audio_format == "wav" else signals.to_pcm16(samples)
    await send_frames(ws, audio, rate)
    await ws.send(json.dumps({"type": "stop"}))
    return await until(ws, "end")
