"""Health, readiness, metrics, structured logs and graceful drain, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed

from gateway.observability import JsonFormatter
from gateway.simulator.server import DataflowSimulator
from tests.support import signals
from tests.support.harness import (
    GatewayFactory,
    RunningGateway,
    Transcript,
    next_message,
    read_all,
    running_gateway,
    ws_connect,
)
from tests.support.native_client import dtmf_session, start_message
from tests.support.settings import SIM_TOKEN, settings_for


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


async def scrape(gw: RunningGateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    return metric_values(response.text)


@pytest.fixture
def gw_settings() -> dict[str, Any]:
    return {"ack_interval_ms": 100}


@pytest.mark.ws
async def test_health_and_readiness(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(max_sessions=1) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        upstream = {"status": "ok", "channel": True, "token": True}
        assert (await http.get("/healthz")).json() == {"status": "ok", "upstream": upstream}
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready", "checks": {"not_draining": True, "below_capacity": True}, "sessions": 0, "waiting": 0,
            "upstream": upstream,
        }  # fmt: skip
        async with ws_connect(gw.ws_url()) as ws:
            await ws.send(start_message())
            await next_message(ws, "started")
            full = await http.get("/readyz")
            assert full.status_code == 503
            assert full.json()["checks"]["below_capacity"] is False


@pytest.mark.ws
async def test_metrics_account_for_sessions_events_and_failures(gw: RunningGateway) -> None:
    result = await dtmf_session(gw, ["12", "3"], "pcm16", 16000)
    assert result.milestones() == ["12", "3"]
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message(settings={"SimulatorFault": "abort:100:UNAVAILABLE"}))
        await read_all(ws)
    values = await scrape(gw)
    assert values[("dataflow_gateway_sessions_started_total", (("dialect", "native"),))] == 2
    assert values[("dataflow_gateway_sessions_ended_total", (("dialect", "native"), ("outcome", "finalized")))] == 1
    assert (
        values[("dataflow_gateway_sessions_ended_total", (("dialect", "native"), ("outcome", "upstream_error")))] == 1
    )
    assert values[("dataflow_gateway_events_relayed_total", (("name", "SR Milestone"),))] == 2
    errors = values[
        ("dataflow_gateway_upstream_errors_total", (("code", "upstream_unavailable"), ("grpc_status", "UNAVAILABLE")))
    ]
    assert errors == 1
    audio_s = values[("dataflow_gateway_audio_seconds_total", (("dialect", "native"),))]
    assert audio_s == pytest.approx(len(signals.utterances(["12", "3"], 16000)) / 16000, abs=0.01)
    assert values[("dataflow_gateway_start_latency_seconds_count", ())] == 2
    assert values[("dataflow_gateway_event_relay_latency_seconds_count", ())] >= len(result.of_type("event"))
    assert values[("dataflow_gateway_sessions_active", (("dialect", "native"),))] == 0
    assert values[("dataflow_gateway_draining", ())] == 0


@pytest.mark.ws
async def test_denials_are_counted(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(max_sessions=1) as gw, ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message())
        await next_message(ws, "started")
        async with ws_connect(gw.ws_url()) as refused:
            assert (await read_all(refused)).close_code == 1013
        values = await scrape(gw)
        assert values[("dataflow_gateway_denials_total", (("reason", "capacity_exceeded"),))] == 1
        assert values[("dataflow_gateway_sessions_active", (("dialect", "native"),))] == 1


@pytest.mark.ws
async def test_one_structured_log_line_per_session_start_and_end(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    await dtmf_session(gw, ["4"], "mulaw", 8000)
    lines = [r for r in caplog.records if r.name == "gateway.relay.session"]
    assert [r.getMessage() for r in lines] == ["session started", "session ended"]
    ended = json.loads(JsonFormatter().format(lines[1]))
    assert ended["outcome"] == "finalized"
    assert ended["dialect"] == "native"
    assert ended["audio_s"] > 1
    assert ended["dataflow_session_id"]
    assert ended["level"] == "info"
    assert SIM_TOKEN not in caplog.text


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"max_session_s": 1}], indirect=True)
async def test_the_session_ended_line_says_why_a_session_was_ended(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """A session that runs into GATEWAY_MAX_SESSION_S: its ``session ended`` line carries
    ``error_code: max_duration``, what the client was told (a mutant always logged null: an operator
    could not tell why sessions ended)."""
    caplog.set_level(logging.INFO, logger="gateway")
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(json.dumps({"type": "start", "audio": {"encoding": "pcm16", "sampleRate": 16000}}))
        await next_message(ws, "started")

        async def feed() -> None:
            with contextlib.suppress(ConnectionClosed):  # until the gateway ends the session
                for _ in range(30):
                    await ws.send(b"\0" * 3200)
                    await asyncio.sleep(0.1)

        feeding = asyncio.create_task(feed())
        try:
            told = await read_all(ws, timeout=10)
        finally:
            feeding.cancel()
    assert "max_duration" in told.errors()
    async with asyncio.timeout(5):
        while not (ended := [r for r in caplog.records if r.getMessage() == "session ended"]):
            await asyncio.sleep(0.05)
    assert json.loads(JsonFormatter().format(ended[0]))["error_code"] == "max_duration"


@pytest.mark.ws
async def test_drain_lets_sessions_finish_then_closes_1001(gw: RunningGateway) -> None:
    finishing = await ws_connect(gw.ws_url())
    lingering = await ws_connect(gw.ws_url())
    for ws in (finishing, lingering):
        await ws.send(start_message())
        await next_message(ws, "started")
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        accepted = await http.post("/internal/drain", params={"budget_s": 1.5})
        assert accepted.status_code == 202
        assert accepted.json() == {"draining": True, "sessions": 2, "waiting": 0}
        assert (await http.get("/readyz")).status_code == 503
        async with ws_connect(gw.ws_url()) as late:
            refused = await read_all(late)
        assert refused.errors() == ["going_away"]
        assert refused.close_code == 1001
        # One client finishes within the budget and gets everything, normally.
        notice = Transcript()
        await next_message(finishing, "error", skipped=notice)
        pcm = signals.to_pcm16(signals.utterances(["86"], 16000))
        for offset in range(0, len(pcm), 3200):
            await finishing.send(pcm[offset : offset + 3200])
        await finishing.send(json.dumps({"type": "finalize"}))
        done = await read_all(finishing)
        assert done.milestones() == ["86"]
        assert done.close_code == 1000
        # The other one says nothing more and is told to go away when the budget ends.
        began = time.monotonic()
        gone = await read_all(lingering, timeout=5)
        assert gone.errors() == ["draining", "going_away"]
        assert gone.of_type("closed")[-1]["reason"] == "going_away"
        assert gone.close_code == 1001
        assert time.monotonic() - began < 2.5
        values = await scrape(gw)
        assert values[("dataflow_gateway_draining", ())] == 1
        assert values[("dataflow_gateway_denials_total", (("reason", "going_away"),))] == 1


@pytest.mark.ws
async def test_a_session_started_during_a_drain_is_told_once_it_has_started(gw: RunningGateway) -> None:
    """A connection accepted before the drain (it holds its slot) starts its session after the drain
    began: it is served for what is left of the budget, and told so right after `started`, once."""
    early = await ws_connect(gw.ws_url())
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        assert (await http.post("/internal/drain", params={"budget_s": 1.5})).status_code == 202
    await asyncio.sleep(0.7)
    await early.send(start_message())
    result = await read_all(early, timeout=5)
    kinds = [m["type"] if m["type"] != "error" else m["code"] for m in result.messages]
    assert kinds[0] == "started" and "draining" in kinds, kinds
    assert result.errors() == ["draining", "going_away"], kinds  # told once, then ended at the budget
    told = result.of_type("error")[0]["message"]
    left = float(re.search(r"finish within ([0-9.]+) s", told)[1])  # type: ignore[index]
    assert 0 < left <= 0.8, told  # what is left of the 1.5 s, not the whole budget
    assert result.close_code == 1001


OPS_TOKEN = "adm-7f3e-0c9d21a4"


async def test_drain_endpoint_needs_the_admin_token(simulator: DataflowSimulator) -> None:
    async with (
        running_gateway(settings_for(simulator, admin_token=OPS_TOKEN)) as gw,
        httpx.AsyncClient(base_url=gw.http_url) as http,
    ):
        assert (await http.post("/internal/drain")).status_code == 401
        assert (await http.post("/internal/drain", headers={"Authorization": "Bearer nope"})).status_code == 401
        assert gw.gateway.registry.draining is False
        # inf (or 1e999) drained for ever and held a later SIGTERM with it; nan closed every session at once.
        admin = {"Authorization": f"Bearer {OPS_TOKEN}"}
        for budget in ("inf", "1e999", "nan", "-1", "14401"):
            refused = await http.post("/internal/drain", params={"budget_s": budget}, headers=admin)
            assert refused.status_code == 422, (budget, refused.text)
            assert refused.json()["error"]["code"] == "bad_request"
            assert "from 0 to 14400" in refused.json()["error"]["message"]
        assert gw.gateway.registry.draining is False
        ok = await http.post("/internal/drain", headers=admin)
        assert ok.status_code == 202
        assert gw.gateway.registry.draining is True


async def test_a_web_page_cannot_drain_a_gateway_on_its_visitor_s_machine(simulator: DataflowSimulator) -> None:
    """Without an admin token a loopback caller may drain; a page on any site could make the visitor's
    browser POST to http://127.0.0.1:8080/internal/drain (a "simple" request: no preflight, the answer
    unread but the replica drained: 202). A request that carries an Origin is a browser's: refused."""
    async with running_gateway(settings_for(simulator)) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        for origin in ("https://evil.example", "null", gw.http_url):
            forged = await http.post("/internal/drain", headers={"Origin": origin, "Content-Type": "text/plain"})
            assert forged.status_code == 401, (origin, forged.status_code)
        assert gw.gateway.registry.draining is False
        assert (await http.post("/internal/drain")).status_code == 202  # the preStop hook (no Origin)
        assert gw.gateway.registry.draining is True


async def test_a_remote_caller_behind_a_trusted_proxy_cannot_drain_without_the_admin_token(
    simulator: DataflowSimulator,
) -> None:
    """Without an admin token only a loopback caller may drain: a caller the trusted proxy names as
    203.0.113.7 is remote though its socket is 127.0.0.1 (a mutant that took every caller for loopback
    let it drain the replica)."""
    settings = settings_for(simulator, trusted_proxies=["127.0.0.1"])
    async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        remote = await http.post("/internal/drain", headers={"X-Forwarded-For": "203.0.113.7"})
        assert remote.status_code == 401, remote.text
        assert gw.gateway.registry.draining is False
        local = await http.post("/internal/drain", headers={"X-Forwarded-For": "127.0.0.1"})
        assert local.status_code == 202, local.text  # the proxy on the same machine relaying a local hook
        assert gw.gateway.registry.draining is True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.ws
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
async def test_sigterm_drains_before_uvicorn_closes_sockets(tmp_path: Path, stop: signal.Signals) -> None:
    """A real `dataflow-gateway serve` process: SIGTERM (or Ctrl-C) gives live sessions 1001, not uvicorn's
    1012. SIGTERM ends the process by the signal, as uvicorn does; SIGINT with 130 and no traceback (it
    ended in a KeyboardInterrupt traceback)."""
    port = free_port()
    env = {**os.environ, "GATEWAY_PORT": str(port), "GATEWAY_DRAIN_BUDGET_S": "1", "GATEWAY_LOG_LEVEL": "warning"}
    env.pop("GATEWAY_UPSTREAM_TARGET", None)
    log_file = (tmp_path / "gateway.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=env, stderr=log_file, cwd=tmp_path)
    try:
        async with asyncio.timeout(20):
            while True:
                try:
                    async with httpx.AsyncClient() as http:
                        if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                            break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        async with ws_connect(f"ws://127.0.0.1:{port}/v1/stream") as ws:
            await ws.send(start_message())
            await next_message(ws, "started")
            process.send_signal(stop)
            result = await read_all(ws, timeout=10)
        assert result.errors() == ["draining", "going_away"]
        assert result.close_code == 1001
        assert await asyncio.to_thread(process.wait, 15) == (-stop if stop == signal.SIGTERM else 130)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log_file.close()
    logged = (tmp_path / "gateway.log").read_text()
    assert "draining" in logged
    assert "Traceback" not in logged and "KeyboardInterrupt" not in logged, logged[-2000:]


def test_a_client_invalid_utf8_frame_is_one_short_log_line() -> None:
    from gateway.observability import ClientMistakeFilter, logging_config

    config = logging_config("info", "json")
    assert "client_mistakes" in config["loggers"]["uvicorn.error"]["filters"]
    try:
        b"\xff".decode()
    except UnicodeDecodeError:
        exc_info = sys.exc_info()
    message = "Invalid UTF-8 sequence received from client."
    record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, message, None, exc_info)
    assert ClientMistakeFilter().filter(record)
    assert (record.levelname, record.exc_info) == ("INFO", None)
    other = logging.LogRecord(
        "uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application", None, exc_info
    )
    assert ClientMistakeFilter().filter(other)
    assert other.levelname == "ERROR"
    assert other.exc_info is not None
