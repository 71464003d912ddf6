"""Baseline: a direct grpc.aio client of the simulator, no gateway in between.

``python -m tests.perf.direct_grpc stream TARGET N SECONDS [INTERVAL_MS]`` streams N real-time sessions
of 16 kHz pcm16: one write per 20 ms frame, or with INTERVAL_MS the frames of that interval merged
into one write (as the gateway does under load); ``upload TARGET SECONDS`` sends SECONDS of 8 kHz
audio as fast as flow control allows, then finalizes. Prints one JSON line with its own CPU time
and wall time.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

from pydantic import SecretStr

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import StartRequest
from gateway.runtime import run_fast
from gateway.settings import Settings
from gateway.upstream.channel import UpstreamClient
from gateway.upstream.stream import DataflowStream
from gateway.upstream.token import StaticTokenProvider
from tests.perf.audio import frames, pcm_stream
from tests.perf.procs import BENCH_TOKEN


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _open(client: UpstreamClient, fmt: AudioFormat) -> DataflowStream:
    stream = client.stream(fmt, deadline_s=3600)
    await stream.start(StartRequest(project="bench", audio=fmt))
    return stream


async def _drain(stream: DataflowStream) -> None:
    async for _ in stream.items():
        pass


async def stream_sessions(client: UpstreamClient, sessions: int, seconds: float) -> dict[str, float]:
    fmt = AudioFormat("pcm16", 16000, 1)
    streams = [await _open(client, fmt) for _ in range(sessions)]
    readers = [asyncio.create_task(_drain(s)) for s in streams]
    pattern = frames(16000)
    ticks = int(seconds * 50)
    cpu0, began = _cpu(), time.monotonic()
    for tick in range(ticks):
        frame = pattern[tick % len(pattern)]
        for stream in streams:
            await stream.send_audio(frame)
        await asyncio.sleep(max(0.0, began + (tick + 1) * 0.02 - time.monotonic()))
    cpu = _cpu() - cpu0
    for stream in streams:
        await stream.finalize()
    await asyncio.gather(*readers)
    return {"cpu_s": cpu, "wall_s": time.monotonic() - began, "audio_s": sessions * ticks * 0.02}


async def upload(client: UpstreamClient, seconds: float) -> dict[str, float]:
    fmt = AudioFormat("pcm16", 8000, 1)
    began, cpu0 = time.monotonic(), _cpu()
    stream = await _open(client, fmt)
    reader = asyncio.create_task(_drain(stream))
    pending = b""
    for piece in pcm_stream(8000, seconds):
        pending += piece
        while len(pending) >= 1600:  # 100 ms messages
            await stream.send_audio(pending[:1600])
            pending = pending[1600:]
    if pending:
        await stream.send_audio(pending)
    await stream.finalize()
    await reader
    return {"cpu_s": _cpu() - cpu0, "wall_s": time.monotonic() - began, "audio_s": seconds}


async def main(argv: list[str]) -> None:
    mode, target = argv[0], argv[1]
    interval_ms = int(argv[4]) if mode == "stream" and len(argv) > 4 else 0
    settings = Settings(
        upstream_target=target,
        upstream_token=SecretStr(BENCH_TOKEN),
        upstream_write_rate=0,  # no load-dependent merging: the interval, if any, is given
        upstream_write_interval_ms=interval_ms,
        _env_file=None,
    )  # type: ignore[call-arg]
    client = UpstreamClient(settings, StaticTokenProvider(SecretStr(BENCH_TOKEN)))
    if mode == "stream":
        result = await stream_sessions(client, int(argv[2]), float(argv[3]))
    else:
        result = await upload(client, float(argv[2]))
    await client.aclose()
    print(json.dumps(result))


if __name__ == "__main__":
    run_fast(main(sys.argv[1:]))  # the loop the gateway runs on
