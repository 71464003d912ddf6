"""The upstream connection pool against simulators with real servers' connection limits (real gRPC)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import MILESTONE, DataflowEvent, StartRequest
from gateway.errors import UpstreamTimeout
from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from gateway.upstream.addresses import channel_target, split_target, system_resolver
from gateway.upstream.channel import UpstreamClient
from gateway.upstream.stream import DataflowStream
from gateway.upstream.token import StaticTokenProvider
from tests.support import signals
from tests.support.settings import SIM_TENANT, SIM_TOKEN, settings_for

FMT = AudioFormat("pcm16", 16000, 1)
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sim_config() -> SimulatorConfig:
    return SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT, max_streams_per_connection=100)


def client_for(simulator: DataflowSimulator, **overrides: object) -> UpstreamClient:
    settings = settings_for(simulator, **overrides)
    assert settings.upstream_token is not None
    return UpstreamClient(settings, StaticTokenProvider(settings.upstream_token))


@pytest.fixture
async def pooled(simulator: DataflowSimulator) -> AsyncIterator[UpstreamClient]:
    client = client_for(simulator, upstream_start_timeout_s=3)
    yield client
    await client.aclose()


async def timed_start(client: UpstreamClient) -> tuple[DataflowStream, float]:
    stream = client.stream(FMT, deadline_s=60)
    began = time.monotonic()
    await stream.start(StartRequest(project="demo", audio=FMT))
    return stream, time.monotonic() - began


def streams_by_connection(simulator: DataflowSimulator) -> Counter[str]:
    """Live streams per TCP connection, as the simulator sees them (its peer is the client's port)."""
    return Counter(r.peer for r in simulator.records if r.ended_at is None)


async def test_250_sessions_start_within_1s_over_a_100_stream_cap(
    pooled: UpstreamClient, simulator: DataflowSimulator
) -> None:
    started = await asyncio.gather(*(timed_start(pooled) for _ in range(250)))
    try:
        slowest = max(seconds for _, seconds in started)
        assert slowest < 1.0, f"slowest start {slowest:.3f} s"
        assert simulator.active == 250  # all live at once: none waited for another to end
        per_connection = streams_by_connection(simulator)
        assert sum(per_connection.values()) == 250
        assert len(per_connection) >= 3, per_connection  # really separate TCP connections
        assert max(per_connection.values()) <= 100, per_connection
        assert all(c.streams <= 100 for c in pooled.pool.connections)
    finally:
        for stream, _ in started:
            stream.cancel()


async def test_one_connection_makes_the_101st_session_wait(simulator: DataflowSimulator) -> None:
    """The failure the pool prevents: one connection for all, the server's cap of 100 streams."""
    client = client_for(simulator, upstream_max_streams_per_connection=1000, upstream_start_timeout_s=1)
    try:
        results = await asyncio.gather(*(timed_start(client) for _ in range(110)), return_exceptions=True)
        timed_out = [r for r in results if isinstance(r, UpstreamTimeout)]
        assert len(timed_out) >= 10, Counter(type(r).__name__ for r in results)
        assert simulator.active <= 100
        assert len(streams_by_connection(simulator)) == 1
    finally:
        for result in results:
            if isinstance(result, tuple):
                result[0].cancel()
        await client.aclose()


async def test_idle_surplus_connections_close(simulator: DataflowSimulator) -> None:
    client = client_for(simulator, upstream_idle_connection_s=0.2)
    try:
        started = await asyncio.gather(*(timed_start(client) for _ in range(150)))
        assert len(client.pool.connections) >= 2
        for stream, _ in started:
            stream.cancel()
        async with asyncio.timeout(5):
            while len(client.pool.connections) > 1:
                await asyncio.sleep(0.05)
        assert client.pool.stats.retired["idle"] >= 1
        stream, seconds = await timed_start(client)  # the one kept serves the next session
        assert seconds < 1.0
        stream.cancel()
    finally:
        await client.aclose()


async def test_connections_spread_over_the_addresses_the_name_resolves_to() -> None:
    simulators = [DataflowSimulator(SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT)) for _ in range(3)]
    for sim in simulators:
        await sim.start()
    answers = [[f"ipv4:{s.target}" for s in simulators[:2]]]

    async def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("dataflow.example", 443)
        return answers[-1]

    settings = settings_for(simulators[0], upstream_target="dataflow.example:443", upstream_plaintext=True,
                            upstream_resolve_interval_s=0.2)  # fmt: skip
    assert settings.upstream_token is not None
    client = UpstreamClient(settings, StaticTokenProvider(settings.upstream_token), resolver=resolver)
    streams: list[DataflowStream] = []
    try:
        assert await client.pool.resolve() == answers[0]
        streams += [s for s, _ in await asyncio.gather(*(timed_start(client) for _ in range(6)))]
        assert [s.active for s in simulators] == [3, 3, 0]  # one connection per address, sessions spread
        answers.append([f"ipv4:{s.target}" for s in simulators[1:]])  # address 1 gone, address 3 new
        async with asyncio.timeout(5):
            while not client.pool.stats.retired["address_gone"]:
                await asyncio.sleep(0.05)
        streams += [s for s, _ in await asyncio.gather(*(timed_start(client) for _ in range(4)))]
        assert simulators[0].active == 3  # streams on a retired connection go on
        assert simulators[2].active >= 2, [s.active for s in simulators]
        assert simulators[0].active + simulators[1].active + simulators[2].active == 10
    finally:
        for stream in streams:
            stream.cancel()
        await client.aclose()
        for sim in simulators:
            await sim.stop(None)


async def test_min_connections_spread_sessions_behind_one_address(simulator: DataflowSimulator) -> None:
    """Behind an L4 balancer one name is one address; each connection can still reach another backend."""
    client = client_for(simulator, upstream_min_connections=3)
    try:
        started = await asyncio.gather(*(timed_start(client) for _ in range(6)))
        assert sorted(streams_by_connection(simulator).values()) == [2, 2, 2]
        for stream, _ in started:
            stream.cancel()
    finally:
        await client.aclose()


async def test_the_pools_own_maximum_age_moves_new_sessions_to_a_new_connection(simulator: DataflowSimulator) -> None:
    client = client_for(simulator, upstream_max_connection_age_s=0.3)
    try:
        old = [s for s, _ in await asyncio.gather(*(timed_start(client) for _ in range(3)))]
        running = [asyncio.create_task(dtmf_session(s, "12")) for s in old]
        await asyncio.sleep(0.5)
        later, seconds = await timed_start(client)
        assert seconds < 1.0 and client.pool.stats.retired["age"] == 1
        assert len({r.peer for r in simulator.records}) == 2
        assert await asyncio.gather(*running) == [["12"]] * 3  # streams on the retired one finish normally
        assert await dtmf_session(later, "3") == ["3"]
        for stream in [*old, later]:
            stream.cancel()
    finally:
        await client.aclose()


async def dtmf_session(stream: DataflowStream, digits: str) -> list[str]:
    """Send the digits in real time, finalize, and return the digit groups Data Flow recognised."""
    data = signals.to_pcm16(signals.utterances([digits], 16000))
    step = FMT.ms_to_bytes(20)
    for offset in range(0, len(data), step):
        await stream.send_audio(data[offset : offset + step])
        await asyncio.sleep(0.02)
    await stream.finalize()
    return [i.text or "" async for i in stream.items() if isinstance(i, DataflowEvent) and i.name == MILESTONE]


@pytest.mark.parametrize("sim_config", [SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT,
                         max_connection_age_ms=500, max_connection_age_grace_ms=30000)])  # fmt: skip
async def test_a_connection_past_its_maximum_age_retires_without_failing_a_session(
    pooled: UpstreamClient, simulator: DataflowSimulator
) -> None:
    """The server sends GOAWAY at 0.5 s: streams on the old connection finish normally, new ones open
    on a fresh connection at once, and the old one is closed when its last stream ends."""
    first = [s for s, _ in await asyncio.gather(*(timed_start(pooled) for _ in range(5)))]
    old_peer = {r.peer for r in simulator.records}
    assert len(old_peer) == 1
    running = [asyncio.create_task(dtmf_session(s, "1234")) for s in first]
    async with asyncio.timeout(5):
        while not pooled.pool.stats.retired["disconnected"]:
            await asyncio.sleep(0.02)
    later, seconds = await timed_start(pooled)
    assert seconds < 1.0
    assert simulator.records[-1].peer not in old_peer  # a fresh connection
    results = await asyncio.gather(*running)
    assert results == [["1234"]] * 5  # the old connection's streams finished normally
    assert [r.outcome for r in list(simulator.records)[:5]] == ["finalized"] * 5
    assert await dtmf_session(later, "56") == ["56"]
    for stream in [*first, later]:
        stream.cancel()
    assert all(not c.retiring for c in pooled.pool.connections)  # the retired one is gone


@pytest.mark.parametrize(
    ("target", "name"),
    [
        ("dataflow.eu.knovvu.com:443", ("dataflow.eu.knovvu.com", 443)),
        ("localhost:50051", ("localhost", 50051)),
        ("127.0.0.1:50051", None),  # an address: nothing to resolve
        ("[::1]:50051", None),
        ("dns:///dataflow:443", None),  # a gRPC URI goes to gRPC as it is
        ("ipv4:10.0.0.1:443,10.0.0.2:443", None),
        ("unix:/run/dataflow.sock", None),
        ("dataflow", None),  # no port
    ],
)
def test_which_targets_the_pool_resolves_itself(target: str, name: tuple[str, int] | None) -> None:
    assert split_target(target) == name


def test_each_connection_dials_its_own_address_first_and_falls_back_to_the_others() -> None:
    addresses = ["ipv4:10.0.0.1:443", "ipv4:10.0.0.2:443", "ipv4:10.0.0.3:443"]
    assert channel_target(addresses, 0) == "ipv4:10.0.0.1:443,10.0.0.2:443,10.0.0.3:443"
    assert channel_target(addresses, 2) == "ipv4:10.0.0.3:443,10.0.0.1:443,10.0.0.2:443"
    assert channel_target(["ipv6:[::1]:443", "ipv6:[::2]:443"], 1) == "ipv6:[::2]:443,[::1]:443"


async def test_the_system_resolver_prefers_ipv4_and_lists_each_address_once() -> None:
    assert await system_resolver("localhost", 50051) == ["ipv4:127.0.0.1:50051"]
