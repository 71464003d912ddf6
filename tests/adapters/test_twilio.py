"""/v1/twilio end to end: Twilio's Media Streams messages through the real gateway to the real simulator,
results back as signed webhooks (verified by the standardwebhooks package in the receiver)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.adapters import commands
from gateway.adapters.twilio import TwilioDialect
from gateway.adapters.twilio_tracks import MAX_SKEW_BYTES, TwoTracks
from gateway.audio.format import AudioFormat
from gateway.auth import key_digest
from gateway.dataflow.messages import DataflowResponse, UpstreamAudio
from gateway.errors import GatewayError
from gateway.relay.items import Started
from tests.support import telephony
from tests.support.harness import GatewayFactory, read_all, ws_connect
from tests.support.settings import SECRETS
from tests.support.twilio_webhooks import WEBHOOK_SECRET, hooks
from tests.support.webhook_receiver import webhook_receiver

AUTH_TOKEN = "twilio-auth-token-0123456789abcdef"
API_KEY = "dfg_twilio-key-never-logged"
PUBLIC_HOST = "gw.example.test"
SECRETS.update({WEBHOOK_SECRET, AUTH_TOKEN, API_KEY})


async def open_call(ws: ClientConnection, digits: str) -> None:
    """Twilio's opening (connected, start) and ``digits`` in media frames, no stop."""
    await ws.send(telephony.twilio_connected())
    await ws.send(telephony.twilio_start())
    for frame in telephony.twilio_media(digits):
        await ws.send(frame)


def corrupt_media() -> str:
    """A media message whose payload is not base64."""
    broken = json.loads(telephony.twilio_media("1")[0])
    broken["media"]["payload"] = "not base64!"
    return json.dumps(broken)


async def stream_call(ws: ClientConnection, digits: str) -> None:
    await open_call(ws, digits)
    await ws.send(telephony.twilio_dtmf(digits[-1]))  # Twilio's own DTMF notice: nothing to answer
    await ws.send(telephony.twilio_stop())


@pytest.mark.ws
async def test_dtmf_comes_back_as_signed_webhooks_with_the_call_ids(gateway_factory: GatewayFactory) -> None:
    async with (
        webhook_receiver(WEBHOOK_SECRET) as receiver,
        gateway_factory(**hooks(receiver, twilio_auth_token=AUTH_TOKEN, public_hosts=[PUBLIC_HOST])) as gw,
    ):
        # Twilio signs the public wss URL it was given; the socket itself reaches 127.0.0.1.
        signature = telephony.twilio_signature(AUTH_TOKEN, f"wss://{PUBLIC_HOST}/v1/twilio")
        async with ws_connect(gw.ws_url("/v1/twilio"), additional_headers={"X-Twilio-Signature": signature}) as ws:
            await stream_call(ws, "1234")
            seen = await read_all(ws, timeout=15)  # the gateway closes once Data Flow has finished
        await receiver.wait_for(lambda r: bool(r.payloads("summary")))
    # Nothing but media/mark/clear may go to Twilio: with no TTS, nothing at all; a normal close.
    assert seen.messages == [] and seen.audio == [] and seen.close_code == 1000
    events = receiver.payloads("event")
    assert [e["event"]["text"] for e in events] == ["1234"], receiver.dump()
    assert events[0]["event"]["name"] == "SR Milestone" and events[0]["event"]["final"] is True
    summary = receiver.payloads("summary")[0]
    for payload in (events[0], summary):
        assert payload["dialect"] == "twilio"
        assert payload["call"]["callSid"] == telephony.CALL_SID
        assert payload["call"]["streamSid"] == telephony.STREAM_SID
        assert payload["call"]["sessionId"]
    assert summary["transcript"] == [{"channel": 0, "text": "1234"}]
    assert summary["ended"]["reason"] == "finalized" and summary["ended"]["code"] == 1000
    assert receiver.bad_signatures == 0 and receiver.duplicates == []


@pytest.mark.ws
@pytest.mark.parametrize(
    "headers",
    [
        {},  # unsigned
        {"X-Twilio-Signature": telephony.twilio_signature("wrong-token", f"wss://{PUBLIC_HOST}/v1/twilio")},
        # signed for the Host the caller sent, not the public host: refused
        {"X-Twilio-Signature": telephony.twilio_signature(AUTH_TOKEN, "wss://127.0.0.1/v1/twilio")},
    ],
)
async def test_a_bad_signature_is_refused_401_before_accept(
    gateway_factory: GatewayFactory, headers: dict[str, str]
) -> None:
    async with gateway_factory(twilio_auth_token=AUTH_TOKEN, public_hosts=[PUBLIC_HOST]) as gw:
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(gw.ws_url("/v1/twilio"), additional_headers=headers):
                pass
        assert refused.value.response.status_code == 401
        assert gw.gateway.registry.active == 0


@pytest.mark.ws
async def test_wrong_signatures_feed_the_failed_credential_throttle(gateway_factory: GatewayFactory) -> None:
    wrong = {"X-Twilio-Signature": telephony.twilio_signature("wrong-token", f"wss://{PUBLIC_HOST}/v1/twilio")}
    statuses = []
    async with gateway_factory(
        twilio_auth_token=AUTH_TOKEN, public_hosts=[PUBLIC_HOST], auth_failures_per_minute=2
    ) as gw:
        for _ in range(3):
            with pytest.raises(InvalidStatus) as refused:
                async with ws_connect(gw.ws_url("/v1/twilio"), additional_headers=wrong):
                    pass
            statuses.append(refused.value.response.status_code)
    assert statuses == [401, 401, 429]


@pytest.mark.ws
async def test_key_in_the_path_since_twilio_forbids_query_strings(gateway_factory: GatewayFactory) -> None:
    keys = [{"name": "twilio", "sha256": key_digest(API_KEY)}]
    secured = {"auth": "required", "api_keys": keys, "twilio_auth_token": AUTH_TOKEN, "public_hosts": [PUBLIC_HOST]}
    async with webhook_receiver(WEBHOOK_SECRET) as receiver, gateway_factory(**hooks(receiver, **secured)) as gw:
        path = f"/t/{API_KEY}/v1/twilio"
        signature = telephony.twilio_signature(AUTH_TOKEN, f"wss://{PUBLIC_HOST}{path}")  # Twilio signs the key too
        async with ws_connect(gw.ws_url(path), additional_headers={"X-Twilio-Signature": signature}) as ws:
            await stream_call(ws, "9#")
            seen = await read_all(ws, timeout=15)
        await receiver.wait_for(lambda r: bool(r.payloads("summary")))
        with pytest.raises(InvalidStatus) as refused:  # no key: refused, signature or not
            async with ws_connect(gw.ws_url("/v1/twilio"), additional_headers={"X-Twilio-Signature": signature}):
                pass
        # A query added to the URL Twilio signed (which has none: Twilio forbids them) is not signed: it
        # was accepted, the signature covering the path alone.
        with pytest.raises(InvalidStatus) as added:
            async with ws_connect(
                gw.ws_url(f"{path}?project=other"), additional_headers={"X-Twilio-Signature": signature}
            ):
                pass
    assert added.value.response.status_code == 401
    assert seen.close_code == 1000
    assert [e["event"]["text"] for e in receiver.payloads("event")] == ["9#"]
    assert refused.value.response.status_code == 401


@pytest.mark.ws
async def test_no_start_is_closed_after_the_start_timeout_without_a_word(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(start_timeout_s=0.5) as gw, ws_connect(gw.ws_url("/v1/twilio")) as ws:
        await ws.send(telephony.twilio_connected())
        seen = await read_all(ws, timeout=5)
    assert seen.messages == [] and seen.audio == [] and seen.close_code == 1008


@pytest.mark.ws
@pytest.mark.parametrize(("rate", "close_code"), [("8000x", 1003), (" 8000 ", None)])
async def test_a_sample_rate_that_is_no_number_is_refused_not_read_as_8000(
    gateway_factory: GatewayFactory, rate: str, close_code: int | None
) -> None:
    start = json.loads(telephony.twilio_start())
    start["start"]["mediaFormat"]["sampleRate"] = rate
    async with gateway_factory(start_timeout_s=5) as gw, ws_connect(gw.ws_url("/v1/twilio")) as ws:
        await ws.send(telephony.twilio_connected())
        await ws.send(json.dumps(start))
        if close_code is None:  # a number as a string is still read: the call runs to the end
            for frame in [*telephony.twilio_media("7"), telephony.twilio_stop()]:
                await ws.send(frame)
        seen = await read_all(ws, timeout=10)
    assert seen.messages == [] and seen.audio == []  # nothing but media/mark/clear ever goes to Twilio
    assert seen.close_code == (close_code or 1000)
    assert gw.gateway.registry.active == 0


@pytest.mark.ws
async def test_a_payload_with_characters_outside_base64_is_refused_even_when_the_rest_pads(
    gateway_factory: GatewayFactory,
) -> None:
    """Media payloads are read as strict base64: "//////!!//////" leaves 12 valid characters once the
    "!!" is dropped, which lenient decoding takes as 9 bytes of audio; the call must end with 1007."""
    bad = json.loads(telephony.twilio_media("1")[3])
    bad["media"]["payload"] = "//////!!//////"
    async with gateway_factory() as gw, ws_connect(gw.ws_url("/v1/twilio")) as ws:
        await ws.send(telephony.twilio_connected())
        await ws.send(telephony.twilio_start())
        for frame in telephony.twilio_media("1")[:3]:
            await ws.send(frame)
        await ws.send(json.dumps(bad))
        with contextlib.suppress(ConnectionClosed):  # the gateway may have closed already
            await ws.send(telephony.twilio_stop())  # a lenient read ends the call here, 1000
        seen = await read_all(ws, timeout=5)
    assert seen.close_code == 1007, f"closed {seen.close_code}: a payload that is not strict base64 was taken"


@pytest.mark.ws
async def test_a_drain_closes_the_call_with_1001_and_its_summary_still_goes_out(
    gateway_factory: GatewayFactory,
) -> None:
    async with webhook_receiver(WEBHOOK_SECRET) as receiver, gateway_factory(**hooks(receiver)) as gw:
        async with ws_connect(gw.ws_url("/v1/twilio")) as ws:
            await open_call(ws, "42")
            await receiver.wait_for(lambda r: bool(r.payloads("event")))
            drained = gw.gateway.drain(budget_s=0.3)  # the call goes on past the budget
            seen = await read_all(ws, timeout=10)
            await drained
        assert gw.gateway.webhooks.pending == 0
    assert seen.messages == [] and seen.close_code == 1001
    summary = receiver.payloads("summary")[0]
    assert summary["transcript"] == [{"channel": 0, "text": "42"}]
    assert summary["ended"]["reason"] == "going_away" and summary["ended"]["code"] == 1001


@pytest.mark.ws
async def test_hang_up_without_stop_still_delivers_the_results(gateway_factory: GatewayFactory) -> None:
    async with webhook_receiver(WEBHOOK_SECRET) as receiver, gateway_factory(**hooks(receiver)) as gw:
        async with ws_connect(gw.ws_url("/v1/twilio")) as ws:
            await open_call(ws, "56")
            await asyncio.sleep(0.2)
        # the socket closed without stop: finalized, not cancelled
        await receiver.wait_for(lambda r: bool(r.payloads("summary")))
    summary = receiver.payloads("summary")[0]
    assert summary["transcript"] == [{"channel": 0, "text": "56"}], receiver.dump()
    assert summary["ended"]["reason"] == "finalized"


@pytest.mark.ws
async def test_a_message_that_ends_the_call_still_delivers_its_results(gateway_factory: GatewayFactory) -> None:
    """A media payload that is not base64 ends the call (1007, as documented), but only after Data Flow's
    results for the audio before it: the call had been aborted and its webhook got no transcript."""
    async with webhook_receiver(WEBHOOK_SECRET) as receiver, gateway_factory(**hooks(receiver)) as gw:
        async with ws_connect(gw.ws_url("/v1/twilio")) as ws:
            await open_call(ws, "47")
            await ws.send(corrupt_media())
            seen = await read_all(ws, timeout=15)
        await receiver.wait_for(lambda r: bool(r.payloads("summary")))
    assert (seen.messages, seen.close_code) == ([], 1007)
    summary = receiver.payloads("summary")[0]
    assert summary["transcript"] == [{"channel": 0, "text": "47"}], receiver.dump()
    ended = summary["ended"]
    assert (ended["reason"], ended["code"], ended["error"]) == ("invalid_message", 1007, "invalid_message")


@pytest.mark.ws
async def test_both_tracks_are_a_stereo_call_with_each_track_on_its_channel(gateway_factory: GatewayFactory) -> None:
    caller = telephony.twilio_media("12", track="inbound")
    played = telephony.twilio_media("345", track="outbound", lead_ms=900)  # later, and longer
    async with webhook_receiver(WEBHOOK_SECRET) as receiver, gateway_factory(**hooks(receiver)) as gw:
        async with ws_connect(gw.ws_url("/v1/twilio")) as ws:
            await ws.send(telephony.twilio_connected())
            await ws.send(telephony.twilio_start(tracks=["inbound", "outbound"]))
            for pair in itertools.zip_longest(caller, played):  # Twilio sends each track's 20 ms in turn
                for frame in pair:
                    if frame is not None:
                        await ws.send(frame)
            await ws.send(telephony.twilio_stop())
            seen = await read_all(ws, timeout=15)
        await receiver.wait_for(lambda r: bool(r.payloads("summary")))
    assert seen.messages == [] and seen.close_code == 1000
    summary = receiver.payloads("summary")[0]
    assert summary["transcript"] == [{"channel": 0, "text": "12"}, {"channel": 1, "text": "345"}], summary
    assert sorted((e["event"]["channel"], e["event"]["text"]) for e in receiver.payloads("event")) == [
        (0, "12"), (1, "345")
    ]  # fmt: skip


@pytest.mark.ws
async def test_a_message_that_ends_a_stereo_call_first_sends_the_audio_a_track_held(
    gateway_factory: GatewayFactory,
) -> None:
    """The played track runs on after the caller's: its last second waits for the caller's track. A corrupt
    payload ends the call as a stop does, that held second included (it had been dropped with the call)."""
    caller = telephony.twilio_media("12", track="inbound")
    played = telephony.twilio_media("345", track="outbound", lead_ms=900)
    async with webhook_receiver(WEBHOOK_SECRET) as receiver, gateway_factory(**hooks(receiver)) as gw:
        async with ws_connect(gw.ws_url("/v1/twilio")) as ws:
            await ws.send(telephony.twilio_connected())
            await ws.send(telephony.twilio_start(tracks=["inbound", "outbound"]))
            for pair in itertools.zip_longest(caller, played):
                for frame in pair:
                    if frame is not None:
                        await ws.send(frame)
            await ws.send(corrupt_media())
            seen = await read_all(ws, timeout=15)
        await receiver.wait_for(lambda r: bool(r.payloads("summary")))
    assert seen.close_code == 1007
    summary = receiver.payloads("summary")[0]
    assert summary["transcript"] == [{"channel": 0, "text": "12"}, {"channel": 1, "text": "345"}], summary
    assert summary["ended"]["audioMs"] >= len(played) * 20, summary["ended"]  # every frame of the longer track


# --- the pure dialect ------------------------------------------------------------------------------------


def test_two_tracks_interleave_by_timestamp_fill_gaps_and_drop_repeats() -> None:
    tracks = TwoTracks()
    assert tracks.feed(0, 0, b"\x01" * 160) == b""  # the other track has nothing yet
    assert tracks.feed(1, 0, b"\x02" * 160) == b"\x01\x02" * 160
    assert tracks.feed(1, 40, b"\x03" * 160) == b""  # 20 ms missing on channel 1: silence there
    assert tracks.feed(0, 20, b"\x04" * 320) == b"\x04\xff" * 160 + b"\x04\x03" * 160
    assert tracks.feed(0, 20, b"\x05" * 160) == b""  # a repeat of a position already sent: dropped
    assert tracks.feed(0, 60, b"\x06" * 160) + tracks.feed(1, 60, b"\x07" * 160) == b"\x06\x07" * 160


def test_stamps_a_few_ms_off_20_ms_steps_keep_every_sample() -> None:
    """Payloads back to back, stamps 1-3 ms off their 20 ms step (stamps taken at packet arrival): each
    early stamp cut that many ms of the caller's audio and each late one put silence in it (5.6 % of
    the samples of 10 s); a real gap past the tolerance is still silence."""
    rng = np.random.default_rng(5)
    tracks, out = TwoTracks(), bytearray()
    caller = rng.integers(0, 255, 500 * 160, dtype=np.uint8).tobytes()
    for n in range(500):
        stamp = n * 20 + int(rng.integers(-3, 4)) if n else 0
        out += tracks.feed(0, stamp, caller[n * 160 : (n + 1) * 160]) + tracks.feed(1, n * 20, b"\x22" * 160)
    out += tracks.flush()
    assert bytes(out[0::2]) == caller and bytes(out[1::2]) == b"\x22" * len(caller)
    gapped = TwoTracks()
    gapped.feed(1, 0, b"\x22" * 480)
    assert gapped.feed(0, 0, b"\x01" * 160) + gapped.feed(0, 40, b"\x02" * 160) + gapped.flush() == (
        b"\x01\x22" * 160 + b"\xff\x22" * 160 + b"\x02\x22" * 160
    )  # 20 ms missing: silence


def test_a_silent_track_does_not_hold_the_other_back_more_than_a_second() -> None:
    tracks = TwoTracks()
    out = b"".join(tracks.feed(0, n * 20, b"\x01" * 160) for n in range(100))  # 2 s of caller, nothing played
    assert len(out) == 2 * (16000 - MAX_SKEW_BYTES)  # all but the last second went out, padded
    assert out[1::2] == b"\xff" * (16000 - MAX_SKEW_BYTES)


def test_a_track_that_resumes_after_a_silence_is_placed_at_its_timestamp() -> None:
    """What the call plays stops for 2 s (the outbound track sends nothing) and the caller's track runs
    60 ms late: the outbound track, padded to a second behind meanwhile, resumes at its timestamp
    (3000 ms, sample 24000). It resumed at sample 15520, a second early for the rest of the call."""
    tracks, out, late = TwoTracks(), bytearray(), []
    for ms in range(0, 5000, 20):
        if ms < 1000 or ms >= 3000:
            out += tracks.feed(1, ms, b"\x22" * 160)
        late.append(ms)
        while late and late[0] <= ms - 60:
            out += tracks.feed(0, late.pop(0), b"\x11" * 160)
    for ms in late:
        out += tracks.feed(0, ms, b"\x11" * 160)
    out += tracks.flush()
    caller, played = out[0::2], out[1::2]
    assert len(caller) == len(played) == 5000 * 8
    assert caller == b"\x11" * 40000
    assert played == b"\x22" * 8000 + b"\xff" * 16000 + b"\x22" * 16000


def test_a_timestamp_far_ahead_opens_no_gap_past_a_second_beyond_the_other_track() -> None:
    tracks = TwoTracks()
    tracks.feed(0, 0, b"\x01" * 160)
    out = tracks.feed(1, 2**31, b"\x02" * 160)  # ~25 days ahead: no silence made for it
    out += tracks.feed(1, 1000, b"\x03" * 160)  # a second past the other track: filled
    assert out == b"\x01\x02" * 160  # placed where the track stood
    assert tracks.flush() == b"\xff\xff" * (8000 - 160) + b"\xff\x03" * 160  # at 1000 ms, the caller padded


def _started(dialect: TwilioDialect, rate: int = 8000) -> None:
    response = DataflowResponse("StartResponse", True, None, None, {})
    fmt = AudioFormat("mulaw", 8000, 1)
    dialect.render(Started("s1", None, fmt, AudioFormat("pcm16", rate, 1), response))


def test_tts_audio_goes_back_as_media_then_a_mark_on_bidirectional_streams() -> None:
    dialect = TwilioDialect("demo")
    dialect.waiting(telephony.twilio_start())
    _started(dialect)
    frames = dialect.render(UpstreamAudio(b"\x00\x10" * 8000))  # 1 s of 8 kHz PCM
    media, mark = frames[:-1], frames[-1]
    assert [f["event"] for f in media if isinstance(f, dict)] == ["media"]
    first = media[0]
    assert isinstance(first, dict) and len(base64.b64decode(first["media"]["payload"])) == 8000  # μ-law: 1 byte/sample
    assert first["streamSid"] == telephony.STREAM_SID
    assert mark == {"event": "mark", "streamSid": telephony.STREAM_SID, "mark": {"name": "tts-1"}}


def test_no_audio_back_on_a_unidirectional_stream_and_nothing_but_audio_ever() -> None:
    dialect = TwilioDialect("demo")
    dialect.waiting(telephony.twilio_start(tracks=["inbound", "outbound"]))  # <Start><Stream>: one way
    _started(dialect, rate=16000)
    assert dialect.render(UpstreamAudio(b"\x00\x10" * 1600)) == ()
    assert dialect.refusal(GatewayError("refused"), start_failed=True) == ()


def test_outbound_track_media_is_not_transcribed_and_bad_base64_is_refused() -> None:
    dialect = TwilioDialect("demo")
    outbound = json.loads(telephony.twilio_media("1")[0])
    outbound["media"]["track"] = "outbound"
    assert dialect.streaming(json.dumps(outbound)) is None
    refusal = dialect.streaming(corrupt_media())
    assert isinstance(refusal, commands.Refuse)
    assert (refusal.error.error_code, refusal.error.ws_close_code) == ("invalid_message", 1007)  # README: 1007


@settings(max_examples=300, deadline=None)
@given(st.lists(telephony.arbitrary_messages(["connected", "start", "media", "dtmf", "mark", "stop"], "event"),
                max_size=8), st.booleans())  # fmt: skip
def test_dialect_never_raises_on_client_input(messages: list[str | bytes], streaming: bool) -> None:
    dialect = TwilioDialect("demo")
    for message in messages:
        dialect.streaming(message) if streaming else dialect.waiting(message)
