"""The load generator: many concurrent /v1/stream sessions paced in real time from one ticker.

One task sends every session's frame each 20 ms, each frame stamped with its send time. Sessions
are spread over ``phases`` evenly spaced send times within each 20 ms period, as independent
callers are (one wake-up per phase, not per session); ``phases=1`` sends every session's frame in
one burst, the worst case for queueing. Each session's messages are handled as they are read
(tests/perf/wsclient.py): event latencies from the simulator's emit stamps (of the events emitted
while audio was paced), and at the end the frame arrival latencies the simulator reports in
FinalResult.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.simulator.bench import stamp_frame
from tests.perf.audio import frames
from tests.perf.wsclient import TEXT, LeanWebSocket, connect

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
    started: asyncio.Event = field(default_factory=asyncio.Event)
    events: list[tuple[int, int]] = field(default_factory=list)  # (simulator emit ns, arrival ns)

    def window(self, until_ns: int) -> None:
        """Keep the latencies of events emitted while audio was paced (not the end-of-session burst)."""
        self.event_latency_us = [(arrived - emitted) // 1000 for emitted, arrived in self.events if emitted <= until_ns]

    def on_message(self, opcode: int, payload: bytes, arrival_ns: int) -> None:
        if opcode != TEXT:
            return  # audio from Data Flow: not part of the measurement
        item: dict[str, Any] = json.loads(payload)
        kind = item.get("type")
        if kind == "event":
            data = item.get("data") or {}
            if "SimEmitNs" in data:
                self.events.append((data["SimEmitNs"], arrival_ns))
            if item["name"] == "SR Milestone":
                self.milestones.append(item["text"])
            elif item["name"] == "FinalResult":
                self.arrival_us = data.get("BenchArrivalUs", [])
        elif kind == "started":
            self.started.set()
        elif kind == "error":
            self.errors.append(item["code"])


def _ignore(opcode: int, payload: bytes, arrival_ns: int) -> None:
    return None


async def _open_many(
    url: str, n: int, *, start: bool, batch: int = 50
) -> tuple[list[LeanWebSocket], list[SessionStats]]:
    sockets: list[LeanWebSocket] = []
    stats = [SessionStats() for _ in range(n)]
    for first in range(0, n, batch):
        group = stats[first : first + batch]
        handler = (lambda st: st.on_message) if start else (lambda st: _ignore)
        opened = await asyncio.gather(*(connect(url, handler(st)) for st in group))
        if start:
            for ws in opened:
                ws.send_text(START)
            await asyncio.wait_for(asyncio.gather(*(st.started.wait() for st in group)), 60)
        sockets.extend(opened)
    return sockets, stats


async def _pace(
    sockets: list[LeanWebSocket],
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
    on_tick(True)  # the measured window opens before the first frame
    for tick in range(ticks):
        frame = bytearray(pattern[tick % len(pattern)])
        for phase, group in enumerate(groups):
            for ws, st in group:
                if stamped:
                    stamp_frame(frame, time.monotonic_ns())
                ws.send_binary(bytes(frame))
                st.frames_sent += 1
            await asyncio.sleep(max(0.0, began + tick * FRAME_S + (phase + 1) * step - time.monotonic()))


def paced_audio_s(n: int, seconds: float) -> float:
    """Session-seconds of audio in the measured window: every frame sent."""
    return n * int(seconds / FRAME_S) * FRAME_S


async def stream_sessions(
    url: str, n: int, seconds: float, *, protocol: bool = True, on_tick: Any = lambda first: None, phases: int = 10
) -> list[SessionStats]:
    """n real-time sessions for ``seconds``; ``protocol=False`` sends bare frames (baseline receiver)."""
    sockets, stats = await _open_many(url, n, start=protocol)
    await _pace(sockets, stats, seconds, protocol, on_tick, max(1, min(phases, n)))
    paced_until = time.monotonic_ns()
    if protocol:
        for ws in sockets:
            ws.send_text('{"type":"finalize"}')
        codes = await asyncio.wait_for(asyncio.gather(*(ws.closed for ws in sockets)), timeout=60 + n * 0.05)
    else:
        codes = await asyncio.gather(*(ws.close() for ws in sockets))
    # The window closes once every session is closed: the server has handled every frame by then,
    # so a server that fell behind is charged for all of its work, not just what it did in time.
    on_tick(False)
    for st, code in zip(stats, codes, strict=True):
        st.close_code = code
        # Every session finalizes at the same moment here, which no real load does: the burst of
        # FinalResults (each carrying its arrival list) would be measured as relay latency.
        st.window(paced_until)
    return stats


async def idle_sessions(url: str, n: int) -> list[LeanWebSocket]:
    """n started sessions that send nothing (for memory per session); the caller closes them."""
    sockets, _ = await _open_many(url, n, start=True)
    return sockets
