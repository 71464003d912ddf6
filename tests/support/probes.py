"""Shared by the reliability tests (faults, soak, abuse): timed clients, resource probes, figures.

Figures are what the README's "Reliability" section quotes. Each test prints its figures; with
``RELIABILITY_FIGURES=<file>`` they are also appended to that file (one line each) to be collected.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from gateway.observability import JsonFormatter
from gateway.simulator.server import SessionRecord
from tests.support import signals
from tests.support.harness import RunningGateway, next_message, ws_connect
from tests.support.settings import SECRETS

START = {"type": "start", "project": "demo", "audio": {"encoding": "pcm16", "sampleRate": 16000, "channels": 1}}
FRAME_BYTES = 640  # 20 ms of 16 kHz pcm16


def start_json(**extra: Any) -> str:
    return json.dumps({**START, **extra})


def figure(name: str, text: str) -> None:
    line = f"FIGURE {name}: {text}"
    print(line)
    target = os.environ.get("RELIABILITY_FIGURES")
    if target:
        with Path(target).open("a") as out:
            out.write(line + "\n")


@dataclass
class Timed:
    """What a client received, each message with the monotonic time it arrived."""

    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    close_code: int | None = None
    closed_at: float | None = None

    def first(self, kind: str) -> tuple[float, dict[str, Any]]:
        return next((t, m) for t, m in self.messages if m.get("type") == kind)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for _, m in self.messages if m.get("type") == kind]

    def errors(self) -> list[str]:
        return [m["code"] for m in self.of_type("error")]

    def milestones(self, channel: int = 0) -> list[str]:
        return [m["text"] for m in self.of_type("event") if m["name"] == "SR Milestone" and m["channel"] == channel]


async def read_timed(ws: ClientConnection, into: Timed | None = None, timeout: float = 30) -> Timed:
    """Read until the server closes; text frames are kept with their arrival time."""
    result = into or Timed()
    try:
        async with asyncio.timeout(timeout):
            async for frame in ws:
                if isinstance(frame, str):
                    result.messages.append((time.monotonic(), json.loads(frame)))
    except ConnectionClosed:
        pass
    await ws.wait_closed()
    result.close_code = ws.close_code
    result.closed_at = time.monotonic()
    return result


def dtmf_pcm(digits: list[str], rate: int = 16000) -> bytes:
    return signals.to_pcm16(signals.utterances(digits, rate))


async def stream_paced(ws: ClientConnection, data: bytes, frame_bytes: int = FRAME_BYTES, pace_s: float = 0.02) -> None:
    """Send ``data`` in frames at real-time pace; stops quietly when the connection closes."""
    try:
        for offset in range(0, len(data), frame_bytes):
            await ws.send(data[offset : offset + frame_bytes])
            if pace_s:
                await asyncio.sleep(pace_s)
    except ConnectionClosed:
        pass


async def dtmf_round_trip(gw: RunningGateway, digits: str, *, path: str = "/v1/stream", pace_s: float = 0.0) -> float:
    """One complete native session (start, digits, finalize); returns finalize -> closed latency in s.

    Raises AssertionError unless the digits came back and the session closed 1000.
    """
    async with ws_connect(gw.ws_url(path)) as ws:
        await ws.send(start_json())
        await next_message(ws, "started")
        await stream_paced(ws, dtmf_pcm([digits]), frame_bytes=3200, pace_s=pace_s)
        finalized = time.monotonic()
        await ws.send(json.dumps({"type": "finalize"}))
        result = await read_timed(ws)
    assert result.milestones() == [digits], result.messages
    assert result.close_code == 1000
    assert result.closed_at is not None
    return result.closed_at - finalized


async def wait_for(predicate: Any, timeout: float, interval: float = 0.02) -> float:
    """Poll ``predicate()`` until true; returns how long it took (TimeoutError after ``timeout``)."""
    began = time.monotonic()
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(interval)
    return time.monotonic() - began


async def record_end(record: SessionRecord, timeout: float) -> float:
    """Wait until the simulator saw ``record`` end; returns the monotonic time it ended."""
    await wait_for(lambda: record.ended_at is not None, timeout)
    assert record.ended_at is not None
    return record.ended_at


class LoopLag:
    """Measures how late a 5 ms sleep wakes up while active: the event loop's worst stall."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        while True:
            began = time.monotonic()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, time.monotonic() - began - 0.005)

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


# --- process resources ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resources:
    tasks: int
    fds: int
    rss_kib: int
    threads: int
    py_blocks: int  # memory blocks held by Python's allocator: objects that are kept alive

    def minus(self, other: Resources) -> Resources:
        return Resources(
            self.tasks - other.tasks,
            self.fds - other.fds,
            self.rss_kib - other.rss_kib,
            self.threads - other.threads,
            self.py_blocks - other.py_blocks,
        )


def os_thread_names() -> dict[str, int]:
    """This process's OS threads by name (``/proc``), Python's and the C libraries' alike."""
    names: dict[str, int] = {}
    for task in os.listdir("/proc/self/task"):
        try:
            name = Path(f"/proc/self/task/{task}/comm").read_text().strip()
        except OSError:
            continue  # the thread ended while it was listed
        names[name] = names.get(name, 0) + 1
    return names


def resources() -> Resources:
    gc.collect()
    status = Path("/proc/self/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return Resources(
        tasks=len(asyncio.all_tasks()),
        fds=len(os.listdir("/proc/self/fd")),
        rss_kib=int(fields["VmRSS"].split()[0]),
        # Pools that size themselves by load come and go: the default executor's threads (getaddrinfo for
        # every client connect) and gRPC's event-engine workers (its lifeguard adds one when the others are
        # busy, as on a loaded CI machine, and retires it only after a long idle). Every other OS thread
        # counts (gRPC's poller, decoders', the gateway's).
        threads=int(fields["Threads"].strip())
        - sum(t.name.startswith("asyncio_") for t in threading.enumerate())
        - os_thread_names().get("event_engine", 0),
        py_blocks=sys.getallocatedblocks(),
    )


@contextmanager
def logs_formatted_not_kept() -> Iterator[list[int]]:
    """Gateway and uvicorn logs are formatted as in production (JSON) and checked for secrets, but not
    kept: the suite's log collectors would otherwise hold every line and grow the RSS being measured."""
    lines = [0]

    class Sink(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = JsonFormatter().format(record)
            lines[0] += 1
            assert not any(secret in text for secret in SECRETS)

    sink = Sink(logging.INFO)
    loggers = [logging.getLogger(name) for name in ("gateway", "uvicorn")]
    saved = [(lg.propagate, lg.level) for lg in loggers]
    # Every handler that could keep a record comes off for the phase: pytest (9.2+) also attaches its
    # collectors to each logger that does not propagate (uvicorn's, once a test ran uvicorn's own
    # dictConfig), and the suite's collectors sit on the root. What reaches the root goes to the sink.
    every = [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    handlers = {lg: lg.handlers[:] for lg in {logging.getLogger(), *loggers, *every}}
    for lg in handlers:
        lg.handlers = []
    logging.getLogger().handlers = [sink]
    for lg in loggers:
        lg.propagate = False
        lg.setLevel(logging.INFO)
        lg.addHandler(sink)
    try:
        yield lines
    finally:
        for lg, kept in handlers.items():
            lg.handlers = kept
        for lg, (propagate, level) in zip(loggers, saved, strict=True):
            lg.propagate, lg.level = propagate, level
