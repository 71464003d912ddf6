"""What an AudioHook server sends stays within the rate Genesys takes: 5 messages a second in bursts of up
to 25 (as the connectors built for Genesys configure it: joravkumar/GCTranscriptionConnector-Google,
config.py ``GENESYS_MSG_RATE_LIMIT``/``GENESYS_MSG_BURST_LIMIT``), and a client ``error`` 429 with
``retryAfter`` (purecloudlabs/audiohook-reference-implementation, app/audiohook/src/protocol/message.ts:
"Used by client rate limiter (429)") pauses partials. Every partial of a stereo call went out, and a
429 was only logged. Partials past the rate are skipped (the next one or the final replaces them in
place); finals and pongs always go."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.adapters import audiohook
from gateway.adapters.audiohook_events import MAX_BACKOFF_S, SEND_BURST, SEND_PER_S, SendRate
from gateway.adapters.socket import Frame
from gateway.dataflow.messages import MILESTONE, PARTIAL, DataflowEvent
from tests.support.audiohook_client import EXTERNAL, INTERNAL, finals, opened_client, stereo_dtmf
from tests.support.harness import RunningGateway

SESSION = "00000000-0000-4000-8000-000000000001"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def opened_dialect(clock: Clock) -> audiohook.AudioHookDialect:
    dialect = audiohook.AudioHookDialect("demo", session_id=SESSION)
    dialect.waiting(client_message(1, "open", {
        "organizationId": "o", "conversationId": "c",
        "media": [{"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}],
    }))  # fmt: skip
    dialect.sends = SendRate(clock)
    return dialect


def client_message(seq: int, kind: str, parameters: dict[str, Any]) -> str:
    return json.dumps({"version": "2", "id": SESSION, "type": kind, "seq": seq, "serverseq": 0,
                       "position": "PT0S", "parameters": parameters})  # fmt: skip


def event(name: str, n: int, channel: int = 0) -> DataflowEvent:
    return DataflowEvent(name, channel, 0, 500, f"u{n // 10}", [], {"Text": f"words {n}"}, {})


def sent_events(frames: list[Frame]) -> list[dict[str, Any]]:
    return [f["parameters"]["entities"][0]["data"] for f in frames if isinstance(f, dict) and f["type"] == "event"]


def test_partials_past_the_burst_are_skipped_and_finals_always_go() -> None:
    clock = Clock()
    dialect = opened_dialect(clock)
    frames = [frame for n in range(100) for frame in dialect.render(event(PARTIAL, n, n % 2))]
    assert len(sent_events(frames)) == SEND_BURST  # at one instant: the burst, no more
    finals = [frame for n in range(10) for frame in dialect.render(event(MILESTONE, n))]
    assert [e["isFinal"] for e in sent_events(finals)] == [True] * 10  # over the rate, still sent
    clock.now += 1 + 10 / SEND_PER_S  # the finals' share paid back, then a second's worth
    frames = [frame for n in range(100) for frame in dialect.render(event(PARTIAL, n))]
    assert len(sent_events(frames)) == SEND_PER_S
    assert dialect.sends.skipped == 100 - SEND_BURST + 100 - SEND_PER_S
    seqs = [f["seq"] for f in frames + finals if isinstance(f, dict)]
    assert len(set(seqs)) == len(seqs), "a skipped partial takes no seq"


def test_a_429_pauses_partials_for_its_retry_after() -> None:
    clock = Clock()
    dialect = opened_dialect(clock)
    assert (
        dialect.streaming(client_message(2, "error", {"code": 429, "message": "slow down", "retryAfter": "PT2S"}))
        is None
    )
    assert dialect.render(event(PARTIAL, 1)) == ()
    assert sent_events(list(dialect.render(event(MILESTONE, 1)))) != []  # a final is never held back
    clock.now += 1.9
    assert dialect.render(event(PARTIAL, 2)) == ()
    clock.now += 0.2
    assert len(sent_events(list(dialect.render(event(PARTIAL, 3))))) == 1


def test_a_429_without_a_usable_retry_after_pauses_a_second_and_a_huge_one_is_bounded() -> None:
    clock = Clock()
    dialect = opened_dialect(clock)
    dialect.streaming(client_message(2, "error", {"code": 429, "message": "slow down", "retryAfter": "soon"}))
    clock.now += 0.9
    assert dialect.render(event(PARTIAL, 1)) == ()
    clock.now += 0.2
    assert dialect.render(event(PARTIAL, 2)) != ()
    dialect.streaming(client_message(3, "error", {"code": 429, "message": "slow down", "retryAfter": "PT86400S"}))
    clock.now += MAX_BACKOFF_S + 0.1
    assert dialect.render(event(PARTIAL, 3)) != ()


def test_pongs_always_go_and_count() -> None:
    clock = Clock()
    dialect = opened_dialect(clock)
    pongs = [dialect.render({"type": "pong", "parameters": {}}) for _ in range(SEND_BURST)]
    assert all(len(p) == 1 for p in pongs)
    assert dialect.render(event(PARTIAL, 1)) == ()  # the burst went to pongs


@pytest.mark.ws
async def test_over_the_socket_a_429_leaves_the_finals_and_holds_the_partials(gw: RunningGateway) -> None:
    """Against the real gateway and simulator: partials of both channels flow until the client's 429;
    after it (retryAfter 60 s) only finals come, every one of them."""
    ws, client = await opened_client(gw)
    try:
        await client.recv()  # opened
        await client.send("error", {"code": 429, "message": "Too many requests", "retryAfter": "PT60S"})
        await client.audio(stereo_dtmf("PCMU"))
        await client.send("close", {"reason": "end"})
        messages = await client.until("closed")
    finally:
        await ws.close()
    transcripts = [e["data"] for m in messages if m["type"] == "event" for e in m["parameters"]["entities"]]
    assert [t for t in transcripts if not t["isFinal"]] == []
    assert finals(messages) == {0: [EXTERNAL], 1: [INTERNAL]}
    assert [m["seq"] for m in messages] == list(range(2, 2 + len(messages)))  # no seq lost to a skipped one
