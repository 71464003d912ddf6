"""/v1/vonage end to end: Vonage's first frame and 20 ms L16 frames through the real gateway to the real
simulator; the socket closing is the hang-up, and results arrive as signed webhooks."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from gateway.adapters import commands
from gateway.adapters.call_results import MAX_IDENTITY_CHARS
from gateway.adapters.socket import Frame
from gateway.adapters.vonage import VonageDialect
from gateway.audio.format import AudioFormat
from gateway.auth import key_digest
from gateway.dataflow.messages import DataflowResponse, UpstreamAudio
from gateway.relay.items import Closed, Started
from gateway.simulator.faults import Fault
from gateway.simulator.records import SimulatorConfig
from tests.support import signals, telephony
from tests.support.fake_upstream import event
from tests.support.harness import GatewayFactory, read_all, ws_connect
from tests.support.settings import SECRETS, SIM_TENANT, SIM_TOKEN
from tests.support.webhook_receiver import webhook_receiver

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"vonage-webhook-secret-32-bytes!!").decode()
API_KEY = "dfg_vonage-key-never-logged"
SECRETS.update({WEBHOOK_SECRET, API_KEY})


async def nothing_back(ws: ClientConnection, wait_s: float) -> None:
    """Vonage reads audio only: with no TTS, the gateway sends nothing at all."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(wait_s):
            await ws.recv()


@pytest.mark.ws
@pytest.mark.parametrize("rate", [16000, 8000])
async def test_dtmf_then_hang_up_comes_back_as_signed_webhooks(gateway_factory: GatewayFactory, rate: int) -> None:
    options: dict[str, Any] = {"webhook_secret": WEBHOOK_SECRET, "vonage_call_header": "x-call-ref"}
    async with webhook_receiver(WEBHOOK_SECRET) as receiver, gateway_factory(webhook_url=receiver.url, **options) as gw:
        async with ws_connect(gw.ws_url("/v1/vonage")) as ws:
            await ws.send(telephony.vonage_connected(rate, **{"x-call-ref": "ticket-77"}))
            frames = telephony.l16_frames("147", rate)
            assert {len(f) for f in frames[:-1]} == {rate // 50 * 2}  # 640 bytes at 16 kHz, 320 at 8 kHz
            for frame in frames:
                await ws.send(frame)
            await receiver.wait_for(lambda r: bool(r.payloads("event")))  # recognised while the call goes on
            await nothing_back(ws, 0.3)
            await ws.send(telephony.l16_frames("2", rate)[0])  # the caller is still talking as it hangs up
        # closed by Vonage: the hang-up finalizes the session and its summary is delivered
        await receiver.wait_for(lambda r: bool(r.payloads("summary")))
    event, summary = receiver.payloads("event")[0], receiver.payloads("summary")[0]
    assert event["event"]["text"] == "147" and event["event"]["final"] is True
    for payload in (event, summary):
        assert payload["dialect"] == "vonage"
        assert payload["call"]["uuid"] == telephony.VONAGE_UUID
        assert payload["call"]["conversation_uuid"] == telephony.VONAGE_CONVERSATION
        assert payload["call"]["callId"] == "ticket-77" and payload["call"]["sessionId"]
    assert summary["transcript"] == [{"channel": 0, "text": "147"}]
    assert summary["ended"]["reason"] == "finalized", summary  # a hang-up, not a cancel
    assert receiver.bad_signatures == 0 and receiver.duplicates == []


@pytest.mark.ws
async def test_the_key_rides_in_the_path_and_a_missing_one_is_refused(gateway_factory: GatewayFactory) -> None:
    keys = [{"name": "vonage", "sha256": key_digest(API_KEY)}]
    async with (
        webhook_receiver(WEBHOOK_SECRET) as receiver,
        gateway_factory(webhook_url=receiver.url, webhook_secret=WEBHOOK_SECRET, auth="required", api_keys=keys) as gw,
    ):
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(gw.ws_url("/v1/vonage")):
                pass
        async with ws_connect(gw.ws_url(f"/t/{API_KEY}/v1/vonage")) as ws:
            await ws.send(telephony.vonage_connected(8000))
            for frame in telephony.l16_frames("6", 8000):
                await ws.send(frame)
        await receiver.wait_for(lambda r: bool(r.payloads("summary")))
    assert refused.value.response.status_code == 401
    assert receiver.payloads("summary")[0]["transcript"] == [{"channel": 0, "text": "6"}]


@pytest.mark.ws
class TestHangUpWhileDataFlowAnswersStart:
    @pytest.fixture
    def sim_config(self) -> SimulatorConfig:
        return SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT, fault=Fault("slow_start", 800))

    async def test_the_call_is_still_finished_and_delivered(self, gateway_factory: GatewayFactory) -> None:
        """The caller hangs up before Data Flow answered Start: the audio held meanwhile is sent, the
        session finalized and its results delivered — a hang-up ends a call, it does not cancel it."""
        async with (
            webhook_receiver(WEBHOOK_SECRET) as receiver,
            gateway_factory(webhook_url=receiver.url, webhook_secret=WEBHOOK_SECRET) as gw,
        ):
            async with ws_connect(gw.ws_url("/v1/vonage")) as ws:
                await ws.send(telephony.vonage_connected(8000))
                for frame in telephony.l16_frames("47", 8000):
                    await ws.send(frame)
            await receiver.wait_for(lambda r: bool(r.payloads("summary")))
        summary = receiver.payloads("summary")[0]
        assert summary["transcript"] == [{"channel": 0, "text": "47"}]
        assert summary["ended"]["reason"] == "finalized"


@pytest.mark.ws
async def test_a_bad_content_type_is_refused_with_a_close_code(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory() as gw, ws_connect(gw.ws_url("/v1/vonage")) as ws:
        await ws.send(telephony.vonage_connected().replace("audio/l16;rate=16000", "audio/opus"))
        seen = await read_all(ws, timeout=5)
    assert seen.messages == [] and seen.audio == []  # no text for Vonage: the close code says it
    assert seen.close_code == 1003  # unsupported data


@pytest.mark.ws
async def test_audio_before_the_connected_frame_is_refused_not_dropped(gateway_factory: GatewayFactory) -> None:
    """Vonage sends websocket:connected first; audio before it has no format and was dropped unseen."""
    async with gateway_factory() as gw, ws_connect(gw.ws_url("/v1/vonage")) as ws:
        await ws.send(telephony.l16_frames("1", 16000)[0])
        seen = await read_all(ws, timeout=5)
    assert seen.messages == [] and seen.audio == []  # no text for Vonage: the close code says it
    assert (seen.close_code, ws.close_reason) == (1008, "invalid_start")


def started_dialect(rate: int, upstream_rate: int | None = None) -> VonageDialect:
    dialect = VonageDialect("demo")
    assert isinstance(dialect.waiting(telephony.vonage_connected(rate)), commands.Begin)
    response = DataflowResponse("StartResponse", True, None, None, {})
    fmt, upstream = AudioFormat("pcm16", rate, 1), AudioFormat("pcm16", upstream_rate or rate, 1)
    assert dialect.render(Started("s1", None, fmt, upstream, response)) == ()
    return dialect


END_OF_TTS = event("End of TTS Fragment", -2)


def played(frames: Sequence[Frame]) -> bytes:
    assert all(isinstance(f, bytes) and len(f) in (320, 640) for f in frames), [len(f) for f in frames]
    return b"".join(f for f in frames if isinstance(f, bytes))


def test_tts_goes_back_as_whole_20_ms_l16_frames_at_the_call_rate() -> None:
    dialect = started_dialect(16000)
    frames = dialect.render(UpstreamAudio(b"\x01\x00" * 3000))  # 187.5 ms: 9 frames, 7.5 ms wait for more
    assert [len(f) for f in frames if isinstance(f, bytes)] == [640] * 9
    last = dialect.render(END_OF_TTS)  # the fragment's end pads the last frame
    assert played(last) == b"\x01\x00" * 120 + bytes(400)


@pytest.mark.parametrize(("rate", "upstream_rate"), [(16000, 16000), (8000, 8000), (16000, 8000)])
def test_tts_in_chunks_of_any_length_plays_without_gaps(rate: int, upstream_rate: int) -> None:
    """Data Flow's TTS in 50 ms chunks: 500 ms went out as 600 ms, a 10 ms gap of silence after each chunk
    (and, resampled, the resampler's last 20 ms never went out)."""
    dialect = started_dialect(rate, upstream_rate)
    tone = signals.to_pcm16(signals.tone(440, 500, upstream_rate))
    step = upstream_rate // 20 * 2  # 50 ms
    frames = [f for i in range(0, len(tone), step) for f in dialect.render(UpstreamAudio(tone[i : i + step]))]
    frames += dialect.render(END_OF_TTS)
    audio = played(frames)
    assert len(audio) == 500 * rate // 1000 * 2  # exactly the 500 ms that came, in whole 20 ms frames
    if rate == upstream_rate:
        assert audio == tone  # every sample in order, no silence put in between
    assert not dialect.render(END_OF_TTS)  # nothing left held


def test_tts_short_of_a_frame_at_the_end_of_the_call_goes_out_with_the_goodbye() -> None:
    dialect = started_dialect(8000)
    assert dialect.render(UpstreamAudio(b"\x02\x00" * 100)) == []  # 12.5 ms: held for the next chunk
    goodbye = dialect.goodbye(Closed("finalized", 1000, 0.0, None))
    assert played(goodbye.frames) == b"\x02\x00" * 100 + bytes(120)


BIG = 200_000  # characters of a header nobody reads; each DEL would be 4 in a repr()


@pytest.mark.ws
async def test_huge_headers_still_work_and_the_webhook_gets_short_ids(gateway_factory: GatewayFactory) -> None:
    headers = {"uuid": "u" * BIG, "x-call-ref": ["\x7f" * BIG], "x": {"y": "\x7f" * BIG}}
    options: dict[str, Any] = {"webhook_secret": WEBHOOK_SECRET, "vonage_call_header": "x-call-ref"}
    async with webhook_receiver(WEBHOOK_SECRET) as receiver, gateway_factory(webhook_url=receiver.url, **options) as gw:
        async with ws_connect(gw.ws_url("/v1/vonage"), max_size=None) as ws:
            first = json.loads(telephony.vonage_connected(8000)) | headers
            await ws.send(json.dumps(first, ensure_ascii=False))  # under the 1 MiB message bound
            for frame in telephony.l16_frames("39", 8000):
                await ws.send(frame)
        await receiver.wait_for(lambda r: bool(r.payloads("summary")))
    summary = receiver.payloads("summary")[0]
    assert summary["transcript"] == [{"channel": 0, "text": "39"}], summary
    assert summary["call"]["uuid"] == "u" * MAX_IDENTITY_CHARS  # cut short
    assert summary["call"]["callId"] == ""  # a list is no id: not its repr
    assert summary["call"]["conversation_uuid"] == telephony.VONAGE_CONVERSATION


def test_the_dialect_keeps_only_the_identity_headers_cut_short() -> None:
    dialect = VonageDialect(call_header="x-call-ref")
    headers = {"x-call-ref": "r" * BIG, "project": "demo", "language": "en-US", "x": ["\x7f" * BIG]}
    begin = dialect.waiting(telephony.vonage_connected(16000, **headers))
    assert isinstance(begin, commands.Begin), begin
    assert begin.request.project == "demo" and begin.request.language == "en-US"
    assert len(repr(vars(dialect))) < 2000, "the dialect holds on to the first frame"
    assert dialect.call_identity() == {
        "uuid": telephony.VONAGE_UUID, "conversation_uuid": telephony.VONAGE_CONVERSATION,
        "callId": "r" * MAX_IDENTITY_CHARS,
    }  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(telephony.arbitrary_messages(["websocket:connected", "websocket:dtmf"], "event"), max_size=8),
       st.booleans())  # fmt: skip
def test_dialect_never_raises_on_client_input(messages: list[str | bytes], streaming: bool) -> None:
    dialect = VonageDialect("demo", call_header="uuid")
    for message in messages:
        dialect.streaming(message) if streaming else dialect.waiting(message)
    dialect.call_identity()
