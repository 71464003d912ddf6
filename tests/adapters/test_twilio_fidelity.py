"""/v1/twilio against what Twilio really sends for each ``<Stream>`` track setting.

Twilio's TwiML ``<Start><Stream track="...">`` takes ``inbound_track`` (the default), ``outbound_track``
or ``both_tracks``; ``<Connect><Stream>`` only ``inbound_track`` (https://www.twilio.com/docs/voice/twiml/stream,
error 31941 https://www.twilio.com/docs/api/errors/31941). The start message names the streamed tracks as
``inbound``/``outbound`` and every media message its ``track``
(https://www.twilio.com/docs/voice/media-streams/websocket-messages).
"""

from __future__ import annotations

import pytest

from gateway.adapters import commands
from gateway.adapters.twilio import TwilioDialect
from tests.support import telephony
from tests.support.harness import GatewayFactory, read_all, ws_connect
from tests.support.twilio_webhooks import WEBHOOK_SECRET, hooks
from tests.support.webhook_receiver import webhook_receiver


@pytest.mark.ws
async def test_an_outbound_track_stream_is_transcribed(gateway_factory: GatewayFactory) -> None:
    # <Start><Stream track="outbound_track">: start.tracks ["outbound"], media.track "outbound".
    async with webhook_receiver(WEBHOOK_SECRET) as receiver, gateway_factory(**hooks(receiver)) as gw:
        async with ws_connect(gw.ws_url("/v1/twilio")) as ws:
            await ws.send(telephony.twilio_connected())
            await ws.send(telephony.twilio_start(tracks=["outbound"]))
            for frame in telephony.twilio_media("47", track="outbound"):
                await ws.send(frame)
            await ws.send(telephony.twilio_stop())
            seen = await read_all(ws, timeout=15)
        await receiver.wait_for(lambda r: bool(r.payloads("summary")))
    assert seen.messages == [] and seen.close_code == 1000
    summary = receiver.payloads("summary")[0]
    assert summary["transcript"] == [{"channel": 0, "text": "47"}], receiver.dump()


def test_each_mono_stream_takes_its_own_track_only() -> None:
    inbound_frame, outbound_frame = telephony.twilio_media("1")[0], telephony.twilio_media("1", track="outbound")[0]
    for tracks, kept in ((["inbound"], inbound_frame), (["outbound"], outbound_frame)):
        dialect = TwilioDialect("demo")
        assert isinstance(dialect.waiting(telephony.twilio_start(tracks=tracks)), commands.Begin)
        other = outbound_frame if kept is inbound_frame else inbound_frame
        assert isinstance(dialect.streaming(kept), commands.Audio) and dialect.fast_audio(kept)
        assert dialect.streaming(other) is None and dialect.fast_audio(other) == b""
        assert dialect.bidirectional is (tracks == ["inbound"])  # only <Connect> can play audio back
