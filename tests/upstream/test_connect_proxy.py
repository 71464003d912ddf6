"""Data Flow behind an HTTP CONNECT egress proxy (``https_proxy``, read by gRPC core): the proxy is asked
for the configured name, never for an address the gateway resolved, and ``no_proxy`` is honoured for
that name. A real proxy over real sockets, a real gRPC simulator."""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import StartRequest
from gateway.simulator.server import DataflowSimulator
from gateway.upstream.channel import UpstreamClient
from gateway.upstream.proxy_route import excluded, route_for
from gateway.upstream.token import StaticTokenProvider
from tests.support.connect_proxy import ConnectProxy, connect_proxy
from tests.support.settings import SIM_TOKEN, settings_for

FMT = AudioFormat("pcm16", 16000, 1)
PROXY_PASSWORD = "pr0xy-PASSWORD-19"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("grpc_proxy", "https_proxy", "http_proxy", "no_grpc_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


async def start_sessions(simulator: DataflowSimulator, count: int) -> UpstreamClient:
    """``count`` sessions started against ``localhost:PORT`` (a name the gateway could resolve itself)."""
    settings = settings_for(simulator, upstream_target=f"localhost:{simulator.port}", upstream_start_timeout_s=3)
    client = UpstreamClient(settings, StaticTokenProvider(SecretStr(SIM_TOKEN)))
    await client.start()
    for _ in range(count):
        stream = client.stream(FMT, deadline_s=30)
        await stream.start(StartRequest(project="demo", audio=FMT))
        stream.cancel()
    return client


async def test_the_proxy_is_asked_for_the_name(
    simulator: DataflowSimulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An egress proxy that allows destinations by name only (403 for an address): the sessions start."""
    caplog.set_level(logging.INFO, logger="gateway.upstream")
    async with connect_proxy(names_only=True) as proxy:
        monkeypatch.setenv("https_proxy", proxy.url.replace("http://", f"http://ops:{PROXY_PASSWORD}@"))
        client = await start_sessions(simulator, 3)
        await client.aclose()
    assert proxy.asked and set(proxy.asked) == {f"localhost:{simulator.port}"}, proxy.asked
    assert len(simulator.records) == 3
    lines = [r.getMessage() for r in caplog.records if "CONNECT proxy" in r.getMessage()]
    assert len(lines) == 1 and "http://ops:[redacted]@127.0.0.1:" in lines[0], lines
    assert not [r for r in caplog.records if PROXY_PASSWORD in r.getMessage()]


async def test_a_host_in_no_proxy_is_dialled_directly(
    simulator: DataflowSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with connect_proxy() as proxy:
        monkeypatch.setenv("https_proxy", proxy.url)
        monkeypatch.setenv("no_proxy", "example.internal, localhost")
        client = await start_sessions(simulator, 2)
        assert client.pool.addresses == [f"ipv4:127.0.0.1:{simulator.port}"]  # resolved by the gateway
        await client.aclose()
    assert proxy.asked == []
    assert len(simulator.records) == 2


async def test_no_grpc_proxy_is_read_before_no_proxy(
    simulator: DataflowSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with connect_proxy() as proxy:
        monkeypatch.setenv("grpc_proxy", proxy.url)
        monkeypatch.setenv("no_grpc_proxy", "other.internal")
        monkeypatch.setenv("no_proxy", "localhost")  # not read: no_grpc_proxy is set
        client = await start_sessions(simulator, 1)
        await client.aclose()
    assert proxy.asked == [f"localhost:{simulator.port}"]


def test_no_proxy_entries_as_grpc_reads_them() -> None:
    assert excluded("dataflow.example.com", ".example.com")
    assert excluded("example.com", ".example.com")
    assert not excluded("notexample.com", ".example.com")
    assert not excluded("eu.dataflow.example.com", "dataflow.example.com")
    assert excluded("DataFlow.Example.com.", " x , dataflow.example.com ")
    assert excluded("anything", "*")
    assert not excluded("dataflow", "")
    assert route_for("dataflow", {}).variable is None
    assert (
        route_for("dataflow", {"http_proxy": "http://p:3128", "https_proxy": "http://q:3128"}).variable == "https_proxy"
    )
    assert route_for(None, {"http_proxy": "http://p:3128", "no_proxy": "*"}).proxied  # an address: gRPC decides
    assert not ConnectProxy().asked
