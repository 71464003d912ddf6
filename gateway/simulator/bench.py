"""Bench mode: measure how long client audio takes to reach Data Flow.

A benchmark client writes its send time (``time.monotonic_ns()``, one clock for every process on
the machine) into the first 8 samples of each pcm16 frame, one byte per sample so the marks stay
below the VAD threshold. The gateway passes 16 kHz pcm16 mono through unchanged (it only
coalesces whole frames), so the simulator finds every frame at a multiple of the frame size.
"""

from __future__ import annotations

import time

STAMP_SAMPLES = 8
_PLAUSIBLE_NS = 120 * 10**9


def stamp_frame(frame: bytearray, sent_ns: int) -> None:
    """Write ``sent_ns`` into the first samples of a pcm16 frame, in place (one byte per sample)."""
    frame[: STAMP_SAMPLES * 2 : 2] = sent_ns.to_bytes(STAMP_SAMPLES, "little")
    frame[1 : STAMP_SAMPLES * 2 : 2] = bytes(STAMP_SAMPLES)


def read_stamp(frame: bytes | memoryview) -> int:
    # Each mark is one byte in the low (first, little-endian) byte of its sample.
    return int.from_bytes(bytes(frame[: STAMP_SAMPLES * 2 : 2]), "little")


class ArrivalLatency:
    """Arrival latency of every stamped frame of one stream, in microseconds."""

    def __init__(self, frame_bytes: int) -> None:
        self.frame_bytes = frame_bytes
        self.offset = 0  # bytes of the stream seen so far
        self.latencies_us: list[int] = []

    def observe(self, chunk: bytes) -> None:
        now = time.monotonic_ns()
        view = memoryview(chunk)
        first = -self.offset % self.frame_bytes  # first frame boundary inside this chunk
        for start in range(first, len(chunk) - STAMP_SAMPLES * 2 + 1, self.frame_bytes):
            sent = read_stamp(view[start:])
            if 0 <= now - sent < _PLAUSIBLE_NS:
                self.latencies_us.append((now - sent) // 1000)
        self.offset += len(chunk)
