"""A refused Start, over real gRPC to the simulator with tokens from a real local token endpoint: what a
client chose (its project name, settings) must not make the refusal read as a refused credential."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import StartRequest
from gateway.errors import UpstreamAuthFailed, UpstreamRejected
from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from gateway.upstream.channel import UpstreamClient
from gateway.upstream.oauth import ClientCredentialsTokenProvider
from tests.support.settings import SIM_TENANT, SIM_TOKEN, settings_for

FMT = AudioFormat("pcm16", 16000, 1)


@dataclass
class TokenEndpoint:
    """Answers every token request with ``token``; counts them."""

    token: str
    url: str = ""
    requests: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:  # keep-alive: one request after another on the connection
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                length = next(
                    int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                self.requests += 1
                body = json.dumps({"access_token": self.token, "token_type": "Bearer", "expires_in": 3600}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                )
                writer.write(body)
                await writer.drain()
        writer.close()


@pytest.fixture
async def endpoint() -> AsyncIterator[TokenEndpoint]:
    stub = TokenEndpoint(SIM_TOKEN)
    server = await asyncio.start_server(stub.handle, "127.0.0.1", 0)
    stub.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/connect/token"
    yield stub
    server.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.wait_closed(), 5)


@pytest.fixture
async def client(simulator: DataflowSimulator, endpoint: TokenEndpoint) -> AsyncIterator[UpstreamClient]:
    tokens = ClientCredentialsTokenProvider(
        url=endpoint.url,
        client_id="gateway-client",
        client_secret=SecretStr("cs-refusals"),
        scope="Wagtail",
        refresh_margin_s=300,
        fetch_timeout_s=5,
        attempts=1,
    )
    upstream = UpstreamClient(settings_for(simulator), tokens)
    yield upstream
    await upstream.aclose()
    await tokens.aclose()


async def refused(client: UpstreamClient, project: str, **start: Any) -> BaseException:
    stream = client.stream(FMT, deadline_s=30)
    try:
        await stream.start(StartRequest(project=project, audio=FMT, **start))
    except Exception as exc:
        return exc
    finally:
        await stream.aclose()
    raise AssertionError("the Start was accepted")


@pytest.mark.parametrize(
    "sim_config", [SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT, projects=frozenset({"demo"}))]
)
async def test_a_project_name_a_client_chose_cannot_pass_for_a_refused_token(
    client: UpstreamClient, endpoint: TokenEndpoint
) -> None:
    """Data Flow quotes the unknown project; the gateway took any "token", "expired", "credential" or
    "unauthor…" in the refusal for a refused credential: it dropped its (good) token and fetched a new
    one for every such Start, and told the client to retry an error that retrying cannot cure."""
    projects = ["expired-token-tests", "Credentials-Demo", "unauthorized-calls", "UNAUTHENTICATED"] * 5
    errors = [await refused(client, project) for project in projects]
    assert [type(e) for e in errors] == [UpstreamRejected] * len(projects)
    assert all(isinstance(e, UpstreamRejected) and not e.retryable for e in errors)
    assert all(project in str(e) for project, e in zip(projects, errors, strict=True))  # the text still says why
    assert endpoint.requests == 1  # the one token served every Start


@pytest.mark.parametrize("sim_config", [SimulatorConfig(token="another-token", tenant=SIM_TENANT)])
async def test_a_refused_token_is_still_dropped_and_fetched_again(
    client: UpstreamClient, endpoint: TokenEndpoint
) -> None:
    for _ in range(2):
        error = await refused(client, "token-project")  # a client's word in the Start does not hide the refusal
        assert isinstance(error, UpstreamAuthFailed), error
        assert "invalid token" in str(error)
    assert endpoint.requests == 2
