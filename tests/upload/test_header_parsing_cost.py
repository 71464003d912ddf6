"""POST /v1/recognize with a WAV header of many small chunks, the shape of the audit's attack (RIFF, fmt,
then empty JUNK chunks dribbled in): recognised, for work linear in the header; over the header limit
still the documented 415. Real uvicorn on port 0, the simulator over gRPC, httpx as the client."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.audio.containers import HEADER_LIMIT
from tests.audio.work import lines_run
from tests.support import audio_files, signals
from tests.support.harness import GatewayFactory
from tests.support.upload_client import URL, no_decoder_thread_left, pieces

JUNK = b"JUNK\0\0\0\0"


@pytest.fixture
async def client(gateway_factory: GatewayFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_factory() as gw, httpx.AsyncClient(base_url=gw.http_url, timeout=60) as http:
        yield http
    await no_decoder_thread_left()


def with_junk(wav: bytes, junk: bytes, at: int) -> bytes:
    """``wav`` with ``junk`` (whole chunks) inserted at byte ``at``, its RIFF size kept right."""
    riff_size = struct.unpack_from("<I", wav, 4)[0] + len(junk)
    return wav[:4] + struct.pack("<I", riff_size) + wav[8:at] + junk + wav[at:]


async def dribbled(body: bytes, start: int, end: int, piece: int) -> AsyncIterator[bytes]:
    """``body`` with its bytes from ``start`` to ``end`` a ``piece`` at a time, each on its own (a pause)."""
    yield body[:start]
    async for chunk in pieces(body[start:end], piece, pause_s=0.002):
        yield chunk
    yield body[end:]


async def test_a_header_of_many_chunks_dribbled_in_costs_work_linear_in_its_size(client: httpx.AsyncClient) -> None:
    wav = signals.wav_bytes(signals.utterances(["37"], 8000), 8000)
    fmt_end = 12 + 8 + 16
    body = with_junk(wav, JUNK * (256 * 1024 // 8), fmt_end)
    data_start = len(body) - len(wav) + fmt_end
    with lines_run() as lines:
        response = await client.post(URL, content=dribbled(body, 192 * 1024, data_start, 1024))
    assert response.status_code == 200, response.text
    assert response.json()["transcript"] == {"0": "37"}
    # Each chunk read once, a few lines: well under a line per byte. Re-parsing the held header on each
    # of the 64 pieces ran some 40 lines per byte.
    assert lines.run < 2 * len(body), (lines.run, len(body))


async def test_a_header_over_the_limit_is_still_the_documented_415(client: httpx.AsyncClient) -> None:
    wav = signals.wav_bytes(signals.utterances(["1"], 8000), 8000)
    body = with_junk(wav, JUNK * (HEADER_LIMIT // 8), 12 + 8 + 16)
    response = await client.post(URL, content=pieces(body, 64 * 1024))
    assert response.status_code == 415, response.text
    error = response.json()["error"]
    assert error["code"] == "unsupported_audio_format"
    assert f"no audio data within the first {HEADER_LIMIT} bytes of the header" in error["message"]


async def test_a_wav_for_the_decoder_with_chunks_skipped_before_fmt_is_decoded(client: httpx.AsyncClient) -> None:
    samples = signals.utterances(["159"], 16000)
    adpcm = audio_files.encoded(samples, 16000, "wav", "adpcm_ima_wav")
    junk = JUNK * 500 + b"LIST\x05\0\0\0INFOx\0" + b"bext" + struct.pack("<I", 602) + bytes(602)
    response = await client.post(URL, content=pieces(with_junk(adpcm, junk, 12), 1000))
    assert response.status_code == 200, response.text
    assert response.json()["transcript"] == {"0": "159"}
