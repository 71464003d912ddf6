"""A chunked request body may end with trailer fields (RFC 9112 7.1.2). uvicorn added each one to the
headers of the request already under way, without any bound: an upload ending in 50 MB of trailer fields
grew a gateway process by 500 MB and was then answered 200. Now trailer fields are dropped (ASGI has no
place for them; RFC 9110 6.5.1 lets a recipient discard them), and a trailer section over
GATEWAY_MAX_REQUEST_HEAD_BYTES ends the request like a head that large: 431 ``request_head_too_large``,
or, when the answer is already streaming, the connection. Real uvicorn on port 0, the simulator over
gRPC, a raw socket as the client."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest

from gateway.connections.http import BoundedHeadProtocol
from gateway.simulator.server import DataflowSimulator
from tests.support import signals
from tests.support.harness import RunningGateway
from tests.support.probes import wait_for
from tests.support.upload_client import no_decoder_thread_left

HEAD_LIMIT = 4096  # GATEWAY_MAX_REQUEST_HEAD_BYTES for these gateways
FIELD = b"x-trailer: " + b"v" * 21 + b"\r\n"  # 34 bytes


@pytest.fixture
def gw_settings() -> dict[str, Any]:
    return {"max_request_head_bytes": HEAD_LIMIT}


def upload_head(gw: RunningGateway, accept: str) -> bytes:
    return (
        f"POST /v1/recognize HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nContent-Type: audio/wav\r\n"
        f"Accept: {accept}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The status and everything after the head, up to the end of the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), await reader.read()


async def read_answer_whole(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The status and body of a ``content-length`` answer."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return int(head.split(b" ", 2)[1]), await reader.readexactly(length)


async def send_all(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Sends ``data``; a gateway that closed meanwhile is no failure here."""
    writer.write(data)
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def upload_whole(gw: RunningGateway, after_head: bytes) -> tuple[int, bytes]:
    """A JSON upload of ``after_head`` (its chunked body): the answer's status and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(upload_head(gw, "application/json") + after_head)
        await writer.drain()
        async with asyncio.timeout(30):
            return await read_answer_whole(reader)
    finally:
        writer.close()


async def test_trailer_fields_within_the_limit_are_dropped_and_the_upload_answered(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers_at_end: list[list[bytes]] = []  # the request's header names once its body is complete
    complete = BoundedHeadProtocol.on_message_complete

    def recording(self: BoundedHeadProtocol) -> None:
        headers_at_end.append([name for name, _ in self.headers])
        complete(self)

    monkeypatch.setattr(BoundedHeadProtocol, "on_message_complete", recording)
    wav = signals.wav_bytes(signals.utterances(["48"], 8000), 8000)
    trailers = FIELD * 20 + b"x-checksum: 0123abcd\r\n\r\n"  # 702 bytes
    status, rest = await upload_whole(gw, b"%x\r\n" % len(wav) + wav + b"\r\n0\r\n" + trailers)
    assert status == 200, (status, rest[:200])
    assert json.loads(rest)["transcript"] == {"0": "48"}
    assert headers_at_end == [[b"host", b"content-type", b"accept", b"transfer-encoding"]]  # none of the trailer
    await no_decoder_thread_left()


FLOODS = {  # 2 MiB of trailer section each, then its end
    "many-fields": FIELD * (2 * 1024 * 1024 // len(FIELD)) + b"\r\n",
    "one-endless-field": b"x-trailer: " + b"v" * 2 * 1024 * 1024 + b"\r\n\r\n",  # the parser gathers a field whole
}


async def upload_to_its_last_chunk(
    gw: RunningGateway, accept: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An upload of one digit sent up to its last chunk: its trailer section is the caller's."""
    wav = signals.wav_bytes(signals.utterances(["7"], 8000), 8000)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(upload_head(gw, accept) + b"%x\r\n" % len(wav) + wav + b"\r\n0\r\n")
    await writer.drain()
    return reader, writer


@pytest.mark.parametrize("flood", FLOODS)
async def test_a_trailer_section_over_the_limit_is_a_431_and_the_session_released(
    gw: RunningGateway, simulator: DataflowSimulator, flood: str
) -> None:
    reader, writer = await upload_to_its_last_chunk(gw, "application/json")
    try:
        await wait_for(lambda: bool(simulator.records) and simulator.records[-1].audio_bytes > 0, timeout=10)
        sending = asyncio.create_task(send_all(writer, FLOODS[flood]))  # the old code held it all, then 200
        async with asyncio.timeout(10):
            status, rest = await read_answer(reader)
        await sending
    finally:
        writer.close()
    assert status == 431, (status, rest[:200])
    error = json.loads(rest)["error"]
    assert error["code"] == "request_head_too_large" and "trailer" in error["message"], error
    await wait_for(lambda: not gw.gateway.registry.active and not simulator.active, timeout=5)
    assert simulator.records[-1].outcome == "cancelled"
    await no_decoder_thread_left()


async def test_a_trailer_section_over_the_limit_ends_an_answer_already_streaming(
    gw: RunningGateway, simulator: DataflowSimulator
) -> None:
    """An NDJSON answer has started: no 431 goes into it; the connection ends, the session is released."""
    reader, writer = await upload_to_its_last_chunk(gw, "application/x-ndjson")
    try:
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        sending = asyncio.create_task(send_all(writer, FLOODS["many-fields"]))
        async with asyncio.timeout(10):
            rest = await reader.read()  # to the end of the connection
        await sending
    finally:
        writer.close()
    assert b'"type":"result"' not in rest and not rest.endswith(b"0\r\n\r\n"), rest[-200:]  # cut, not finished
    await wait_for(lambda: not gw.gateway.registry.active and not simulator.active, timeout=5)
    await no_decoder_thread_left()


@pytest.mark.parametrize("gw", [{"max_request_head_bytes": 1024}], indirect=True)
@pytest.mark.parametrize("chunk", [1, 1000, 4091, 4096, 70_000])
async def test_chunks_that_straddle_the_parse_slices_are_no_trailer_section(gw: RunningGateway, chunk: int) -> None:
    """At the smallest head limit, a body whose chunks' size lines fall anywhere in a read's 4 KiB parse
    slices is all chunk data: nothing of it counts as trailer fields."""
    wav = signals.wav_bytes(signals.utterances(["3"], 8000), 8000)
    body = b"".join(
        b"%x\r\n" % len(wav[i : i + chunk]) + wav[i : i + chunk] + b"\r\n" for i in range(0, len(wav), chunk)
    )
    status, rest = await upload_whole(gw, body + b"0\r\n\r\n")
    assert status == 200, (status, rest[:200])
    assert json.loads(rest)["transcript"] == {"0": "3"}
