"""A single-use browser token is reserved when its session is admitted and spent only once Data Flow
accepted the session: a start that fails (Data Flow away: ``upstream_unavailable``, retryable) leaves the
token usable for the retry the error invites, while two concurrent uses still cannot both pass.
Over real sockets: the gateway in-process in front of the simulator, real ``websockets``/``httpx`` clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from gateway.auth import ApiKeySpec, Authenticator, key_digest
from gateway.errors import ErrorCode, Unauthorized
from gateway.relay.registry import SessionRegistry
from gateway.security import AccessGate
from gateway.signatures.single_use import NO_HOLD, SingleUseTokens
from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from tests.support import signals
from tests.support.harness import RunningGateway, Transcript, next_message, read_all, running_gateway, ws_connect
from tests.support.native_client import start_message
from tests.support.settings import SECRETS, SIM_TENANT, SIM_TOKEN, browser_auth, offline_settings, settings_for
from tests.support.tokens import mint_browser_token

KEY = "dfg_reserve_5e0c7a1b9d3f42e6a8c0b1d2e3f4a5b6"
SIGNING_KEY = "reservation-signing-key-0123456789abcdef"
APP = "https://app.example.com"
SECRETS.update({KEY, SIGNING_KEY})


@pytest.fixture
async def sim_and_gw(simulator: DataflowSimulator) -> AsyncIterator[tuple[DataflowSimulator, RunningGateway]]:
    settings = settings_for(simulator, upstream_start_timeout_s=2, **browser_auth(KEY, SIGNING_KEY, APP))
    async with running_gateway(settings) as gw:
        yield simulator, gw


async def single_use_token(gw: RunningGateway) -> str:
    return await mint_browser_token(gw, KEY, APP)


async def session_with(gw: RunningGateway, token: str, **start: Any) -> Transcript:
    """A browser's session with ``token`` in its start message: stopped as soon as it started."""
    async with ws_connect(gw.ws_url(), origin=APP) as ws:
        await ws.send(start_message(token=token, **start))
        first = json.loads(await ws.recv())
        if first["type"] == "started":
            await ws.send(json.dumps({"type": "stop"}))
        result = await read_all(ws)
    result.messages.insert(0, first)
    return result


def errors(result: Transcript) -> list[tuple[str, bool]]:
    return [(m["code"], m["retryable"]) for m in result.of_type("error")]


@pytest.mark.ws
async def test_a_start_that_fails_leaves_a_single_use_token_for_the_retry(
    sim_and_gw: tuple[DataflowSimulator, RunningGateway],
) -> None:
    """The reviewer's case: Data Flow is away for a moment, the start fails with ``upstream_unavailable``
    (retryable); retried with the same token once it is back, the session starts (it got ``token_reused``,
    1008). Once a session started, the token is spent."""
    simulator, gw = sim_and_gw
    token = await single_use_token(gw)
    port = int(simulator.target.rsplit(":", 1)[1])
    await simulator.stop(None)
    failed = await session_with(gw, token)
    assert errors(failed) == [("upstream_unavailable", True)] and failed.close_code == 1011

    back = DataflowSimulator(SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT))
    await back.start(port=port)
    try:
        retried = await session_with(gw, token)
        assert retried.messages[0]["type"] == "started", retried.messages
        assert retried.close_code == 1000
        spent = await session_with(gw, token)
        assert errors(spent) == [("token_reused", False)] and spent.close_code == 1008
        assert len(back.records) == 1  # the spent token never reached Data Flow
    finally:
        await back.stop(None)


@pytest.mark.ws
async def test_a_start_rejected_by_data_flow_frees_the_token_too(
    sim_and_gw: tuple[DataflowSimulator, RunningGateway],
) -> None:
    """Data Flow answers the start with a failure (the simulator's ``reject_start``): the token was not
    spent on it, and the next start with it is served."""
    _, gw = sim_and_gw
    token = await single_use_token(gw)
    rejected = await session_with(gw, token, settings={"SimulatorFault": "reject_start"})
    assert rejected.messages[0]["type"] == "error" and rejected.close_code == 1011
    assert "token_reused" not in rejected.errors()
    served = await session_with(gw, token)
    assert served.messages[0]["type"] == "started" and served.close_code == 1000


@pytest.mark.ws
async def test_two_concurrent_uses_of_a_single_use_token_cannot_both_pass(
    sim_and_gw: tuple[DataflowSimulator, RunningGateway],
) -> None:
    """While the first use's start waits for Data Flow (``slow_start`` 1.5 s) the token is reserved: a
    second use is refused ``token_reused`` at once, and the first session starts."""
    simulator, gw = sim_and_gw
    token = await single_use_token(gw)
    async with ws_connect(gw.ws_url(), origin=APP) as first:
        await first.send(start_message(token=token, settings={"SimulatorFault": "slow_start:1500"}))
        async with asyncio.timeout(5):
            while not simulator.records:  # the first start is with Data Flow now
                await asyncio.sleep(0.01)
        second = await session_with(gw, token)
        assert errors(second) == [("token_reused", False)] and second.close_code == 1008
        await next_message(first, "started")
        await first.send(json.dumps({"type": "stop"}))
        assert (await read_all(first)).close_code == 1000
    assert len(simulator.records) == 1


# --- the gate and the memory, without sockets ---------------------------------------------------------


def make_gate() -> AccessGate:
    settings = offline_settings(auth="required", allowed_origins=[APP], token_signing_key=SecretStr(SIGNING_KEY))
    spec = ApiKeySpec(name="acme", sha256=key_digest(KEY), projects=["demo"])
    return AccessGate(settings, Authenticator([spec], SIGNING_KEY, required=True), SessionRegistry(10))


def test_a_hold_is_released_or_committed_once() -> None:
    gate = make_gate()
    owner = gate.auth.authenticate(KEY)
    token, _ = gate.auth.mint(owner, projects=None, origin=APP, max_session_s=None, ttl_s=60, single_use=True)
    principal = gate.auth.authenticate(token)
    assert gate.admit_session(owner, "demo") is NO_HOLD  # an API key: nothing to hold
    for _ in range(3):  # failed starts: each frees the token again
        hold = gate.admit_session(principal, "demo")
        with pytest.raises(Unauthorized) as concurrent:
            gate.admit_session(principal, "demo")
        assert concurrent.value.error_code is ErrorCode.TOKEN_REUSED
        with hold:
            pass  # left without a commit: released
    hold = gate.admit_session(principal, "demo")
    hold.commit()
    hold.release()  # the commit decided
    with pytest.raises(Unauthorized) as spent:
        gate.admit_session(principal, "demo")
    assert spent.value.error_code is ErrorCode.TOKEN_REUSED


def test_the_memory_keeps_one_entry_per_token_however_often_it_is_retried() -> None:
    memory = SingleUseTokens(2)
    for _ in range(1000):
        assert memory.reserve("a", until=100.0, now=0.0, mono=0.0)
        memory.settle("a", spent=False)
    assert len(memory) == 1 and len(memory._expiries) == 1
    assert memory.reserve("a", until=100.0, now=0.0, mono=0.0)
    assert not memory.reserve("a", until=100.0, now=0.0, mono=0.0)
    memory.settle("a", spent=True)
    assert memory.state("a") == "spent" and not memory.reserve("a", until=100.0, now=99.0, mono=99.0)
    assert memory.reserve("b", until=50.0, now=1.0, mono=1.0) and memory.full(1.0, 1.0)
    assert not memory.full(100.0, 100.0) and len(memory) == 0  # forgotten once their tokens have expired


def test_a_step_of_the_wall_clock_forgets_no_spent_token_early() -> None:
    """The wall clock stepped 2 min forward (NTP, a resumed VM): a start then forgot a spent token whose
    exp was 60 s ahead; stepped back, the token verified again and started a second session."""
    memory = SingleUseTokens(10)
    assert memory.reserve("a", until=1060.0, now=1000.0, mono=5.0)
    memory.settle("a", spent=True)
    assert not memory.full(1120.0, mono=5.1)  # 2 min ahead by the wall clock, 0.1 s really
    assert memory.state("a") == "spent"
    assert not memory.reserve("a", until=1060.0, now=1000.2, mono=5.2)  # stepped back: still refused
    assert not memory.full(1000.0 + 61, mono=5.0 + 61) and memory.state("a") is None  # both clocks past: gone
    # The wall clock went back after the monotonic deadline: kept for as long as the token verifies again.
    assert memory.reserve("b", until=1200.0, now=1100.0, mono=100.0)
    memory.settle("b", spent=True)
    assert not memory.full(1150.0, mono=201.0) and memory.state("b") == "spent"
    assert not memory.full(1201.0, mono=252.0) and memory.state("b") is None


async def test_an_upload_whose_start_fails_leaves_the_single_use_token_for_the_retry(
    sim_and_gw: tuple[DataflowSimulator, RunningGateway],
) -> None:
    """The same for an upload (``Authorization: Bearer``): a start Data Flow refuses did spend the token
    (the retry got 401 token_reused); now the retry is served and only then is the token spent."""
    _, gw = sim_and_gw
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
        minted = await http.post("/v1/tokens", json={"singleUse": True}, headers={"X-API-Key": KEY})
        token = minted.json()["token"]
        SECRETS.add(token)
        wav = signals.wav_bytes(signals.utterances(["12"], 8000), 8000)
        headers = {"content-type": "audio/wav", "authorization": f"Bearer {token}"}
        fault = json.dumps({"Settings": {"SimulatorFault": "reject_start"}})
        refused = await http.post("/v1/recognize", content=wav, headers={**headers, "x-dataflow-parameters": fault})
        served = await http.post("/v1/recognize", content=wav, headers=headers)
        spent = await http.post("/v1/recognize", content=wav, headers=headers)
    assert refused.status_code == 502, refused.text
    assert served.status_code == 200, served.text
    assert spent.status_code == 401 and spent.json()["error"]["code"] == "token_reused", spent.text


@pytest.mark.ws
async def test_a_browser_accepted_before_a_drain_starts_its_session_during_it(
    sim_and_gw: tuple[DataflowSimulator, RunningGateway],
) -> None:
    """Its credential comes in the start message, so it held a waiting place, not a slot: the drain refused
    its start going_away, where a connection that sent its key with the handshake is served for what is
    left of the budget (README, Drain and shutdown). Now both are."""
    _, gw = sim_and_gw
    token = await single_use_token(gw)
    async with ws_connect(gw.ws_url(), origin=APP) as early:
        async with httpx.AsyncClient(base_url=gw.http_url) as http:
            assert (await http.post("/internal/drain", params={"budget_s": 1.5})).status_code == 202
        await asyncio.sleep(0.3)
        await early.send(start_message(token=token))
        result = await read_all(early, timeout=5)
    kinds = [m["type"] if m["type"] != "error" else m["code"] for m in result.messages]
    assert kinds[0] == "started" and result.errors() == ["draining", "going_away"], kinds
    assert result.close_code == 1001
    async with ws_connect(gw.ws_url(), origin=APP) as late:  # a connection accepted during the drain is not
        refused = await read_all(late, timeout=5)
    assert refused.errors() == ["going_away"] and refused.close_code == 1001
