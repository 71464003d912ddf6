"""A Data Flow-style multipart whose Audio part comes before any Parameters part, or has none at all
(``curl -F Audio=@call.wav``). GATEWAY_START_TIMEOUT_S bounds the wait for the Audio part to begin
and for its audio header, not the time the part is held until a Parameters part comes (or the body
ends): that is bounded per read of the body by GATEWAY_IDLE_TIMEOUT_S, and in size by the spool
budget. With the Start in ``X-Dataflow-Parameters`` nothing can come that would change it, so the
audio starts at its part, held nowhere. Before, holding the part counted against the start timeout
(a slowly sent Audio-only upload got 408 "the audio header did not arrive", though it had), an
Audio-only upload was always held whole, and past the budget it was told to send a Parameters part
it did not have."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.simulator.server import DataflowSimulator
from tests.support import signals
from tests.support.harness import GatewayFactory, RunningGateway
from tests.support.upload_client import URL, RawUpload, error_of, multipart, outcome, pieces

WAV = signals.wav_bytes(signals.utterances(["159", "#0*"], 8000, tail_ms=3000), 8000)  # ~160 KB
PARAMS = json.dumps({"ProjectName": "batch", "Language": "en-US"}).encode()
AUDIO_ONLY, CTYPE = multipart([("Audio", "call.wav", "audio/wav", WAV)])
AUDIO_FIRST, _ = multipart([("Audio", "call.wav", "audio/wav", WAV), ("Parameters", None, "application/json", PARAMS)])


async def post(gw: RunningGateway, content: object, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=60) as http:
        return await http.post(URL, content=content, headers={"content-type": CTYPE, **headers})  # type: ignore[arg-type]


@pytest.mark.parametrize("body", [AUDIO_ONLY, AUDIO_FIRST], ids=["audio-only", "audio-then-parameters"])
async def test_an_audio_part_held_longer_than_the_start_timeout_still_starts(
    gateway_factory: GatewayFactory, simulator: DataflowSimulator, body: bytes
) -> None:
    """Sent over ~2.5 s against a 1 s start timeout: the Audio part began at once, so it is not late."""
    async with gateway_factory(start_timeout_s=1.0) as gw:
        response = await post(gw, pieces(body, len(body) // 25 + 1, pause_s=0.1))
        spooled = gw.gateway.upload_spool.bytes
    assert response.status_code == 200, response.text
    assert response.json()["transcript"] == {"0": "159 #0*"}
    assert simulator.records[-1].project == ("batch" if body is AUDIO_FIRST else "demo")
    assert spooled == 0


async def stalled_after(gw: RunningGateway, sent: bytes) -> tuple[int, dict[str, str], float]:
    """Sends ``sent`` as the body's first chunk, then nothing: the status, error and seconds to the answer."""
    upload = await RawUpload.open(gw, headers={"Content-Type": CTYPE})
    try:
        await upload.send(sent)
        started = asyncio.get_running_loop().time()
        head = await upload.reader.readuntil(b"\r\n\r\n")
        took = asyncio.get_running_loop().time() - started
        length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
        error: dict[str, str] = json.loads(await upload.reader.readexactly(length))["error"]
        return int(head.split(b" ", 2)[1]), error, took
    finally:
        await upload.close()


async def test_the_start_timeout_still_bounds_the_wait_for_the_audio_part(gateway_factory: GatewayFactory) -> None:
    head = AUDIO_FIRST[: AUDIO_FIRST.index(b"Content-Type: audio/wav")]  # the Audio part's headers, cut short
    async with gateway_factory(start_timeout_s=0.5) as gw:
        status, error, took = await stalled_after(gw, head)
    assert (status, error["code"]) == (408, "start_timeout")
    assert error["message"] == "the multipart body's Audio part did not begin within 0.5 s"
    assert 0.4 < took < 2, took


async def test_a_held_audio_part_is_bounded_per_read_by_the_idle_timeout(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(start_timeout_s=0.5, idle_timeout_s=1.0) as gw:
        status, error, took = await stalled_after(gw, AUDIO_FIRST[:50_000])  # the Audio part began: it is held
        assert gw.gateway.upload_spool.bytes == 0  # what it held is given back
    assert (status, error["code"]) == (408, "idle_timeout")
    assert "held for a Parameters part" in error["message"] and "1 s" in error["message"]
    assert 0.9 < took < 3, took  # the start timeout (0.5 s) did not end it: the Audio part had begun


async def test_with_the_start_in_the_header_the_audio_starts_at_its_part(
    gateway_factory: GatewayFactory, simulator: DataflowSimulator
) -> None:
    """``X-Dataflow-Parameters``: nothing may come that changes the Start, so nothing is held: Data Flow
    has the audio while the body is still arriving, and a spool budget far smaller than the file is no limit."""
    release = asyncio.Event()

    async def held_back() -> AsyncIterator[bytes]:
        yield AUDIO_ONLY[:100_000]
        await release.wait()
        yield AUDIO_ONLY[100_000:]

    async with gateway_factory(upload_spool_bytes=16 * 1024) as gw:
        header = json.dumps({"ProjectName": "from-header"})
        answer = asyncio.create_task(post(gw, held_back(), **{"X-Dataflow-Parameters": header}))
        async with asyncio.timeout(10):
            while not simulator.records or simulator.records[-1].audio_bytes == 0:
                await asyncio.sleep(0.02)
        assert gw.gateway.upload_spool.bytes == 0
        release.set()
        response = await answer
    assert response.status_code == 200, response.text
    assert response.json()["transcript"] == {"0": "159 #0*"}
    assert simulator.records[-1].project == "from-header"


async def test_with_the_start_in_the_header_a_parameters_part_after_the_audio_is_refused(
    gw: RunningGateway, simulator: DataflowSimulator
) -> None:
    response = await post(gw, pieces(AUDIO_FIRST, 16 * 1024, pause_s=0.02), **{"X-Dataflow-Parameters": "{}"})
    message = error_of(response, 422, "invalid_multipart")
    assert "Parameters part came after the Audio part" in message
    assert await outcome(simulator) == "cancelled"  # never finalized as if the Start had been whole


async def test_an_audio_only_upload_past_the_spool_budget_is_told_what_happened(
    gateway_factory: GatewayFactory,
) -> None:
    async with gateway_factory(upload_spool_bytes=64 * 1024) as gw:
        message = error_of(await post(gw, pieces(AUDIO_ONLY, 16 * 1024)), 413, "upload_too_large")
        assert gw.gateway.upload_spool.bytes == 0
    assert "came before any Parameters part" in message and "or the body ends" in message
    assert "X-Dataflow-Parameters" in message and "65536 bytes" in message


async def test_an_audio_first_upload_one_byte_past_the_spool_budget_is_refused(
    gateway_factory: GatewayFactory,
) -> None:
    """The budget bounds what is held, the piece being taken included: audio one byte longer than
    GATEWAY_UPLOAD_SPOOL_BYTES is 413 ``upload_too_large``, audio of exactly the budget is held and
    recognised (a mutant checked only what was already held, so the last piece took it past the budget)."""
    async with gateway_factory(upload_spool_bytes=len(WAV) - 1) as gw:
        error_of(await post(gw, pieces(AUDIO_FIRST, 16 * 1024)), 413, "upload_too_large")
        assert gw.gateway.upload_spool.bytes == 0
    async with gateway_factory(upload_spool_bytes=len(WAV)) as gw:
        response = await post(gw, pieces(AUDIO_FIRST, 16 * 1024))
    assert response.status_code == 200, response.text
    assert response.json()["transcript"] == {"0": "159 #0*"}
