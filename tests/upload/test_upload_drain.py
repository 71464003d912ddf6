"""A drain and an upload that holds its slot before its session exists: a multipart whose Audio part comes
before its Parameters, sent slowly, so the upload is still reading its body's opening.

Such an upload got its drain hook only once its session existed: the drain waited its whole budget for
the slot, could tell it nothing, logged "0 sessions were closed with going_away", and uvicorn's shutdown
timeout cancelled the request (a bare 500, "Exception in ASGI application"). Now it is drainable from
the moment it holds its slot: during the notice phase it keeps waiting (it was accepted before the
drain, and is served if its opening comes in time, told of the drain), and at the budget's end it is
answered as an upload refused during a drain is, 503 ``going_away`` with ``Retry-After``.

The client is a raw socket: httpx reads no answer before it has sent the whole body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

import httpx
import pytest

from tests.support import signals
from tests.support.harness import GatewayFactory, RunningGateway
from tests.support.upload_client import RawUpload, multipart

WAV = signals.wav_bytes(signals.utterances(["159"], 8000), 8000)
PARAMS = json.dumps({"ProjectName": "batch", "Language": "en-US"}).encode()
AUDIO_FIRST, CTYPE = multipart(
    [("Audio", "call.wav", "audio/wav", WAV), ("Parameters", None, "application/json", PARAMS)]
)
OPENING = AUDIO_FIRST[: AUDIO_FIRST.index(b"RIFF") + 1000]  # the Audio part has begun: it is held for Parameters
BUDGET_S = 1.5


async def trickle(upload: RawUpload) -> None:
    """One byte of the Audio part every 0.2 s, for ever: each read is well within the idle timeout."""
    with contextlib.suppress(ConnectionError):
        while True:
            await asyncio.sleep(0.2)
            await upload.send(b"\0")


async def answer_of(upload: RawUpload) -> tuple[int, dict[str, str], bytes]:
    """(status, head's fields, body) of a whole (content-length) answer."""
    head = await upload.reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").strip().split("\r\n")
    fields = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    return int(status_line.split(" ", 2)[1]), fields, await upload.reader.readexactly(int(fields["content-length"]))


async def holding_its_slot(gw: RunningGateway, content_type: str = CTYPE, opening: bytes = OPENING) -> RawUpload:
    upload = await RawUpload.open(gw, headers={"Content-Type": content_type})
    await upload.send(opening)
    spooled = content_type == CTYPE  # a multipart's Audio part is held (spooled) until its Parameters come
    async with asyncio.timeout(5):
        while not gw.gateway.registry.active or (spooled and not gw.gateway.upload_spool.bytes):
            await asyncio.sleep(0.01)
    return upload


async def drain(gw: RunningGateway, budget_s: float) -> None:
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        assert (await http.post("/internal/drain", params={"budget_s": budget_s})).status_code == 202


@pytest.mark.parametrize("held", ["multipart-audio-first", "raw-wav-header-cut"])
async def test_an_upload_still_reading_its_opening_is_sent_away_with_going_away_at_the_budget(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture, held: str
) -> None:
    """The Audio part trickles in (held for its Parameters); or a raw WAV body stops inside its header,
    which the start timeout (longer than the drain here) would end."""
    caplog.set_level(logging.INFO)
    async with gateway_factory(idle_timeout_s=5.0, start_timeout_s=30.0, client_send_timeout_s=2.0) as gw:
        if held == "multipart-audio-first":
            upload = await holding_its_slot(gw)
            sending = asyncio.create_task(trickle(upload))
        else:
            upload = await holding_its_slot(gw, "audio/wav", WAV[:20])
            sending = asyncio.create_task(asyncio.sleep(0))
        try:
            began = time.monotonic()
            await drain(gw, BUDGET_S)
            async with asyncio.timeout(BUDGET_S + 2.0):  # the budget, then the goodbye at once
                status, fields, body = await answer_of(upload)
            took = time.monotonic() - began
            async with asyncio.timeout(5):
                await gw.gateway.drain()  # the drain itself ends: its last line is written
            held = gw.gateway.registry.active
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            await upload.close()
    assert status == 503, body
    error = json.loads(body)["error"]
    assert error["code"] == "going_away" and error["retryable"] is True, error
    assert error["message"] == "this gateway replica is shutting down; reconnect to be served by another"
    assert fields["retry-after"] == "1" and fields["content-type"] == "application/json"
    assert BUDGET_S - 0.2 < took < BUDGET_S + 1.0, took  # it kept waiting through the notice phase
    assert held == 0
    messages = [r.getMessage() for r in caplog.records]
    assert "drained: 1 connections were sent away with going_away (upload 1); 0 slots still held" in messages
    assert [m for r, m in zip(caplog.records, messages, strict=True) if r.levelno >= logging.ERROR] == []


async def test_an_upload_whose_opening_comes_during_the_notice_phase_is_served_and_told(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Accepted before the drain, it starts during it: served for what is left of the budget (like a
    WebSocket connection that starts its session during a drain), with the drain's notice as a warning."""
    async with gateway_factory(idle_timeout_s=5.0) as gw:
        upload = await holding_its_slot(gw)
        try:
            await drain(gw, 5.0)
            await asyncio.sleep(0.3)
            await upload.send(AUDIO_FIRST[len(OPENING) :])
            await upload.end()
            async with asyncio.timeout(5):
                status, _, body = await answer_of(upload)
        finally:
            await upload.close()
    assert status == 200, body
    answer = json.loads(body)
    assert answer["transcript"] == {"0": "159"}
    draining = [w for w in answer["warnings"] if w["code"] == "draining"]
    assert len(draining) == 1 and "finish within" in draining[0]["message"], answer["warnings"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
