"""Hostile clients against a real gateway (issue: hardening): oversized heads, control-message floods,
client-chosen metric labels, operator paths under a path credential, a Data Flow that echoes the
gateway's token, audio budgets charged as audio is accepted, decompression bombs, forged forwarding
headers and foreign Host names. Each test carries the figure it guards."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import time
import tracemalloc

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.auth import key_digest
from gateway.simulator.faults import Fault
from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from tests.support import audio_files, signals
from tests.support.harness import read_all, running_gateway, ws_connect
from tests.support.native_client import start_message
from tests.support.settings import SECRETS, SIM_TENANT, SIM_TOKEN, settings_for

KEY = "dfg_hardening_5c1e9b7a3d2f40e8a6b4c2d0e9f8a7b6"
SECRETS.add(KEY)


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def raw_request(port: int, head: bytes, chunk: int = 64 * 1024) -> bytes:
    """Send ``head``; what the gateway answered (b"" if it reset the connection before we read)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for offset in range(0, len(head), chunk):
            writer.write(head[offset : offset + chunk])
            await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    except ConnectionError:
        return b""  # the gateway closed the connection mid-head
    finally:
        writer.close()


async def test_oversized_request_heads_get_431_and_memory_stays_flat(simulator: DataflowSimulator) -> None:
    async with running_gateway(settings_for(simulator)) as gw:
        normal = await raw_request(gw.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert normal.startswith(b"HTTP/1.1 200")
        over = b"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n"
        answer = await raw_request(gw.port, over, chunk=len(over))
        assert answer.startswith(b"HTTP/1.1 431") and b"request_head_too_large" in answer
        assert b"\r\nx-content-type-options: nosniff\r\n" in answer  # as every answer of the app
        before = rss_bytes()
        huge = b"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * (2 * 1024 * 1024) + b"\r\n\r\n"
        answers = await asyncio.gather(*(raw_request(gw.port, huge) for _ in range(300)))
        growth = rss_bytes() - before
        assert all(a.startswith(b"HTTP/1.1 431") or a == b"" for a in answers), {a[:20] for a in answers}
        assert growth < 50 * 1024 * 1024, f"RSS grew {growth / 2**20:.1f} MiB for 300 heads of 2 MiB"
        assert (await raw_request(gw.port, over, chunk=len(over))).startswith(b"HTTP/1.1 431")  # still serving


@pytest.mark.ws
class TestStalledDataflow:
    @pytest.fixture
    def sim_config(self) -> SimulatorConfig:
        return SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT, fault=Fault("stall", 200))

    async def test_event_flood_is_paused_and_bounded(self, simulator: DataflowSimulator) -> None:
        """20 MiB of 512 KiB events against a Data Flow that stopped reading: each is refused as too big (and
        paced by its length: 240 of them took ~37 s); events under the size limit fill the control budget,
        then the client is paused, then closed."""
        settings = settings_for(simulator, upstream_response_timeout_s=2.0, max_ws_message_bytes=1024 * 1024)
        async with running_gateway(settings) as gw:
            ws = await ws_connect(gw.ws_url(), ping_interval=None, max_size=None)
            await ws.send(start_message())
            big = json.dumps({"type": "event", "event": {"Name": "X", "Data": {"Pad": "a" * 512 * 1024}}})
            small = json.dumps({"type": "event", "event": {"Name": "X", "Data": {"Pad": "a" * 60 * 1024}}})
            before = rss_bytes()
            sent = 0

            async def flood() -> None:
                nonlocal sent
                for _ in range(40):  # 20 MiB, each over the size limit
                    await ws.send(big)
                    sent += len(big)
                for _ in range(2000):  # under it: they fill the control budget, then the client is paused
                    await ws.send(small)
                    sent += len(small)

            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait_for(flood(), 30)
            growth = rss_bytes() - before
            result = await read_all(ws, timeout=10)
            codes = result.errors()
            assert codes.count("message_too_big") >= 1
            assert growth < 50 * 1024 * 1024, f"RSS grew {growth / 2**20:.1f} MiB for {sent / 2**20:.0f} MiB sent"
            assert result.close_code == 1011 and "upstream_timeout" in codes


@pytest.mark.ws
async def test_client_chosen_event_names_do_not_become_metric_series(simulator: DataflowSimulator) -> None:
    async with running_gateway(settings_for(simulator)) as gw:
        async with ws_connect(gw.ws_url()) as ws:
            await ws.send(start_message())
            for i in range(3000):  # the simulator echoes custom events back
                await ws.send(json.dumps({"type": "event", "event": {"Name": f"custom-{i}", "Data": {}}}))
            await ws.send(json.dumps({"type": "finalize"}))
            result = await read_all(ws, timeout=30)
        assert len(result.events("custom-2999")) == 1  # relayed as they are
        async with httpx.AsyncClient(base_url=gw.http_url) as http:
            metrics = (await http.get("/metrics")).text
        assert len(metrics.encode()) < 64 * 1024
        assert 'dataflow_gateway_events_relayed_total{name="other"} 3000.0' in metrics
        assert "custom-" not in metrics


async def test_operator_endpoints_are_not_served_under_a_path_credential(simulator: DataflowSimulator) -> None:
    async with running_gateway(settings_for(simulator)) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        assert (await http.get("/metrics")).status_code == 200
        assert (await http.get(f"/t/{KEY}/metrics")).status_code == 404
        assert (await http.post(f"/t/{KEY}/internal/drain")).status_code in (404, 405)
        assert gw.gateway.registry.draining is False


@pytest.mark.ws
class TestCarelessDataflow:
    @pytest.fixture
    def sim_config(self) -> SimulatorConfig:
        return SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT, echo_token=True)

    async def test_the_gateway_token_never_reaches_a_client(self, simulator: DataflowSimulator) -> None:
        async with running_gateway(settings_for(simulator)) as gw:
            async with ws_connect(gw.ws_url()) as ws:
                await ws.send(start_message())
                await ws.send(signals.to_pcm16(signals.utterances(["12"], 16000)))
                await ws.send(json.dumps({"type": "finalize"}))
                streamed = await read_all(ws)
            async with ws_connect(gw.ws_url()) as ws:
                await ws.send(start_message(settings={"SimulatorFault": "reject_start"}))
                rejected = await read_all(ws)
        text = json.dumps(streamed.messages) + json.dumps(rejected.messages)
        assert streamed.milestones() == ["12"]
        assert "[redacted]" in text  # the simulator did echo it
        assert SIM_TOKEN not in text


class TestBudgets:
    async def test_uploads_are_charged_as_audio_is_accepted(self, simulator: DataflowSimulator) -> None:
        settings = settings_for(simulator, auth="required", allow_insecure_no_auth=False,
                                api_keys=[{"name": "small", "sha256": key_digest(KEY), "audio_seconds_per_minute": 5}],
                                ack_interval_ms=60_000)  # fmt: skip
        wav = signals.wav_bytes(signals.silence(8000 * 8, 8000), 8000)  # 8 s, far faster than any ticker
        async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
            headers = {"X-API-Key": KEY, "Content-Type": "audio/wav"}
            first = await http.post("/v1/recognize", headers=headers, content=wav)
            assert first.status_code == 429
            assert first.json()["error"]["code"] == "audio_budget_spent"
            assert "transcript" in first.json()  # the results before the limit are kept
            assert simulator.records[-1].audio_bytes <= 5 * 16000 * 2 + 640  # never past the budget (16 kHz)
            second = await http.post("/v1/recognize", headers=headers, content=wav)
            assert second.status_code == 429
            # The wait until the budget refills: the first upload's charges age out a minute after it.
            retry = int(second.headers["retry-after"])
            assert 55 <= retry <= 60, f"Retry-After {retry} s right after the budget was spent, not ~60"


async def test_a_decompression_bomb_gets_413_early(simulator: DataflowSimulator) -> None:
    """FLAC that decodes to 10 minutes of silence, against a 60 s limit."""
    bomb = audio_files.encoded(signals.silence(8000 * 600, 8000), 8000, "flac", "flac")
    assert len(bomb) * 5 < 8000 * 2 * 600  # it decodes to more than five times its size
    settings = settings_for(simulator, max_session_s=60)
    async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
        began = time.monotonic()
        answer = await http.post("/v1/recognize", headers={"Content-Type": "audio/flac"}, content=bomb)
        took = time.monotonic() - began
    assert answer.status_code == 413
    body = answer.json()
    assert body["error"]["code"] == "audio_too_long"
    assert body["audioMs"] > 0 and "events" in body
    assert simulator.records[-1].audio_bytes <= 60 * 16000 * 2  # nothing past the limit went upstream
    assert took < 20


async def test_forwarded_for_is_only_believed_from_a_trusted_proxy(simulator: DataflowSimulator) -> None:
    settings = settings_for(simulator, auth="required", allow_insecure_no_auth=False, auth_failures_per_minute=3,
                            api_keys=[{"name": "k", "sha256": key_digest(KEY)}])  # fmt: skip
    async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        statuses = []
        for i in range(5):  # a new forged address each time: still one client, 127.0.0.1
            forged = {"X-API-Key": f"dfg_guess_{i}", "X-Forwarded-For": f"203.0.113.{i}"}
            statuses.append((await http.post("/v1/recognize", headers=forged, content=b"")).status_code)
        assert statuses == [401, 401, 401, 429, 429]


@pytest.mark.ws
async def test_foreign_host_names_are_refused_without_auth(simulator: DataflowSimulator) -> None:
    """DNS rebinding: with auth off, a page on another name that resolves here gets nothing."""
    async with running_gateway(settings_for(simulator)) as gw:
        async with httpx.AsyncClient(base_url=gw.http_url) as http:
            assert (await http.get("/asyncapi.yaml", headers={"Host": "evil.example"})).status_code == 400
            assert (await http.get("/asyncapi.yaml")).status_code == 200
            assert (await http.get("/healthz", headers={"Host": "10.0.0.7:8080"})).status_code == 200  # probes
        with pytest.raises(InvalidStatus) as refused:
            await ws_connect(gw.ws_url(), additional_headers={"Host": "evil.example"}, origin="http://evil.example")
        assert refused.value.response.status_code in (400, 403)
    public = settings_for(simulator, public_hosts=["gw.example.com"])
    async with running_gateway(public) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        assert (await http.get("/asyncapi.yaml", headers={"Host": "gw.example.com"})).status_code == 200
        assert (await http.get("/asyncapi.yaml", headers={"Host": "other.example.com"})).status_code == 400


@pytest.mark.ws
async def test_finalize_then_gone_still_finishes_upstream(simulator: DataflowSimulator) -> None:
    """A client that sends finalize and closes at once has declared its audio complete: Data Flow gets it
    all and finalizes (bounded by the finalize timeout); without finalize, upstream is cancelled."""
    pcm = signals.to_pcm16(signals.utterances(["47", "1", "9"], 16000)) + bytes(16000 * 2 * 60)  # ~63 s
    async with running_gateway(settings_for(simulator, finalize_timeout_s=5, max_audio_rate_x=1000.0)) as gw:
        ws = await ws_connect(gw.ws_url(), ping_interval=None)
        await ws.send(start_message())
        async with asyncio.timeout(5):
            while json.loads(await ws.recv())["type"] != "started":
                pass
        for offset in range(0, len(pcm), 32000):
            await ws.send(pcm[offset : offset + 32000])
        await ws.send(json.dumps({"type": "finalize"}))
        await ws.close()  # at once, without waiting for results: the gateway is still writing audio upstream
        record = simulator.records[-1]
        async with asyncio.timeout(6):
            while record.ended_at is None:
                await asyncio.sleep(0.01)
        assert record.outcome == "finalized"
        assert record.audio_bytes == len(pcm)  # 16 kHz pcm16 in and upstream: every byte arrived
        async with asyncio.timeout(3):
            while gw.gateway.registry.active or gw.gateway.upstream.active_streams:
                await asyncio.sleep(0.01)


async def test_demo_file_names_a_client_asks_for_are_not_kept(simulator: DataflowSimulator) -> None:
    """Every /static/<name> asked for was memoised, found or not (unbounded, client-chosen keys: 1000
    made-up names of 250 characters kept 0.32 MB for the process's life), and a name longer than the file
    system allows was a 500 with a traceback. Only the page's own files are served and kept now."""
    async with (
        running_gateway(settings_for(simulator, demo_page=True)) as gw,
        httpx.AsyncClient(base_url=gw.http_url) as http,
    ):
        assert (await http.get("/static/demo.js")).status_code == 200
        assert (await http.get(f"/static/{'a' * 4000}.js")).status_code == 404  # was a 500
        logging.disable(logging.INFO)  # log records (kept by pytest and the secret check) are not the gateway's
        tracemalloc.start()
        try:
            for batch in ("warm", "measured"):  # the first fills the URL parsers' own bounded caches
                before = tracemalloc.take_snapshot()
                for i in range(1000):
                    assert (await http.get(f"/static/{batch}{i:04d}{'a' * 240}.js")).status_code == 404
                gc.collect()
                kept = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
        finally:
            tracemalloc.stop()
            logging.disable(logging.NOTSET)
        assert kept < 64 * 1024, kept
        assert (await http.get("/static/demo.js")).status_code == 200
