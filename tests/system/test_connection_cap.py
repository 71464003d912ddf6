"""The per-process cap on open connections (GATEWAY_MAX_CONNECTIONS), over real sockets: past it a new
connection is refused with 503 and the error envelope (WebSocket handshakes before the upgrade), counted,
while connections already open, a live session among them, go on; once connections close, service resumes.
"""

from __future__ import annotations

import logging
import time

import httpx
import pytest

from gateway.connections import cap
from tests.support.flood import HEALTHZ, READYZ, IdleConnections, LiveSession, ask, ws_handshake
from tests.support.harness import GatewayFactory, RunningGateway
from tests.support.probes import figure, wait_for

pytestmark = pytest.mark.ws

CAP = 6
#: The head wait of the flood test: far longer than any of its waits, so what is answered within them did not wait.
HELD_HEAD_S = 60.0
#: A condition that holds at once on an idle machine is waited for this long at most on a loaded one.
LOADED_S = 10.0


def connections(gw: RunningGateway) -> int:
    return len(gw.server.server_state.connections)


def sample(gw: RunningGateway, name: str, **labels: str) -> float:
    value = gw.gateway.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


@pytest.mark.parametrize("gw", [{"max_connections": CAP}], indirect=True)
async def test_past_the_cap_new_connections_are_refused_and_live_ones_go_on(gw: RunningGateway) -> None:
    assert gw.server.config.http.max_connections == CAP  # type: ignore[union-attr]
    session = await LiveSession.open(gw.ws_url())
    assert await session.say("12") == "12"
    idle = IdleConnections(gw.port)
    await idle.add(CAP - 1)  # with the session: the cap
    try:
        await wait_for(lambda: connections(gw) == CAP, LOADED_S)

        began = time.monotonic()
        http = await ask(gw.port, READYZ)
        took_ms = (time.monotonic() - began) * 1000
        assert http.status == 503, http
        assert http.headers["retry-after"] == "1"
        assert http.headers["content-type"] == "application/json"
        assert http.headers["connection"] == "close"
        assert http.envelope() == {
            "code": "capacity_exceeded",
            "message": f"this gateway replica has its maximum of {CAP} connections open; retry later",
            "retryable": True,
        }
        handshake = await ws_handshake(gw.port)
        assert handshake.status == 503 and handshake.envelope()["code"] == "capacity_exceeded", handshake
        assert "upgrade" not in handshake.headers
        began = time.monotonic()
        silent = await ask(gw.port, None, timeout=LOADED_S)  # sends nothing: answered all the same, after a short wait
        silent_s = time.monotonic() - began  # from before the gateway's clock started: at least its wait
        # 503, not the 408 of http_header_timeout_s (10 s): the refusal's own, shorter head wait ended it.
        assert silent.status == 503 and silent_s >= cap.REFUSAL_HEAD_S, silent_s
        alive = await ask(gw.port, HEALTHZ)  # the liveness probe is served, once
        assert alive.status == 200 and alive.headers["connection"] == "close", alive

        assert sample(gw, "dataflow_gateway_denials_total", reason=cap.DENIAL_REASON) == 3
        refused = sample(gw, "dataflow_gateway_requests_refused_total", status="503", reason="capacity_exceeded")
        assert refused == 3
        assert await session.say("34") == "34"  # the live session streams on at the cap
        # None of those open before was touched; the refused ones are let go once their answers are taken.
        await wait_for(lambda: connections(gw) == CAP, 2)
        assert idle.poll() == 0
    finally:
        idle.close()

    await wait_for(lambda: connections(gw) == 1, LOADED_S)  # the session's
    assert (await ask(gw.port, READYZ)).status == 200
    assert (await ws_handshake(gw.port)).status == 101
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{gw.http_url}/readyz")).status_code == 200
    assert await session.say("56") == "56"
    assert await session.finish() == 1000
    figure("connection_cap", f"cap {CAP}: past it an HTTP request and a WebSocket handshake got 503 "
           f"capacity_exceeded ({took_ms:.0f} ms), a silent connection after {silent_s:.1f} s; the live "
           "session streamed on; service resumed once the idle connections closed")  # fmt: skip


@pytest.mark.parametrize("gw", [{"max_connections": 0}], indirect=True)
async def test_a_cap_of_zero_is_none(gw: RunningGateway) -> None:
    assert gw.server.config.http.max_connections is None  # type: ignore[union-attr]
    idle = IdleConnections(gw.port)
    await idle.add(40)
    try:
        await wait_for(lambda: connections(gw) == 40, LOADED_S)
        assert (await ask(gw.port, READYZ)).status == 200
        assert (await ws_handshake(gw.port)).status == 101
    finally:
        idle.close()


@pytest.mark.parametrize("gw", [{"max_connections": 2}], indirect=True)
async def test_a_flood_past_the_cap_is_answered_as_it_comes(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections past the cap wait for their head only up to WAITING_REFUSALS of them; the ones after
    are answered and closed as they come, so a flood holds no more descriptors. The head wait is made
    longer than every wait here, so no pause of a loaded machine can pass off a head timeout as that."""
    monkeypatch.setattr(cap, "REFUSAL_HEAD_S", HELD_HEAD_S)
    idle = IdleConnections(gw.port)
    try:
        await idle.add(2 + cap.WAITING_REFUSALS)  # the cap, and as many waiting as may wait
        await wait_for(lambda: connections(gw) == 2 + cap.WAITING_REFUSALS, LOADED_S)
        assert idle.poll() == 0
        began = time.monotonic()
        await idle.add(5)
        await wait_for(lambda: idle.poll() >= 5, LOADED_S)  # the waiting ones wait HELD_HEAD_S: not these
        at_once = time.monotonic() - began
        assert idle.poll() == 5 and len(idle.open) == 2 + cap.WAITING_REFUSALS, (idle.poll(), len(idle.open))
        assert all(b'"code":"capacity_exceeded"' in answer for answer in idle.closed), idle.closed
        assert connections(gw) == 2 + cap.WAITING_REFUSALS
        assert sample(gw, "dataflow_gateway_denials_total", reason=cap.DENIAL_REASON) == 5
        figure("connection_flood", f"past a cap of 2 and {cap.WAITING_REFUSALS} waiting refusals: 5 more "
               f"answered 503 in {at_once * 1000:.0f} ms, while those waiting for their head still waited")  # fmt: skip
    finally:
        idle.close()


async def test_each_gateway_in_a_process_logs_its_own_first_refusal(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The "logged at most once a minute" state is per server: it was process-wide, so a second gateway
    built in the same process within a minute (tests, an app built twice) never logged its refusals."""
    caplog.set_level(logging.WARNING, logger=cap.__name__)
    for _ in range(2):
        async with gateway_factory(max_connections=1) as gw:
            idle = IdleConnections(gw.port)
            try:
                await idle.add(1)
                await wait_for(lambda: connections(gw) == 1, LOADED_S)
                assert (await ask(gw.port, READYZ)).status == 503
            finally:
                idle.close()
    lines = [r.getMessage() for r in caplog.records if r.name == cap.__name__]
    assert (
        lines == ["1 connection(s) refused: the cap of 1 open connections is reached (GATEWAY_MAX_CONNECTIONS)"] * 2
    ), lines


async def test_a_storms_refusals_are_all_logged_when_its_window_ends(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The refusals after a window's first were logged only when a refusal came after the window: a storm's
    tail was never logged (40 refused, one line saying 1), or lumped with the next storm minutes later."""
    caplog.set_level(logging.WARNING, logger=cap.__name__)
    async with gateway_factory(max_connections=1) as gw:
        cap.refusal_log(gw.server.config.loaded_app).window_s = 1.0  # a minute in production
        idle = IdleConnections(gw.port)
        try:
            await idle.add(1)
            await wait_for(lambda: connections(gw) == 1, LOADED_S)
            for _ in range(4):
                assert (await ask(gw.port, READYZ)).status == 503
            await wait_for(lambda: len([r for r in caplog.records if r.name == cap.__name__]) == 2, 3.0)
        finally:
            idle.close()
    assert [r.getMessage() for r in caplog.records if r.name == cap.__name__] == [
        "1 connection(s) refused: the cap of 1 open connections is reached (GATEWAY_MAX_CONNECTIONS)",
        "3 more connection(s) refused in the last 1.0 s: the cap of 1 open connections is reached"
        " (GATEWAY_MAX_CONNECTIONS)",
    ]
