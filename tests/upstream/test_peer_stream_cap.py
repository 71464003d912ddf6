"""An upstream that caps streams per connection below GATEWAY_UPSTREAM_MAX_STREAMS_PER_CONNECTION.

The simulator (a real gRPC server) or nginx in front of it advertise HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS
of 2 while the gateway keeps its default of 100 per connection. gRPC core holds a stream over the cap
inside the transport, unsent, until another ends: the pool must find that out, move the stream to
another connection before it is sent, and start every session well inside the Start timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from pathlib import Path

import pytest

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import StartRequest
from gateway.errors import ErrorCode, UpstreamTimeout
from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from gateway.upstream.channel import UpstreamClient
from gateway.upstream.placement import PROBE_S
from gateway.upstream.stream import DataflowStream
from gateway.upstream.token import StaticTokenProvider
from tests.support.grpc_proxy import grpc_tls_proxy
from tests.support.harness import GatewayFactory, next_message, ws_connect
from tests.support.lb_stack import metric, scrape
from tests.support.native_client import start_message
from tests.support.settings import SIM_TENANT, SIM_TOKEN, settings_for

FMT = AudioFormat("pcm16", 16000, 1)
CAP = 2  # the upstream's streams per connection
SESSIONS = 5  # at once: needs 3 connections at that cap
MOST_START_S = 3.0  # a held stream moves after PROBE_S; the Start timeout stays at its default of 10 s
WARNING = "appears to cap streams per connection at 2"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sim_config() -> SimulatorConfig:
    return SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT, max_streams_per_connection=CAP)


def client_for(simulator: DataflowSimulator, **overrides: object) -> UpstreamClient:
    settings = settings_for(simulator, **overrides)
    assert settings.upstream_max_streams_per_connection == 100  # the default: above the upstream's cap
    return UpstreamClient(settings, StaticTokenProvider(settings.upstream_token))  # type: ignore[arg-type]


async def timed_start(client: UpstreamClient) -> tuple[DataflowStream, float]:
    stream = client.stream(FMT, deadline_s=60)
    began = time.monotonic()
    await stream.start(StartRequest(project="demo", audio=FMT))
    return stream, time.monotonic() - began


def cap_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and WARNING in r.getMessage()]


async def test_sessions_over_the_upstreams_cap_move_to_more_connections_and_all_start(
    simulator: DataflowSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(simulator)
    started: list[tuple[DataflowStream, float]] = []
    try:
        with caplog.at_level(logging.INFO, logger="gateway.upstream"):
            started = await asyncio.gather(*(timed_start(client) for _ in range(SESSIONS)))
        seconds = sorted(s for _, s in started)
        print("starts:", ", ".join(f"{s:.3f}" for s in seconds))
        assert seconds[-1] < MOST_START_S, seconds
        per_connection = Counter(r.peer for r in simulator.records)
        assert len(per_connection) >= 3 and max(per_connection.values()) <= CAP, per_connection
        # Each session reached Data Flow once: a held stream moved before it was sent, no Start twice.
        assert len(simulator.records) == SESSIONS and simulator.active == SESSIONS
        pool = client.pool
        assert pool.learned_cap == CAP and pool.stream_limit == CAP
        assert pool.stats.moved == SESSIONS - CAP
        assert all(c.streams <= CAP for c in pool.connections)
        warnings = cap_warnings(caplog)
        assert len(warnings) == 1, warnings
        assert "below GATEWAY_UPSTREAM_MAX_STREAMS_PER_CONNECTION (100)" in warnings[0]
        # The next sessions go straight to a connection with room: nothing is held, nothing warns again.
        more = await asyncio.gather(*(timed_start(client) for _ in range(3)))
        started += more
        assert max(s for _, s in more) < PROBE_S, [s for _, s in more]
        assert pool.stats.moved == SESSIONS - CAP and len(cap_warnings(caplog)) == 1
    finally:
        for stream, _ in started:
            stream.cancel()
        await client.aclose()


async def test_a_start_that_times_out_while_held_names_the_cap(simulator: DataflowSimulator) -> None:
    """A Start timeout shorter than the probe: the held stream cannot move in time, and the error says why."""
    client = client_for(simulator, upstream_start_timeout_s=PROBE_S / 2)
    held: list[DataflowStream] = []
    try:
        held = [s for s, _ in await asyncio.gather(*(timed_start(client) for _ in range(CAP)))]
        with pytest.raises(UpstreamTimeout) as caught:
            await timed_start(client)
        error = caught.value
        assert error.code is ErrorCode.UPSTREAM_TIMEOUT
        assert "the stream was never sent" in error.message
        assert f"carrying {CAP} streams" in error.message
        assert "GATEWAY_UPSTREAM_MAX_STREAMS_PER_CONNECTION (100)" in error.message
        await asyncio.sleep(0.2)
        assert len(simulator.records) == CAP  # the held stream never reached Data Flow
    finally:
        for stream in held:
            stream.cancel()
        await client.aclose()


@pytest.mark.parametrize("sim_config", [SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT)])
async def test_a_slow_start_answer_on_an_uncapped_connection_is_no_cap(simulator: DataflowSimulator) -> None:
    """Data Flow answering Start after the probe time does not look like a held stream: gRPC sent it."""
    client = client_for(simulator)
    slow = StartRequest(project="demo", audio=FMT, settings={"SimulatorFault": f"slow_start:{int(PROBE_S * 3000)}"})

    async def start() -> DataflowStream:
        stream = client.stream(FMT, deadline_s=60)
        await stream.start(slow)
        return stream

    streams = await asyncio.gather(*(start() for _ in range(4)))
    try:
        assert client.pool.learned_cap is None and client.pool.stats.moved == 0
        assert len({r.peer for r in simulator.records}) == 1
    finally:
        for stream in streams:
            stream.cancel()
        await client.aclose()


@pytest.mark.ws
async def test_websocket_sessions_start_through_a_gateway_over_the_upstreams_cap(
    gateway_factory: GatewayFactory, simulator: DataflowSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    async def session(gw_url: str, release: asyncio.Event) -> float:
        async with ws_connect(gw_url) as ws:
            began = time.monotonic()
            await ws.send(start_message())
            await next_message(ws, "started", timeout=10)
            seconds = time.monotonic() - began
            await release.wait()
            return seconds

    release = asyncio.Event()
    with caplog.at_level(logging.INFO, logger="gateway.upstream"):
        async with gateway_factory() as gw:
            tasks = [asyncio.create_task(session(gw.ws_url(), release)) for _ in range(SESSIONS)]
            async with asyncio.timeout(15):
                while simulator.active < SESSIONS and not any(t.done() for t in tasks):
                    await asyncio.sleep(0.02)
            metrics = await scrape(gw.port)
            release.set()
            seconds = await asyncio.gather(*tasks)
    assert max(seconds) < MOST_START_S, seconds
    assert len({r.peer for r in simulator.records}) >= 3 and len(simulator.records) == SESSIONS
    assert metric(metrics, "dataflow_gateway_upstream_connection_streams_learned_limit") == CAP
    assert metric(metrics, "dataflow_gateway_upstream_connection_streams_limit") == CAP
    assert metric(metrics, "dataflow_gateway_upstream_streams_moved_total") == SESSIONS - CAP
    assert metric(metrics, "dataflow_gateway_upstream_connections", state="open") >= 3
    assert len(cap_warnings(caplog)) == 1


@pytest.mark.parametrize("sim_config", [SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT)])
async def test_sessions_over_nginxs_stream_cap_move_to_more_connections(
    simulator: DataflowSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """nginx (TLS, grpc_pass) with ``http2_max_concurrent_streams 2``, the simulator behind it uncapped."""
    async with grpc_tls_proxy(tmp_path, simulator.port, f"        http2_max_concurrent_streams {CAP};\n") as proxy:
        client = client_for(
            simulator, upstream_target=proxy.target, upstream_plaintext=False, upstream_ca_file=proxy.ca_file
        )
        started: list[tuple[DataflowStream, float]] = []
        try:
            with caplog.at_level(logging.INFO, logger="gateway.upstream"):
                started = await asyncio.gather(*(timed_start(client) for _ in range(SESSIONS)))
            seconds = sorted(s for _, s in started)
            print("starts through nginx:", ", ".join(f"{s:.3f}" for s in seconds))
            assert seconds[-1] < MOST_START_S, seconds
            assert len(simulator.records) == SESSIONS and simulator.active == SESSIONS
            assert client.pool.learned_cap == CAP and len(cap_warnings(caplog)) == 1
        finally:
            for stream, _ in started:
                stream.cancel()
            await client.aclose()
        await asyncio.sleep(0.2)  # nginx writes the log line of a cancelled request when it ends
        by_connection = proxy.requests_by_connection()
        assert len(by_connection) >= 3, by_connection  # nginx saw the sessions over at least 3 connections
