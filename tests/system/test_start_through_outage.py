"""A session whose first Start meets a Data Flow outage: tried again within the recovery's budget.

A telephony platform does not retry a call's start: a call that began during a two-second Data Flow
restart was refused ``upstream_unavailable`` within milliseconds and lost its whole transcript, while
the calls already live rode the restart out (``test_recovery.py``). Now the first Start is tried again
with the recovery's back-off; a Data Flow still down when the budget is spent fails the start as before
(later), and a client that leaves, or a drain, ends the wait at once."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.simulator.server import DataflowSimulator
from tests.support.harness import GatewayFactory, RunningGateway, read_all, ws_connect
from tests.support.ws_dialects import AUDIOCODES, DATAFLOW, NATIVE, WsDialect
from tests.system.test_recovery import GROUPS, dtmf_call, stream_failures

pytestmark = pytest.mark.ws  # opens WebSockets: runs with the fast path on and off

OUTAGE_S = 2.0
INTO_OUTAGE_S = 0.3  # the client starts this long after Data Flow went away


@pytest.fixture
async def outage(simulator: DataflowSimulator) -> AsyncIterator[float]:
    """Data Flow goes away now for OUTAGE_S (every connection dropped, the port closed); yields the
    monotonic time it went away, and waits for it to be back."""
    went_away = time.monotonic()
    restarting = asyncio.create_task(simulator.restart(down_s=OUTAGE_S))
    await asyncio.sleep(INTO_OUTAGE_S)
    yield went_away
    await restarting


async def start_answer(gw: RunningGateway, dialect: WsDialect, timeout: float = 15.0) -> tuple[dict[str, Any], float]:
    """The first message a fresh ``dialect`` session gets that answers its start, and how long it took."""
    async with ws_connect(gw.ws_url(dialect.path)) as ws:
        began = time.monotonic()
        await ws.send(json.dumps(dialect.start))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            if dialect.is_started(message) or dialect.code_of(message) is not None:
                return message, time.monotonic() - began


async def test_a_call_that_starts_during_a_restart_gets_its_whole_transcript(gw: RunningGateway, outage: float) -> None:
    """The call starts 0.3 s into a 2 s outage: it is answered once Data Flow is back, and every result
    comes (the old code refused it upstream_unavailable, 1011, in milliseconds)."""
    result = await dtmf_call(gw, {"Call": "started-in-an-outage"})
    started = result.of_type("started")
    assert result.errors() == [] and result.close_code == 1000, result.errors()
    assert len(started) == 1 and result.milestones() == GROUPS
    assert stream_failures(gw) >= 1  # each start that failed is counted, as a recovery's failures are


@pytest.mark.parametrize("dialect", [NATIVE, DATAFLOW, AUDIOCODES], ids=lambda d: d.name)
async def test_every_websocket_dialect_starts_through_a_restart(
    gw: RunningGateway, outage: float, dialect: WsDialect
) -> None:
    message, took_s = await start_answer(gw, dialect)
    assert dialect.is_started(message), message
    assert time.monotonic() - outage >= OUTAGE_S - 0.1  # answered after Data Flow came back
    assert took_s < OUTAGE_S + 3.0  # the next attempt at most 2 s (±20 %) after the last


async def test_a_data_flow_still_down_when_the_budget_is_spent_fails_the_start_as_before(
    gateway_factory: GatewayFactory, simulator: DataflowSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """3 attempts within 1 s (at 0, ~0.25 and ~0.75 s): the start fails upstream_unavailable (retryable)
    once they are spent, each attempt counted and told in one WARNING line a burst."""
    caplog.set_level(logging.WARNING, logger="gateway.relay.failures")
    async with gateway_factory(upstream_recovery_attempts=3, upstream_recovery_window_s=1.0) as gw:
        restarting = asyncio.create_task(simulator.restart(down_s=3.0))
        await asyncio.sleep(INTO_OUTAGE_S)
        message, took_s = await start_answer(gw, NATIVE)
        await restarting
        failures = stream_failures(gw)
    assert NATIVE.code_of(message) == "upstream_unavailable" and message["retryable"] is True, message
    assert 0.55 <= took_s < 2.0, took_s  # the attempts' back-off (0.25 + 0.5 s, ±20 %), not milliseconds
    assert failures == 3
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.relay.failures"]
    assert lines and lines[0].startswith("an upstream stream failed to start (upstream_unavailable"), lines
    assert lines[0].endswith("another is tried"), lines


async def test_with_recovery_off_a_start_during_an_outage_is_refused_at_once(
    gateway_factory: GatewayFactory, simulator: DataflowSimulator
) -> None:
    async with gateway_factory(upstream_replay_ms=0) as gw:
        restarting = asyncio.create_task(simulator.restart(down_s=1.0))
        await asyncio.sleep(INTO_OUTAGE_S)
        message, took_s = await start_answer(gw, NATIVE)
        await restarting
    assert NATIVE.code_of(message) == "upstream_unavailable" and took_s < 0.5, (message, took_s)


async def test_a_client_that_leaves_while_its_start_waits_frees_its_slot_at_once(
    gw: RunningGateway, outage: float
) -> None:
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(json.dumps(NATIVE.start))
        await asyncio.sleep(0.5)  # between attempts, or in one
        assert gw.gateway.registry.active == 1
    left = time.monotonic()
    while gw.gateway.registry.active and time.monotonic() - left < 5.0:
        await asyncio.sleep(0.01)
    assert gw.gateway.registry.active == 0 and gw.gateway.upstream.active_streams == 0
    assert time.monotonic() - left < 0.5  # not at the next attempt, nor after the window


async def test_a_drain_while_a_start_waits_closes_1001_at_its_budget(
    gateway_factory: GatewayFactory, simulator: DataflowSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A session whose start waits for Data Flow is live to a drain: at the drain's budget (0.5 s, before
    Data Flow is back) it ends going_away (1001), its wait cut short, with no traceback."""
    async with gateway_factory(drain_budget_s=0.5) as gw, ws_connect(gw.ws_url()) as ws:
        restarting = asyncio.create_task(simulator.restart(down_s=OUTAGE_S))
        await asyncio.sleep(INTO_OUTAGE_S)
        await ws.send(json.dumps(NATIVE.start))
        await asyncio.sleep(0.5)
        told = time.monotonic()
        draining = gw.gateway.drain()
        result = await read_all(ws, timeout=10)
        closed_after_s = time.monotonic() - told
        await draining
        await restarting
    assert result.close_code == 1001 and "going_away" in result.errors(), result.errors()
    assert 0.4 < closed_after_s < 1.0, closed_after_s
    server = [r for r in caplog.records if r.name.startswith(("uvicorn", "gateway.")) and "simulator" not in r.name]
    assert [r for r in server if r.levelno >= logging.ERROR] == []
