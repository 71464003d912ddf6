"""One short session per client API and per way it can end, for tests that run many of them (memory).

Each function runs one session against a gateway that requires :data:`API_KEY` and returns a short
outcome string, so a test can check every path ended as it meant to (not, say, all refused at the door).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import numpy as np
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.auth import key_digest
from tests.support import telephony
from tests.support.audiohook_client import AudioHookClient, upgrade_headers
from tests.support.harness import RunningGateway, next_message, read_all, ws_connect
from tests.support.probes import FRAME_BYTES, start_json
from tests.support.raw_ws import RawWebSocket
from tests.support.settings import SECRETS
from tests.support.signals import wav_bytes

API_KEY = "dfg_short-sessions-key-never-logged"
SECRETS.add(API_KEY)
KEYS = [{"name": "short", "sha256": key_digest(API_KEY)}]
AUTH = {"Authorization": f"Bearer {API_KEY}"}
ORIGIN = "https://allowed.example"
MAX_MESSAGE_BYTES = 64 * 1024  # the gateway's GATEWAY_MAX_WS_MESSAGE_BYTES in these tests
AUDIO = bytes(FRAME_BYTES * 5)  # 100 ms of 16 kHz pcm16 silence
UPLOAD = wav_bytes(np.zeros(1600, dtype=np.float32), 16000)

Path_ = Callable[[RunningGateway], Awaitable[str]]


def unique() -> str:
    """A string no earlier session chose: whatever keys state by it would grow with the sessions."""
    return uuid.uuid4().hex


async def _texts(ws: ClientConnection) -> list[dict[str, Any]]:
    return (await read_all(ws, timeout=15)).messages


async def native(gw: RunningGateway) -> str:
    async with ws_connect(gw.ws_url(), additional_headers=AUTH) as ws:
        await ws.send(start_json(project="demo", settings={"Call": unique()}))
        await ws.send(AUDIO)
        await ws.send(json.dumps({"type": "event", "event": {"Name": unique(), "Data": {}}}))  # echoed: a new name
        await ws.send(json.dumps({"type": "finalize"}))
        closed = [m for m in await _texts(ws) if m.get("type") == "closed"]
    return f"{ws.close_code}:{closed[-1]['reason'] if closed else None}"


async def project_runner(gw: RunningGateway) -> str:
    async with ws_connect(gw.ws_url("/project-runner/demo"), additional_headers=AUTH) as ws:
        await ws.send(json.dumps({"MessageName": "Start", "Audio": {"Encoding": "pcm", "SampleRate": 16000}}))
        await ws.send(AUDIO)
        await ws.send('{"MessageName":"Finalize"}')
        names = [m.get("Name") or m.get("MessageName") for m in await _texts(ws)]
    return f"{ws.close_code}:{names[-1] if names else None}"


async def audiocodes(gw: RunningGateway) -> str:
    async with ws_connect(gw.ws_url("/v1/audiocodes?project=demo"), additional_headers=AUTH) as ws:
        await ws.send('{"type":"start","language":"en-US","encoding":"LINEAR16","sampleRateHz":16000}')
        await ws.send(AUDIO)
        await ws.send('{"type":"stop"}')
        while (message := json.loads(await ws.recv()))["type"] != "end":  # sequential: the socket stays open
            pass
    return f"end:{message['reason']}"


async def jambonz(gw: RunningGateway) -> str:
    async with ws_connect(gw.ws_url("/v1/jambonz"), additional_headers=AUTH) as ws:
        await ws.send(json.dumps({"type": "start", "language": "en-US", "format": "raw", "encoding": "LINEAR16",
                                  "sampleRateHz": 16000, "interimResults": False}))  # fmt: skip
        await ws.send(AUDIO)
        await ws.send('{"type":"stop"}')
        await _texts(ws)
    return f"{ws.close_code}"


async def twilio(gw: RunningGateway) -> str:
    """Results go to the webhook; the stop finalizes and the gateway closes."""
    async with ws_connect(gw.ws_url("/v1/twilio"), additional_headers=AUTH) as ws:
        await ws.send(telephony.twilio_connected())
        await ws.send(telephony.twilio_start(callRef=unique()))
        for frame in telephony.twilio_media("1")[:5]:
            await ws.send(frame)
        await ws.send(telephony.twilio_stop())
        await _texts(ws)
    return f"{ws.close_code}"


async def vonage(gw: RunningGateway) -> str:
    """The caller hangs up: the session is finalized, its summary goes to the webhook."""
    async with ws_connect(gw.ws_url("/v1/vonage"), additional_headers=AUTH) as ws:
        await ws.send(telephony.vonage_connected(16000, uuid=unique()))
        for frame in telephony.l16_frames("2", 16000)[:5]:
            await ws.send(frame)
    return "hung up"


async def jambonz_listen(gw: RunningGateway) -> str:
    """jambonz's listen verb with its wsAuth (Basic): the socket closing is the hang-up."""
    basic = {"Authorization": "Basic " + base64.b64encode(f"jambonz:{API_KEY}".encode()).decode()}
    async with ws_connect(gw.ws_url("/v1/jambonz/listen"), additional_headers=basic) as ws:
        await ws.send(json.dumps({"sampleRate": 16000, "mixType": "mono", "callSid": unique()}))
        for frame in telephony.l16_frames("2", 16000)[:5]:
            await ws.send(frame)
    return "hung up"


async def audiohook(gw: RunningGateway) -> str:
    headers = upgrade_headers(API_KEY) | AUTH
    async with ws_connect(gw.ws_url("/v1/audiohook"), additional_headers=headers) as ws:
        client = AudioHookClient(ws, headers["Audiohook-Session-Id"], headers["Audiohook-Organization-Id"])
        await client.open()
        await client.until("opened")
        await client.audio(bytes(1600))
        await client.send("close", {"reason": "end"})
        await client.until("closed")
    return "closed"


async def upload(gw: RunningGateway) -> str:
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{gw.http_url}/v1/recognize?project=demo", content=UPLOAD, headers=AUTH)
    return f"http {answer.status_code}"


# --- abnormal endings ---------------------------------------------------------------------------------


async def vanishes_mid_start(gw: RunningGateway) -> str:
    """The start is sent, then the TCP connection is reset while Data Flow answers it."""
    ws = await ws_connect(gw.ws_url(), additional_headers=AUTH)
    await ws.send(start_json())
    await ws.send(AUDIO)
    await asyncio.sleep(0.005)
    ws.transport.abort()
    await ws.wait_closed()
    return "aborted"


async def vanishes_streaming(gw: RunningGateway) -> str:
    ws = await ws_connect(gw.ws_url("/v1/audiocodes?project=demo"), additional_headers=AUTH)
    await ws.send('{"type":"start","language":"en-US","encoding":"LINEAR16","sampleRateHz":16000}')
    assert json.loads(await ws.recv())["type"] == "started"
    await ws.send(AUDIO)
    ws.transport.abort()
    await ws.wait_closed()
    return "aborted"


async def refused_start(gw: RunningGateway) -> str:
    """Data Flow refuses the Start."""
    async with ws_connect(gw.ws_url(), additional_headers=AUTH) as ws:
        await ws.send(start_json(settings={"SimulatorFault": "reject_start"}))
        codes = [m["code"] for m in await _texts(ws) if m.get("type") == "error"]
    return f"{ws.close_code}:{','.join(codes)}"


async def upstream_fails(gw: RunningGateway) -> str:
    """Data Flow ends the stream mid-session with a cause no retry cures."""
    async with ws_connect(gw.ws_url(), additional_headers=AUTH) as ws:
        await ws.send(start_json(settings={"SimulatorFault": "abort:50:FAILED_PRECONDITION"}))
        await ws.send(AUDIO)
        codes = [m["code"] for m in await _texts(ws) if m.get("type") == "error"]
    return f"{ws.close_code}:{','.join(codes)}"


async def upstream_recovers(gw: RunningGateway) -> str:
    """Data Flow drops the stream once: the session moves to a new one and finishes normally."""
    async with ws_connect(gw.ws_url(), additional_headers=AUTH) as ws:
        await ws.send(start_json(settings={"SimulatorFault": "abort:20:UNAVAILABLE:once", "Call": unique()}))
        await ws.send(AUDIO)
        await next_message(ws, "upstream_recovered")
        await ws.send(json.dumps({"type": "finalize"}))
        closed = [m for m in await _texts(ws) if m.get("type") == "closed"]
    return f"{ws.close_code}:{closed[-1]['reason'] if closed else None}:recovered"


async def bad_key(gw: RunningGateway) -> str:
    """A credential never seen before, at the handshake: refused before accept."""
    try:
        async with ws_connect(gw.ws_url("/v1/jambonz"), additional_headers={"Authorization": f"Bearer {unique()}"}):
            return "accepted"
    except InvalidStatus as exc:
        return f"http {exc.response.status_code}"


async def bad_token_in_band(gw: RunningGateway) -> str:
    """A browser (an Origin, no header credential) whose start message carries a made-up token."""
    async with ws_connect(gw.ws_url(), origin=ORIGIN) as ws:  # type: ignore[arg-type]
        await ws.send(start_json(token=f"{unique()}.{unique()}.{unique()}"))
        codes = [m["code"] for m in await _texts(ws) if m.get("type") == "error"]
    return f"{ws.close_code}:{','.join(codes)}"


async def bad_origin(gw: RunningGateway) -> str:
    try:
        async with ws_connect(gw.ws_url(), origin=f"https://{unique()}.example", additional_headers=AUTH):  # type: ignore[arg-type]
            return "accepted"
    except InvalidStatus as exc:
        return f"http {exc.response.status_code}"


async def oversized(gw: RunningGateway) -> str:
    """A message over GATEWAY_MAX_WS_MESSAGE_BYTES in the middle of a session."""
    async with ws_connect(gw.ws_url("/v1/audiocodes?project=demo"), additional_headers=AUTH) as ws:
        await ws.send('{"type":"start","language":"en-US","encoding":"LINEAR16","sampleRateHz":16000}')
        await ws.send(AUDIO)
        with contextlib.suppress(ConnectionClosed):
            await ws.send(bytes(MAX_MESSAGE_BYTES + 2))
        await _texts(ws)
    return f"{ws.close_code}"


async def upload_vanishes(gw: RunningGateway) -> str:
    conn = await RawWebSocket.open(gw.port)
    head = (
        f"POST /v1/recognize HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: audio/wav\r\nContent-Length: {len(UPLOAD)}\r\n\r\n"
    )
    await conn.send_raw(head.encode() + UPLOAD[: len(UPLOAD) // 2])
    await asyncio.sleep(0.02)
    conn.abort()
    return "aborted"


#: Every path with the outcome it must have.
PATHS: dict[str, tuple[Path_, str]] = {
    "native": (native, "1000:finalized"),
    "project_runner": (project_runner, "1000:FinalResult"),
    "audiocodes": (audiocodes, "end:stop requested"),
    "jambonz": (jambonz, "1000"),
    "twilio": (twilio, "1000"),
    "vonage": (vonage, "hung up"),
    "jambonz_listen": (jambonz_listen, "hung up"),
    "audiohook": (audiohook, "closed"),
    "upload": (upload, "http 200"),
    "vanishes_mid_start": (vanishes_mid_start, "aborted"),
    "vanishes_streaming": (vanishes_streaming, "aborted"),
    "refused_start": (refused_start, "1011:upstream_rejected"),
    "upstream_fails": (upstream_fails, "1011:upstream_rejected"),
    "upstream_recovers": (upstream_recovers, "1000:finalized:recovered"),
    "bad_key": (bad_key, "http 401"),
    "bad_token_in_band": (bad_token_in_band, "1008:invalid_credential"),
    "bad_origin": (bad_origin, "http 403"),
    "oversized": (oversized, "1009"),
    "upload_vanishes": (upload_vanishes, "aborted"),
}
