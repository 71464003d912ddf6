"""``POST /v1/tokens`` mints only tokens a page can use: the ``origin`` must be spelled as browsers send it
(as GATEWAY_ALLOWED_ORIGINS entries must) and be one the gateway allows on WebSocket handshakes; anything
else is a 422 in the error envelope. It minted 200 tokens that could never start a session
(``origin_mismatch`` at use, or a 403 a browser sees only as a failed connection)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.support.harness import RunningGateway, next_message, read_all, ws_connect
from tests.support.native_client import start_message
from tests.support.settings import SECRETS, browser_auth

KEY = "dfg_mintorigin_1f2e3d4c5b6a79880f1e2d3c4b5a6978"
SIGNING_KEY = "mint-origin-signing-key-0123456789abcdef"
APP = "https://app.example.com"
SECRETS.update({KEY, SIGNING_KEY})

MALFORMED = [
    "https://app.example.com/",  # a trailing slash: no browser sends one
    "https://App.Example.com",  # upper case
    "https://app.example.com:443",  # the scheme's default port
    "http://app.example.com:80",
    "https://app.example.com/page",  # a path
    "https://user@app.example.com",  # user information
    "app.example.com",  # no scheme
    "null",  # an opaque origin: no token can be bound to it
    "",
]


@pytest.fixture
def gw_settings() -> dict[str, Any]:
    return browser_auth(KEY, SIGNING_KEY, APP)


async def mint(gw: RunningGateway, origin: str, host: str | None = None) -> httpx.Response:
    headers = {"X-API-Key": KEY, **({"Host": host} if host else {})}
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        response = await http.post("/v1/tokens", json={"origin": origin}, headers=headers)
    if response.status_code == 200:
        SECRETS.add(response.json()["token"])
    return response


def refusal(response: httpx.Response) -> tuple[int, str, bool]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["retryable"]


@pytest.mark.parametrize("origin", MALFORMED)
async def test_an_origin_no_browser_sends_is_refused(gw: RunningGateway, origin: str) -> None:
    response = await mint(gw, origin)
    assert refusal(response) == (422, "invalid_parameters", False)
    assert "not an Origin as browsers send it" in response.json()["error"]["message"]
    assert origin not in response.text or not origin  # the value is not quoted back


@pytest.mark.parametrize(
    "origin", ["https://other.example.org", "http://app.example.com", "https://app.example.com:8443"]
)
async def test_an_origin_the_handshake_would_refuse_is_refused(gw: RunningGateway, origin: str) -> None:
    """Well formed, but neither in GATEWAY_ALLOWED_ORIGINS nor a page of the gateway's own: its handshake
    would get 403 ``origin_not_allowed``."""
    response = await mint(gw, origin)
    assert refusal(response) == (422, "invalid_parameters", False)
    assert "GATEWAY_ALLOWED_ORIGINS" in response.json()["error"]["message"]


async def test_origins_the_handshake_allows_are_minted(gw: RunningGateway) -> None:
    """The allowlist's, a loopback page's, and (auth on, no GATEWAY_PUBLIC_HOSTS) the gateway's own page:
    the origin of the host the mint request names, as the handshake's Host decides it there."""
    assert (await mint(gw, APP)).status_code == 200
    assert (await mint(gw, "http://127.0.0.1:8080")).status_code == 200
    assert (await mint(gw, "http://gw.example.com", host="gw.example.com")).status_code == 200
    assert (await mint(gw, "http://gw2.example.com", host="gw.example.com")).status_code == 422


@pytest.mark.parametrize("gw", [{"public_hosts": ["gw.example.com"]}], indirect=True)
async def test_with_public_hosts_their_pages_are_minted(gw: RunningGateway) -> None:
    assert (await mint(gw, "https://gw.example.com", host="gw.example.com")).status_code == 200
    assert (await mint(gw, APP, host="gw.example.com")).status_code == 200
    assert (await mint(gw, "http://127.0.0.1:8080", host="gw.example.com")).status_code == 422


@pytest.mark.ws
async def test_a_minted_token_starts_a_session_from_its_origin(gw: RunningGateway) -> None:
    token = (await mint(gw, APP)).json()["token"]
    async with ws_connect(gw.ws_url(), origin=APP) as ws:
        await ws.send(start_message(token=token))
        await next_message(ws, "started")
        await ws.send(json.dumps({"type": "stop"}))
        assert (await read_all(ws)).close_code == 1000
