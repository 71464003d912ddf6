"""The identity endpoint behind an egress proxy: an https token endpoint is reached through the proxy
environment (a CONNECT tunnel, TLS end to end) and trusts SSL_CERT_FILE, as gRPC and the webhooks do;
a plain http one never goes through a proxy (a forwarding proxy would read the client secret)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.upstream.token import ClientCredentialsTokenProvider
from tests.support.connect_proxy import connect_proxy

CLIENT_SECRET = "cs-PROXIED-SECRET-3f1e"
PROXY_PASSWORD = "pr0xy-PASSWORD-27"
pytestmark = pytest.mark.timeout(30)


async def token(_: Request) -> JSONResponse:
    return JSONResponse({"access_token": "tok-via-proxy", "token_type": "Bearer", "expires_in": 3600})


@pytest.fixture(autouse=True)
def clean_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, tls: bool) -> AsyncIterator[str]:
    """An identity endpoint on localhost; with ``tls`` its certificate comes from a CA written to
    ``tmp_path / "ca.pem"`` (trusted by no default bundle)."""
    options: dict[str, str] = {}
    if tls:
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        issued = ca.issue_cert("localhost")
        issued.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
        options = {"ssl_certfile": str(tmp_path / "server.pem")}
    app = Starlette(routes=[Route("/connect/token", token, methods=["POST"])])
    # No logging config: uvicorn's own would stop its loggers propagating for every later test.
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="off", log_config=None, log_level="warning", ws="none", **options
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"{'https' if tls else 'http'}://localhost:{port}/connect/token"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def provider(url: str) -> ClientCredentialsTokenProvider:
    return ClientCredentialsTokenProvider(
        url=url, client_id="gateway", client_secret=SecretStr(CLIENT_SECRET), scope="Wagtail",
        refresh_margin_s=300, fetch_timeout_s=3, attempts=1,
    )  # fmt: skip


async def test_an_https_identity_endpoint_is_reached_through_the_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.upstream")
    async with connect_proxy(names_only=True) as proxy, serve(tmp_path, tls=True) as url:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url.replace("http://", f"http://ops:{PROXY_PASSWORD}@"))
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
        tokens = provider(url)
        try:
            assert (await tokens.get()).get_secret_value() == "tok-via-proxy"
        finally:
            await tokens.aclose()
        assert proxy.asked == [url.split("/")[2]], proxy.asked  # localhost:PORT, by name
    lines = [r.getMessage() for r in caplog.records if "token requests follow" in r.getMessage()]
    assert lines == [
        f"token requests follow the proxy environment: https_proxy=http://ops:[redacted]@127.0.0.1:{proxy.port}"
    ]
    assert not [r for r in caplog.records if PROXY_PASSWORD in r.getMessage() or CLIENT_SECRET in r.getMessage()]


async def test_a_plain_http_identity_endpoint_never_goes_through_a_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with connect_proxy() as proxy, serve(tmp_path, tls=False) as url:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("ALL_PROXY", proxy.url)
        tokens = provider(url)
        try:
            assert (await tokens.get()).get_secret_value() == "tok-via-proxy"
        finally:
            await tokens.aclose()
    assert proxy.asked == []
