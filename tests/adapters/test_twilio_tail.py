"""/v1/twilio: a both-tracks call's held audio is delivered when it ends (``stop`` or hang-up), and
what the dialect keeps of the start message for the call's life is bounded."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from gateway.adapters import commands
from gateway.adapters.call_results import MAX_IDENTITY_CHARS
from gateway.adapters.twilio import TwilioDialect
from gateway.adapters.twilio_tracks import TwoTracks
from tests.support import signals, telephony
from tests.support.harness import GatewayFactory, read_all, ws_connect
from tests.support.twilio_webhooks import WEBHOOK_SECRET, hooks
from tests.support.webhook_receiver import webhook_receiver

BIG = 200_000  # characters of a parameter nobody reads; each DEL would be 4 in a repr()


def caller_media(digits: str, tail_ms: int) -> tuple[list[str], float]:
    """The caller's track only (the played one stays silent), as Twilio frames; and its length in ms."""
    audio = signals.g711_encode(signals.utterances([digits], 8000, tail_ms=tail_ms), "mulaw")
    frames = [
        json.dumps({"event": "media", "streamSid": telephony.STREAM_SID,
                    "media": {"track": "inbound", "chunk": str(n + 1), "timestamp": str(n * 20),
                              "payload": base64.b64encode(audio[o : o + 160]).decode()}})
        for n, o in enumerate(range(0, len(audio), 160))
    ]  # fmt: skip
    return frames, len(audio) / 8


@pytest.mark.ws
@pytest.mark.parametrize(
    ("tail_ms", "ending"),
    [(100, "stop"), (900, "stop"), (100, "hang_up")],  # 880 ms: all of it held; 1680 ms: its last second
)
async def test_both_tracks_deliver_all_the_callers_audio_when_the_call_ends(
    gateway_factory: GatewayFactory, tail_ms: int, ending: str
) -> None:
    frames, sent_ms = caller_media("123", tail_ms)
    async with webhook_receiver(WEBHOOK_SECRET) as receiver, gateway_factory(**hooks(receiver)) as gw:
        async with ws_connect(gw.ws_url("/v1/twilio")) as ws:
            await ws.send(telephony.twilio_connected())
            await ws.send(telephony.twilio_start(tracks=["inbound", "outbound"]))
            for frame in frames:
                await ws.send(frame)
            if ending == "stop":
                await ws.send(telephony.twilio_stop())
                assert (await read_all(ws, timeout=15)).close_code == 1000
            else:
                await asyncio.sleep(0.2)  # then the socket closes: Twilio hung up without a stop
        await receiver.wait_for(lambda r: bool(r.payloads("summary")))
    summary = receiver.payloads("summary")[0]
    assert summary["ended"]["audioMs"] == sent_ms, summary  # the played track padded to the caller's length
    assert summary["transcript"] == [{"channel": 0, "text": "123"}], summary
    assert summary["ended"]["reason"] == "finalized"


def test_flush_pads_the_shorter_track_and_hands_over_everything_held() -> None:
    tracks = TwoTracks()
    assert tracks.feed(0, 0, b"\x01" * 320) == b""  # the played track has nothing yet
    assert tracks.feed(1, 0, b"\x02" * 160) == b"\x01\x02" * 160
    assert tracks.flush() == b"\x01\xff" * 160  # the caller's rest, silence beside it
    assert tracks.flush() == b""
    assert tracks.feed(1, 40, b"\x03" * 160) + tracks.feed(0, 40, b"\x04" * 160) == b"\x04\x03" * 160  # aligned
    assert TwilioDialect("demo").flush() == b""  # one track: nothing is ever held


def test_the_dialect_keeps_only_short_ids_of_the_start_message() -> None:
    start = json.loads(telephony.twilio_start(tracks=["inbound", "outbound"]))
    start["start"]["callSid"] = "CA" + "9" * BIG
    start["start"]["customParameters"] = {"project": "demo", "language": "en-US", "x": ["\x7f" * BIG]}
    dialect = TwilioDialect()
    begin = dialect.waiting(json.dumps(start))
    assert isinstance(begin, commands.Begin), begin
    assert begin.request.project == "demo" and begin.request.language == "en-US"
    assert len(repr(vars(dialect))) < 2000, "the dialect holds on to the start message"
    assert dialect.call_identity()["callSid"] == ("CA" + "9" * BIG)[:MAX_IDENTITY_CHARS]


@pytest.mark.ws
async def test_a_start_with_huge_parameters_still_works_and_the_webhook_gets_short_ids(
    gateway_factory: GatewayFactory,
) -> None:
    start = json.loads(telephony.twilio_start())
    start["start"]["callSid"] = "CA" + "7" * BIG
    start["start"]["customParameters"] = {"project": "demo", "x": ["\x7f" * BIG], "y": {"z": 1}}
    async with webhook_receiver(WEBHOOK_SECRET) as receiver, gateway_factory(**hooks(receiver)) as gw:
        async with ws_connect(gw.ws_url("/v1/twilio"), max_size=None) as ws:
            await ws.send(telephony.twilio_connected())
            await ws.send(json.dumps(start, ensure_ascii=False))
            for frame in telephony.twilio_media("58"):
                await ws.send(frame)
            await ws.send(telephony.twilio_stop())
            assert (await read_all(ws, timeout=15)).close_code == 1000
        await receiver.wait_for(lambda r: bool(r.payloads("summary")))
    summary = receiver.payloads("summary")[0]
    assert summary["transcript"] == [{"channel": 0, "text": "58"}], summary
    assert summary["call"]["callSid"] == ("CA" + "7" * BIG)[:MAX_IDENTITY_CHARS]
    assert "customParameters" not in json.dumps(summary) and "\x7f" not in json.dumps(summary)
