"""The benchmark's audio: DTMF utterances on a loop, so the simulator has real work and events."""

from __future__ import annotations

import struct
from collections.abc import Iterator

from tests.support import signals

DIGIT_GROUPS = ["12", "345", "6789"]


def block(rate: int) -> bytes:
    """A few seconds of pcm16 mono: three utterances separated by silence."""
    return signals.to_pcm16(signals.utterances(DIGIT_GROUPS, rate, lead_ms=200, pause_ms=700, tail_ms=700))


def frames(rate: int, frame_ms: int = 20) -> list[bytes]:
    data = block(rate)
    size = rate * 2 * frame_ms // 1000
    usable = len(data) - len(data) % size
    return [data[i : i + size] for i in range(0, usable, size)]


def wav_header(rate: int, data_bytes: int) -> bytes:
    return b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16
    ) + b"data" + struct.pack("<I", data_bytes)  # fmt: skip


def pcm_stream(rate: int, seconds: float, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """``seconds`` of looping audio as pcm16 chunks, generated as it is read (flat memory)."""
    pattern = block(rate)
    remaining = int(seconds * rate) * 2
    buffer = b""
    while remaining > 0:
        while len(buffer) < chunk:
            buffer += pattern
        piece, buffer = buffer[: min(chunk, remaining)], buffer[min(chunk, remaining) :]
        remaining -= len(piece)
        yield piece
