"""/v1/audiocodes as VoiceAI Connect holds it: one socket for the whole conversation. AudioCodes' STT API
says the connection "remains open for the entire duration of the conversation" and "might remain open
during periods of no active recognition-session"; its sample STT server answers ``stop`` with ``end`` at
once and takes a client ``end`` as the conversation's end. Before: a ``start`` sent right after ``stop``
(before ``end``) ended the socket (1008 already_started) and lost the first recognition's results; a socket
with no recognition for 10 s (a welcome prompt) or 30 s (the bot talking) was closed with an error; a
client ``end`` was ignored. A scripted VoiceAI Connect client through the real gateway to the simulator."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.support import signals
from tests.support.audiocodes_client import recognize, send_frames, start, until
from tests.support.harness import GatewayFactory, RunningGateway, read_all, ws_connect

pytestmark = pytest.mark.ws

STOP, END = json.dumps({"type": "stop"}), json.dumps({"type": "end"})


def recognitions(messages: list[dict[str, Any]]) -> list[str]:
    return [m["alternatives"][0]["text"] for m in messages if m["type"] == "recognition"]


async def test_a_start_right_after_stop_waits_for_the_end_and_loses_nothing(gw: RunningGateway) -> None:
    async with ws_connect(gw.ws_url("/v1/audiocodes")) as ws:
        await ws.send(start())
        await send_frames(ws, signals.to_pcm16(signals.utterances(["12"], 16000)), 16000)
        await ws.send(STOP)
        await ws.send(start())  # at once, as a client of a server that answers stop with end at once
        await send_frames(ws, signals.to_pcm16(signals.utterances(["34"], 16000)), 16000)
        await ws.send(STOP)
        first = await until(ws, "end")
        second = await until(ws, "end")
        await ws.close()
    assert first[0] == {"type": "started"} and recognitions(first) == ["12"], first
    assert first[-1] == {"type": "end", "reason": "stop requested"}
    assert second[0] == {"type": "started"} and recognitions(second) == ["34"], second
    assert second[-1] == {"type": "end", "reason": "stop requested"}
    assert not [m for m in first + second if m["type"] == "error"]
    assert gw.gateway.registry.active == 0


async def test_the_socket_waits_for_recognitions_as_long_as_the_conversation(gateway_factory: GatewayFactory) -> None:
    """A start 1.2 s in and a gap of 1.2 s between recognitions, past a start and an idle timeout of 0.5 s."""
    async with (
        gateway_factory(start_timeout_s=0.5, idle_timeout_s=0.5) as gw,
        ws_connect(gw.ws_url("/v1/audiocodes")) as ws,
    ):
        await asyncio.sleep(1.2)  # the bot's welcome prompt
        first = await recognize(ws, "12", 16000, "raw")
        await asyncio.sleep(1.2)  # the bot talks
        second = await recognize(ws, "3", 16000, "raw")
        await ws.close()
    assert recognitions(first) == ["12"] and recognitions(second) == ["3"]


async def test_the_wait_between_recognitions_has_its_own_bound(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(between_recognitions_s=0.5) as gw:
        async with ws_connect(gw.ws_url("/v1/audiocodes")) as ws:
            before = await read_all(ws, timeout=5)
        async with ws_connect(gw.ws_url("/v1/audiocodes")) as ws:
            await recognize(ws, "1", 16000, "raw")
            between = await read_all(ws, timeout=5)
    assert before.messages == [{"type": "error", "reason": "start_timeout: no start message within 0.5 s"}]
    assert between.messages == [{"type": "error", "reason": "idle_timeout: no audio or message for 0.5 s"}]
    assert before.close_code == between.close_code == 1008


async def test_a_client_end_finishes_the_recognition_and_is_answered(gw: RunningGateway) -> None:
    async with ws_connect(gw.ws_url("/v1/audiocodes")) as ws:
        await ws.send(END)  # no recognition running
        idle = await until(ws, "end")
        await ws.send(start())
        await send_frames(ws, signals.to_pcm16(signals.utterances(["56"], 16000)), 16000)
        await ws.send(END)
        running = await until(ws, "end")
        await ws.close()
    assert idle == [{"type": "end", "reason": "ended by client"}]
    assert recognitions(running) == ["56"] and running[-1] == {"type": "end", "reason": "ended by client"}
    assert gw.gateway.registry.active == 0
