"""``Content-Encoding: deflate`` is one stream (RFC 9110 8.4.1.2): any byte after its end is a 422
``invalid_content_encoding``, however the body is chunked on the wire. Before, bytes after the end
were refused only when they came in the same chunk as the end: a second stream or zero padding in a
later chunk was silently accepted (gzip's member and padding rules were applied to deflate). gzip's
members and zero padding stay accepted in any chunking (tests/upload/test_coded_uploads.py)."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.simulator.server import DataflowSimulator
from tests.support import signals
from tests.support.harness import RunningGateway
from tests.support.upload_client import URL, outcome

WAV = signals.wav_bytes(signals.utterances(["123", "456"], 8000), 8000, "mulaw")
HALF = len(WAV) // 2


def deflated(data: bytes, wbits: int = zlib.MAX_WBITS) -> bytes:
    coder = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return coder.compress(data) + coder.flush()


async def sent(parts: list[bytes], pause_s: float) -> AsyncIterator[bytes]:
    """Each part its own HTTP chunk, with a pause after it so that the gateway reads it on its own."""
    for part in parts:
        yield part
        await asyncio.sleep(pause_s)


AFTER_THE_END = {
    "second-zlib-stream": (deflated(WAV[:HALF]), deflated(WAV[HALF:])),
    "second-raw-stream": (deflated(WAV[:HALF], -zlib.MAX_WBITS), deflated(WAV[HALF:], -zlib.MAX_WBITS)),
    "zero-padding": (deflated(WAV[:HALF]), bytes(16)),
    "one-zero-byte": (deflated(WAV[:HALF]), b"\0"),
    "text": (deflated(WAV[:HALF]), b"tail"),
}
CHUNKINGS = {
    "one-chunk": lambda first, rest: [first + rest],
    "split-at-the-end": lambda first, rest: [first, rest],
    "split-before-the-end": lambda first, rest: [first[:-3], first[-3:] + rest],
    "end-then-byte-by-byte": lambda first, rest: [first, *(rest[i : i + 1] for i in range(min(len(rest), 4)))],
}


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("name", list(AFTER_THE_END))
async def test_anything_after_the_deflate_stream_is_422_however_chunked(
    gw: RunningGateway, simulator: DataflowSimulator, name: str, chunking: str
) -> None:
    first, rest = AFTER_THE_END[name]
    parts = CHUNKINGS[chunking](first, rest)
    assert b"".join(parts).startswith(first) and len(b"".join(parts)) > len(first)
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
        response = await http.post(URL, content=sent(parts, 0.15), headers={"Content-Encoding": "deflate"})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_content_encoding"
    assert "after the end of the deflate stream" in error["message"]
    if simulator.records:  # the audio had started: cancelled, never finalized as if the file were whole
        assert await outcome(simulator) == "cancelled"
        assert simulator.records[-1].requests == []


@pytest.mark.parametrize(
    ("coding", "parts"),
    [
        ("deflate", [deflated(WAV)[:-3], deflated(WAV)[-3:]]),  # the stream's end in a later chunk: whole
        ("gzip", [gzip.compress(WAV[:HALF]), gzip.compress(WAV[HALF:])]),  # gzip: a member per chunk
        ("gzip", [gzip.compress(WAV), bytes(16)]),  # gzip: zero padding in a later chunk
    ],
    ids=["deflate-whole", "gzip-members", "gzip-padding"],
)
async def test_a_whole_deflate_stream_and_gzip_members_split_across_chunks_are_recognised(
    gw: RunningGateway, coding: str, parts: list[bytes]
) -> None:
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
        response = await http.post(URL, content=sent(parts, 0.15), headers={"Content-Encoding": coding})
    assert response.status_code == 200, response.text
    assert response.json()["transcript"] == {"0": "123 456"}
