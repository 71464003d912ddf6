"""POST /v1/recognize with NDJSON / SSE answers, and clients that go away. Events must arrive while
the body is still being sent, and a vanished client must cancel the upstream stream within a second."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from gateway.simulator.server import DataflowSimulator
from tests.support import audio_files, signals
from tests.support.harness import GatewayFactory, RunningGateway
from tests.support.upload_client import URL, RawUpload, no_decoder_thread_left, pieces

NDJSON = {"accept": "application/x-ndjson"}


@pytest.fixture
def gw_settings() -> dict[str, Any]:
    return {"ack_interval_ms": 50}


@pytest.fixture
def gw_teardown() -> Callable[[], Awaitable[None]]:
    """``gw`` leaves no decoder thread behind."""
    return no_decoder_thread_left


async def ndjson(gw: RunningGateway, content: Any, **headers: str) -> list[dict[str, Any]]:
    async with (
        httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http,
        http.stream("POST", URL, content=content, headers={**NDJSON, **headers}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line) async for line in response.aiter_lines() if line]


async def test_ndjson_streams_events_and_progress(gw: RunningGateway) -> None:
    data = signals.wav_bytes(signals.utterances(["12", "34"], 8000, tail_ms=5000), 8000)
    messages = await ndjson(gw, pieces(data, 4096, pause_s=0.02))
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "started" and kinds[-1] == "result"
    assert messages[0]["audio"] == {"encoding": "pcm16", "sampleRate": 8000, "channels": 1}
    assert [m["text"] for m in messages if m["type"] == "event" and m["final"]] == ["12", "34"]
    assert messages[-1]["transcript"] == {"0": "12 34"}
    progress = [m for m in messages if m["type"] == "progress"]
    assert len(progress) >= 3, "progress must come periodically while the body streams in"
    assert [p["bytes"] for p in progress] == sorted(p["bytes"] for p in progress)
    assert progress[-1] == {**progress[-1], "bytes": len(data), "uploadComplete": True}
    assert progress[-1]["audioMs"] == messages[-1]["audioMs"]
    assert progress[0]["bytes"] < len(data) / 2


async def test_sse_has_the_same_messages(gw: RunningGateway) -> None:
    data = signals.wav_bytes(signals.utterances(["7"], 8000), 8000)
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        response = await http.post(URL, content=data, headers={"accept": "text/event-stream"})
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in response.text.split("\n\n") if b]
    parsed = []
    for block in blocks:
        event, data_line = block.split("\n")
        assert event.startswith("event: ") and data_line.startswith("data: ")
        message = json.loads(data_line[6:])
        assert message["type"] == event[7:]
        parsed.append(message)
    assert parsed[0]["type"] == "started" and parsed[-1]["type"] == "result"
    assert parsed[-1]["transcript"] == {"0": "7"}


async def test_events_arrive_while_the_body_is_still_being_sent(gw: RunningGateway) -> None:
    data = signals.wav_bytes(signals.utterances(["12", "34"], 8000), 8000)
    first_half = 44 + 2 * 8 * (300 + 320 + 600)  # header + lead + "12" + most of the pause, in bytes
    upload = await RawUpload.open(gw, headers={**NDJSON, "content-type": "audio/wav"})
    await upload.send(data[:first_half])
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        while not any(m.get("text") == "12" and m.get("final") for m in seen):
            message = await upload.next_message()
            assert message is not None
            seen.append(message)
    assert upload.status == 200
    await upload.send(data[first_half:])
    await upload.end()
    while (message := await upload.next_message()) is not None:
        seen.append(message)
    await upload.close()
    assert seen[-1]["type"] == "result" and seen[-1]["transcript"] == {"0": "12 34"}


async def test_failure_after_the_200_is_the_last_line(gateway_factory: GatewayFactory) -> None:
    data = signals.wav_bytes(signals.silence(10_000, 8000), 8000)
    async with gateway_factory(max_upload_bytes=64 * 1024) as gw:
        messages = await ndjson(gw, pieces(data, 8192))
    assert messages[0]["type"] == "started"
    assert messages[-1] == {"type": "error", "code": "upload_too_large", "message": messages[-1]["message"],
                            "retryable": False}  # fmt: skip


async def test_decoder_failure_after_the_200_is_the_last_line(gw: RunningGateway) -> None:
    messages = await ndjson(gw, audio_files.chained_ogg())
    assert messages[0]["type"] == "started"
    assert messages[-1]["type"] == "error" and messages[-1]["code"] == "unsupported_audio_format"


async def vanish_mid_upload(gw: RunningGateway, simulator: DataflowSimulator, data: bytes, **headers: str) -> None:
    upload = await RawUpload.open(gw, headers=headers)
    await upload.send(data[: len(data) // 2])
    async with asyncio.timeout(5):
        while not simulator.records or simulator.records[-1].audio_bytes == 0:
            await asyncio.sleep(0.01)
    record = simulator.records[-1]
    gone_at = time.monotonic()
    upload.vanish()
    async with asyncio.timeout(1.0):
        while simulator.active or gw.gateway.registry.active or gw.gateway.upstream.active_streams:
            await asyncio.sleep(0.01)
    assert time.monotonic() - gone_at < 1.0
    assert record.outcome == "cancelled" and record.requests == []  # never finalized: cancelled


@pytest.mark.parametrize("accept", ["application/json", "application/x-ndjson"])
async def test_client_vanishing_mid_upload_cancels_upstream(
    gw: RunningGateway, simulator: DataflowSimulator, accept: str
) -> None:
    data = signals.wav_bytes(signals.utterances(["1"] * 30, 8000), 8000)
    await vanish_mid_upload(gw, simulator, data, accept=accept)


async def test_client_vanishing_mid_decode_cancels_upstream_and_decoder(
    gw: RunningGateway, simulator: DataflowSimulator
) -> None:
    data = audio_files.encoded(signals.utterances(["1"] * 60, 16000), 16000, "flac", "flac")
    await vanish_mid_upload(gw, simulator, data)


async def test_client_vanishing_while_waiting_for_the_result_cancels_upstream(
    gw: RunningGateway, simulator: DataflowSimulator
) -> None:
    data = signals.wav_bytes(signals.utterances(["1"], 8000), 8000)
    params = json.dumps({"Settings": {"SimulatorFault": "stall:0"}})  # Data Flow never answers Finalize
    upload = await RawUpload.open(gw, headers={"X-Dataflow-Parameters": params})
    await upload.send(data)
    await upload.end()
    async with asyncio.timeout(5):
        while (
            getattr(
                next(iter(gw.gateway.registry.leases), None) and next(iter(gw.gateway.registry.leases)).drainable,
                "state",
                "",
            )
            != "finalizing"
        ):
            await asyncio.sleep(0.01)
    upload.vanish()
    async with asyncio.timeout(1.0):
        while simulator.active or gw.gateway.upstream.active_streams or gw.gateway.registry.active:
            await asyncio.sleep(0.01)
