"""A Data Flow that enforces gRPC servers' keepalive policy (grpc-go, grpc-java and C++ servers by default:
at most one ping per 5 minutes without data, none on a connection without calls). The simulator's policy
is scaled down to 1.5 s; real gRPC over real sockets. (gRPC core sends a keepalive ping about once a second at
the most, whatever shorter period it is given: the periods here start at 0.5 s.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from pydantic import SecretStr

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import StartRequest
from gateway.errors import UpstreamUnavailable
from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from gateway.upstream.channel import UpstreamClient
from gateway.upstream.errors import pings_refused
from gateway.upstream.token import StaticTokenProvider
from tests.support.settings import SIM_TENANT, SIM_TOKEN, settings_for

FMT = AudioFormat("pcm16", 16000, 1)
MIN_PING_INTERVAL_S = 1.5
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sim_config() -> SimulatorConfig:
    return SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT, min_ping_interval_ms=int(MIN_PING_INTERVAL_S * 1000))


@contextlib.asynccontextmanager
async def pinging_client(simulator: DataflowSimulator, **overrides: object) -> AsyncIterator[UpstreamClient]:
    """A started client pinging every 0.5 s (gRPC core pings about once a second at the most)."""
    settings = settings_for(simulator, upstream_keepalive_interval_s=0.5, upstream_keepalive_timeout_s=5, **overrides)
    started = UpstreamClient(settings, StaticTokenProvider(SecretStr(SIM_TOKEN)))
    await started.start()
    try:
        yield started
    finally:
        await started.aclose()


@pytest.fixture
async def client(simulator: DataflowSimulator) -> AsyncIterator[UpstreamClient]:
    async with pinging_client(simulator) as started:
        yield started


async def idle_connection_kept(client: UpstreamClient) -> None:
    """The connection the pool keeps for the next session, with no call on it, stays open for six periods
    of 1 s: three strikes and a GOAWAY if it were pinged."""
    client.ready()
    await asyncio.sleep(0.5)
    kept = client.pool.connections
    assert kept
    lost_before = client.pool.stats.retired["disconnected"]
    await asyncio.sleep(6)
    assert client.pool.connections == kept
    assert all(c.channel.get_state() is grpc.ChannelConnectivity.READY for c in kept)
    assert client.pool.stats.retired["disconnected"] == lost_before


async def silent_session(client: UpstreamClient, watch_s: float) -> BaseException | None:
    """A session that sends nothing after its Start (a paused call, a muted microphone) and hears nothing:
    how its stream ended within ``watch_s``, None if it was still open."""
    stream = client.stream(FMT, deadline_s=60)
    await stream.start(StartRequest(project="demo", audio=FMT))
    try:
        async with asyncio.timeout(watch_s):
            async for _ in stream.items():
                pass
    except TimeoutError:
        return None
    except UpstreamUnavailable as exc:
        return exc
    finally:
        await stream.aclose()
    return AssertionError("the stream ended cleanly")


async def test_refused_pings_double_the_keepalive_until_the_server_takes_them(
    client: UpstreamClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.upstream")
    ended: list[str] = []
    for _ in range(5):
        # Three strikes end it: four pings at the period it pings at (once a second at the most), and a margin.
        outcome = await silent_session(client, watch_s=4 * max(1.0, client.keepalive_s) + 3)
        if outcome is None:
            break
        ended.append(str(outcome))
    else:
        pytest.fail(f"every silent session was cut: {ended}")
    # 0.5 and 1 s are under the server's 1.5 s: each cost one stream; 2 s is taken.
    assert len(ended) == 2, ended
    assert all("Too many pings" in e or "too_many_pings" in e for e in ended), ended
    assert client.keepalive_s == pytest.approx(2.0)
    warnings = [r.getMessage() for r in caplog.records if "too many keepalive pings" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert "at one per 0.5 s: new connections ping every 1 s" in warnings[0]


async def test_several_streams_cut_by_one_goaway_raise_the_period_once(client: UpstreamClient) -> None:
    outcomes = await asyncio.gather(*(silent_session(client, watch_s=8) for _ in range(4)))
    assert all(isinstance(o, UpstreamUnavailable) for o in outcomes), outcomes
    assert client.keepalive_s == pytest.approx(1.0)  # one connection, one GOAWAY: one raise


@pytest.mark.parametrize("sim_config", [SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT)])
async def test_a_server_that_welcomes_pings_keeps_the_configured_period(
    simulator: DataflowSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.upstream")
    async with pinging_client(simulator) as client:
        assert await silent_session(client, watch_s=4) is None
        assert client.keepalive_s == pytest.approx(0.5)
    assert not [r for r in caplog.records if "keepalive" in r.getMessage()]  # the probe's pings were answered


async def test_a_server_refusing_pings_without_calls_is_known_before_the_first_connection(
    simulator: DataflowSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """The startup probe's pings meet the policy, so the connection kept for the next session is never
    pinged: it used to be closed every few pings until a silent session was cut and said why."""
    caplog.set_level(logging.INFO, logger="gateway.upstream")
    async with pinging_client(simulator) as client:
        await idle_connection_kept(client)
        assert client.keepalive_s == pytest.approx(0.5)  # no stream was cut: the period is as configured
    lines = [r.getMessage() for r in caplog.records if "refuses keepalive pings" in r.getMessage()]
    assert len(lines) == 1 and f"upstream 127.0.0.1:{simulator.port} refuses" in lines[0], lines


def test_only_a_ping_refusal_reads_as_one() -> None:
    unavailable = grpc.StatusCode.UNAVAILABLE
    assert pings_refused(unavailable, "Too many pings")
    assert pings_refused(unavailable, "GOAWAY received; Error code: 11; Debug Text: too_many_pings")
    assert not pings_refused(unavailable, "Socket closed")
    assert not pings_refused(unavailable, None)
    assert not pings_refused(grpc.StatusCode.INVALID_ARGUMENT, "too many pings in your project name")


async def test_after_a_refusal_connections_without_calls_are_not_pinged(simulator: DataflowSimulator) -> None:
    """Such a server also refuses any ping on a connection without calls: the idle connection the pool keeps
    would be closed every few pings. Where the probe could not ask (off here; through a CONNECT proxy), the
    first refusal of a stream's pings stops the gateway pinging those."""
    async with pinging_client(simulator, upstream_probe_stream_cap=False) as client:
        assert isinstance(await silent_session(client, watch_s=8), UpstreamUnavailable)
        assert client.keepalive_s == pytest.approx(1.0)
        await idle_connection_kept(client)
