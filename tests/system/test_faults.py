"""Network faults between the gateway and Data Flow, and between clients and the gateway.

A FaultProxy (tests/support/fault_proxy.py) sits in the path and cuts, stalls or blackholes connections;
the simulator is also restarted under live sessions. Every test asserts what the client sees
(typed error, close code), that the upstream stream is gone, and prints the measured figure.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from gateway.simulator.server import DataflowSimulator
from tests.support.fault_proxy import FaultProxy
from tests.support.harness import RunningGateway, next_message, running_gateway, ws_connect
from tests.support.probes import (
    Timed,
    dtmf_pcm,
    dtmf_round_trip,
    figure,
    read_timed,
    record_end,
    start_json,
    stream_paced,
    wait_for,
)
from tests.support.settings import settings_for

pytestmark = pytest.mark.ws  # opens WebSockets: runs with the fast path on and off

KEEPALIVE_S = 1.0  # interval and timeout of the upstream keepalive in the half-open tests


@pytest.fixture
async def upstream_proxy(simulator: DataflowSimulator) -> AsyncIterator[FaultProxy]:
    async with FaultProxy.to(simulator.target) as proxy:
        yield proxy


def via(simulator: DataflowSimulator, proxy: FaultProxy, **overrides: Any) -> Any:
    """A gateway reaching Data Flow through ``proxy``, with session recovery off: these tests measure how
    fast a failure is found and reported (tests/system/test_recovery.py has sessions surviving it)."""
    settings = settings_for(simulator, upstream_target=proxy.target, **{"upstream_replay_ms": 0, **overrides})
    return running_gateway(settings)


async def settled(gw: RunningGateway, timeout: float = 3.0) -> None:
    """No session and no upstream stream left in the gateway."""
    upstream, registry = gw.gateway.upstream, gw.gateway.registry
    await wait_for(lambda: registry.active == 0 and upstream.active_streams == 0, timeout)


async def open_streaming(gw: RunningGateway, digits: str = "1397") -> tuple[Any, asyncio.Task[None]]:
    """A started native session with DTMF audio being sent at real-time pace in the background."""
    ws = await ws_connect(gw.ws_url())
    await ws.send(start_json())
    await next_message(ws, "started")
    sender = asyncio.create_task(stream_paced(ws, dtmf_pcm([digits] * 4)))
    return ws, sender


async def stop_sending(sender: asyncio.Task[None]) -> None:
    sender.cancel()
    await asyncio.gather(sender, return_exceptions=True)


def assert_upstream_failure(result: Timed, code: str = "upstream_unavailable") -> None:
    assert result.errors() == [code], result.messages
    error = result.of_type("error")[0]
    assert error["retryable"] is True
    assert result.of_type("closed")[-1]["reason"] == "upstream_error"
    assert result.close_code == 1011


# --- gateway <-> Data Flow --------------------------------------------------------------------------


async def test_upstream_cut_mid_session(simulator: DataflowSimulator, upstream_proxy: FaultProxy) -> None:
    async with via(simulator, upstream_proxy) as gw:
        ws, sender = await open_streaming(gw)
        await asyncio.sleep(0.5)
        cut_at = time.monotonic()
        assert upstream_proxy.cut() == 1
        result = await read_timed(ws, timeout=10)
        await stop_sending(sender)
        assert_upstream_failure(result)
        seen = result.first("error")[0] - cut_at
        figure("upstream_cut", f"client got error upstream_unavailable {seen:.3f} s after the cut, close 1011")
        assert seen < 2.0
        await settled(gw)
        # The channel reconnects through the proxy: the next session works end to end.
        await _until_session_works(gw)


@pytest.mark.parametrize("client", ["streaming", "silent"])
async def test_upstream_half_open_is_found_by_keepalive(
    simulator: DataflowSimulator, upstream_proxy: FaultProxy, client: str
) -> None:
    """The proxy keeps both TCP connections open but forwards nothing: only keepalive can tell."""
    overrides = {"upstream_keepalive_interval_s": KEEPALIVE_S, "upstream_keepalive_timeout_s": KEEPALIVE_S}
    async with via(simulator, upstream_proxy, **overrides) as gw:
        ws, sender = await open_streaming(gw)
        if client == "silent":
            await asyncio.sleep(0.3)
            await stop_sending(sender)
        await asyncio.sleep(0.5)
        holed_at = time.monotonic()
        upstream_proxy.blackhole()
        result = await read_timed(ws, timeout=30)
        await stop_sending(sender)
        assert_upstream_failure(result)
        seen = result.first("error")[0] - holed_at
        bound = 2 * KEEPALIVE_S
        figure(
            f"upstream_half_open_{client}",
            f"keepalive {KEEPALIVE_S:g} s/{KEEPALIVE_S:g} s: client got upstream_unavailable {seen:.2f} s after "
            f"the blackhole (bound {bound:g} s)",
        )
        assert seen < bound + 1.5
        await settled(gw)
        assert upstream_proxy.discarded > 0  # the blackhole did swallow traffic (pings at least)
        upstream_proxy.heal()
        # The dead connection is gone; a new one is made within the reconnect back-off (clients retry
        # the retryable upstream_unavailable meanwhile).
        await _until_session_works(gw)


async def test_upstream_slow_to_accept_still_works(simulator: DataflowSimulator, upstream_proxy: FaultProxy) -> None:
    """A slow TCP accept and 300 ms of latency each way: slower, but every digit comes back."""
    upstream_proxy.accept_delay_s = 0.8
    upstream_proxy.latency_s = 0.3
    async with via(simulator, upstream_proxy) as gw, ws_connect(gw.ws_url()) as ws:
        began = time.monotonic()
        await ws.send(start_json())
        await next_message(ws, "started", timeout=15)
        start_s = time.monotonic() - began
        await stream_paced(ws, dtmf_pcm(["260"]), frame_bytes=3200, pace_s=0)
        await ws.send(json.dumps({"type": "finalize"}))
        result = await read_timed(ws)
        figure("upstream_slow_accept", f"0.8 s accept + 0.3 s each way: started after {start_s:.2f} s, digits intact")
        assert result.milestones() == ["260"]
        assert result.close_code == 1000
        assert start_s >= 0.8 + 2 * 0.3  # TCP accept, then Start and StartResponse each crossed the latency


async def test_upstream_that_never_answers_start_times_out(
    simulator: DataflowSimulator, upstream_proxy: FaultProxy
) -> None:
    async with via(simulator, upstream_proxy, upstream_start_timeout_s=1.0) as gw:
        await dtmf_round_trip(gw, "1")  # the channel is connected
        upstream_proxy.stall("down")  # requests reach Data Flow; nothing comes back
        async with ws_connect(gw.ws_url()) as ws:
            began = time.monotonic()
            await ws.send(start_json())
            result = await read_timed(ws)
        waited = result.first("error")[0] - began
        figure("upstream_start_unanswered", f"upstream_timeout after {waited:.2f} s (upstream_start_timeout_s 1 s)")
        assert result.errors() == ["upstream_timeout"]
        assert result.close_code == 1011
        assert 1.0 <= waited < 3.0
        await settled(gw)


# --- client <-> gateway -------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["blackhole", "stall_down"])
async def test_client_half_open_is_reaped_by_ping(simulator: DataflowSimulator, fault: str) -> None:
    """A client that stops reading and answering pings: the gateway's WebSocket ping reaps it."""
    ping_s = 0.5
    settings = settings_for(simulator, ws_ping_interval_s=ping_s, ws_ping_timeout_s=ping_s, idle_timeout_s=30)
    async with running_gateway(settings) as gw, FaultProxy("127.0.0.1", gw.port) as proxy:
        ws = await ws_connect(f"ws://127.0.0.1:{proxy.port}/v1/stream", ping_interval=None)
        await ws.send(start_json())
        await next_message(ws, "started")
        await ws.send(dtmf_pcm(["7"])[:32000])
        await asyncio.sleep(0.2)
        record = simulator.records[-1]
        gone_at = time.monotonic()
        if fault == "blackhole":
            proxy.blackhole()
        else:
            proxy.stall("down")
        ended = await record_end(record, timeout=10) - gone_at
        figure(
            f"client_half_open_{fault}",
            f"ping {ping_s:g} s/{ping_s:g} s: upstream cancelled {ended:.2f} s after the client went silent",
        )
        assert record.outcome == "cancelled"
        assert ended < 2 * ping_s + 1.5
        await settled(gw)
        ws.transport.abort()


async def test_client_half_open_is_reaped_by_idle_timeout(simulator: DataflowSimulator) -> None:
    """Pings too slow to notice; the session's idle timeout ends it (results flushed, close 1008)."""
    settings = settings_for(simulator, idle_timeout_s=1.0, ack_interval_ms=100, ws_ping_interval_s=60)
    async with running_gateway(settings) as gw, FaultProxy("127.0.0.1", gw.port) as proxy:
        ws = await ws_connect(f"ws://127.0.0.1:{proxy.port}/v1/stream", ping_interval=None)
        await ws.send(start_json())
        await next_message(ws, "started")
        record = simulator.records[-1]
        await ws.send(dtmf_pcm(["7"])[:16000])
        gone_at = time.monotonic()
        proxy.blackhole()
        ended = await record_end(record, timeout=10) - gone_at
        await settled(gw)
        released = time.monotonic() - gone_at
        figure("client_half_open_idle", f"idle_timeout 1 s: upstream finalized after {ended:.2f} s, slot free after "
               f"{released:.2f} s")  # fmt: skip
        assert record.outcome == "finalized"
        assert ended < 1.0 + 1.5
        ws.transport.abort()


# --- Data Flow restarts ---------------------------------------------------------------------------------


async def test_simulator_restart_under_live_sessions(simulator: DataflowSimulator) -> None:
    down_s = 3.0  # long enough to observe the outage even on a busy CI machine
    # Recovery off: this measures the outage as the gateway reports it (with recovery on, the live
    # sessions would go on: tests/system/test_recovery.py).
    settings = settings_for(simulator, upstream_reconnect_backoff_max_s=1.0, upstream_replay_ms=0)
    async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        assert (await http.get("/readyz")).status_code == 200
        live = [await open_streaming(gw, d) for d in ("12", "34", "56", "78", "90")]
        restart_at = time.monotonic()
        restarting = asyncio.create_task(simulator.restart(down_s=down_s))
        results = await asyncio.gather(*(read_timed(ws, timeout=10) for ws, _ in live))
        for _, sender in live:
            await stop_sending(sender)
        for result in results:
            assert_upstream_failure(result)
        told = max(r.first("error")[0] for r in results) - restart_at

        # While Data Flow is down: /healthz says so, readiness stays (the pod can still take sessions:
        # a Service emptied by an outage would answer the ingress's bare 503), and new sessions are
        # refused fast with the retryable error.
        await _until_upstream_reported_down(http)
        not_ready = time.monotonic() - restart_at
        ready_in_outage = await http.get("/readyz")
        assert ready_in_outage.status_code == 200, ready_in_outage.json()
        assert ready_in_outage.json()["upstream"]["status"] == "unavailable"
        refused_at = time.monotonic()
        async with ws_connect(gw.ws_url()) as ws:
            await ws.send(start_json())
            refused = await read_timed(ws)
        refused_s = time.monotonic() - refused_at
        assert refused.errors() == ["upstream_unavailable"]
        assert refused.of_type("error")[0]["retryable"] is True
        assert refused.close_code == 1011
        assert not restarting.done(), "the outage ended before it was observed; raise down_s"

        # Back: readiness returns and new sessions succeed within the reconnect back-off.
        await restarting
        recovered_s = await _until_session_works(gw)
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.json()
        figure(
            "simulator_restart",
            f"5 live sessions got upstream_unavailable within {told * 1000:.0f} ms; /healthz upstream "
            f"unavailable {not_ready:.2f} s after the crash (/readyz stayed 200); sessions during the outage "
            f"refused in {refused_s * 1000:.0f} ms; first good session {recovered_s:.2f} s after Data Flow was back "
            f"(reconnect back-off max 1 s)",
        )
        assert told < 2.0
        assert refused_s < 1.0
        assert recovered_s < 1.0 + 2.0
        await settled(gw)


async def _until_upstream_reported_down(http: httpx.AsyncClient, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            response = await http.get("/healthz")
            assert response.status_code == 200  # liveness never fails over Data Flow
            if response.json()["upstream"] == {"status": "unavailable", "channel": False, "token": True}:
                return
            await asyncio.sleep(0.05)


async def _until_session_works(gw: RunningGateway, timeout: float = 10.0) -> float:
    began = time.monotonic()
    async with asyncio.timeout(timeout):
        while True:
            try:
                await dtmf_round_trip(gw, "3")
                return time.monotonic() - began
            except (AssertionError, ConnectionClosed):  # refused: upstream_unavailable
                await asyncio.sleep(0.1)
