"""A client that vanishes while the gateway holds it back (Data Flow stalled, its buffer full, the
driver waiting to feed the next chunk) releases its upstream stream and its slot within a second or
two and ends as client_disconnected — not after upstream_response_timeout_s as an upstream error. The
dialects here send no flow acks, so no send of the gateway's finds the dead socket by chance."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from gateway.simulator.faults import Fault
from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from tests.support.harness import RunningGateway, running_gateway, ws_connect
from tests.support.settings import SIM_TENANT, SIM_TOKEN, settings_for
from tests.support.ws_dialects import AUDIOCODES, DATAFLOW, NATIVE, WsDialect

pytestmark = pytest.mark.ws  # opens WebSockets: runs with the fast path on and off

CHUNK = b"\x00\x10" * 1600  # 100 ms of 16 kHz pcm16
by_name = pytest.mark.parametrize("dialect", [DATAFLOW, AUDIOCODES], ids=[DATAFLOW.name, AUDIOCODES.name])


@pytest.fixture
def sim_config() -> SimulatorConfig:
    return SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT, fault=Fault("stall", 300))


def the_session(gw: RunningGateway) -> Any:
    (connection,) = gw.gateway.registry.drainables()
    return getattr(connection, "session", None)


def backpressured(gw: RunningGateway) -> bool:
    session = the_session(gw)
    return session is not None and session.stream is not None and session.stream.backpressured


def ended(gw: RunningGateway, dialect: WsDialect, outcome: str) -> float:
    labels = {"dialect": dialect.name, "outcome": outcome}
    return gw.gateway.metrics.registry.get_sample_value("dataflow_gateway_sessions_ended_total", labels) or 0.0


async def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def held_then_vanish(
    gw: RunningGateway, sim: DataflowSimulator, dialect: WsDialect, *, flood: bool,
    within_s: float = 2.0, outcome: str = "client_disconnected",
) -> None:  # fmt: skip
    """Stream into a stalled Data Flow until the gateway holds the client, vanish (no close frame), and
    expect everything released within ``within_s``, the session ended with ``outcome``."""
    ws = await ws_connect(gw.ws_url(dialect.path), ping_interval=None)
    await ws.send(json.dumps(dialect.start))
    async with asyncio.timeout(5):
        while not dialect.is_started(json.loads(await ws.recv())):
            pass
    await asyncio.sleep(0.5)  # Data Flow has stalled
    if flood:  # until TCP holds the client too: megabytes queued ahead of its disconnect
        with contextlib.suppress(TimeoutError):
            while True:
                async with asyncio.timeout(0.3):
                    await ws.send(CHUNK)
    else:  # 10 s: more than gRPC's window and the 3 s buffer take, less than a read-ahead holds beyond
        for _ in range(100):
            await ws.send(CHUNK)
    await wait_until(lambda: backpressured(gw), 5)
    await asyncio.sleep(1.0)  # the driver has waited a while: it waits on, for up to 30 s
    assert sim.records[-1].outcome == "stalled"
    gone_at = time.monotonic()
    ws.transport.abort()
    await wait_until(lambda: gw.gateway.registry.active == 0 and gw.gateway.upstream.active_streams == 0, 10)
    released = time.monotonic() - gone_at
    assert released < within_s, f"the upstream stream and the slot were held {released:.2f} s after the client left"
    assert ended(gw, dialect, outcome) == 1
    assert sum(ended(gw, dialect, o) for o in ("client_disconnected", "upstream_error")) == 1


@by_name
async def test_a_client_that_vanishes_while_held_back_releases_its_stream(
    simulator: DataflowSimulator, dialect: WsDialect
) -> None:
    async with running_gateway(settings_for(simulator, max_audio_rate_x=1000.0)) as gw:
        await held_then_vanish(gw, simulator, dialect, flood=False)


@by_name
async def test_a_client_that_vanishes_behind_megabytes_of_queued_audio_releases_its_stream(
    simulator: DataflowSimulator, dialect: WsDialect
) -> None:
    """Only a write finds this client gone (its disconnect is behind everything it sent): the gateway's
    own protocol pings it. Without it (fast path off) the gateway reads ahead, bounded, and cannot reach
    the disconnect: as README says, the wait then ends at upstream_response_timeout_s (here 3 s), as an
    upstream timeout, and everything is released then — late, but never held for good."""
    settings = settings_for(simulator, max_audio_rate_x=1000.0, upstream_response_timeout_s=3.0)
    async with running_gateway(settings) as gw:
        if gw.gateway.settings.ws_fast_path:
            await held_then_vanish(gw, simulator, dialect, flood=True)
        else:
            await held_then_vanish(gw, simulator, dialect, flood=True, within_s=4.0, outcome="upstream_error")


@pytest.mark.parametrize("dialect", [NATIVE, DATAFLOW, AUDIOCODES], ids=lambda d: d.name)
async def test_a_client_that_leaves_right_after_its_start_frees_its_slot_at_once(dialect: WsDialect) -> None:
    """The gateway cancelled the Start's RPC while grpc.aio's write of it waited for headers never sent:
    the write waited out GATEWAY_UPSTREAM_START_TIMEOUT_S (10 s) and the slot with it, so a replica of
    one slot refused the next client 1013 for 10 s after each start-and-leave (3 times in 3)."""
    sim = DataflowSimulator(SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT))
    await sim.start()
    try:
        async with running_gateway(settings_for(sim, max_sessions=1, upstream_start_timeout_s=10.0)) as gw:
            for _ in range(3):
                async with ws_connect(gw.ws_url(dialect.path)) as ws:
                    await ws.send(json.dumps(dialect.start))
                left = time.monotonic()
                await wait_until(lambda: gw.gateway.registry.active == 0, timeout=12.0)
                assert time.monotonic() - left < 2.0
            async with ws_connect(gw.ws_url(dialect.path)) as ws:  # the one slot serves the next client
                await ws.send(json.dumps(dialect.start))
                while not dialect.is_started(message := json.loads(await asyncio.wait_for(ws.recv(), 5))):
                    assert dialect.code_of(message) is None, message
    finally:
        await sim.stop(None)
