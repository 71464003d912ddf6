"""What an upload holds for its client is bounded. JSON: the events kept for the one answer stop at
GATEWAY_CLIENT_OUTBOX_BYTES of JSON and the rest is counted (``eventsDropped``), the transcript whole.
NDJSON: a client that sends its whole body before reading slows the upload down over TCP instead
of filling the session's queue, and gets every result (it used to get a reset and no byte)."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
import tracemalloc
from typing import Any

import httpx
import numpy as np

from gateway.simulator.server import DataflowSimulator
from tests.support import signals
from tests.support.harness import gateway_factory_for
from tests.support.upload_client import URL

RATE = 8000
BLOCK_S = 5
BLOCK = signals.to_pcm16(np.concatenate([signals.dtmf("1234", RATE), signals.silence(BLOCK_S * 1000 - 640, RATE)]))
DENSE = signals.to_pcm16(np.concatenate([signals.dtmf("1234", RATE), signals.silence(360, RATE)]))  # 1 s
MiB = 1024 * 1024
FAST = {"upstream_coalesce_ms": 1000, "upstream_sample_rate_hz": 8000}  # fewer upstream messages, same path


def wav_head(minutes: int, block: bytes = BLOCK) -> bytes:
    size = minutes * 60 * RATE * 2 // len(block) * len(block)
    fmt = struct.pack("<HHIIHH", 1, 1, RATE, RATE * 2, 2, 16)
    riff = b"RIFF" + struct.pack("<I", 36 + size) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
    return riff + b"data" + struct.pack("<I", size)


def wav(minutes: int) -> bytes:
    return wav_head(minutes) + BLOCK * (minutes * 60 // BLOCK_S)


async def test_json_answer_keeps_events_up_to_the_bound_and_says_how_many_it_left_out(
    simulator: DataflowSimulator,
) -> None:
    bound = 64 * 1024
    data = wav(6)  # 72 blocks: ~130 KiB of events with raw and interim
    async with (
        gateway_factory_for(simulator)(client_outbox_bytes=bound, **FAST) as gw,
        httpx.AsyncClient(base_url=gw.http_url, timeout=60) as http,
    ):
        streamed = await http.post(
            f"{URL}?raw=true&interim=true", content=data, headers={"accept": "application/x-ndjson"}
        )
        answer = await http.post(f"{URL}?raw=true&interim=true", content=data)
        small = await http.post(URL, content=wav(1))
    every = [json.loads(line) for line in streamed.text.splitlines() if line]
    every = [m for m in every if m["type"] == "event"]
    assert len(json.dumps(every, separators=(",", ":"))) > 1.5 * bound  # the bound is really reached
    assert answer.status_code == 200
    body = answer.json()
    assert body["transcript"] == {"0": " ".join(["1234"] * 72)}, "the transcript stays whole"
    assert body["eventsDropped"] > 0
    assert len(body["events"]) + body["eventsDropped"] == len(every)
    assert len(json.dumps(body["events"], separators=(",", ":"))) <= bound
    kept = [(e["name"], e["startMs"], e["text"]) for e in body["events"]]
    assert kept == [(e["name"], e["startMs"], e["text"]) for e in every[: len(kept)]], "a prefix, in order"
    assert small.status_code == 200
    assert small.json()["eventsDropped"] == 0
    assert small.json()["transcript"] == {"0": " ".join(["1234"] * 12)}


async def send_body(sock: socket.socket, minutes: int, sent: list[float]) -> None:
    loop = asyncio.get_running_loop()
    head = wav_head(minutes, DENSE)
    request = (
        f"POST {URL}?interim=true&raw=true HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/x-ndjson\r\n"
        f"Content-Type: audio/wav\r\nContent-Length: {len(head) + minutes * 60 * len(DENSE)}\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode() + head)
    for _ in range(minutes * 60):  # the body made as it goes: neither side holds the file
        await loop.sock_sendall(sock, DENSE)
        sent[0] = time.monotonic()


async def read_answer(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    answer = bytearray()
    while not answer.endswith(b"\r\n0\r\n\r\n"):
        piece = await loop.sock_recv(sock, 65536)
        if not piece:
            break
        answer += piece
    return bytes(answer)


def ndjson_lines(answer: bytes) -> list[dict[str, Any]]:
    head, _, chunked = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    text = b""
    while chunked:
        size_line, _, rest = chunked.partition(b"\r\n")
        size = int(size_line, 16)
        text, chunked = text + rest[:size], rest[size + 2 :]
    return [json.loads(line) for line in text.split(b"\n") if line]


async def test_a_client_that_sends_everything_before_reading_gets_every_result(simulator: DataflowSimulator) -> None:
    minutes = 45  # ~5 MiB of answer: more than the kernel's socket buffers take
    settings = {"client_send_timeout_s": 4.0, **FAST}
    async with gateway_factory_for(simulator)(**settings) as gw:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gw.port))
        tracemalloc.start()
        try:
            sent = [time.monotonic()]
            sender = asyncio.create_task(send_body(sock, minutes, sent))
            # Reads nothing while its sending goes on; only once that has been stuck for 2 s (curl -T's
            # and most clients' way), well inside GATEWAY_CLIENT_SEND_TIMEOUT_S.
            while not sender.done() and time.monotonic() - sent[0] < 2.0:
                await asyncio.sleep(0.1)
            async with asyncio.timeout(120):
                answer, sending = await asyncio.gather(read_answer(sock), sender, return_exceptions=True)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            sock.close()
        samples = gw.gateway.metrics.sessions_ended.collect()[0].samples
        ended = [s.labels["outcome"] for s in samples if s.name.endswith("_total") and s.value]
    assert sending is None, f"sending the body failed: {sending!r}"
    assert isinstance(answer, bytes), f"reading the answer failed: {answer!r}"
    messages = ndjson_lines(answer)
    assert [m["type"] for m in messages if m["type"] in ("error", "result")] == ["result"], messages[-1]
    assert messages[-1]["transcript"] == {"0": " ".join(["1234"] * (minutes * 60))}
    assert messages[-1]["audioMs"] == minutes * 60 * 1000
    assert len([m for m in messages if m["type"] == "event" and m["final"]]) == minutes * 60
    assert ended == ["finalized"]
    # The client's own copies of its ~5 MiB answer are in it (measured 10.5 MiB): the 43 MB body is not.
    assert peak < 16 * MiB, f"gateway and client held {peak / MiB:.1f} MiB for a 43 MB body"
