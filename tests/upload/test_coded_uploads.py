"""POST /v1/recognize with a coded body (``Content-Encoding``): gzip and deflate are inflated as they
stream, bounded by the upload cap once inflated; any other coding is refused before the body is read
(415 with ``Accept-Encoding``); a coded body that does not inflate is a clear error with Data Flow's
stream cancelled. Before, the coding was ignored: a gzipped WAV was refused as unknown audio."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from gateway.simulator.server import DataflowSimulator
from gateway.upload.coding import PIECE_BYTES
from tests.support import signals
from tests.support.harness import GatewayFactory, RunningGateway
from tests.support.upload_client import URL, error_of, multipart, no_decoder_thread_left, outcome, pieces

WAV = signals.wav_bytes(signals.utterances(["12"], 8000), 8000)


@pytest.fixture
def gw_teardown() -> Callable[[], Awaitable[None]]:
    return no_decoder_thread_left


def deflated(data: bytes, wbits: int) -> bytes:
    coder = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return coder.compress(data) + coder.flush()


async def post(gw: RunningGateway, content: Any, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
        return await http.post(URL, content=content, headers=headers)


CODED = {
    "gzip": ("gzip", gzip.compress(WAV)),
    "x-gzip": ("x-gzip", gzip.compress(WAV)),
    "GZIP-upper": ("GZIP", gzip.compress(WAV)),
    "deflate-zlib": ("deflate", deflated(WAV, zlib.MAX_WBITS)),  # as RFC 9110 defines deflate
    "deflate-raw": ("deflate", deflated(WAV, -zlib.MAX_WBITS)),  # as some clients send it
    "gzip-two-members": ("gzip", gzip.compress(WAV[:1001]) + gzip.compress(WAV[1001:])),
    "with-identity": ("identity, gzip", gzip.compress(WAV)),
    # Zero bytes after a member are padding, as gzip(1) and Python's gzip module take them (tape blocks).
    "gzip-zero-padded": ("gzip", gzip.compress(WAV[:1001]) + bytes(700) + gzip.compress(WAV[1001:]) + bytes(3000)),
}


@pytest.mark.parametrize("piece", [1 << 20, 7, 1], ids=["whole", "7-byte-pieces", "1-byte-pieces"])
@pytest.mark.parametrize("name", list(CODED))
async def test_a_coded_wav_is_recognised_as_the_plain_one(gw: RunningGateway, name: str, piece: int) -> None:
    coding, body = CODED[name]
    assert body != WAV
    response = await post(gw, pieces(body, piece), **{"Content-Encoding": coding})
    assert response.status_code == 200, response.text
    assert response.json()["transcript"] == {"0": "12"}
    assert response.json()["audioMs"] == pytest.approx(1520, abs=1)


async def test_a_coded_data_flow_multipart_is_inflated_before_its_parts_are_read(gw: RunningGateway) -> None:
    """Headerless audio whose format only the (compressed) Parameters part declares."""
    pcm = signals.to_pcm16(signals.utterances(["12"], 8000))
    parameters = b'{"Audio": {"Encoding": "pcm", "SampleRate": 8000}}'
    body, ctype = multipart(
        [("Parameters", None, "application/json", parameters), ("Audio", "a.raw", "application/octet-stream", pcm)]
    )
    response = await post(gw, pieces(gzip.compress(body), 333), **{"Content-Encoding": "gzip", "content-type": ctype})
    assert response.status_code == 200, response.text
    assert response.json()["transcript"] == {"0": "12"}


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, gzip", "deflate, gzip", "gzip;q=1", "x" * 300])
async def test_another_coding_is_refused_before_the_body_is_read(
    gw: RunningGateway, simulator: DataflowSimulator, coding: str
) -> None:
    response = await post(gw, gzip.compress(WAV), **{"Content-Encoding": coding})
    message = error_of(response, 415, "unsupported_content_encoding")
    assert response.headers["accept-encoding"] == "gzip, deflate"
    assert "gzip or deflate" in message and len(message) < 160  # a long coding is quoted cut short
    assert not simulator.records  # Data Flow was never asked


async def test_codings_in_two_header_fields_are_both_seen(gw: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
        headers = [("Content-Encoding", "gzip"), ("Content-Encoding", "gzip")]
        response = await http.post(URL, content=gzip.compress(gzip.compress(WAV)), headers=headers)
    error_of(response, 415, "unsupported_content_encoding")


CORRUPT = {
    "cut-short": ("gzip", gzip.compress(WAV)[:-500], "ends before its stream does"),
    "bad-bytes": ("gzip", gzip.compress(WAV)[:40] + bytes(4000), "cannot be inflated"),
    "not-gzip": ("gzip", WAV, "cannot be inflated"),
    "deflate-then-more": ("deflate", deflated(WAV, zlib.MAX_WBITS) + b"tail", "after the end of the deflate stream"),
    "one-byte-deflate": ("deflate", b"\x78", "ends before its stream does"),
    "padding-then-garbage": ("gzip", gzip.compress(WAV) + bytes(10) + b"tail", "cannot be inflated"),
    "padding-first": ("gzip", bytes(10) + gzip.compress(WAV), "cannot be inflated"),
}


@pytest.mark.parametrize("name", list(CORRUPT))
async def test_a_body_that_does_not_inflate_is_422_and_data_flow_is_not_finalized(
    gw: RunningGateway, simulator: DataflowSimulator, name: str
) -> None:
    coding, body, why = CORRUPT[name]
    message = error_of(await post(gw, body, **{"Content-Encoding": coding}), 422, "invalid_content_encoding")
    assert why in message
    if simulator.records:  # the audio had started: its stream is cancelled, never finalized as if complete
        assert await outcome(simulator) == "cancelled"
        assert simulator.records[-1].requests == []


async def test_an_empty_coded_body_is_refused_as_empty(gw: RunningGateway) -> None:
    error_of(await post(gw, b"", **{"Content-Encoding": "gzip"}), 422, "empty_body")


async def test_a_coded_body_is_bounded_by_the_cap_once_inflated(
    gateway_factory: GatewayFactory, simulator: DataflowSimulator
) -> None:
    """64 MiB of silence gzipped to ~64 KiB: under the 2 MiB cap as sent, over it once inflated. It is
    refused when the inflated bytes pass the cap, not after inflating them all."""
    cap = 2 * 1024 * 1024
    silence = signals.wav_bytes(signals.silence(4_194_000, 8000), 8000)  # 8 kHz pcm16: 16 bytes a ms
    bomb = gzip.compress(silence)
    assert len(bomb) < cap // 8
    async with gateway_factory(max_upload_bytes=cap) as gw:
        message = error_of(await post(gw, bomb, **{"Content-Encoding": "gzip"}), 413, "upload_too_large")
        assert "once inflated" in message
        assert await outcome(simulator) == "cancelled"
        assert simulator.records[-1].audio_bytes <= 2 * (cap + PIECE_BYTES)  # 8 kHz in, 16 kHz upstream
