"""A client's custom event the failed Data Flow stream never wrote goes to the stream a recovery opens,
once, at its place in the replayed audio. Before, an event still queued when the stream failed (Data
Flow slow to read: HTTP/2 flow control holds the gateway's writes) was dropped, and the client was not
told. An event the failed stream wrote is not sent again (Data Flow had it: a TTS request would play twice).

Over real sockets: a hostile Data Flow (tests/support/hostile_upstream.py) behind the real gateway, a
native WebSocket client in front of it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from pydantic import SecretStr

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import StartRequest
from gateway.errors import UpstreamUnavailable
from gateway.relay.replay import ReplayBuffer, replay
from gateway.upstream.channel import UpstreamClient
from gateway.upstream.contract import ContentType
from gateway.upstream.token import StaticTokenProvider
from tests.support.harness import read_all, running_gateway, ws_connect
from tests.support.hostile_upstream import HostileUpstream, Peer
from tests.support.native_client import start_message
from tests.support.settings import SIM_TOKEN

BYTES_PER_S = 32000  # 16 kHz pcm16 mono, as the client sends it and Data Flow gets it
BEFORE, AFTER = b"\x01\x01" * (BYTES_PER_S // 2), b"\x02\x02" * (BYTES_PER_S // 4)  # 1 s, then 0.5 s
HOLD = {"Name": "Agent Hold", "Data": {"Reason": "transfer"}}
#: Data Flow's receive window kept small and fixed: what it does not read holds the gateway's writes.
SMALL_WINDOW = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 16384)]


class TwoStreams:
    """The first stream reads nothing and fails after 1.5 s; the second records what it gets, in order."""

    def __init__(self) -> None:
        self.streams = 0
        self.first_got: list[tuple[str, Any]] = []
        self.second_got: list[tuple[str, Any]] = []  # ("audio", bytes) and ("event", body), in order

    async def __call__(self, peer: Peer) -> None:
        self.streams += 1
        await peer.answer_start()
        if self.streams == 1:
            await asyncio.sleep(1.5)
            await peer.context.abort(grpc.StatusCode.UNAVAILABLE, "node restarting")
        while (frame := await peer.next_frame()) is not None:
            if frame.content_type is ContentType.AUDIO:
                self.second_got.append(("audio", frame.binary))
            elif frame.content_type is ContentType.EVENT:
                self.second_got.append(("event", json.loads(frame.text)))
            elif json.loads(frame.text).get("MessageName") == "Finalize":
                break
        await peer.send_json(ContentType.RESPONSE, {"MessageName": "FinalizeResponse", "operation-result": "success"})
        await peer.send_json(ContentType.EVENT, {"Name": "FinalResult", "Channel": 0, "Data": {}})


def audio_around_events(got: list[tuple[str, Any]]) -> list[Any]:
    """Audio merged between events: [bytes, event, bytes, …]."""
    merged: list[Any] = []
    for kind, value in got:
        if kind == "audio" and merged and isinstance(merged[-1], bytes):
            merged[-1] += value
        else:
            merged.append(value)
    return merged


@pytest.mark.ws
async def test_an_event_the_failed_stream_never_wrote_is_sent_on_the_next_one_at_its_place() -> None:
    streams = TwoStreams()
    async with (
        HostileUpstream(streams, options=SMALL_WINDOW) as upstream,
        running_gateway(upstream.settings()) as gw,
        ws_connect(gw.ws_url()) as ws,
    ):
        await ws.send(start_message())
        assert json.loads(await ws.recv())["type"] == "started"
        for at in range(0, len(BEFORE), 3200):
            await ws.send(BEFORE[at : at + 3200])
        await ws.send(json.dumps({"type": "event", "event": HOLD}))
        for at in range(0, len(AFTER), 3200):
            await ws.send(AFTER[at : at + 3200])
        async with asyncio.timeout(10):
            while streams.streams < 2:
                await asyncio.sleep(0.05)
        await ws.send(json.dumps({"type": "finalize"}))
        transcript = await read_all(ws, timeout=10)
    assert transcript.close_code == 1000, transcript.messages
    assert len(transcript.of_type("upstream_recovered")) == 1
    # The second stream: the whole second and a half again (no final result yet), the event between.
    assert audio_around_events(streams.second_got) == [BEFORE, {"Event": HOLD}, AFTER]


class Recorder:
    """What ``replay`` sends, in order."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send_audio(self, data: bytes) -> None:
        self.sent.append(data)

    async def send_event(self, event: dict[str, Any]) -> None:
        self.sent.append(event)


@pytest.mark.parametrize("start", [0, 400])
async def test_replay_puts_each_event_at_its_place_and_those_past_the_end_last(start: int) -> None:
    buffer = ReplayBuffer(10_000)
    for fill in range(10):
        buffer.append(bytes([fill]) * 100)  # offsets 0 to 1000
    events = [(500, {"n": 2}), (100, {"n": 1}), (500, {"n": 3}), (5000, {"n": 4})]
    recorder = Recorder()
    await replay(recorder, buffer, start, events)  # type: ignore[arg-type]  # only the two sends are used
    merged = audio_around_events([("audio" if isinstance(x, bytes) else "event", x) for x in recorder.sent])
    everything = b"".join(bytes([fill]) * 100 for fill in range(10))
    if start == 0:
        assert merged == [everything[:100], {"n": 1}, everything[100:500], {"n": 2}, {"n": 3}, everything[500:],
                          {"n": 4}]  # fmt: skip
    else:  # an event before the replay's start goes first
        assert merged == [{"n": 1}, everything[400:500], {"n": 2}, {"n": 3}, everything[500:], {"n": 4}]


async def test_an_event_handed_to_a_stream_that_has_failed_is_kept_with_its_unsent() -> None:
    """The window between the stream failing and the recovery noticing: the event is refused (the
    session recovers) and kept, so the recovery sends it on the next stream (as the queued ones)."""

    async def fails_at_once(peer: Peer) -> None:
        await peer.answer_start()
        await peer.context.abort(grpc.StatusCode.UNAVAILABLE, "node restarting")

    audio = AudioFormat("pcm16", 16000, 1)
    async with HostileUpstream(fails_at_once) as upstream:
        client = UpstreamClient(upstream.settings(), StaticTokenProvider(SecretStr(SIM_TOKEN)))
        await client.start()
        try:
            stream = client.stream(audio, deadline_s=10)
            await stream.start(StartRequest(project="demo", audio=audio))
            with pytest.raises(UpstreamUnavailable):
                async for _ in stream.items():
                    pass
            with pytest.raises(UpstreamUnavailable):
                await stream.send_event(HOLD)
            assert stream.unsent_events() == [({"Event": HOLD}, 0)]
            stream.cancel()
        finally:
            await client.aclose()
