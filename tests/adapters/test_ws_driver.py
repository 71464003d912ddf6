"""What the one WebSocket driver owns, proven once over every dialect: the start timeout, the idle
timeout, the maximum duration, counting against GATEWAY_MAX_SESSIONS, drain, and a start that
watches the socket (a client that vanishes while Data Flow is still answering Start cancels the
upstream stream within a second)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.simulator.faults import Fault
from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from tests.support.harness import RunningGateway, Transcript, read_all, running_gateway, ws_connect
from tests.support.lb_stack import metric, metric_values
from tests.support.settings import SIM_TENANT, SIM_TOKEN, settings_for
from tests.support.ws_dialects import AUDIOCODES, DATAFLOW, NATIVE, WsDialect

pytestmark = pytest.mark.ws  # opens WebSockets: runs with the fast path on and off

SILENCE_20MS = bytes(640)  # 16 kHz pcm16 mono
DIALECTS = [NATIVE, DATAFLOW, AUDIOCODES]
by_name = pytest.mark.parametrize("dialect", DIALECTS, ids=[d.name for d in DIALECTS])


async def started(gw: RunningGateway, dialect: WsDialect) -> Any:
    ws = await ws_connect(gw.ws_url(dialect.path), ping_interval=None)
    await ws.send(json.dumps(dialect.start))
    async with asyncio.timeout(5):
        while not dialect.is_started(json.loads(await ws.recv())):
            pass
    return ws


def codes(dialect: WsDialect, transcript: Transcript) -> list[str]:
    return [code for m in transcript.messages if (code := dialect.code_of(m))]


async def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def settled(gw: RunningGateway) -> None:
    """No connection counted and no upstream stream left."""
    await wait_until(lambda: gw.gateway.registry.active == 0 and gw.gateway.upstream.active_streams == 0, 3)


async def refused_after_accept(gw: RunningGateway, dialect: WsDialect) -> Transcript:
    """A new connection that the gateway accepts, then refuses in the dialect's words (the Data Flow
    dialect's refusal is a StartResponse: when full, it waits for the client's Start; while draining it
    comes at once, as to a connection the drain found waiting, and the Start meets a closed socket)."""
    ws = await ws_connect(gw.ws_url(dialect.path), ping_interval=None)
    if dialect is DATAFLOW:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps(dialect.start))
    return await read_all(ws, timeout=5)


# --- a start that watches the socket -----------------------------------------------------------------


class TestVanishDuringSlowStart:
    @pytest.fixture
    def sim_config(self) -> SimulatorConfig:
        return SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT, fault=Fault("slow_start", 3000))

    @by_name
    async def test_upstream_is_cancelled_within_a_second(
        self, simulator: DataflowSimulator, dialect: WsDialect
    ) -> None:
        async with running_gateway(settings_for(simulator)) as gw:
            ws = await ws_connect(gw.ws_url(dialect.path), ping_interval=None)
            await ws.send(json.dumps(dialect.start))
            await ws.send(SILENCE_20MS)  # held while Data Flow answers Start
            await wait_until(lambda: bool(simulator.records), 2)
            record = simulator.records[-1]
            await asyncio.sleep(0.3)
            gone_at = time.monotonic()
            ws.transport.abort()
            await wait_until(lambda: record.ended_at is not None, 1.0)
            assert record.ended_at is not None
            assert record.ended_at - gone_at < 1.0
            assert record.outcome == "cancelled"
            await settled(gw)


# --- timeouts ------------------------------------------------------------------------------------------


@by_name
async def test_no_start_message_is_refused_after_the_start_timeout(
    simulator: DataflowSimulator, dialect: WsDialect
) -> None:
    # AudioCodes' socket lasts the conversation: its own bound (between_recognitions_s) applies before a start.
    async with running_gateway(settings_for(simulator, start_timeout_s=0.5, between_recognitions_s=0.5)) as gw:
        opened = time.monotonic()  # before the handshake: the gateway's clock starts during it
        ws = await ws_connect(gw.ws_url(dialect.path), ping_interval=None)
        await wait_until(lambda: gw.gateway.registry.active == 1, 2)  # counted from the handshake on
        result = await read_all(ws, timeout=5)
        took = time.monotonic() - opened
        assert codes(dialect, result) == ["start_timeout"]
        assert result.close_code == 1008
        assert 0.45 <= took < 1.5
        await settled(gw)


@by_name
async def test_a_silent_session_ends_with_the_idle_timeout(simulator: DataflowSimulator, dialect: WsDialect) -> None:
    async with running_gateway(settings_for(simulator, idle_timeout_s=0.6, ack_interval_ms=50)) as gw:
        ws = await started(gw, dialect)
        opened = time.monotonic()
        result = await read_all(ws, timeout=5)
        assert "idle_timeout" in codes(dialect, result)
        assert result.close_code == 1008
        assert time.monotonic() - opened < 0.6 + 1.5
        await settled(gw)


@by_name
async def test_a_streaming_session_ends_at_its_maximum_duration(
    simulator: DataflowSimulator, dialect: WsDialect
) -> None:
    async with running_gateway(settings_for(simulator, max_session_s=1.0, ack_interval_ms=50)) as gw:
        opened = time.monotonic()  # before the handshake: the session's clock starts during its start
        ws = await started(gw, dialect)
        reading = asyncio.create_task(read_all(ws, timeout=6))
        with contextlib.suppress(ConnectionClosed):
            while not reading.done():  # real-time silence, until the limit closes the socket
                await ws.send(SILENCE_20MS)
                await asyncio.sleep(0.02)
        result = await reading
        assert "max_duration" in codes(dialect, result)
        assert result.close_code == 1008
        assert 0.9 <= time.monotonic() - opened < 1.0 + 2.0
        await settled(gw)


async def test_an_idle_audiocodes_socket_is_closed_after_the_wait_between_recognitions(
    simulator: DataflowSimulator,
) -> None:
    """Between recognitions the socket holds its slot; with nothing said for between_recognitions_s it is
    closed (idle_timeout_s, shorter, no longer applies: the socket lasts the conversation)."""
    async with running_gateway(settings_for(simulator, idle_timeout_s=0.1, between_recognitions_s=0.6)) as gw:
        ws = await started(gw, AUDIOCODES)
        ended = time.monotonic()  # before its last message: the idle clock starts once the gateway has it
        await ws.send(json.dumps({"type": "stop"}))
        async with asyncio.timeout(5):
            while json.loads(await ws.recv()).get("type") != "end":
                pass
        assert gw.gateway.registry.active == 1  # still counted while it idles
        result = await read_all(ws, timeout=5)
        assert codes(AUDIOCODES, result) == ["idle_timeout"]
        assert result.close_code == 1008
        assert 0.55 <= time.monotonic() - ended < 0.6 + 1.0
        await settled(gw)


# --- counting and drain --------------------------------------------------------------------------------


@by_name
async def test_every_connection_counts_toward_max_sessions(simulator: DataflowSimulator, dialect: WsDialect) -> None:
    async with running_gateway(settings_for(simulator, max_sessions=1)) as gw:
        first = await started(gw, dialect)
        assert gw.gateway.registry.active == 1
        assert gw.gateway.registry.by_dialect[dialect.name] == 1
        refused = await refused_after_accept(gw, dialect)
        assert codes(dialect, refused) == ["capacity_exceeded"]
        assert refused.close_code == 1013
        await first.close()
        await settled(gw)


async def test_an_audiocodes_socket_that_never_started_holds_its_slot(simulator: DataflowSimulator) -> None:
    async with running_gateway(settings_for(simulator, max_sessions=1)) as gw:
        idle = await ws_connect(gw.ws_url(AUDIOCODES.path), ping_interval=None)
        await wait_until(lambda: gw.gateway.registry.active == 1, 2)
        refused = await read_all(await ws_connect(gw.ws_url(AUDIOCODES.path), ping_interval=None), timeout=5)
        assert codes(AUDIOCODES, refused) == ["capacity_exceeded"]
        assert refused.close_code == 1013
        await idle.close()
        await settled(gw)


@by_name
async def test_drain_tells_live_sessions_to_go_away(simulator: DataflowSimulator, dialect: WsDialect) -> None:
    async with running_gateway(settings_for(simulator, idle_timeout_s=30)) as gw:
        ws = await started(gw, dialect)
        await ws.send(SILENCE_20MS)
        drain = gw.gateway.drain(0.3)
        result = await read_all(ws, timeout=5)
        await drain
        assert "going_away" in codes(dialect, result)
        assert result.close_code == 1001
        await settled(gw)
        refused = await refused_after_accept(gw, dialect)
        assert codes(dialect, refused) == ["going_away"]
        assert refused.close_code == 1001


@by_name
async def test_a_draining_replica_can_refuse_the_handshake(simulator: DataflowSimulator, dialect: WsDialect) -> None:
    """GATEWAY_WS_DRAIN_REFUSES_HANDSHAKE: while draining, the handshake itself gets 503 going_away, in every
    dialect. Nothing was accepted, so a proxy (nginx proxy_next_upstream http_503) may try another replica.
    A full replica still accepts, then refuses in the dialect's own words (the proxy would mark it failed)."""
    async with running_gateway(settings_for(simulator, max_sessions=1, ws_drain_refuses_handshake=True)) as gw:
        first = await started(gw, dialect)
        refused = await refused_after_accept(gw, dialect)
        assert codes(dialect, refused) == ["capacity_exceeded"]
        assert refused.close_code == 1013
        await first.close()
        await settled(gw)
        await gw.gateway.drain(0.1)
        with pytest.raises(InvalidStatus) as draining:
            await ws_connect(gw.ws_url(dialect.path), ping_interval=None)
        response = draining.value.response
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert json.loads(response.body)["error"]["code"] == "going_away"
        assert gw.gateway.registry.active == 0  # the refused handshake took no slot
        async with httpx.AsyncClient() as http:
            values = metric_values((await http.get(f"{gw.http_url}/metrics")).text)
        assert metric(values, "dataflow_gateway_denials_total", reason="going_away") == 1
        assert len(simulator.records) == 1  # no upstream stream for either refusal
