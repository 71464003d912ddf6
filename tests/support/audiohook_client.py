"""A Genesys AudioHook client for tests: the signed upgrade and the protocol's framing.

The signature is built here by hand from RFC 9421's rules (the signature base: one line per covered
component, then ``"@signature-params"``), independently of the library the gateway verifies with, so
a test proves the two agree on the bytes, not just that one library agrees with itself.

Also a client opened on a running gateway, stereo DTMF (one digit string per channel) to send, and the
final transcripts read back per channel.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection

from tests.support import signals
from tests.support.harness import RunningGateway, ws_connect

COMPONENTS = (
    "@request-target",
    "@authority",
    "audiohook-organization-id",
    "audiohook-session-id",
    "audiohook-correlation-id",
    "x-api-key",
)
STEREO_PCMU = {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}
RATE = 8000
EXTERNAL, INTERNAL = "123", "45"


def upgrade_headers(
    api_key: str, *, session_id: str | None = None, organization_id: str | None = None
) -> dict[str, str]:
    return {
        "Audiohook-Organization-Id": organization_id or str(uuid.uuid4()),
        "Audiohook-Correlation-Id": str(uuid.uuid4()),
        "Audiohook-Session-Id": session_id or str(uuid.uuid4()),
        "X-API-KEY": api_key,
    }


def sign(
    headers: dict[str, str], *, secret_b64: str, authority: str, target: str = "/v1/audiohook",
    created: int | None = None, expires_in: int = 30, nonce: str | None = None, keyid: str | None = None,
    components: tuple[str, ...] = COMPONENTS,
) -> dict[str, str]:  # fmt: skip
    """``headers`` plus Signature-Input and Signature, as Genesys signs an upgrade."""
    created = int(time.time()) if created is None else created
    nonce = nonce or secrets.token_urlsafe(24)
    lower = {k.lower(): v for k, v in headers.items()}
    derived = {"@request-target": target, "@authority": authority}
    lines = [f'"{c}": {derived[c] if c.startswith("@") else lower[c]}' for c in components]
    covered = " ".join(f'"{c}"' for c in components)
    params = (
        f'({covered});keyid="{keyid or lower["x-api-key"]}";nonce="{nonce}";alg="hmac-sha256"'
        f";created={created};expires={created + expires_in}"
    )
    base = "\n".join([*lines, f'"@signature-params": {params}'])
    digest = hmac.new(base64.b64decode(secret_b64), base.encode(), hashlib.sha256).digest()
    return {**headers, "Signature-Input": f"sig1={params}", "Signature": f"sig1=:{base64.b64encode(digest).decode()}:"}


@dataclass
class AudioHookClient:
    """One AudioHook session over one socket: client messages with their seq, serverseq and position."""

    ws: ClientConnection
    session_id: str
    organization_id: str
    seq: int = 0
    serverseq: int = 0
    samples: int = 0  # per channel sent: the position
    received: list[dict[str, Any]] = field(default_factory=list)

    def message(self, kind: str, parameters: dict[str, Any], *, seq: int | None = None) -> str:
        self.seq += 1
        return json.dumps({
            "version": "2", "id": self.session_id, "type": kind, "seq": self.seq if seq is None else seq,
            "serverseq": self.serverseq, "position": f"PT{self.samples / 8000:g}S", "parameters": parameters,
        })  # fmt: skip

    async def send(self, kind: str, parameters: dict[str, Any] | None = None) -> None:
        await self.ws.send(self.message(kind, parameters or {}))

    async def open(self, media: list[dict[str, Any]] | None = None, **extra: Any) -> None:
        parameters = {
            "organizationId": self.organization_id, "conversationId": str(uuid.uuid4()),
            "participant": {"id": str(uuid.uuid4()), "ani": "+15551230001", "aniName": "", "dnis": "+15559870002"},
            "media": media or [STEREO_PCMU], "language": "en-US", **extra,
        }  # fmt: skip
        await self.send("open", parameters)

    async def audio(self, data: bytes, frame_bytes: int = 320, channels: int = 2, width: int = 1) -> None:
        """``data`` in binary frames of ``frame_bytes`` (which may split a sample: the gateway carries it)."""
        for offset in range(0, len(data), frame_bytes):
            await self.ws.send(data[offset : offset + frame_bytes])
        self.samples += len(data) // (channels * width)

    async def recv(self, timeout: float = 10) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            frame = await self.ws.recv()
        assert isinstance(frame, str), "AudioHook servers send text frames only"
        message: dict[str, Any] = json.loads(frame)
        self.received.append(message)
        self.serverseq = max(self.serverseq, int(message.get("seq", 0)))
        return message

    async def until(self, kind: str, timeout: float = 15) -> list[dict[str, Any]]:
        """Every message up to and including the first of type ``kind``."""
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while not seen or seen[-1]["type"] != kind:
                seen.append(await self.recv(timeout))
        return seen


def connect(url: str, headers: dict[str, str]) -> Any:
    return ws_connect(url, additional_headers=headers)


def stereo_dtmf(fmt: str) -> bytes:
    """``EXTERNAL`` on the external channel, ``INTERNAL`` on the internal one, interleaved."""
    left = signals.utterances([EXTERNAL], RATE)
    right = signals.utterances([INTERNAL], RATE, lead_ms=600)
    n = max(len(left), len(right))
    both = signals.interleave(np.pad(left, (0, n - len(left))), np.pad(right, (0, n - len(right))))
    return signals.g711_encode(both, "mulaw") if fmt == "PCMU" else signals.to_pcm16(both)


def finals(messages: list[dict[str, Any]]) -> dict[int, list[str]]:
    """Final transcripts by channelId."""
    out: dict[int, list[str]] = {}
    for m in messages:
        for entity in m["parameters"]["entities"] if m["type"] == "event" else []:
            data = entity["data"]
            if entity["type"] == "transcript" and data["isFinal"]:
                out.setdefault(data["channelId"], []).append(
                    data["alternatives"][0]["interpretations"][0]["transcript"]
                )
    return out


async def opened_client(
    gw: RunningGateway, media: list[dict[str, Any]] | None = None, **open_extra: Any
) -> tuple[Any, AudioHookClient]:
    headers = upgrade_headers("any-key")
    ws = await connect(gw.ws_url("/v1/audiohook"), headers).__aenter__()
    client = AudioHookClient(ws, headers["Audiohook-Session-Id"], headers["Audiohook-Organization-Id"])
    await client.open(media, **open_extra)
    return ws, client
