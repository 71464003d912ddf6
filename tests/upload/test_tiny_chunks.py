"""POST /v1/recognize with a chunked body of one-byte chunks (six bytes on the wire per byte of audio),
sent as fast as the socket takes it: the shape of a hostile or broken client, not of curl or a browser.

uvicorn parsed each read (up to 256 KiB) whole in one callback, one Python call per chunk, and grew the
request's body by copying it for every chunk: a 256 KiB read of one-byte chunks held the event loop
~54 ms, every session on the process with it. Now a read is parsed a slice at a time, at most
``BODY_PIECES_PER_TURN`` chunks in one turn of the loop, and a turn's chunks reach the request as one
piece. Real uvicorn on port 0, the simulator over gRPC, a raw socket as the client.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import pytest

from gateway.connections.http import BoundedHeadProtocol
from gateway.connections.sliced import BODY_PIECES_PER_TURN, PARSE_SLICE_BYTES
from gateway.simulator.server import DataflowSimulator
from tests.support import signals
from tests.support.harness import RunningGateway
from tests.support.probes import LoopLag, figure
from tests.support.upload_client import RawUpload, no_decoder_thread_left


def one_byte_chunks(data: bytes) -> bytes:
    return b"".join(b"1\r\n" + data[i : i + 1] + b"\r\n" for i in range(len(data))) + b"0\r\n\r\n"


async def test_a_body_in_one_byte_chunks_is_parsed_a_slice_per_turn_and_arrives_whole(
    gw: RunningGateway, simulator: DataflowSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    turn = 0  # turns of the event loop so far
    chunks_in_turn: collections.Counter[int] = collections.Counter()  # parser body callbacks per turn
    on_body = BoundedHeadProtocol.on_body

    def counting(self: BoundedHeadProtocol, body: bytes) -> None:
        chunks_in_turn[turn] += 1
        on_body(self, body)

    async def turning() -> None:
        nonlocal turn
        while True:
            turn += 1
            await asyncio.sleep(0)

    monkeypatch.setattr(BoundedHeadProtocol, "on_body", counting)
    wav = signals.wav_bytes(signals.utterances(["159", "26"], 8000), 8000)
    wire = one_byte_chunks(wav)
    counter = asyncio.create_task(turning())
    upload = await RawUpload.open(gw, headers={"accept": "application/x-ndjson", "content-type": "audio/wav"})
    messages: list[dict[str, Any]] = []
    try:
        async with LoopLag() as lag, asyncio.timeout(60):
            began = time.monotonic()
            upload.writer.write(wire)  # all at once: the kernel's buffers fill, reads come full
            sending = asyncio.create_task(upload.writer.drain())
            while (message := await upload.next_message()) is not None:
                messages.append(message)
            took = time.monotonic() - began
            await sending
    finally:
        counter.cancel()
        await upload.close()
    await no_decoder_thread_left()
    most = max(chunks_in_turn.values())
    figure("tiny_chunks", f"{len(wav)} B of audio in {len(wire)} B of one-byte chunks taken in {took:.2f} s; "
           f"at most {most} chunks parsed in one turn; worst loop stall {lag.worst * 1000:.0f} ms")  # fmt: skip
    assert upload.status == 200
    assert messages[-1]["type"] == "result" and messages[-1]["transcript"] == {"0": "159 26"}, messages[-1]
    assert simulator.records[-1].audio_bytes == len(wav) - 44  # every sample reached Data Flow
    # A turn stops at the first slice that takes it past the budget (was a whole read: ~43 000).
    assert most <= BODY_PIECES_PER_TURN + PARSE_SLICE_BYTES // len(b"1\r\nx\r\n") + 1, most
    assert sum(chunks_in_turn.values()) >= len(wav)
