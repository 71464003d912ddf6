"""Genesys AudioHook: the dialect's client messages and audio frames, the transcript rendering of Data
Flow events, and the signed upgrade's ``Signature-Input``/``Signature`` headers.

The first byte picks what the rest is: 0 a run of client messages and frames (length-prefixed pieces;
a piece starting with ``{`` is a text frame, anything else binary), 1 a Data Flow event to render after
an ``open``, 2 the two signature headers (split at the first newline). Declared errors: the dialect
answers every client input with a Command (never raises); the handshake raises only ``Unauthorized``
(401) or ``RateLimited``, never anything that would become a 500.
"""

from __future__ import annotations

import base64
import json

from gateway.adapters import commands
from gateway.adapters.audiohook import AudioHookDialect
from gateway.dataflow.lenient import loads_object
from gateway.dataflow.messages import parse_event
from gateway.errors import InvalidMessage, RateLimited, Unauthorized
from gateway.signatures.audiohook import AudioHookSignatures
from tests.fuzz.common import encodable, pieces, text_of, with_pieces

_OPEN = {
    "version": "2", "id": "s", "type": "open", "seq": 1, "serverseq": 0, "position": "PT0S",
    "parameters": {"organizationId": "o", "conversationId": "c", "language": "en-US",
                   "media": [{"type": "audio", "format": "L16", "channels": ["external", "internal"], "rate": 8000}]},
}  # fmt: skip
_HEADERS = {
    "x-api-key": "k", "audiohook-organization-id": "o", "audiohook-session-id": "s", "audiohook-correlation-id": "c",
}  # fmt: skip
_SIGNATURES = AudioHookSignatures(
    default_secret=b"secret", key_secrets={}, public_hosts=["gw.example.test"], max_age_s=30.0, max_nonces=64
)


def one_input(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % 3, data[1:]
    if mode == 0:
        _client(body)
    elif mode == 1:
        _render(body)
    else:
        _handshake(body)


def _client(body: bytes) -> None:
    dialect = AudioHookDialect("demo", session_id="s")
    streaming = False
    for piece in pieces(body):
        text = text_of(piece) if piece.startswith(b"{") else None
        message: str | bytes = piece if text is None else text
        command = dialect.streaming(message) if streaming else dialect.waiting(message)
        if isinstance(command, commands.Begin):
            streaming = True
            assert command.request.audio.sample_rate == 8000 and command.request.audio.channels in (1, 2)
            assert [frame["type"] for frame in command.reply if isinstance(frame, dict)] == ["opened"]
        elif isinstance(command, commands.Audio):
            assert dialect.aligner is not None and len(command.data) % dialect.aligner.frame_bytes == 0
    assert dialect.timeline.forwarded <= dialect.timeline.received


def _render(body: bytes) -> None:
    text = text_of(body)
    if text is None:
        return
    try:
        event = parse_event(loads_object(text))
    except InvalidMessage:
        return
    dialect = AudioHookDialect("demo", session_id="s")
    dialect.waiting(json.dumps(_OPEN))
    for frame in dialect.render(event):
        assert isinstance(frame, dict) and frame["type"] == "event" and frame["seq"] == dialect.seq
        encodable(frame)


def _handshake(body: bytes) -> None:
    signature_input, _, signature = body.decode("latin-1").partition("\n")
    headers = {**_HEADERS, "signature-input": signature_input, "signature": signature}
    try:
        _SIGNATURES.verify(key_name=None, api_key="k", headers=headers, target="/v1/audiohook", host="h")
    except (Unauthorized, RateLimited):
        return


def seeds() -> list[bytes]:
    ping = {**_OPEN, "type": "ping", "seq": 2, "serverseq": 1, "parameters": {}}
    client = with_pieces([json.dumps(_OPEN).encode(), bytes(7), bytes(9), json.dumps(ping).encode()])
    event = {"Name": "SR Milestone", "Channel": 1, "StartMs": 300, "EndMs": 900, "Data": {"Text": "12"}}
    params = '("@request-target" "@authority" "x-api-key");keyid="k";nonce="n0123456789abcdefgh";alg="hmac-sha256"'
    signature = base64.b64encode(bytes(32)).decode()
    return [
        b"\x00" + client,
        b"\x01" + json.dumps(event).encode(),
        b"\x02" + f"sig1={params};created=1700000000\nsig1=:{signature}:".encode(),
    ]
