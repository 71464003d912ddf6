"""Connections waiting for a browser token in their start message (an allowed Origin, no credential: anyone
can send that) are bounded per client address, the address as the gateway resolves it for its logs
(``X-Forwarded-For`` only from GATEWAY_TRUSTED_PROXIES): a quarter of the waiting pool, at least four.
One address reconnecting used to fill the whole pool (GATEWAY_MAX_SESSIONS places), and a real browser
whose token rides in its start message then got ``capacity_exceeded`` (1013)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from gateway.auth import key_digest
from gateway.relay.registry import MIN_WAITING_PER_ADDRESS, SessionRegistry
from tests.support.harness import RunningGateway, next_message, read_all, ws_connect
from tests.support.native_client import start_message
from tests.support.settings import SECRETS, browser_auth

pytestmark = pytest.mark.ws

KEY = "dfg_waitpool_0a9b8c7d6e5f40312a3b4c5d6e7f8091"
SIGNING_KEY = "waiting-pool-signing-key-0123456789abcdef"
APP = "https://app.example.com"
SQUATTER = "203.0.113.7"
BROWSER = "198.51.100.9"
SECRETS.update({KEY, SIGNING_KEY})
POOL = 16  # GATEWAY_MAX_SESSIONS: the waiting places; a quarter of it per address


@pytest.fixture
def gw_settings() -> dict[str, Any]:
    # The test's clients stand for a proxy that names them (trusted_proxies).
    return browser_auth(KEY, SIGNING_KEY, APP, max_sessions=POOL, trusted_proxies=["127.0.0.1"])


def forwarded(address: str) -> dict[str, Any]:
    return {"origin": APP, "additional_headers": {"X-Forwarded-For": address}}


async def waiting_count(registry: SessionRegistry, count: int) -> None:
    async with asyncio.timeout(3):
        while len(registry.waiting) != count:
            await asyncio.sleep(0.01)


async def mint(gw: RunningGateway) -> str:
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        response = await http.post("/v1/tokens", json={"origin": APP}, headers={"X-API-Key": KEY})
    token: str = response.json()["token"]
    SECRETS.add(token)
    return token


async def denials(gw: RunningGateway) -> str:
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        return (await http.get("/metrics")).text


def capacity_denials(scraped: str) -> float:
    line = 'dataflow_gateway_denials_total{reason="capacity_exceeded"} '
    return sum(float(row[len(line) :]) for row in scraped.splitlines() if row.startswith(line))


async def test_one_address_holds_a_quarter_of_the_waiting_places(gw: RunningGateway) -> None:
    registry = gw.gateway.registry
    per_address = max(MIN_WAITING_PER_ADDRESS, POOL // 4)
    assert registry.waiting_per_address == per_address == 4
    squatters: list[ClientConnection] = []
    try:
        for _ in range(per_address):
            squatters.append(await ws_connect(gw.ws_url(), **forwarded(SQUATTER)))
        await waiting_count(registry, per_address)
        before = capacity_denials(await denials(gw))
        async with ws_connect(gw.ws_url(), **forwarded(SQUATTER)) as one_more:  # the pool has 12 places left
            refused = await read_all(one_more)
        assert refused.errors() == ["capacity_exceeded"] and refused.close_code == 1013
        message = refused.of_type("error")[0]["message"]
        assert message.startswith(f"{per_address} connections from this address already wait for their credential")
        assert SQUATTER not in message
        assert (registry.waiting_addresses, len(registry.waiting)) == (1, per_address)

        # A browser at another address, its token in the start message: served while they wait.
        async with ws_connect(gw.ws_url(), **forwarded(BROWSER)) as browser:
            await browser.send(start_message(token=await mint(gw)))
            await next_message(browser, "started")
            assert (registry.active, len(registry.waiting), registry.waiting_addresses) == (1, per_address, 1)
            await browser.send(json.dumps({"type": "stop"}))
            assert (await read_all(browser)).close_code == 1000
        scraped = await denials(gw)
        assert capacity_denials(scraped) == before + 1  # counted as the pool's refusal is
        assert SQUATTER not in scraped and BROWSER not in scraped  # no address is a metric label
    finally:
        for ws in squatters:
            await ws.close()
    await waiting_count(registry, 0)
    assert registry.waiting_addresses == 0  # an address's entry lives only while it has waiting connections
    async with ws_connect(gw.ws_url(), **forwarded(SQUATTER)) as again:  # its places are free again
        await waiting_count(registry, 1)
        await again.send(start_message(token=await mint(gw)))
        await next_message(again, "started")


@pytest.mark.parametrize("gw", [{"trusted_proxies": []}], indirect=True)
async def test_a_forged_forwarded_for_changes_nothing(gw: RunningGateway) -> None:
    """Without trusted proxies the connection's own address counts: a client naming a new address in
    ``X-Forwarded-For`` on every handshake still holds at most its four places."""
    registry = gw.gateway.registry
    squatters = [await ws_connect(gw.ws_url(), **forwarded(f"192.0.2.{n}")) for n in range(4)]
    try:
        await waiting_count(registry, 4)
        async with ws_connect(gw.ws_url(), **forwarded("192.0.2.99")) as fifth:
            refused = await read_all(fifth)
        assert refused.errors() == ["capacity_exceeded"] and refused.close_code == 1013
        assert registry.waiting_addresses == 1
    finally:
        for ws in squatters:
            await ws.close()
    await waiting_count(registry, 0)
    assert registry.waiting_addresses == 0


async def test_an_ipv6_client_holds_its_quarter_by_its_64(gw: RunningGateway) -> None:
    """One host holds a whole /64: it took every waiting place (16 of 16) with one address of it each,
    and a browser elsewhere got capacity_exceeded. Another /64, and an IPv4 client of a dual-stack
    listener (``::ffff:a.b.c.d``, its IPv4 address), are addresses of their own."""
    registry = gw.gateway.registry
    squatters = [await ws_connect(gw.ws_url(), **forwarded(f"2001:db8:7:1::{n + 1:x}")) for n in range(4)]
    try:
        await waiting_count(registry, 4)
        async with ws_connect(gw.ws_url(), **forwarded("2001:db8:7:1:ffff::9")) as fifth:
            refused = await read_all(fifth)
        assert refused.errors() == ["capacity_exceeded"] and refused.close_code == 1013
        async with (
            ws_connect(gw.ws_url(), **forwarded("2001:db8:7:2::1")) as neighbour,
            ws_connect(gw.ws_url(), **forwarded(f"::ffff:{BROWSER}")) as mapped,
        ):
            await waiting_count(registry, 6)
            assert registry.waiting_addresses == 3
            for ws in (neighbour, mapped):
                await ws.send(start_message(token=await mint(gw)))
                await next_message(ws, "started")
    finally:
        for ws in squatters:
            await ws.close()
    await waiting_count(registry, 0)


@pytest.mark.parametrize(
    "gw",
    [{"api_keys": [{"name": "acme", "sha256": key_digest(KEY), "projects": ["demo"], "max_sessions": 1}]}],
    indirect=True,
)
async def test_a_token_in_the_start_message_is_held_to_its_keys_session_cap(gw: RunningGateway) -> None:
    """A waiting connection takes its slot at its start, under its key's max_sessions (1 here) as a
    connection with a credential at the handshake does: a second browser of that key gets rate_limited
    and only one session is live."""
    registry = gw.gateway.registry
    tokens = [await mint(gw), await mint(gw)]
    async with ws_connect(gw.ws_url(), origin=APP) as first, ws_connect(gw.ws_url(), origin=APP) as second:
        await waiting_count(registry, 2)  # neither had a credential at its handshake
        await first.send(start_message(token=tokens[0]))
        await next_message(first, "started")
        await second.send(start_message(token=tokens[1]))
        answer = json.loads(await asyncio.wait_for(second.recv(), 5))
        live = registry.active
        await first.send(json.dumps({"type": "stop"}))
        assert (await read_all(first)).close_code == 1000
    assert (answer["type"], answer.get("code")) == ("error", "rate_limited"), (
        f"second session of a key capped at 1: {answer}"
    )
    assert live == 1, f"{live} sessions live for a key capped at 1"
