"""What an upload holds for its client is bounded. JSON: the events kept for the one answer stop at
GATEWAY_CLIENT_OUTBOX_BYTES of JSON and the rest is counted (``eventsDropped``), the transcript whole.
NDJSON: a client that sends its whole body before reading slows the upload down over TCP instead
of filling the session's queue, and gets every result (it used to get a reset and no byte)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import tracemalloc

import httpx
import pytest

from gateway.simulator.server import DataflowSimulator
from tests.support.harness import gateway_factory_for
from tests.support.upload_client import BLOCK, BLOCK_S, FAST, URL, ndjson_lines, read_answer, send_body, wav_head

MiB = 1024 * 1024


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


def encoded_size(event: dict[str, object]) -> int:
    """An event's bytes in the JSON answer (compact, UTF-8)."""
    return len(json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode())


async def test_json_answer_leaves_out_every_event_after_the_first_left_out(simulator: DataflowSimulator) -> None:
    """At a bound where an event does not fit but the smaller one after it would, the answer still stops
    at the first event left out: ``events`` is a prefix of the stream (a mutant kept filling the space
    with later, smaller events, so a Speech Started came without the SR Milestone before it)."""
    data = wav(6)
    async with (
        gateway_factory_for(simulator)(**FAST) as gw,
        httpx.AsyncClient(base_url=gw.http_url, timeout=60) as http,
    ):
        streamed = await http.post(
            f"{URL}?raw=true&interim=true", content=data, headers={"accept": "application/x-ndjson"}
        )
    every = [m for m in (json.loads(line) for line in streamed.text.splitlines() if line) if m["type"] == "event"]
    sizes = [encoded_size(e) for e in every]
    held = 0  # the bytes of events 0..i-1, each with its separator
    for i in range(len(sizes) - 1):
        low, high = max(64 * 1024, held + sizes[i + 1] + 1), held + sizes[i]  # i does not fit, i+1 would
        if sizes[i + 1] < sizes[i] and low <= high:
            bound, cut = (low + high) // 2, i
            break
        held += sizes[i] + 1
    else:
        pytest.fail(f"no event followed by a smaller one past 64 KiB: {sizes}")
    async with (
        gateway_factory_for(simulator)(client_outbox_bytes=bound, **FAST) as gw,
        httpx.AsyncClient(base_url=gw.http_url, timeout=60) as http,
    ):
        body = (await http.post(f"{URL}?raw=true&interim=true", content=data)).json()
    kept = [(e["name"], e["startMs"], e["text"]) for e in body["events"]]
    assert kept == [(e["name"], e["startMs"], e["text"]) for e in every[:cut]], "a prefix, up to the first left out"
    assert body["eventsDropped"] == len(every) - cut


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
