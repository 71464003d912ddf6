"""What a client's start may cost. A native start had no size bound: its settings and call properties
go to Data Flow and stay with the session (the start is replayed on recovery), so 1 MiB of
``[{},{},…]`` held ~27 MB of objects for the session's life, and re-encoded it could pass the gRPC
message limit, which the client was told as a retryable Data Flow failure. A project name had no
length bound either (it goes upstream and into every session's log lines). Events too big for Data
Flow were parsed and refused without being paced, and NaN or Infinity went on to Data Flow as no JSON.
Real uvicorn on port 0, the real simulator, real websockets clients."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway.auth import MAX_PROJECT_CHARS
from gateway.simulator.server import DataflowSimulator
from tests.support.harness import RunningGateway, next_message, ws_connect
from tests.support.native_client import start_message

pytestmark = pytest.mark.ws

CAP = 64 * 1024  # GATEWAY_MAX_CONTROL_MESSAGE_BYTES's default


async def test_a_start_over_the_control_message_cap_is_refused_unread_and_a_smaller_one_then_runs(
    gw: RunningGateway, simulator: DataflowSimulator
) -> None:
    wide = [{}] * (CAP // 3)
    big = start_message(settings={"x": wide})
    assert len(big) > CAP
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(big)
        error = await next_message(ws, "error")
        assert error["code"] == "message_too_big" and str(CAP) in error["message"]
        assert not simulator.records  # Data Flow never saw it
        await ws.send(start_message(settings={"x": [{}] * 100}))  # the connection is still good
        started = await next_message(ws, "started")
        await ws.send(json.dumps({"type": "stop"}))
        await next_message(ws, "closed")
    assert started["sessionId"] and len(simulator.records) == 1


@pytest.mark.parametrize(("length", "refused"), [(MAX_PROJECT_CHARS, False), (MAX_PROJECT_CHARS + 1, True)])
async def test_a_project_name_is_bounded(
    gw: RunningGateway, simulator: DataflowSimulator, length: int, refused: bool
) -> None:
    project = "p" * length
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(json.dumps({**json.loads(start_message()), "project": project}))
        first = await next_message(ws, "error" if refused else "started")
        if not refused:
            await ws.send(json.dumps({"type": "stop"}))
            await next_message(ws, "closed")
    if refused:
        assert first["code"] == "invalid_start" and str(MAX_PROJECT_CHARS) in first["message"]
        assert project not in first["message"] and not simulator.records
    else:
        assert simulator.records[-1].project == project


async def test_events_too_big_for_data_flow_are_paced_like_any_message_it_never_sees(gw: RunningGateway) -> None:
    """An ``event`` over the cap is refused after it is parsed, and was never charged to the session's
    pace (only what the gateway handles alone was): one client sent ~1 MiB events back to back and held
    a core. Now each costs its length as text on the rate limit's clock (1 ms of audio a KiB, at
    ``GATEWAY_MAX_AUDIO_RATE_X`` 3 after ``GATEWAY_AUDIO_RATE_BURST_MS`` 10 s): ~10 at once, then ~3 a second."""
    wide = json.dumps({"type": "event", "event": {"Name": "X", "Data": [{}] * 330_000}}, separators=(",", ":"))
    assert 960 * 1024 < len(wide) < 1024 * 1024
    sent, window_s = 40, 4.0
    async with ws_connect(gw.ws_url(), max_size=None) as ws:
        await ws.send(start_message())
        await next_message(ws, "started")

        async def send_all() -> None:
            for _ in range(sent):
                await ws.send(wide)

        sender = asyncio.create_task(send_all())
        refused = 0
        try:
            async with asyncio.timeout(window_s):
                while True:
                    message = json.loads(await ws.recv())
                    refused += message.get("type") == "error" and message.get("code") == "message_too_big"
        except TimeoutError:
            pass
        sender.cancel()
    assert 8 <= refused <= 10 + 3 * window_s + 2, f"{refused} of {sent} events of ~1 MiB refused in {window_s} s"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
async def test_nan_and_infinity_are_refused_in_the_clients_words_not_sent_to_data_flow(
    gw: RunningGateway, simulator: DataflowSimulator, literal: str
) -> None:
    """Python's parser takes them and its encoder wrote them on to Data Flow, which is no JSON: a strict
    parser there would have refused the session or the event, and the client learned nothing."""
    start = json.loads(start_message())
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(json.dumps(start)[:-1] + f', "settings": {{"Threshold": {literal}}}}}')
        refused_start = await next_message(ws, "error")
    assert not simulator.records  # no Data Flow session was opened for it
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(json.dumps(start))
        await next_message(ws, "started")
        await ws.send(f'{{"type": "event", "event": {{"Name": "X", "Data": {{"Score": {literal}}}}}}}')
        refused_event = await next_message(ws, "error")
        await ws.send(json.dumps({"type": "stop"}))
        await next_message(ws, "closed")
    for error in (refused_start, refused_event):
        assert error["code"] == "invalid_message" and "NaN or Infinity" in error["message"], error
    assert simulator.records[-1].requests == ["stop"]  # the event never went


async def test_large_audio_frames_are_paced_as_audio_only(gw: RunningGateway) -> None:
    """The charge for a message too big for Data Flow is for text: binary audio frames over the control
    cap (128 KiB: 4 s of 16 kHz audio each) are paced by the audio they carry, not charged again. 30 s of
    audio at 3x after the 10 s burst takes ~6.7 s; charged twice it would take ~17 s."""
    frame = bytes(128 * 1024)
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message())
        await next_message(ws, "started")
        began = asyncio.get_running_loop().time()
        for _ in range(8):  # 32 s of audio
            await ws.send(frame)
        await ws.send(json.dumps({"type": "finalize"}))
        await next_message(ws, "closed", timeout=40)
        took = asyncio.get_running_loop().time() - began
    assert took < 12, f"32 s of audio in 128 KiB frames took {took:.1f} s"


async def test_the_cap_counts_the_utf8_bytes_data_flow_gets_not_escapes(
    gw: RunningGateway, simulator: DataflowSimulator
) -> None:
    """Each Turkish letter counted as its 6-byte ``\\uXXXX`` escape: an update or event of ~24 KB was refused
    as over the 64 KiB cap. Now the compact UTF-8 Data Flow receives is counted: 60 000 bytes pass and
    arrive intact; 70 000 are refused with their size."""
    note = "ş" * 30_000  # 60 000 bytes as UTF-8, 180 000 escaped
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message())
        await next_message(ws, "started")
        await ws.send(json.dumps({"type": "update", "settings": {"Note": note}}, ensure_ascii=False))
        answered = await next_message(ws, "response")
        await ws.send(json.dumps({"type": "event", "event": {"Name": "Not", "Data": {"Note": note}}}))
        echoed = await next_message(ws, "event")
        await ws.send(json.dumps({"type": "event", "event": {"Name": "Not", "Data": {"Note": note + "ş" * 5000}}}))
        refused = await next_message(ws, "error")
        await ws.send(json.dumps({"type": "stop"}))
        await next_message(ws, "closed")
    assert (answered["name"], answered["ok"]) == ("UpdateResponse", True), answered
    assert (echoed["name"], echoed["data"]["Note"]) == ("Not", note), str(echoed)[:200]
    assert refused["code"] == "message_too_big"
    assert "a control message of 70043 bytes is over the limit of 65536" in refused["message"], refused
    assert simulator.records[-1].client_events[0]["Data"]["Note"] == note


@pytest.mark.parametrize("gw", [{"audio_rate_burst_ms": 100}], indirect=True)
async def test_text_over_the_cap_in_utf8_bytes_is_paced_as_any_refused_text(gw: RunningGateway) -> None:
    """The cap counts UTF-8 bytes; the charge for refused text counted characters, so updates of Turkish
    text over the cap in bytes but not in characters were refused unpaced (60 in 0.05 s, where as many
    ASCII ones took 1.27 s)."""

    async def refusals(value: str) -> float:
        message = json.dumps({"type": "update", "settings": {"Note": value}}, ensure_ascii=False)
        async with ws_connect(gw.ws_url(), max_size=None) as ws:
            await ws.send(start_message())
            await next_message(ws, "started")
            began = asyncio.get_running_loop().time()
            for _ in range(60):
                await ws.send(message)
            for _ in range(60):
                assert (await next_message(ws, "error", timeout=60))["code"] == "message_too_big"
            return asyncio.get_running_loop().time() - began

    ascii_s = await refusals("a" * (CAP + 100))
    turkish_s = await refusals("ş" * (CAP // 2 + 100))  # 33 000 characters, 66 000 bytes
    assert ascii_s > 0.8, ascii_s  # ~64 ms of audio charged a message at 3x after a 100 ms burst
    assert turkish_s > ascii_s / 2, (ascii_s, turkish_s)
