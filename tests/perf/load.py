"""The load generator: many concurrent /v1/stream sessions paced in real time from one ticker.

One task sends every session's frame each 20 ms, each frame stamped with its send time; a reader
per session collects event latencies (from the simulator's emit stamps) and the frame arrival
latencies the simulator reports in FinalResult. Sessions are spread over ``phases`` evenly spaced
send times within each 20 ms period, as independent callers are (one wake-up per phase, not per
session); ``phases=1`` sends every session's frame in one burst, the worst case for queueing.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from gateway.simulator.bench import stamp_frame
from tests.perf.audio import frames

START = json.dumps({"type": "start", "audio": {"encoding": "pcm16", "sampleRate": 16000, "channels": 1}})
FRAME_S = 0.02


@dataclass
class SessionStats:
    frames_sent: int = 0
    event_latency_us: list[int] = field(default_factory=list)
    arrival_us: list[int] = field(default_factory=list)
    milestones: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    close_code: int | None = None


async def _connect(url: str) -> ClientConnection:
    return await connect(url, compression=None, open_timeout=30, close_timeout=10, max_queue=None)


async def _open_many(url: str, n: int, *, start: bool, batch: int = 50) -> list[ClientConnection]:
    sockets: list[ClientConnection] = []
    for first in range(0, n, batch):
        opened = await asyncio.gather(*(_connect(url) for _ in range(first, min(n, first + batch))))
        if start:
            for ws in opened:
                await ws.send(START)
            for ws in opened:
                while json.loads(await ws.recv()).get("type") != "started":
                    pass
        sockets.extend(opened)
    return sockets


async def _read(ws: ClientConnection, stats: SessionStats) -> None:
    async for message in ws:
        now_us = time.monotonic_ns() // 1000
        if isinstance(message, bytes):
            continue
        item: dict[str, Any] = json.loads(message)
        kind = item.get("type")
        if kind == "event":
            data = item.get("data") or {}
            if "SimEmitNs" in data:
                stats.event_latency_us.append(now_us - data["SimEmitNs"] // 1000)
            if item["name"] == "SR Milestone":
                stats.milestones.append(item["text"])
            elif item["name"] == "FinalResult":
                stats.arrival_us = data.get("BenchArrivalUs", [])
        elif kind == "error":
            stats.errors.append(item["code"])
    stats.close_code = ws.close_code


async def _pace(
    sockets: list[ClientConnection],
    stats: list[SessionStats],
    seconds: float,
    stamped: bool,
    on_tick: Any,
    phases: int,
) -> None:
    pattern = frames(16000)
    ticks = int(seconds / FRAME_S)
    groups = [list(zip(sockets[p::phases], stats[p::phases], strict=True)) for p in range(phases)]
    step = FRAME_S / phases
    began = time.monotonic()
    for tick in range(ticks):
        frame = bytearray(pattern[tick % len(pattern)])
        for phase, group in enumerate(groups):
            for ws, st in group:
                if stamped:
                    stamp_frame(frame, time.monotonic_ns())
                await ws.send(bytes(frame))
                st.frames_sent += 1
            if phase == 0 and tick in (0, ticks - 1):
                on_tick(tick == 0)  # marks the measured window: pacing started / pacing ended
            await asyncio.sleep(max(0.0, began + tick * FRAME_S + (phase + 1) * step - time.monotonic()))


async def stream_sessions(
    url: str, n: int, seconds: float, *, protocol: bool = True, on_tick: Any = lambda first: None, phases: int = 10
) -> list[SessionStats]:
    """n real-time sessions for ``seconds``; ``protocol=False`` sends bare frames (baseline receiver)."""
    sockets = await _open_many(url, n, start=protocol)
    stats = [SessionStats() for _ in sockets]
    readers = [asyncio.create_task(_read(ws, st)) for ws, st in zip(sockets, stats, strict=True)] if protocol else []
    await _pace(sockets, stats, seconds, protocol, on_tick, max(1, min(phases, n)))
    if protocol:
        for ws in sockets:
            await ws.send('{"type":"finalize"}')
        await asyncio.wait_for(asyncio.gather(*readers), timeout=60 + n * 0.05)
    else:
        await asyncio.gather(*(ws.close() for ws in sockets))
    return stats


async def idle_sessions(url: str, n: int) -> list[ClientConnection]:
    """n started sessions that send nothing (for memory per session); the caller closes them."""
    return await _open_many(url, n, start=True)
