"""Memory comes back after a session ends: a client that never reads is held to a byte bound and
closed, and what its session held is freed by reference counting at once, not left in reference
cycles for a full collection that the GC tuning (gateway/runtime.py) makes rare."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from gateway.simulator.server import DataflowSimulator
from tests.support import signals
from tests.support.gateway_process import gateway_process, upstream_env
from tests.support.harness import RunningGateway, read_all, running_gateway, ws_connect
from tests.support.heap import collector_off, gateway_objects_in_cycles
from tests.support.native_client import DTMF, start_message
from tests.support.non_readers import never_reads
from tests.support.settings import settings_for

pytestmark = pytest.mark.ws  # opens WebSockets: runs with the fast path on and off

MiB = 1024 * 1024
ACTIVE = "dataflow_gateway_sessions_active"


async def sessions_active(http_url: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{http_url}/metrics")).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(ACTIVE))


async def test_non_reading_clients_do_not_grow_memory_round_after_round(
    simulator: DataflowSimulator, tmp_path: Path
) -> None:
    """6 rounds of 20 clients that never read, against a gateway process: its RSS at the end is within
    15 % of its RSS once warmed up (memory is given back; no growth per round). A round's sessions hold
    20 MiB of outboxes, so one leaked round alone breaks the bound. RSS moves by about ±10 MiB from round
    to round (the allocator), so the warmed-up figure is the higher of the first two rounds and the end
    figure the lower of the last two: noise in one round cannot fail the test, a leak shows in each."""
    env = upstream_env(simulator) | {"GATEWAY_CLIENT_SEND_TIMEOUT_S": "1", "GATEWAY_CLIENT_OUTBOX_BYTES": str(MiB)}
    async with gateway_process(tmp_path, env) as gw:
        after: list[int] = []
        for _ in range(6):
            clients = await asyncio.gather(*(never_reads(gw.ws_url(), gw.port) for _ in range(20)))
            async with asyncio.timeout(15):  # the gateway ends every one of them itself
                while await sessions_active(gw.http_url):
                    await asyncio.sleep(0.1)
            for ws in clients:
                ws.transport.abort()
            await asyncio.sleep(0.2)
            after.append(gw.rss_bytes())
        warmed_up, at_the_end = max(after[:2]), min(after[-2:])
        by_round = f"gateway RSS by round (MiB): {[round(a / MiB) for a in after]}"
        print(by_round)
        assert at_the_end - warmed_up < 0.15 * warmed_up, by_round


# --- no cycles: what a session leaves behind is freed without the collector ------------------------------


async def reading(gw: RunningGateway) -> None:
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message())
        await ws.send(DTMF)
        await ws.send(json.dumps({"type": "finalize"}))
        assert (await read_all(ws)).close_code == 1000


async def never_reads_here(gw: RunningGateway) -> None:
    ws = await never_reads(gw.ws_url(), gw.port)
    async with asyncio.timeout(10):
        while gw.gateway.registry.active:
            await asyncio.sleep(0.05)
    ws.transport.abort()


async def vanishes(gw: RunningGateway) -> None:
    ws: ClientConnection = await ws_connect(gw.ws_url())
    await ws.send(start_message())
    await ws.send(DTMF[:32000])
    await asyncio.sleep(0.2)
    ws.transport.abort()


async def upload(gw: RunningGateway) -> None:
    async with httpx.AsyncClient() as http:
        wav = signals.wav_bytes(signals.utterances(["12"], 8000), 8000)
        assert (await http.post(f"{gw.http_url}/v1/recognize", content=wav)).status_code == 200


async def test_a_finished_session_leaves_nothing_for_the_cycle_collector(simulator: DataflowSimulator) -> None:
    settings = settings_for(simulator, client_send_timeout_s=1.0, client_outbox_bytes=256 * 1024)
    async with running_gateway(settings) as gw:
        for warm_up in (reading, never_reads_here, vanishes, upload):
            await warm_up(gw)
        with collector_off():
            for ending in (reading, never_reads_here, vanishes, upload):
                await ending(gw)
            await asyncio.sleep(0.5)  # the sessions' last tasks finish
            assert gw.gateway.registry.active == 0
            assert gateway_objects_in_cycles() == {}
