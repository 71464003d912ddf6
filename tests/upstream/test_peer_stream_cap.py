"""An upstream that allows fewer streams per connection than the gateway's setting (its HTTP/2 SETTINGS):
the pool reads the peer's cap and opens more connections, instead of letting gRPC hold the streams
over it until their Start times out. Real gRPC servers and a real nginx gRPC proxy with TLS."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from pydantic import SecretStr

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import StartRequest
from gateway.errors import UpstreamTimeout
from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from gateway.upstream import peer_settings, stream_caps
from gateway.upstream.channel import UpstreamClient
from gateway.upstream.peer_settings import PeerEndpoint, ProbeFailed, read_peer
from gateway.upstream.stream import DataflowStream
from gateway.upstream.token import StaticTokenProvider
from tests.support.grpc_proxy import grpc_tls_proxy
from tests.support.settings import SIM_TENANT, SIM_TOKEN, settings_for

FMT = AudioFormat("pcm16", 16000, 1)
SESSIONS = 5
CAP = 2
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sim_config() -> SimulatorConfig:
    return SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT, max_streams_per_connection=CAP)


def client_for(simulator: DataflowSimulator, **overrides: object) -> UpstreamClient:
    settings = settings_for(simulator, upstream_start_timeout_s=2, **overrides)
    return UpstreamClient(settings, StaticTokenProvider(SecretStr(SIM_TOKEN)))


async def start_all(client: UpstreamClient, count: int) -> list[DataflowStream | BaseException]:
    """``count`` sessions started at once (after the client's own startup, as the gateway does)."""
    await client.start()

    async def one() -> DataflowStream:
        stream = client.stream(FMT, deadline_s=60)
        await stream.start(StartRequest(project="demo", audio=FMT))
        return stream

    return await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)


@pytest.fixture
async def started() -> AsyncIterator[list[list[DataflowStream | BaseException]]]:
    """Sessions a test started, cancelled at its end."""
    runs: list[list[DataflowStream | BaseException]] = []
    yield runs
    for results in runs:
        for result in results:
            if isinstance(result, DataflowStream):
                result.cancel()


def live_streams_by_connection(simulator: DataflowSimulator) -> Counter[str]:
    return Counter(r.peer for r in simulator.records if r.ended_at is None)


async def test_sessions_over_the_peers_cap_start_on_more_connections(
    simulator: DataflowSimulator, started: list[list[DataflowStream | BaseException]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.upstream")
    client = client_for(simulator)  # GATEWAY_UPSTREAM_MAX_STREAMS_PER_CONNECTION: the default 100
    try:
        began = time.monotonic()
        results = await start_all(client, SESSIONS)
        started.append(results)
        took = time.monotonic() - began
        assert all(isinstance(r, DataflowStream) for r in results), Counter(type(r).__name__ for r in results)
        assert took < 1.5, f"{SESSIONS} starts took {took:.2f} s"  # no Start waited for its 2 s timeout
        per_connection = live_streams_by_connection(simulator)
        assert sum(per_connection.values()) == SESSIONS
        assert max(per_connection.values()) <= CAP, per_connection
        assert len(per_connection) >= 3, per_connection
        assert client.pool.stream_limit() == CAP
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len([w for w in warnings if "allows 2 concurrent streams per connection" in w]) == 1, warnings
    finally:
        await client.aclose()


async def test_with_the_probe_off_streams_over_the_cap_wait_and_time_out(
    simulator: DataflowSimulator, started: list[list[DataflowStream | BaseException]]
) -> None:
    """What the probe prevents: gRPC holds the streams over the peer's cap until their Start times out."""
    client = client_for(simulator, upstream_probe_stream_cap=False)
    try:
        results = await start_all(client, SESSIONS)
        started.append(results)
        assert sum(isinstance(r, UpstreamTimeout) for r in results) == SESSIONS - CAP
        assert client.pool.stream_limit() == 100
    finally:
        await client.aclose()


@pytest.mark.parametrize("sim_config", [SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT)])
async def test_an_uncapped_upstream_keeps_the_configured_limit(
    simulator: DataflowSimulator, started: list[list[DataflowStream | BaseException]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.upstream")
    client = client_for(simulator)
    try:
        results = await start_all(client, SESSIONS)
        started.append(results)
        assert all(isinstance(r, DataflowStream) for r in results)
        assert len(live_streams_by_connection(simulator)) == 1  # all on one connection, as before
        assert client.pool.stream_limit() == 100
        assert not [r for r in caplog.records if "streams per connection" in r.getMessage()]
        assert len(simulator.records) == SESSIONS  # the probe opened no stream
    finally:
        await client.aclose()


async def test_through_nginx_with_tls_and_a_stream_cap_of_two(
    simulator: DataflowSimulator, tmp_path: Path, started: list[list[DataflowStream | BaseException]]
) -> None:
    """nginx (`http2_max_concurrent_streams 2`, TLS, a throwaway CA): the cap is nginx's, read over TLS with
    the configured CA and the name the certificate carries, while the gateway dials the address."""
    sim_uncapped = DataflowSimulator(SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT))
    port = await sim_uncapped.start()
    try:
        async with grpc_tls_proxy(tmp_path, port, f"        http2_max_concurrent_streams {CAP};\n") as proxy:
            settings = dict(upstream_target=proxy.target, upstream_plaintext=False, upstream_ca_file=proxy.ca_file)
            client = client_for(simulator, **settings)
            try:
                results = await start_all(client, SESSIONS)
                started.append(results)
                assert all(isinstance(r, DataflowStream) for r in results), Counter(type(r).__name__ for r in results)
                assert client.pool.stream_limit() == CAP
                assert len([c for c in client.pool.connections if c.streams]) >= 3
            finally:
                await client.aclose()
            # Without the probe the same proxy holds three of them until their Start times out.
            client = client_for(simulator, upstream_probe_stream_cap=False, **settings)
            try:
                results = await start_all(client, SESSIONS)
                started.append(results)
                assert sum(isinstance(r, UpstreamTimeout) for r in results) == SESSIONS - CAP
            finally:
                await client.aclose()
    finally:
        await sim_uncapped.stop()


# --- the probe itself, against peers that do not answer as an HTTP/2 server ---------------------------


async def serve(handler: object) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
    return server, server.sockets[0].getsockname()[1]


async def test_a_peer_that_never_answers_fails_the_probe_in_time() -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server, port = await serve(silent)
    async with server:
        began = time.monotonic()
        with pytest.raises(ProbeFailed, match=r"no SETTINGS within 0\.3 s"):
            await read_peer(PeerEndpoint("127.0.0.1", port, None), 0.3)
        assert time.monotonic() - began < 1.5
        for writer in held:
            writer.close()


async def test_a_peer_that_speaks_http1_or_closes_fails_the_probe() -> None:
    async def http1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        writer.close()

    async def closes(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    for handler in (http1, closes):
        server, port = await serve(handler)
        async with server:
            with pytest.raises(ProbeFailed):
                await read_peer(PeerEndpoint("127.0.0.1", port, None), 2)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    with pytest.raises(ProbeFailed, match="ConnectionRefusedError"):
        await read_peer(PeerEndpoint("127.0.0.1", closed_port, None), 2)


async def test_tls_checks_the_certificate_and_wants_h2(tmp_path: Path) -> None:
    ca, other_ca = trustme.CA(), trustme.CA()
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("upstream.test").configure_cert(served)
    served.set_alpn_protocols(["http/1.1"])  # a TLS server that does not offer HTTP/2

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=served)
    port = server.sockets[0].getsockname()[1]
    async with server:
        ours, wrong = tmp_path / "ca.pem", tmp_path / "other.pem"
        ca.cert_pem.write_to_path(str(ours))
        other_ca.cert_pem.write_to_path(str(wrong))
        endpoint = PeerEndpoint("127.0.0.1", port, peer_settings.tls_context(wrong), "upstream.test")
        with pytest.raises(ProbeFailed, match="CERTIFICATE_VERIFY_FAILED"):
            await read_peer(endpoint, 2)
        endpoint = PeerEndpoint("127.0.0.1", port, peer_settings.tls_context(ours), "upstream.test")
        with pytest.raises(ProbeFailed, match="not h2"):
            await read_peer(endpoint, 2)


# --- what the pool does with the answers ---------------------------------------------------------------


async def test_a_failing_probe_is_logged_once_and_a_changed_cap_applies(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.upstream")
    answers: list[int | Exception | None] = [ProbeFailed("refused"), ProbeFailed("refused"), 3, 3, 0, None]

    async def probe(_: str) -> int | None:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(stream_caps, "REPROBE_S", 0.0)
    caps = stream_caps.StreamCaps(100, probe)
    limits = []
    for _ in range(6):
        await caps.refresh(["ipv4:10.0.0.1:443"])
        limits.append(caps.limit("ipv4:10.0.0.1:443"))
    assert limits == [100, 100, 3, 3, 1, 100]  # 0 (no new streams now) is taken as 1
    lines = [r.getMessage() for r in caplog.records]
    assert sum("could not read" in line for line in lines) == 1, lines
    assert sum("allows 3 concurrent streams" in line for line in lines) == 1, lines
    assert sum("take 100 sessions again" in line for line in lines) == 1, lines
    await caps.refresh([])  # an address no longer listed is forgotten
    assert caps.limit("ipv4:10.0.0.1:443") == 100


async def test_no_probe_through_an_http_connect_proxy_or_for_grpc_uris(
    simulator: DataflowSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("grpc_proxy", "https_proxy", "http_proxy", "no_grpc_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    client = client_for(simulator)
    try:
        assert client._probeable("ipv4:127.0.0.1:443")
        assert not client._probeable("dns:///dataflow.example:443")
        assert not client._probeable("unix:/run/dataflow.sock")
    finally:
        await client.aclose()
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # the route is decided when the client is made
    client = client_for(simulator)
    try:
        assert not client._probeable("ipv4:127.0.0.1:443")
        await client.start()
        assert client.pool.caps.limit(simulator.target) == 100  # the capped simulator was not asked
    finally:
        await client.aclose()
