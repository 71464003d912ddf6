"""How fast sessions may start, over real sockets: per connection (``GATEWAY_SESSION_START_RATE``, after a
burst of 10) and per API key (``session_start_rate``, after a burst of its ``max_sessions``).

``max_sessions`` bounds how many sessions run at once, not how fast they begin: one AudioCodes socket
looping start and stop ran 389 recognitions a second, each a Data Flow stream and two log lines. A start
past a rate waits its turn (nothing the client sent is lost); past a key's rate by more than
``START_WAIT_S`` it is refused 429 ``rate_limited`` with the seconds to retry after.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from gateway.adapters.unpaced import START_BURST
from gateway.auth import key_digest
from gateway.relay.start_rates import START_WAIT_S
from gateway.simulator.server import DataflowSimulator
from tests.support import signals
from tests.support.audiocodes_client import start, until
from tests.support.harness import RunningGateway, gateway_factory_for, ws_connect
from tests.support.probes import figure
from tests.support.settings import SECRETS
from tests.support.upload_client import URL

WAV = signals.wav_bytes(signals.utterances(["1"], 8000), 8000)
KEY = "dfg_start_rate_3f1c9a7e5b2d4f6a8c0e1b3d5f7a9c2e"
SECRETS.add(KEY)


def waiting_key(name: str) -> tuple[list[dict[str, object]], dict[str, str]]:
    """A key whose second start waits 2 s for its turn (one a 2 s after a burst of one), not refused."""
    key = f"{KEY}-{name}"
    SECRETS.add(key)
    return [{"name": name, "sha256": key_digest(key), "max_sessions": 1, "session_start_rate": 0.5}], {"X-API-Key": key}


async def one_recognition(gw: RunningGateway, headers: dict[str, str]) -> None:
    async with ws_connect(gw.ws_url("/v1/audiocodes"), additional_headers=headers) as ws:
        await ws.send(start())
        await until(ws, "started")
        await ws.send(json.dumps({"type": "stop"}))
        await until(ws, "end")


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"session_start_rate": 10.0}], indirect=True)
async def test_a_socket_looping_recognitions_is_slowed_to_its_start_rate(
    gw: RunningGateway, simulator: DataflowSimulator
) -> None:
    """25 recognitions back to back on one AudioCodes socket at 10 starts a second after a burst of 10: at
    least 1.5 s (the loop ran 389 a second), and every one started and ended."""
    loops, rate = 25, 10.0
    began = time.monotonic()
    async with ws_connect(gw.ws_url("/v1/audiocodes")) as ws:
        for _ in range(loops):
            await ws.send(start())
            assert [m["type"] for m in await until(ws, "started")] == ["started"]
            await ws.send(json.dumps({"type": "stop"}))
            assert (await until(ws, "end"))[-1]["type"] == "end"
    elapsed = time.monotonic() - began
    figure("starts_per_connection", f"{loops} recognitions in {elapsed:.2f} s at {rate:g}/s after {START_BURST}")
    assert elapsed >= (loops - START_BURST) / rate - 0.05
    assert len(simulator.records) == loops  # slowed, none refused or lost


async def test_a_key_past_its_start_rate_waits_its_turn_then_is_refused(simulator: DataflowSimulator) -> None:
    """A key with 2 starts a second and ``max_sessions`` 2 (its burst): six uploads one after another all
    answered 200, the last four each after its turn (at least 2 s in all); a key with one start in 4 s has
    its second upload refused at once (its turn 4 s off, past the 2 s a start waits): 429 ``rate_limited``,
    Retry-After 2, counted as a denial, and no Data Flow stream for it."""
    keys = [
        {"name": "steady", "sha256": key_digest(KEY), "max_sessions": 2, "session_start_rate": 2.0},
        {"name": "slow", "sha256": key_digest(KEY + "-slow"), "max_sessions": 1, "session_start_rate": 0.25},
    ]
    SECRETS.add(KEY + "-slow")
    factory = gateway_factory_for(simulator)
    async with (
        factory(auth="required", api_keys=keys) as gw,
        httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http,
    ):
        began = time.monotonic()
        answers = [await http.post(URL, content=WAV, headers={"X-API-Key": KEY}) for _ in range(6)]
        elapsed = time.monotonic() - began
        figure("starts_per_key", f"6 uploads of a key at 2/s after a burst of 2: {elapsed:.2f} s")
        assert [a.status_code for a in answers] == [200] * 6
        assert elapsed >= (6 - 2) / 2.0 - 0.05

        slow = {"X-API-Key": KEY + "-slow"}
        assert (await http.post(URL, content=WAV, headers=slow)).status_code == 200
        refused = await http.post(URL, content=WAV, headers=slow)
        assert refused.status_code == 429, refused.text
        error = refused.json()["error"]
        assert error["code"] == "rate_limited" and "0.25 a second" in error["message"]
        assert refused.headers["retry-after"] == str(int(4 - START_WAIT_S))
        denied = gw.gateway.metrics.registry.get_sample_value(
            "dataflow_gateway_denials_total", {"reason": "rate_limited"}
        )
        assert denied == 1
    assert len(simulator.records) == 7


@pytest.mark.ws
async def test_a_key_past_its_start_rate_has_its_recognition_refused_with_1013(simulator: DataflowSimulator) -> None:
    """On a WebSocket the key's rate holds across its sockets: a key with one start in 4 s (a burst of its
    ``max_sessions`` 1) runs one recognition; the next, on another socket at once, is refused (AudioCodes'
    error message naming the rate, close 1013 ``rate_limited``) and reaches no Data Flow."""
    key = KEY + "-audiocodes"
    SECRETS.add(key)
    keys = [{"name": "bot", "sha256": key_digest(key), "max_sessions": 1, "session_start_rate": 0.25}]
    headers = {"X-API-Key": key}
    async with gateway_factory_for(simulator)(auth="required", api_keys=keys) as gw:
        await one_recognition(gw, headers)
        async with ws_connect(gw.ws_url("/v1/audiocodes"), additional_headers=headers) as ws:
            await ws.send(start())
            refusal = await until(ws, "error")
            assert "0.25 a second" in json.dumps(refusal[-1]), refusal
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1013, "rate_limited")
    assert len(simulator.records) == 1


@pytest.mark.ws
async def test_a_start_whose_client_leaves_during_its_wait_goes_no_further(simulator: DataflowSimulator) -> None:
    """The client of a start waiting for its key's turn leaves: the start ends with the wait and its slot is
    free (before, it opened a Data Flow stream once its turn came, for no one)."""
    keys, headers = waiting_key("leaver")
    async with gateway_factory_for(simulator)(auth="required", api_keys=keys) as gw:
        await one_recognition(gw, headers)
        async with ws_connect(gw.ws_url("/v1/audiocodes"), additional_headers=headers) as ws:
            await ws.send(start())
            await asyncio.sleep(0.3)
        await asyncio.sleep(2.5)  # past the turn it waited for
        assert len(simulator.records) == 1
        assert gw.gateway.registry.occupied == 0


@pytest.mark.ws
async def test_the_connection_s_timeouts_count_from_the_start_s_turn(simulator: DataflowSimulator) -> None:
    """A second recognition, sent at once on a socket with a 1 s ``GATEWAY_BETWEEN_RECOGNITIONS_S``, waits 2 s
    for its key's turn: the socket was closed ``idle_timeout`` during the wait, the start sent in time lost;
    it starts now."""
    keys, headers = waiting_key("bot2")
    factory = gateway_factory_for(simulator)
    async with factory(auth="required", api_keys=keys, between_recognitions_s=1.0) as gw:
        async with ws_connect(gw.ws_url("/v1/audiocodes"), additional_headers=headers) as ws:
            for _ in range(2):
                began = time.monotonic()
                await ws.send(start())
                assert [m["type"] for m in await until(ws, "started")] == ["started"]
                await ws.send(json.dumps({"type": "stop"}))
                await until(ws, "end")
        assert time.monotonic() - began >= 1.9  # the second waited its turn
        assert len(simulator.records) == 2
