"""A 30-minute WAV streams through POST /v1/recognize in flat memory.

The body is generated as it is sent (a 5 s DTMF block repeated), never built whole. The gateway runs
in this process, so tracemalloc sees its allocations (numpy buffers included): the peak during a
30-minute upload must be no higher than during a 3-minute one. Holding the file would add ~26 MB.
"""

from __future__ import annotations

import json
import struct
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest

from gateway.simulator.server import DataflowSimulator
from tests.support import signals
from tests.support.harness import RunningGateway, gateway_factory_for
from tests.support.upload_client import URL

RATE = 8000
BLOCK_S = 5
BLOCK = signals.to_pcm16(np.concatenate([signals.dtmf("1234", RATE), signals.silence(BLOCK_S * 1000 - 640, RATE)]))
MiB = 1024 * 1024


async def long_wav(minutes: int) -> AsyncIterator[bytes]:
    blocks = minutes * 60 // BLOCK_S
    size = blocks * len(BLOCK)
    fmt = struct.pack("<HHIIHH", 1, 1, RATE, RATE * 2, 2, 16)
    yield b"RIFF" + struct.pack("<I", 36 + size) + b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data"
    yield struct.pack("<I", size)
    for _ in range(blocks):
        yield BLOCK


async def upload(gw: RunningGateway, minutes: int) -> tuple[dict[str, Any], int]:
    """NDJSON upload (the client keeps only the last line); returns (result, messages)."""
    result: dict[str, Any] = {}
    count = 0
    async with (
        httpx.AsyncClient(base_url=gw.http_url, timeout=60) as http,
        http.stream("POST", URL, content=long_wav(minutes), headers={"accept": "application/x-ndjson"}) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line:
                result = json.loads(line)
                count += 1
    return result, count


async def peak_during(gw: RunningGateway, minutes: int) -> tuple[int, dict[str, Any]]:
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    result, messages = await upload(gw, minutes)
    peak = tracemalloc.get_traced_memory()[1] - before
    print(f"{minutes} min: {messages} messages, traced peak +{peak / MiB:.1f} MiB")
    return peak, result


@pytest.mark.slow
async def test_thirty_minute_upload_in_flat_memory(simulator: DataflowSimulator) -> None:
    # Fewer, bigger upstream messages and 8 kHz upstream: the same path, a third of the CPU time.
    factory = gateway_factory_for(simulator)
    async with factory(upstream_coalesce_ms=1000, upstream_sample_rate_hz=8000) as gw:
        await upload(gw, 1)  # warm-up: first-use allocations are not growth
        tracemalloc.start()
        try:
            peak_3, result_3 = await peak_during(gw, 3)
            peak_30, result_30 = await peak_during(gw, 30)
        finally:
            tracemalloc.stop()
    assert result_3["transcript"] == {"0": " ".join(["1234"] * 36)}
    assert result_30["type"] == "result"
    assert result_30["transcript"] == {"0": " ".join(["1234"] * 360)}  # every block arrived, in order
    assert result_30["audioMs"] == 30 * 60 * 1000
    assert peak_30 < peak_3 + 2 * MiB, f"memory grew with the file: {peak_3 / MiB:.1f} -> {peak_30 / MiB:.1f} MiB"
    assert peak_30 < 10 * MiB  # the file itself is 28.8 MB
