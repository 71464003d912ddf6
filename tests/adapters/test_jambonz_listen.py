"""/v1/jambonz/listen end to end: the frames jambonz's listen verb sends (feature-server lib/tasks/listen.js:
one text frame of the call's attributes with sampleRate, mixType and the verb's metadata at the top level,
then 16-bit PCM; dtmf notices with passDtmf; wsAuth as Basic authorization) through the real gateway to
the real simulator. The socket closing is the hang-up, nothing goes back on the socket, and results
arrive as signed webhooks."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from gateway.adapters import commands
from gateway.adapters.jambonz_listen import SUBPROTOCOL, JambonzListenDialect
from gateway.auth import key_digest
from gateway.simulator.server import DataflowSimulator
from tests.support import signals, telephony
from tests.support.harness import GatewayFactory, read_all, ws_connect
from tests.support.settings import SECRETS
from tests.support.webhook_receiver import WebhookReceiver, webhook_receiver

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"jambonz-listen-secret-32-bytes!!").decode()
API_KEY = "dfg_jambonz-listen-key-never-logged"
SECRETS.update({WEBHOOK_SECRET, API_KEY})
CALL_SID = "5b2e7c1e-1a7e-4d8f-9a55-0d6b1c2f3e4a"
CALL = {
    "callSid": CALL_SID, "direction": "inbound", "from": "+15085551212", "to": "+15083084809",
    "callId": "a1b2c3@10.0.0.7", "sipStatus": 200, "callStatus": "in-progress",
    "accountSid": "acc-77", "applicationSid": "app-12", "originatingSipIp": "10.0.0.7",
}  # fmt: skip


def metadata(rate: int = 8000, mix: Any = "mono", **extra: Any) -> str:
    """The listen verb's first frame: its sampleRate and mixType, the call's attributes, the verb's metadata."""
    return json.dumps({"sampleRate": rate, "mixType": mix, **CALL, **extra})


def connect(gw: Any, path: str = "/v1/jambonz/listen?project=demo", **kwargs: Any) -> Any:
    return ws_connect(gw.ws_url(path), subprotocols=[SUBPROTOCOL], **kwargs)  # as mod_audio_fork offers it


async def nothing_back(ws: ClientConnection, wait_s: float) -> None:
    """jambonz reads any text as a command: the gateway sends nothing at all."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(wait_s):
            await ws.recv()


async def summary_of(receiver: WebhookReceiver) -> dict[str, Any]:
    await receiver.wait_for(lambda r: bool(r.payloads("summary")))
    summary: dict[str, Any] = receiver.payloads("summary")[0]
    return summary


@pytest.mark.ws
@pytest.mark.parametrize("rate", [8000, 16000, 24000])
async def test_dtmf_then_hang_up_comes_back_as_signed_webhooks(
    gateway_factory: GatewayFactory, simulator: DataflowSimulator, rate: int
) -> None:
    async with (
        webhook_receiver(WEBHOOK_SECRET) as receiver,
        gateway_factory(webhook_url=receiver.url, webhook_secret=WEBHOOK_SECRET) as gw,
    ):
        async with connect(gw, "/v1/jambonz/listen", max_size=None) as ws:
            assert ws.subprotocol == SUBPROTOCOL
            await ws.send(metadata(rate, project="demo", language="en-US"))  # the verb's metadata
            frames = telephony.l16_frames("147", rate)
            for i, frame in enumerate(frames):
                await ws.send(frame)
                if i == 10:  # passDtmf's notice, mid-audio: not audio, not an error
                    await ws.send(json.dumps({"event": "dtmf", "dtmf": "1", "duration": "1600"}))
            await receiver.wait_for(lambda r: bool(r.payloads("event")))  # recognised while the call goes on
            await nothing_back(ws, 0.3)
            await ws.send(telephony.l16_frames("2", rate)[0])  # still talking as jambonz closes
        summary = await summary_of(receiver)  # closed by jambonz: the hang-up finalizes the session
    event = receiver.payloads("event")[0]
    assert event["event"]["text"] == "147" and event["event"]["final"] is True
    for payload in (event, summary):
        assert payload["dialect"] == "jambonz_listen"
        assert payload["call"] | {"sessionId": "", "dataflowSessionId": ""} == {
            "callSid": CALL_SID, "callId": "a1b2c3@10.0.0.7", "accountSid": "acc-77", "applicationSid": "app-12",
            "sessionId": "", "dataflowSessionId": "",
        }  # fmt: skip
        assert payload["call"]["sessionId"]
    assert summary["transcript"] == [{"channel": 0, "text": "147"}]
    assert summary["ended"]["reason"] == "finalized", summary  # a hang-up, not a cancel
    assert receiver.bad_signatures == 0 and receiver.duplicates == []
    assert [r.project for r in simulator.records] == ["demo"]  # the verb's metadata named it


@pytest.mark.ws
async def test_stereo_keeps_the_caller_and_the_other_party_apart(gateway_factory: GatewayFactory) -> None:
    rate = 8000
    left, right = signals.utterances(["36"], rate), signals.utterances(["9"], rate, lead_ms=600)
    n = max(len(left), len(right))
    both = signals.to_pcm16(signals.interleave(np.pad(left, (0, n - len(left))), np.pad(right, (0, n - len(right)))))
    async with (
        webhook_receiver(WEBHOOK_SECRET) as receiver,
        gateway_factory(webhook_url=receiver.url, webhook_secret=WEBHOOK_SECRET) as gw,
    ):
        async with connect(gw) as ws:
            await ws.send(metadata(rate, "stereo"))
            step = rate // 50 * 4  # 20 ms of two 16-bit channels
            for i in range(0, len(both), step):
                await ws.send(both[i : i + step])
        summary = await summary_of(receiver)
    assert summary["transcript"] == [{"channel": 0, "text": "36"}, {"channel": 1, "text": "9"}]


@pytest.mark.ws
async def test_ws_auth_arrives_as_basic_and_a_wrong_one_is_refused(gateway_factory: GatewayFactory) -> None:
    keys = [{"name": "jambonz", "sha256": key_digest(API_KEY)}]

    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    async with (
        webhook_receiver(WEBHOOK_SECRET) as receiver,
        gateway_factory(webhook_url=receiver.url, webhook_secret=WEBHOOK_SECRET, auth="required", api_keys=keys) as gw,
    ):
        refused = []
        for headers in ({}, basic("jambonz", "not-the-key"), {"Authorization": "Basic %%%"}):
            with pytest.raises(InvalidStatus) as denied:
                async with connect(gw, additional_headers=headers):
                    pass
            refused.append(denied.value.response.status_code)
        async with connect(gw, additional_headers=basic("jambonz", API_KEY)) as ws:
            await ws.send(metadata(8000))
            for frame in telephony.l16_frames("6", 8000):
                await ws.send(frame)
        summary = await summary_of(receiver)
        # A proxy in front that asks for its own Basic credential and passes it on: the key in the path wins.
        path = f"/t/{API_KEY}/v1/jambonz/listen?project=demo"
        async with connect(gw, path, additional_headers=basic("proxy-user", "proxy-password")) as ws:
            assert ws.subprotocol == SUBPROTOCOL
    assert refused == [401, 401, 401]
    assert summary["transcript"] == [{"channel": 0, "text": "6"}]


@pytest.mark.ws
@pytest.mark.parametrize(
    ("first", "code"),
    [
        (metadata(64000), 1003),  # the verb allows 64 kHz; the gateway takes at most 48 kHz
        (metadata(8000, "quad"), 1003),
        (metadata(8000, ["stereo"]), 1003),
        (metadata("abc"), 1003),  # type: ignore[arg-type]
        (b"\x00\x01" * 160, 1008),  # audio before the call's metadata
    ],
)
async def test_what_cannot_be_transcribed_is_refused_with_a_close_code(
    gateway_factory: GatewayFactory, first: str | bytes, code: int
) -> None:
    async with gateway_factory() as gw, connect(gw) as ws:
        await ws.send(first)
        seen = await read_all(ws, timeout=5)
    assert seen.messages == [] and seen.audio == []  # no text for jambonz: the close code says it
    assert (seen.close_code, ws.close_reason) == (code, "unsupported_audio_format" if code == 1003 else "invalid_start")


@pytest.mark.ws
async def test_no_project_is_refused(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(default_project="") as gw, connect(gw, "/v1/jambonz/listen") as ws:
        await ws.send(metadata(8000))
        seen = await read_all(ws, timeout=5)
    assert (seen.close_code, ws.close_reason) == (1008, "invalid_start")


def test_the_url_project_wins_and_only_the_call_ids_are_kept() -> None:
    dialect = JambonzListenDialect("from-url", project_from_url=True)
    big = {"x": ["\x7f" * 200_000], "callSid": "c" * 1000}
    begin = dialect.waiting(metadata(16000, "mixed", project="from-metadata", language="de-DE", **big))
    assert isinstance(begin, commands.Begin), begin
    assert (begin.request.project, begin.request.language) == ("from-url", "de-DE")
    assert begin.request.audio.channels == 1  # both parties mixed into one channel
    assert begin.request.call_properties == {"ExternalId": "c" * 256}
    assert dialect.call_identity()["callSid"] == "c" * 256  # cut short
    assert len(repr(vars(dialect))) < 2000, "the dialect holds on to the first frame"


@pytest.mark.ws
async def test_audio_that_ends_inside_a_sample_is_told_in_the_summary(
    gateway_factory: GatewayFactory, simulator: DataflowSimulator
) -> None:
    """A call whose last frame ends one byte into a 16-bit sample: the byte cannot reach Data Flow, and
    nothing goes back on a jambonz socket, so the call's summary says so; every whole sample is sent."""
    rate = 8000
    frames = telephony.l16_frames("5", rate)
    async with (
        webhook_receiver(WEBHOOK_SECRET) as receiver,
        gateway_factory(webhook_url=receiver.url, webhook_secret=WEBHOOK_SECRET) as gw,
    ):
        async with connect(gw) as ws:
            await ws.send(metadata(rate))
            for frame in frames[:-1]:
                await ws.send(frame)
            await ws.send(frames[-1] + b"\x7f")  # a stray byte: half a sample
        summary = await summary_of(receiver)
    whole = sum(len(f) for f in frames)
    print(f"figure: {whole} bytes of whole samples and 1 stray byte; Data Flow got {simulator.records[-1].audio_bytes}")
    assert summary["transcript"] == [{"channel": 0, "text": "5"}]
    assert summary["ended"]["reason"] == "finalized", summary
    assert summary["notices"] == [
        {"code": "misaligned_audio", "message": "1 trailing bytes did not form a whole sample and were dropped",
         "retryable": False}
    ], summary  # fmt: skip
    assert summary["noticesDropped"] == 0
    assert simulator.records[-1].audio_bytes == whole  # every whole sample reached Data Flow


@pytest.mark.ws
async def test_a_whole_call_has_no_notices(gateway_factory: GatewayFactory) -> None:
    async with (
        webhook_receiver(WEBHOOK_SECRET) as receiver,
        gateway_factory(webhook_url=receiver.url, webhook_secret=WEBHOOK_SECRET) as gw,
    ):
        async with connect(gw) as ws:
            await ws.send(metadata(8000))
            for frame in telephony.l16_frames("5", 8000):
                await ws.send(frame)
        summary = await summary_of(receiver)
    assert summary["notices"] == [] and summary["noticesDropped"] == 0, summary
