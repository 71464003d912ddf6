"""Leak soak: thousands of sessions through every exit path, then the process must be back at baseline.

Exit paths: finalize, stop, client abort (TCP reset), upstream abort (Data Flow fails mid-stream),
idle timeout, start timeout, denial before accept (origin, HTTP 403) and refused start on
``/v1/stream``; Finalize on ``/project-runner``; stop on ``/v1/audiocodes``; a complete upload and
an upload whose client vanishes mid-body on ``POST /v1/recognize``. Afterwards
the asyncio task count, open file descriptors, threads, upstream streams, live sessions, Python heap
blocks and RSS must return to what they were after a warm-up, within the margins below. Everything (gateway,
simulator, clients) shares this process, so the baseline is taken with all of them warmed up.

``SOAK_SESSIONS`` sets the count for local iterations; the committed default is 2000.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.simulator.server import DataflowSimulator
from tests.support.harness import RunningGateway, next_message, running_gateway, ws_connect
from tests.support.probes import (
    FRAME_BYTES,
    Resources,
    figure,
    logs_formatted_not_kept,
    os_thread_names,
    read_timed,
    resources,
    start_json,
    wait_for,
)
from tests.support.raw_ws import RawWebSocket
from tests.support.settings import settings_for
from tests.support.signals import wav_bytes

SESSIONS = int(os.environ.get("SOAK_SESSIONS", "2000"))
CONCURRENCY = 24
TIMEOUT_S = 1.5  # idle and start timeouts of the soaked gateway
ORIGIN = "https://allowed.example"

# Margins for "back to baseline" (after a warm-up that already ran every path).
MAX_EXTRA_TASKS = 0
MAX_EXTRA_FDS = 0
MAX_EXTRA_THREADS = 0
MAX_EXTRA_PY_BLOCKS = 2000  # one-off caches; a leak of one object per session would be > 2000
MAX_EXTRA_RSS_MIB = 24.0  # allocator high-water marks and caches, not per-session state (2000 sessions)

pytestmark = [pytest.mark.slow, pytest.mark.ws]

Path_ = Callable[[RunningGateway], Awaitable[str]]


async def finalize(gw: RunningGateway) -> str:
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(start_json())
        await next_message(ws, "started")
        await ws.send(bytes(FRAME_BYTES * 5))
        await ws.send(json.dumps({"type": "finalize"}))
        result = await read_timed(ws)
    return f"{result.close_code}:{result.of_type('closed')[-1]['reason']}"


async def stop(gw: RunningGateway) -> str:
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(start_json())
        await next_message(ws, "started")
        await ws.send(json.dumps({"type": "stop"}))
        result = await read_timed(ws)
    return f"{result.close_code}:{result.of_type('closed')[-1]['reason']}"


async def client_abort(gw: RunningGateway) -> str:
    ws = await ws_connect(gw.ws_url())
    await ws.send(start_json())
    await next_message(ws, "started")
    await ws.send(bytes(FRAME_BYTES))
    ws.transport.abort()
    await ws.wait_closed()
    return "aborted"


async def upstream_abort(gw: RunningGateway) -> str:
    """Data Flow aborts the stream with a cause no retry cures: the session ends with the typed error."""
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(start_json(settings={"SimulatorFault": "abort:50:FAILED_PRECONDITION"}))
        await ws.send(bytes(FRAME_BYTES))
        result = await read_timed(ws)
    return f"{result.close_code}:{','.join(result.errors())}"


async def upstream_recovered(gw: RunningGateway) -> str:
    """Data Flow drops the stream once: the session moves to a new stream and finishes normally."""
    async with ws_connect(gw.ws_url()) as ws:
        fault = {"SimulatorFault": "abort:50:UNAVAILABLE:once", "Call": uuid.uuid4().hex}
        await ws.send(start_json(settings=fault))
        await next_message(ws, "upstream_recovered")
        await ws.send(bytes(FRAME_BYTES * 5))
        await ws.send(json.dumps({"type": "finalize"}))
        result = await read_timed(ws)
    return f"{result.close_code}:{result.of_type('closed')[-1]['reason']}:recovered"


async def idle_timeout(gw: RunningGateway) -> str:
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(start_json())
        result = await read_timed(ws)
    return f"{result.close_code}:{','.join(result.errors())}"


async def start_timeout(gw: RunningGateway) -> str:
    async with ws_connect(gw.ws_url()) as ws:
        result = await read_timed(ws)
    return f"{result.close_code}:{','.join(result.errors())}"


async def denied(gw: RunningGateway) -> str:
    try:
        async with ws_connect(gw.ws_url(), origin="https://evil.example"):  # type: ignore[arg-type]
            return "accepted"
    except InvalidStatus as exc:
        return f"http {exc.response.status_code}"


async def rejected(gw: RunningGateway) -> str:
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(start_json(settings={"SimulatorFault": "reject_start"}))
        result = await read_timed(ws)
    return f"{result.close_code}:{','.join(result.errors())}"


async def dataflow_finalize(gw: RunningGateway) -> str:
    async with ws_connect(gw.ws_url("/project-runner/demo")) as ws:
        await ws.send('{"MessageName":"Start","ProjectName":"demo"}')
        assert json.loads(await ws.recv())["OperationResult"] == "Success"
        await ws.send(bytes(FRAME_BYTES * 5))
        await ws.send('{"MessageName":"Finalize"}')
        names = [json.loads(m).get("Name") or json.loads(m).get("MessageName") async for m in _until_closed(ws)]
    return f"{ws.close_code}:{names[-1]}"


async def audiocodes_stop(gw: RunningGateway) -> str:
    async with ws_connect(gw.ws_url("/v1/audiocodes")) as ws:
        await ws.send('{"type":"start","language":"en-US","encoding":"LINEAR16","sampleRateHz":16000}')
        assert json.loads(await ws.recv()) == {"type": "started"}
        await ws.send(bytes(FRAME_BYTES * 5))
        await ws.send('{"type":"stop"}')
        while (message := json.loads(await ws.recv()))["type"] != "end":
            pass
    return f"end:{message['reason']}"


UPLOAD = wav_bytes(np.zeros(1600, dtype=np.float32), 16000)  # 100 ms of silence


def upload_head(*, close: bool) -> bytes:
    lines = [
        "POST /v1/recognize HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: audio/wav",
        f"Content-Length: {len(UPLOAD)}",
    ]
    return ("\r\n".join(lines + (["Connection: close"] if close else [])) + "\r\n\r\n").encode()


async def upload(gw: RunningGateway) -> str:
    conn = await RawWebSocket.open(gw.port)
    try:
        head = (
            f"POST /v1/recognize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/wav\r\n"
            f"Content-Length: {len(UPLOAD)}\r\n"
        )
        await conn.send_raw(head.encode() + b"Connection: close\r\n\r\n" + UPLOAD)
        status = await conn.read_response(timeout=20)
        body = json.loads(await conn.read_body())
        return f"http {status}:{sorted(body)[0]}"
    finally:
        await conn.aclose()


async def upload_abort(gw: RunningGateway) -> str:
    conn = await RawWebSocket.open(gw.port)
    head = (
        f"POST /v1/recognize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/wav\r\n"
        f"Content-Length: {len(UPLOAD)}\r\n\r\n"
    )
    await conn.send_raw(head.encode() + UPLOAD[: len(UPLOAD) // 2])
    await wait_for(lambda: gw.gateway.registry.by_dialect["upload"] > 0, 5)  # the session is running
    conn.abort()
    return "aborted"


async def _until_closed(ws: Any) -> Any:
    try:
        async for message in ws:
            yield message
    except ConnectionClosed:
        return


PATHS: dict[str, tuple[Path_, str]] = {
    "finalize": (finalize, "1000:finalized"),
    "stop": (stop, "1000:stopped"),
    "client_abort": (client_abort, "aborted"),
    "upstream_abort": (upstream_abort, "1011:upstream_rejected"),
    "upstream_recovered": (upstream_recovered, "1000:finalized:recovered"),
    "idle_timeout": (idle_timeout, "1008:idle_timeout"),
    "start_timeout": (start_timeout, "1008:start_timeout"),
    "denied": (denied, "http 403"),
    "rejected": (rejected, "1011:upstream_rejected"),
    "dataflow_ws_finalize": (dataflow_finalize, "1000:FinalResult"),
    "audiocodes_stop": (audiocodes_stop, "end:stop requested"),
    "upload": (upload, "http 200:audioMs"),
    "upload_abort": (upload_abort, "aborted"),
}


async def run_sessions(gw: RunningGateway, count: int) -> collections.Counter[str]:
    """``count`` sessions spread evenly over every path, ``CONCURRENCY`` at a time."""
    names = list(PATHS)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(names[i % len(names)])
    outcomes: collections.Counter[str] = collections.Counter()

    async def worker() -> None:
        while not queue.empty():
            name = queue.get_nowait()
            run, expected = PATHS[name]
            try:
                got = await asyncio.wait_for(run(gw), 20)
            except Exception as exc:
                got = f"{type(exc).__name__}: {exc}"
            outcomes[name if got == expected else f"{name} -> {got}"] += 1

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return outcomes


async def settled(gw: RunningGateway, simulator: DataflowSimulator, baseline: Resources | None) -> Resources:
    """Wait until no session, stream or connection is left (up to 10 s), then measure."""
    upstream, registry = gw.gateway.upstream, gw.gateway.registry
    await wait_for(lambda: registry.active == 0 and upstream.active_streams == 0 and simulator.active == 0, 10)
    await wait_for(lambda: not gw.server.server_state.connections, 10)
    simulator.records.clear()  # the simulator's own per-session log (test instrumentation, not the gateway)
    now = resources()
    deadline = time.monotonic() + 5
    while baseline is not None and time.monotonic() < deadline:  # sockets close asynchronously
        delta = now.minus(baseline)
        if delta.tasks <= MAX_EXTRA_TASKS and delta.fds <= MAX_EXTRA_FDS and delta.threads <= MAX_EXTRA_THREADS:
            break
        await asyncio.sleep(0.1)
        now = resources()
    return now


async def test_soak_every_exit_path_leaks_nothing(simulator: DataflowSimulator) -> None:
    settings = settings_for(
        simulator, idle_timeout_s=TIMEOUT_S, start_timeout_s=TIMEOUT_S, ack_interval_ms=250,
        allowed_origins=[ORIGIN], max_sessions=CONCURRENCY + 8,
    )  # fmt: skip
    async with running_gateway(settings) as gw:
        with logs_formatted_not_kept() as lines:
            warm = await run_sessions(gw, len(PATHS) * 6)
            assert sorted(warm) == sorted(PATHS), warm
            baseline = await settled(gw, simulator, None)
            began = time.monotonic()
            outcomes = await run_sessions(gw, SESSIONS)
            elapsed = time.monotonic() - began
            after = await settled(gw, simulator, baseline)
        delta = after.minus(baseline)
        figure(
            "soak",
            f"{SESSIONS} sessions ({SESSIONS // len(PATHS)} per exit path x {len(PATHS)}) in {elapsed:.1f} s: "
            f"{delta.tasks:+d} tasks, {delta.fds:+d} fds, {delta.threads:+d} threads, 0 upstream streams, "
            f"{delta.py_blocks:+d} Python heap blocks, {delta.rss_kib / 1024:+.1f} MiB RSS "
            f"(baseline {baseline.rss_kib / 1024:.0f} MiB, {baseline.tasks} tasks, {baseline.fds} fds); "
            f"{lines[0]} log lines",
        )
        assert outcomes == collections.Counter({name: SESSIONS // len(PATHS) for name in PATHS}) + collections.Counter(
            {name: 1 for name in list(PATHS)[: SESSIONS % len(PATHS)]}
        ), outcomes
        assert gw.gateway.registry.active == 0
        assert gw.gateway.upstream.active_streams == 0
        assert not gw.gateway.registry.leases
        assert delta.tasks <= MAX_EXTRA_TASKS, (baseline, after)
        assert delta.fds <= MAX_EXTRA_FDS, (baseline, after)
        assert delta.threads <= MAX_EXTRA_THREADS, (baseline, after, os_thread_names())
        assert delta.py_blocks <= MAX_EXTRA_PY_BLOCKS, (baseline, after)
        assert delta.rss_kib / 1024 <= MAX_EXTRA_RSS_MIB, (baseline, after)
