"""A hostile Data Flow (tests/support/hostile_upstream.py, a real grpc.aio server) behind the real
gateway, seen by a real native WebSocket client: what it sends before its StartResponse is held only to
the session's outbox bounds, and the gateway's token does not come back to a client, escaped or not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.upstream.contract import ContentType
from gateway.upstream.early import EarlyItems
from tests.support.hostile_upstream import Flood, HostileUpstream, Peer, native_session

pytestmark = pytest.mark.ws

MiB = 1024 * 1024
#: A static token as .NET's System.Text.Json writes it back: ``+`` as ``\u002B``, ``/`` as ``\/``.
TOKEN = "Zm9v+YmFy/c2VjcmV0LXRva2Vu"  # a test's own token, no secret
ESCAPED = TOKEN.replace("+", "\\u002B").replace("/", "\\/")
START_OK = {"MessageName": "StartResponse", "operation-result": "success", "SessionId": "early-1"}


@pytest.fixture
def early_peak(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The most bytes any session held before its StartResponse (a one-item list, read after the run)."""
    peak = [0]
    add = EarlyItems.add

    def counted(self: EarlyItems, item: Any, size: int) -> None:
        add(self, item, size)
        peak[0] = max(peak[0], self.bytes)

    monkeypatch.setattr(EarlyItems, "add", counted)
    return peak


async def test_a_flood_before_the_start_response_is_refused_at_the_outbox_bound(early_peak: list[int]) -> None:
    # 256 events of 256 KiB (64 MiB) before StartResponse, with a 1 MiB outbox. Before: all 64 MiB were held (one
    # session grew from 117 MB to 1.7 GB in 8 s with a longer flood), then the session started.
    flood = Flood(256, 256 * 1024, before_start=True)
    async with HostileUpstream(flood) as upstream:
        first, transcript, took_s = await native_session(upstream, client_outbox_bytes=MiB)
    print(f"refused after {took_s:.2f} s; Data Flow wrote {flood.written} of {flood.count}; held {early_peak[0]} B")
    assert (first["type"], first.get("code"), first.get("retryable")) == ("error", "upstream_protocol_error", False)
    assert "before answering Start" in first["message"] and "GATEWAY_CLIENT_OUTBOX_BYTES" in first["message"]
    assert transcript.of_type("closed")[-1]["reason"] == "start_failed"
    assert not transcript.of_type("started") and not transcript.of_type("event")
    assert 3 * flood.size < early_peak[0] <= MiB  # held up to the bound, not one event over it
    assert flood.written < flood.count / 4  # the gateway hung up: Data Flow could not hand it the flood
    assert len(upstream.peers) == 1 and took_s < 5.0


async def test_too_many_small_messages_before_the_start_response_are_refused() -> None:
    flood = Flood(200, 10, before_start=True)
    async with HostileUpstream(flood) as upstream:
        first, _, _ = await native_session(upstream, client_event_queue=10)
    assert (first["type"], first.get("code")) == ("error", "upstream_protocol_error")
    assert "11 messages" in first["message"]


@pytest.mark.parametrize(
    ("count", "size", "limits"),
    [(10, 10, {"client_event_queue": 10}), (3, 300 * 1024, {"client_outbox_bytes": MiB})],
    ids=["count", "bytes"],
)
async def test_what_comes_before_the_start_response_within_the_bounds_is_all_relayed(
    count: int, size: int, limits: dict[str, Any], early_peak: list[int]
) -> None:
    flood = Flood(count, size, before_start=True)
    async with HostileUpstream(flood) as upstream:
        first, transcript, _ = await native_session(upstream, **limits)
    assert first["type"] == "started", first
    assert [m["data"]["N"] for m in transcript.events("Pad")] == list(range(count))
    assert transcript.of_type("closed")[-1]["reason"] == "finalized"
    assert early_peak[0] > size * (count - 1)


def strings(value: Any) -> Iterator[str]:
    """Every string in decoded JSON, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def leaked(messages: list[dict[str, Any]]) -> bool:
    """Whether the token is in what the client received, decoded or as sent (never shown: a bool)."""
    raw = json.dumps(messages)
    return any(TOKEN in s for s in strings(messages)) or TOKEN in raw or ESCAPED in raw


async def refuse_quoting_the_token(peer: Peer) -> None:
    start = await peer.read_start()
    assert start["Token"] == TOKEN
    refusal = '{"MessageName": "StartResponse", "operation-result": "invalid token ' + ESCAPED + '"}'
    assert json.loads(refusal)["operation-result"].endswith(TOKEN)  # valid JSON, the token decoded
    await peer.send_json(ContentType.RESPONSE, refusal)


async def test_a_refusal_quoting_the_escaped_token_does_not_hand_it_to_the_client() -> None:
    # Before: redacted in the raw text only, so "invalid token Zm9v\u002BYmFy\/..." reached the client
    # as upstream_auth_failed quoting the token, decoded.
    async with HostileUpstream(refuse_quoting_the_token) as upstream:
        first, transcript, _ = await native_session(upstream, upstream_token=TOKEN)
    assert (first["type"], first["code"]) == ("error", "upstream_auth_failed"), first["code"]
    quoted_redacted = first["message"].endswith("invalid token [redacted]")
    assert quoted_redacted  # (a bool: a failure must not print the token)
    assert not leaked([first, *transcript.messages])


async def echo_the_token_in_events(peer: Peer) -> None:
    before = '{"Name": "Echo", "Channel": 0, "Data": {"Before": "Bearer ' + ESCAPED + '"}}'
    await peer.read_start()
    await peer.send_json(ContentType.EVENT, before)  # held until the StartResponse
    await peer.send_json(ContentType.RESPONSE, START_OK)
    after = (
        '{"Name": "Echo", "Channel": 0, "Data": {"Value": "token=' + ESCAPED + '", "' + ESCAPED + '": 1, '
        '"List": ["x' + ESCAPED + 'y", {"Deep": "' + ESCAPED + '"}], "Plain": "caf\\u00e9"}}'
    )
    await peer.send_json(ContentType.EVENT, after)
    await peer.read_until_finalize()
    await peer.send_event("FinalResult")


async def test_events_echoing_the_escaped_token_reach_the_client_redacted() -> None:
    async with HostileUpstream(echo_the_token_in_events) as upstream:
        first, transcript, _ = await native_session(upstream, upstream_token=TOKEN)
    assert first["type"] == "started"
    before, after = (m["data"] for m in transcript.events("Echo"))
    redacted = before == {"Before": "Bearer [redacted]"} and after == {
        "Value": "token=[redacted]",
        "[redacted]": 1,
        "List": ["x[redacted]y", {"Deep": "[redacted]"}],
        "Plain": "café",
    }
    assert redacted  # (a bool: a failure must not print the token)
    assert transcript.of_type("closed")[-1]["reason"] == "finalized"
    assert not leaked([first, *transcript.messages])
