"""A Data Flow that misbehaves on purpose (tests/support/hostile_upstream.py), behind the real gateway,
seen by a real native WebSocket client: what it sends is bounded and typed before it reaches anyone."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import unicodedata
from typing import Any

import grpc
import pytest
from websockets.exceptions import ConnectionClosed

from gateway.upstream.contract import ContentType
from tests.support.harness import read_all, running_gateway, ws_connect
from tests.support.hostile_upstream import Behaviour, Flood, HostileUpstream, Peer, native_session
from tests.support.native_client import start_message
from tests.support.non_readers import live_sessions, small_window_socket

pytestmark = pytest.mark.ws

MiB = 1024 * 1024
FORGED = "\x1b[2J\r\n2026-01-01 INFO forged line \u202e\x00"


def printable(text: str) -> bool:
    return not any(unicodedata.category(c) in ("Cc", "Cf") for c in text)


def answered_then(then: Behaviour) -> Behaviour:
    async def behaviour(peer: Peer) -> None:
        await peer.answer_start()
        await then(peer)

    return behaviour


async def huge_event(peer: Peer) -> None:
    # After Finalize: with a write of the gateway's in flight, gRPC core may end the call INTERNAL instead.
    await peer.read_until_finalize()
    await peer.send_event("SR Milestone", Text="x" * (5 * MiB))  # over the default 4 MiB receive limit


async def huge_trailers(peer: Peer) -> None:
    await peer.read_until_finalize()
    await peer.context.abort(grpc.StatusCode.INTERNAL, "y" * 100_000)  # over gRPC's 16 KiB metadata limit


@pytest.mark.parametrize("behaviour", [huge_event, huge_trailers], ids=["event", "trailers"])
async def test_a_message_over_a_grpc_size_limit_is_a_protocol_error_and_not_retried(behaviour: Behaviour) -> None:
    # Before: RESOURCE_EXHAUSTED read as an outage: 5 more streams opened (the audio replayed to each),
    # 3.8 s, then upstream_unavailable, retryable, so the client repeated it all.
    async with HostileUpstream(answered_then(behaviour)) as upstream:
        first, transcript, took_s = await native_session(upstream)
    assert first["type"] == "started"
    error = transcript.of_type("error")[-1]
    assert (error["code"], error["retryable"]) == ("upstream_protocol_error", False), error
    assert "GATEWAY_UPSTREAM_MAX_MESSAGE_BYTES" in error["message"] and len(error["message"]) < 400
    assert transcript.close_code == 1011
    assert len(upstream.peers) == 1 and took_s < 2.0


async def refuse_with_a_page(peer: Peer) -> None:
    await peer.read_start()
    refusal = "no such project " + FORGED + "B" * (2 * MiB)
    await peer.send_json(ContentType.RESPONSE, {"MessageName": "StartResponse", "operation-result": refusal})


async def test_a_refusal_of_megabytes_reaches_the_client_cut_short_and_printable() -> None:
    # Before: the whole 2 MiB refusal was the error message: a client with websockets' default 1 MiB
    # frame limit saw only a 1009 close, and every other one got the forged line and escapes as sent.
    async with HostileUpstream(refuse_with_a_page) as upstream:
        first, transcript, _ = await native_session(upstream)
    assert (first["type"], first["code"]) == ("error", "upstream_rejected")
    message = first["message"]
    assert message.startswith("Data Flow rejected the session: no such project")
    assert len(message) < 300 and printable(message), message
    assert transcript.of_type("closed")[-1]["reason"] == "start_failed"


async def test_a_session_id_of_megabytes_is_cut_short_and_printable() -> None:
    async def long_id(peer: Peer) -> None:
        await peer.answer_start(session_id=FORGED + "s" * (2 * MiB))
        await peer.read_until_finalize()
        await peer.send_event("FinalResult")

    # Before: the 2 MiB id went out in ``started`` (and in each of the session's log lines).
    async with HostileUpstream(long_id) as upstream:
        first, transcript, _ = await native_session(upstream)
    assert first["type"] == "started"
    assert len(first["dataflowSessionId"]) <= 129 and printable(first["dataflowSessionId"])
    assert transcript.of_type("closed")[-1]["reason"] == "finalized"


async def test_status_details_are_quoted_without_control_characters() -> None:
    async def forged_details(peer: Peer) -> None:
        await peer.read_until_finalize()
        await peer.context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad " + FORGED)

    async with HostileUpstream(answered_then(forged_details)) as upstream:
        _, transcript, _ = await native_session(upstream)
    error = transcript.of_type("error")[-1]
    assert error["code"] == "upstream_rejected"
    assert "forged line" in error["message"] and printable(error["message"]), error


async def test_a_flood_to_a_client_that_reads_nothing_is_bounded_by_the_outbox_and_flow_control() -> None:
    # The gateway holds at most its outbox bound; the rest waits in HTTP/2 windows, and Data Flow's writes
    # block: of 25 MiB, gRPC took about 4 (64 events) before the session ended client_too_slow.
    flood = Flood(400, 64 * 1024)
    settings = {"client_outbox_bytes": MiB, "client_send_timeout_s": 1.0}
    async with HostileUpstream(flood) as upstream, running_gateway(upstream.settings(**settings)) as gw:
        async with ws_connect(gw.ws_url(), max_size=None, max_queue=1, sock=small_window_socket(gw.port)) as ws:
            await ws.send(start_message())
            ws.transport.pause_reading()
            began = time.monotonic()
            async with asyncio.timeout(10):
                while not (sessions := live_sessions(gw)):
                    await asyncio.sleep(0.01)
                session = sessions.pop()
                closed = await session.wait_closed()
            ended_s = time.monotonic() - began
            await asyncio.sleep(0.5)  # what Data Flow could still write after the session ended
            ws.transport.resume_reading()
            transcript = await read_all(ws)
        peak = gw.gateway.outbox_budget.peak
    print(f"ended after {ended_s:.2f} s; Data Flow wrote {flood.written} of {flood.count}; held {peak / MiB:.2f} MiB")
    assert (closed.reason, transcript.close_code) == ("client_too_slow", 1008)
    assert transcript.errors()[-1:] == ["client_too_slow"]
    assert ended_s < 4.0
    assert peak <= MiB + flood.size
    assert flood.written < flood.count / 2  # flow control held Data Flow back: the gateway did not read it all


async def test_a_burst_faster_than_the_client_reads_is_slowed_at_the_upstream_not_fatal() -> None:
    # 16 MiB in 64 events at once, to a client that reads one every 40 ms (about 6 MiB/s) through a small
    # receive window. Before: the gateway read Data Flow as fast as gRPC let it, into the 1 MiB outbox, and
    # ended the session client_too_slow after 13 of the 64 events.
    flood = Flood(64, 256 * 1024)
    settings = {"client_outbox_bytes": MiB, "client_send_timeout_s": 5.0}
    async with HostileUpstream(flood) as upstream, running_gateway(upstream.settings(**settings)) as gw:
        async with ws_connect(gw.ws_url(), max_size=None, sock=small_window_socket(gw.port)) as ws:
            await ws.send(start_message())
            got: list[dict[str, Any]] = []
            with contextlib.suppress(ConnectionClosed):
                async for frame in ws:
                    message = json.loads(frame)
                    got.append(message)
                    if message["type"] == "event" and message["data"].get("N") == flood.count - 1:
                        await ws.send(json.dumps({"type": "finalize"}))
                    await asyncio.sleep(0.04)
        peak = gw.gateway.outbox_budget.peak
    pads = [m["data"]["N"] for m in got if m["type"] == "event" and m["name"] == "Pad"]
    assert pads == list(range(flood.count)), [m for m in got if m["type"] in ("error", "closed")]
    assert got[-1] == {"type": "closed", "reason": "finalized", "audioMs": 0.0}
    assert peak <= MiB + flood.size + 4096  # the outbox's bound: one item may always wait behind a full one
