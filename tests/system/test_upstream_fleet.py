"""Upstream at fleet scale: streams-per-connection caps, a TLS gRPC proxy that retires connections.

A real gateway in front of the simulator, real WebSocket clients; nginx (TLS, HTTP/2, ``grpc_pass``)
where a test needs the production topology.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import pytest

from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from tests.support import signals
from tests.support.grpc_proxy import grpc_tls_proxy
from tests.support.harness import GatewayFactory, RunningGateway, Transcript, next_message, read_all, ws_connect
from tests.support.lb_stack import metric, scrape
from tests.support.native_client import client_audio, send_audio, start_message
from tests.support.settings import SIM_TENANT, SIM_TOKEN

pytestmark = pytest.mark.ws  # opens WebSockets: runs with the fast path on and off

LIVE_SESSIONS = 250
SHORT_SESSIONS = 1500


@pytest.fixture
def sim_config() -> SimulatorConfig:
    # The cap of many gRPC servers; one connection for all sessions would make the 101st wait.
    return SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT, max_streams_per_connection=100)


async def live_session(gw: RunningGateway, started: list[float], release: asyncio.Event) -> Transcript:
    async with ws_connect(gw.ws_url()) as ws:
        began = time.monotonic()
        await ws.send(start_message())
        await next_message(ws, "started", timeout=10)
        started.append(time.monotonic() - began)
        await release.wait()
        await ws.send(json.dumps({"type": "finalize"}))
        return await read_all(ws)


async def start_live_sessions(
    gw: RunningGateway, release: asyncio.Event
) -> tuple[list[float], list[asyncio.Task[Transcript]]]:
    """LIVE_SESSIONS sessions arriving at 125 a second (client, gateway and simulator share one loop),
    all started and held open until ``release``; returns each one's start latency."""
    started: list[float] = []
    sessions = []
    for _ in range(LIVE_SESSIONS):
        sessions.append(asyncio.create_task(live_session(gw, started, release)))
        await asyncio.sleep(0.008)
    async with asyncio.timeout(30):
        while len(started) < LIVE_SESSIONS and not any(s.done() for s in sessions):
            await asyncio.sleep(0.02)
    assert len(started) == LIVE_SESSIONS, [s.exception() for s in sessions if s.done()][:3]
    slowest = ", ".join(f"{s:.3f}" for s in sorted(started)[-3:])
    print(f"{LIVE_SESSIONS} starts: slowest {slowest} s, median {sorted(started)[LIVE_SESSIONS // 2]:.3f} s")
    return started, sessions


@pytest.mark.timeout(90)
async def test_250_live_sessions_on_one_replica_all_start_within_1s(
    gateway_factory: GatewayFactory, simulator: DataflowSimulator
) -> None:
    release = asyncio.Event()
    async with gateway_factory(max_sessions=500) as gw:
        started, sessions = await start_live_sessions(gw, release)
        assert max(started) < 1.0, f"slowest start {max(started):.3f} s"
        assert simulator.active == LIVE_SESSIONS  # all live together: none waited for another to end
        per_connection = Counter(r.peer for r in simulator.records if r.ended_at is None)
        assert len(per_connection) >= 3 and max(per_connection.values()) <= 100, per_connection
        metrics = await scrape(gw.port)
        assert metric(metrics, "dataflow_gateway_upstream_streams") == LIVE_SESSIONS
        assert metric(metrics, "dataflow_gateway_upstream_connection_streams_max") <= 100
        assert metric(metrics, "dataflow_gateway_upstream_connections", state="open") >= 3
        release.set()
        transcripts = await asyncio.wait_for(asyncio.gather(*sessions), 60)
    assert Counter(t.close_code for t in transcripts) == {1000: LIVE_SESSIONS}


@pytest.mark.timeout(90)
async def test_250_live_sessions_through_nginx_tls_all_start_within_1s(
    gateway_factory: GatewayFactory, simulator: DataflowSimulator, tmp_path: Path
) -> None:
    """nginx's default of 128 streams per client connection is not what a 129th session waits for."""
    release = asyncio.Event()
    async with (
        grpc_tls_proxy(tmp_path, simulator.port) as proxy,
        gateway_factory(
            upstream_target=proxy.target, upstream_plaintext=False, upstream_ca_file=proxy.ca_file, max_sessions=500
        ) as gw,
    ):
        started, sessions = await start_live_sessions(gw, release)
        assert max(started) < 1.0, f"slowest start {max(started):.3f} s"
        assert simulator.active == LIVE_SESSIONS
        assert len(gw.gateway.upstream.pool.connections) >= 3
        assert max(c.streams for c in gw.gateway.upstream.pool.connections) <= 100
        release.set()
        transcripts = await asyncio.wait_for(asyncio.gather(*sessions), 60)
    assert Counter(t.close_code for t in transcripts) == {1000: LIVE_SESSIONS}
    assert len(proxy.requests_by_connection()) >= 3  # nginx saw the gateway's connections as separate ones


async def short_session(gw: RunningGateway, audio: bytes) -> Transcript:
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message())
        transcript = Transcript()
        await next_message(ws, "started", timeout=10, skipped=transcript)
        await send_audio(ws, audio, 640 * 5)
        await ws.send(json.dumps({"type": "finalize"}))
        return await read_all(ws, transcript)


@pytest.mark.timeout(300)
async def test_1500_sessions_through_nginx_tls_cross_goaway_without_a_failure(
    gateway_factory: GatewayFactory, simulator: DataflowSimulator, tmp_path: Path
) -> None:
    """nginx with its defaults (128 streams, GOAWAY after 1000 requests per connection) over TLS with a
    test CA: every session starts and ends normally while the gateway's connections are retired."""
    audio = client_audio(signals.utterances(["1"], 16000, lead_ms=100, pause_ms=0, tail_ms=400), "pcm16")
    async with (
        grpc_tls_proxy(tmp_path, simulator.port) as proxy,
        gateway_factory(
            upstream_target=proxy.target, upstream_plaintext=False, upstream_ca_file=proxy.ca_file, max_sessions=500
        ) as gw,
    ):
        slots = asyncio.Semaphore(30)

        async def one() -> Transcript:
            async with slots:
                return await short_session(gw, audio)

        began = time.monotonic()
        transcripts = await asyncio.gather(*(one() for _ in range(SHORT_SESSIONS)), return_exceptions=True)
        elapsed = time.monotonic() - began
        retired = gw.gateway.upstream.pool.stats.retired["disconnected"]
        metrics = await scrape(gw.port)
    failures = Counter(type(t).__name__ for t in transcripts if isinstance(t, BaseException))
    assert not failures, failures
    ok = [t for t in transcripts if isinstance(t, Transcript)]
    assert Counter(t.close_code for t in ok) == {1000: SHORT_SESSIONS}
    assert Counter(tuple(t.errors()) for t in ok) == {(): SHORT_SESSIONS}  # 0 failed starts, 0 ended by GOAWAY
    assert Counter(tuple(t.milestones()) for t in ok) == {("1",): SHORT_SESSIONS}
    per_connection = proxy.requests_by_connection()
    assert sum(per_connection.values()) == SHORT_SESSIONS
    assert max(per_connection.values()) <= 1000  # nginx's keepalive_requests: then GOAWAY
    # Each connection ended at nginx's GOAWAY after 1000 requests, or carried only the few sessions (at
    # most the 30 in flight) that picked a channel as its GOAWAY arrived (gRPC then dials anew for them,
    # and the pool closes that channel as soon as they end), or is the one carrying the rest. Which of
    # the last two nginx numbered first is a race (the redial may come after the pool's new connection).
    goaways = [count for count in per_connection.values() if count == 1000]
    *redials, _rest = sorted(count for count in per_connection.values() if count != 1000)
    assert len(goaways) >= 1 and all(count <= 30 for count in redials), per_connection
    assert retired >= len(goaways)  # the gateway noticed every GOAWAY
    assert metric(metrics, "dataflow_gateway_upstream_connections_retired_total", reason="disconnected") == retired
    assert metric(metrics, "dataflow_gateway_upstream_streams") == 0
    assert proxy.statuses() == {"200 0": SHORT_SESSIONS}
    print(f"{SHORT_SESSIONS} sessions in {elapsed:.1f} s over nginx connections {dict(per_connection)}")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sim_config", [SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT,
                         max_connection_age_ms=1000, max_connection_age_grace_ms=30000)])  # fmt: skip
async def test_connections_past_their_maximum_age_retire_under_live_sessions(
    gateway_factory: GatewayFactory, simulator: DataflowSimulator
) -> None:
    """Data Flow retires each connection after 1 s (GOAWAY; streams get 30 s of grace): sessions that
    span a retirement finish normally, sessions arriving meanwhile start at once on a fresh one."""
    audio = client_audio(signals.utterances(["12", "34"], 16000), "pcm16")  # 3 s of audio, sent in real time

    async def paced_session(gw: RunningGateway) -> tuple[float, Transcript]:
        async with ws_connect(gw.ws_url()) as ws:
            began = time.monotonic()
            await ws.send(start_message())
            transcript = Transcript()
            await next_message(ws, "started", timeout=10, skipped=transcript)
            startup = time.monotonic() - began
            await send_audio(ws, audio, 640 * 2, pace_s=0.04)
            await ws.send(json.dumps({"type": "finalize"}))
            return startup, await read_all(ws, transcript)

    async with gateway_factory() as gw:
        sessions = []
        for _ in range(12):  # a new session every 0.25 s for 3 s, each lasting about 3 s
            sessions.append(asyncio.create_task(paced_session(gw)))
            await asyncio.sleep(0.25)
        results = await asyncio.wait_for(asyncio.gather(*sessions), 60)
        retired = gw.gateway.upstream.pool.stats.retired["disconnected"]
    assert retired >= 2  # several connections reached their maximum age under live sessions
    assert len({r.peer for r in simulator.records}) >= 3  # new sessions went to fresh connections
    assert max(startup for startup, _ in results) < 1.0
    transcripts = [t for _, t in results]
    assert Counter(t.close_code for t in transcripts) == {1000: 12}
    assert Counter(tuple(t.errors()) for t in transcripts) == {(): 12}
    assert Counter(tuple(t.milestones()) for t in transcripts) == {("12", "34"): 12}
    assert Counter(r.outcome for r in simulator.records) == {"finalized": 12}


@pytest.mark.timeout(60)
async def test_the_proxy_certificate_is_checked(
    gateway_factory: GatewayFactory, simulator: DataflowSimulator, tmp_path: Path
) -> None:
    """Without the test CA (system roots only) no session reaches Data Flow through the TLS proxy."""
    async with (
        grpc_tls_proxy(tmp_path, simulator.port) as proxy,
        gateway_factory(upstream_target=proxy.target, upstream_plaintext=False, upstream_start_timeout_s=3) as gw,
        ws_connect(gw.ws_url()) as ws,
    ):
        await ws.send(start_message())
        transcript = await read_all(ws, timeout=10)
    assert transcript.errors() == ["upstream_unavailable"], transcript.messages
    assert len(simulator.records) == 0
