"""/v1/stream never sends a client's text back at length: a pong echoes only a short id, and an error
quotes client text cut short. Otherwise a client that never reads could park megabytes per message in
its outbox (real gateway, simulator over gRPC, websockets client)."""

from __future__ import annotations

import json

import pytest

from tests.support.harness import RunningGateway, Transcript, next_message, read_all, ws_connect
from tests.support.native_client import start_message

pytestmark = pytest.mark.ws  # opens WebSockets: runs with the fast path on and off

LONG = "x" * 100_000
#: Long, yet under GATEWAY_MAX_CONTROL_MESSAGE_BYTES (64 KiB) even eight times over: before the start a
#: message over it is refused unread (message_too_big: tests/security/test_start_bounds.py).
LONG_BEFORE_START = "x" * 6_000


async def test_a_pong_echoes_only_a_short_scalar_id(gw: RunningGateway) -> None:
    echoed = ["y" * 128, 7, 2.5, True, None]
    refused = ["z" * 129, LONG, {"a": 1}, [1], 10**200]
    result = Transcript()
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(json.dumps({"type": "ping", "id": LONG_BEFORE_START}))  # before start: refused the same way
        await ws.send(json.dumps({"type": "ping", "id": "early"}))
        await ws.send(start_message())
        await next_message(ws, "started", skipped=result)
        for ping_id in [*refused, *echoed]:
            await ws.send(json.dumps({"type": "ping", "id": ping_id}))
        await ws.send(json.dumps({"type": "finalize"}))
        await read_all(ws, result)
    answers = [m for m in result.messages if m["type"] in ("pong", "error")]
    assert [m.get("id", m.get("code")) for m in answers] == [
        "invalid_message", "early", *["invalid_message"] * len(refused), *echoed,
    ]  # fmt: skip
    assert all(len(json.dumps(m)) < 400 for m in answers)  # nothing came back at length
    assert "ping.id" in answers[0]["message"]
    assert result.close_code == 1000  # a refused ping leaves the session as it is


async def test_errors_quote_client_text_cut_short(gw: RunningGateway) -> None:
    result = Transcript()
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(json.dumps({"type": LONG_BEFORE_START}))
        await ws.send(json.dumps({"type": "start", "audio": {"encoding": LONG_BEFORE_START}}))
        await ws.send(json.dumps({"type": "start", **{f"{n}{LONG_BEFORE_START}": 1 for n in range(8)}}))
        await ws.send(start_message())
        await next_message(ws, "started", skipped=result)
        await ws.send(json.dumps({"type": LONG}))
        await ws.send(json.dumps({"type": [LONG] * 5}))
        await ws.send(json.dumps({"type": "finalize"}))
        await read_all(ws, result)
    assert result.errors() == [
        "not_started", "unsupported_audio_format", "invalid_start", "unknown_message_type", "unknown_message_type",
    ]  # fmt: skip
    for error in result.of_type("error"):
        assert len(error["message"]) < 1000, error["message"][:200]  # five problems of an invalid start at most
        assert "…" in error["message"] or "..." in error["message"], error["message"]  # marked as cut
    invalid_start = result.of_type("error")[2]["message"]
    assert invalid_start.endswith("(and 3 more)"), invalid_start  # 8 extra keys, 5 listed
    assert result.close_code == 1000
