"""``dataflow-gateway drain``, the Kubernetes preStop hook, against a real gateway on a real port.

The command is synchronous (httpx), so it runs in a thread while the gateway serves on the loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import httpx
import pytest

from gateway import cli
from gateway.simulator.server import DataflowSimulator
from tests.support import signals
from tests.support.harness import RunningGateway, next_message, read_all, running_gateway, ws_connect
from tests.support.native_client import start_message
from tests.support.settings import settings_for

ADMIN = "adm-drain-4b1f0c"


@pytest.fixture(autouse=True)
def drain_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("GATEWAY_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(os.path.dirname(__file__))  # no .env file here


def drain(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch, *args: str, token: str | None = ADMIN
) -> asyncio.Task[int]:
    monkeypatch.setenv("GATEWAY_PORT", str(gw.port))
    if token is not None:
        monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", token)
    return asyncio.create_task(asyncio.to_thread(cli.main, ["drain", *args]))


@pytest.mark.ws
async def test_drain_waits_for_live_sessions_to_finish(
    simulator: DataflowSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_gateway(settings_for(simulator, admin_token=ADMIN, drain_budget_s=20)) as gw:
        ws = await ws_connect(gw.ws_url())
        await ws.send(start_message())
        await next_message(ws, "started")
        command = drain(gw, monkeypatch)
        async with asyncio.timeout(5):
            while not gw.gateway.registry.draining:
                await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=gw.http_url) as http:
            ready = await http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["sessions"] == 1
        await asyncio.sleep(0.6)
        assert not command.done(), "drain returned while a session was still live"
        # The client finishes its utterance within the budget and gets everything.
        await ws.send(signals.to_pcm16(signals.utterances(["42"], 16000)))
        await ws.send(json.dumps({"type": "finalize"}))
        done = await read_all(ws)
        assert (done.milestones(), done.close_code) == (["42"], 1000)
        began = time.monotonic()
        assert await asyncio.wait_for(command, 5) == 0
        assert time.monotonic() - began < 1.5


@pytest.mark.ws
async def test_drain_budget_option_closes_lingering_sessions_with_1001(
    simulator: DataflowSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_gateway(settings_for(simulator, admin_token=ADMIN)) as gw:
        ws = await ws_connect(gw.ws_url())
        await ws.send(start_message())
        await next_message(ws, "started")
        began = time.monotonic()
        command = drain(gw, monkeypatch, "--budget-s", "0.5", "--margin-s", "5")
        gone = await read_all(ws, timeout=10)
        assert gone.errors() == ["draining", "going_away"] and gone.close_code == 1001
        assert await asyncio.wait_for(command, 5) == 0
        assert time.monotonic() - began < 3
        assert gw.gateway.metrics.registry.get_sample_value("dataflow_gateway_drain_budget_seconds") == 0.5


async def test_drain_without_the_admin_token_is_refused(
    simulator: DataflowSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_gateway(settings_for(simulator, admin_token=ADMIN)) as gw:
        assert await drain(gw, monkeypatch, token="wrong") == 2
        assert gw.gateway.registry.draining is False


@pytest.mark.ws
async def test_drain_on_loopback_needs_no_token_and_no_wait_returns_at_once(
    simulator: DataflowSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_gateway(settings_for(simulator, drain_budget_s=30)) as gw:
        ws = await ws_connect(gw.ws_url())
        await ws.send(start_message())
        await next_message(ws, "started")
        # An egress proxy set for Data Flow and webhooks (nothing listens there) must not carry the
        # hook's loopback request: with it, drain said "no answer" and the replica never drained.
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, "http://127.0.0.1:9")
        assert await asyncio.wait_for(drain(gw, monkeypatch, "--no-wait", token=None), 5) == 0
        assert gw.gateway.registry.draining is True
        await ws.close()


async def test_drain_reports_an_unreachable_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "1")
    assert await asyncio.to_thread(cli.main, ["drain"]) == 2
