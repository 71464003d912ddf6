"""Each client address's share of the connection cap (GATEWAY_MAX_CONNECTIONS_PER_ADDRESS), over real
sockets from two loopback addresses: one address holding idle connections was able to fill the whole cap,
and every other client got 503; now it gets the 503 past its share while another address is served."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from gateway.connections import cap
from gateway.connections.address_share import share_in_force
from gateway.logs.client_addresses import address_group
from tests.support.flood import HEALTHZ, READYZ, IdleConnections, LiveSession, ask
from tests.support.harness import RunningGateway
from tests.support.probes import figure, wait_for
from tests.support.raw_ws import RawWebSocket
from tests.system.test_load_balancer import two_replicas

pytestmark = pytest.mark.ws

SHARE = 4
CAP = 40
HOG, OTHER, PROXY = "127.0.0.2", "127.0.0.3", "127.0.0.4"
LOADED_S = 10.0


def connections(gw: RunningGateway) -> int:
    return len(gw.server.server_state.connections)


def denials(gw: RunningGateway, reason: str) -> float:
    value = gw.gateway.metrics.registry.get_sample_value("dataflow_gateway_denials_total", {"reason": reason})
    return value or 0.0


@pytest.mark.parametrize("gw", [{"max_connections": CAP, "max_connections_per_address": SHARE}], indirect=True)
async def test_one_address_past_its_share_is_refused_while_others_are_served(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=cap.__name__)
    idle = IdleConnections(gw.port, HOG)
    await idle.add(SHARE)
    try:
        await wait_for(lambda: connections(gw) == SHARE, LOADED_S)
        hog = await ask(gw.port, READYZ, source=HOG)
        assert hog.status == 503, hog
        assert hog.headers["retry-after"] == "1"
        assert hog.envelope() == {
            "code": "capacity_exceeded",
            "message": f"this client address has its share of {SHARE} open connections to this gateway replica; "
            "retry later",
            "retryable": True,
        }
        assert (await ask(gw.port, READYZ, source=OTHER)).status == 200
        assert (await ask(gw.port, HEALTHZ, source=HOG)).status == 200  # the liveness probe, as past the cap
        assert denials(gw, cap.SHARE_DENIAL_REASON) == 1
        assert denials(gw, cap.DENIAL_REASON) == 0
        lines = [r.getMessage() for r in caplog.records if r.name == cap.__name__]
        assert lines == [
            f"1 connection(s) refused (from {HOG}): an address has its share of {SHARE} open connections "
            "(GATEWAY_MAX_CONNECTIONS_PER_ADDRESS)"
        ], lines
    finally:
        idle.close()
    await wait_for(lambda: connections(gw) == 0, LOADED_S)
    assert (await ask(gw.port, READYZ, source=HOG)).status == 200  # its connections gone, it is served again
    shares = gw.server.config.http.address_shares  # type: ignore[union-attr]
    await wait_for(lambda: len(shares) == 0, LOADED_S)  # nothing is kept for an address once its connections go


@pytest.mark.parametrize("gw", [{"max_connections": CAP, "max_connections_per_address": SHARE}], indirect=True)
async def test_sessions_do_not_count_against_the_share(gw: RunningGateway) -> None:
    """A connection counts until it becomes a WebSocket: sessions have limits of their own (a key's
    max_sessions, the waiting places), so a telephony platform's one address is not held to the share."""
    sessions = [await LiveSession.open(gw.ws_url(), HOG) for _ in range(SHARE + 2)]
    try:
        assert (await ask(gw.port, READYZ, source=HOG)).status == 200
        for session in sessions:
            assert await session.say("7") == "7"
    finally:
        for session in sessions:
            await session.finish()


@pytest.mark.parametrize(
    "gw", [{"max_connections": CAP, "max_connections_per_address": SHARE, "trusted_proxies": [PROXY]}], indirect=True
)
async def test_a_proxys_connections_are_not_counted(gw: RunningGateway) -> None:
    """A trusted proxy's are never counted. An untrusted one's stop counting with a request naming the
    client it forwards: the compose file's nginx (not listed) was refused 503 at half the cap and marked
    the replica failed for every client. Idle connections, which never send a head, stay counted."""
    proxy, untrusted = IdleConnections(gw.port, PROXY), IdleConnections(gw.port, HOG)
    await proxy.add(SHARE + 3)
    await untrusted.add(SHARE)
    try:
        await wait_for(lambda: connections(gw) == 2 * SHARE + 3, LOADED_S)
        assert (await ask(gw.port, READYZ, source=PROXY)).status == 200
        for header in (b"X-Forwarded-For: 198.51.100.7", b"Forwarded: for=198.51.100.7", b"X-Real-IP: 198.51.100.7"):
            forwarded = READYZ.replace(b"\r\n\r\n", b"\r\n" + header + b"\r\n\r\n")
            assert (await ask(gw.port, forwarded, source=HOG)).status == 200, header
        assert (await ask(gw.port, READYZ, source=HOG)).status == 503  # a request of its own: past the share
    finally:
        proxy.close()
        untrusted.close()


@pytest.mark.parametrize("gw", [{"max_connections": 200, "max_connections_per_address": 2}], indirect=True)
async def test_a_flood_from_one_address_is_answered_as_it_comes(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past its share by WAITING_REFUSALS a connection is refused without waiting for its head: one
    address holds at most its share and these, however fast it connects (the head wait is made longer
    than every wait here, so a loaded machine's pause cannot pass off a head timeout as that)."""
    monkeypatch.setattr(cap, "REFUSAL_HEAD_S", 60.0)
    idle = IdleConnections(gw.port, HOG)
    try:
        await idle.add(2 + cap.WAITING_REFUSALS)
        await wait_for(lambda: connections(gw) == 2 + cap.WAITING_REFUSALS, LOADED_S)
        began = time.monotonic()
        await idle.add(20)
        await wait_for(lambda: idle.poll() >= 20, LOADED_S)
        at_once = time.monotonic() - began
        assert len(idle.open) == 2 + cap.WAITING_REFUSALS, len(idle.open)
        assert all(b"its share of 2 open connections" in answer for answer in idle.closed), idle.closed
        assert (await ask(gw.port, READYZ, source=OTHER)).status == 200
        figure("address_flood", f"past a share of 2 and {cap.WAITING_REFUSALS} waiting refusals: 20 more from "
               f"one address answered 503 in {at_once * 1000:.0f} ms; another address served")  # fmt: skip
    finally:
        idle.close()


def test_the_share_in_force() -> None:
    assert share_in_force(None, 1256) == 628  # the defaults' cap: half
    assert share_in_force(None, 40) == 20
    assert share_in_force(None, 20) == 16  # never fewer than 16
    assert share_in_force(None, None) is None  # no cap, no share unless set
    assert share_in_force(0, 1256) is None
    assert share_in_force(5, None) == 5


@pytest.mark.parametrize(
    ("address", "group"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("64:ff9b::cb00:7109", "203.0.113.9"),
        ("unknown", "unknown"),
    ],
)
def test_address_groups(address: str, group: str) -> None:
    assert address_group(address) == group


async def answered_already(conn: RawWebSocket) -> bool:
    try:
        await asyncio.wait_for(conn.reader.read(1), 0.05)
    except TimeoutError:
        return False
    return True


@pytest.mark.ws
async def test_behind_an_unlisted_nginx_uploads_in_flight_take_no_clients_share(tmp_path: Path) -> None:
    """The template's nginx, not in GATEWAY_TRUSTED_PROXIES (as the compose file runs it): every client's
    connection comes from its address. 44 uploads in flight (22 a replica, a share of 20 each) had some
    refused 503 and the next client's request too, the replica marked failed by nginx for everyone."""
    async with two_replicas(tmp_path, 2.0, GATEWAY_MAX_CONNECTIONS="40") as (_stack, lb_port, _a, _b):
        head = (
            b"POST /v1/recognize?project=demo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/wav\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n4\r\nRIFF\r\n"
        )
        uploads = [await RawWebSocket.open(lb_port) for _ in range(44)]
        try:
            for upload in uploads:
                await upload.send_raw(head)  # and no more: in flight
            await asyncio.sleep(1.0)
            other = await ask(lb_port, b"GET /v1/nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", source=OTHER)
            assert other.status == 404, other  # served by a replica, not refused for nginx's share
            answered = [upload for upload in uploads if await answered_already(upload)]
            assert not answered, f"{len(answered)} uploads in flight were answered already (503)"
        finally:
            for upload in uploads:
                upload.abort()
