"""What Data Flow sends: protobuf ``StreamOutput`` frames -> content type -> JSON -> response or event,
through ``DataflowStream.items()`` exactly as a session reads them, then rendered for every dialect.

The input is a sequence of length-prefixed frames; a frame whose first byte is odd is wrapped in a
valid envelope (content type from the byte, the rest as text or audio), an even one is raw protobuf.
Declared error: ``UpstreamProtocolError`` (the session ends with ``upstream_protocol_error``, 1011).
Everything read must render for native clients, Data Flow WS clients (token keys scrubbed) and
AudioCodes without an exception.
"""

from __future__ import annotations

import contextlib
import json

import grpc
from pydantic import SecretStr

from gateway.adapters import messages
from gateway.adapters.audiocodes import render as render_audiocodes
from gateway.adapters.dataflow_ws import scrub
from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import DataflowEvent, DataflowResponse, UpstreamAudio
from gateway.errors import UpstreamProtocolError
from gateway.settings import Settings
from gateway.upstream.channel import UpstreamClient
from gateway.upstream.contract import ContentType
from gateway.upstream.stream import DataflowStream
from gateway.upstream.token import StaticTokenProvider
from tests.fuzz.common import encodable, pieces, run, with_pieces

_KINDS = list(ContentType)
_client: UpstreamClient | None = None


def client() -> UpstreamClient:
    global _client
    if _client is None:
        settings = Settings(_env_file=None, upstream_target="127.0.0.1:1", auth="none", allow_insecure_no_auth=True)  # type: ignore[call-arg]
        _client = UpstreamClient(settings, StaticTokenProvider(SecretStr("t")))
    return _client


class FakeCall:
    """The read side of a grpc.aio stream call, replaying recorded frames."""

    def __init__(self, frames: list[bytes]) -> None:
        self._frames = frames

    async def read(self) -> object:
        return self._frames.pop(0) if self._frames else grpc.aio.EOF  # type: ignore[attr-defined]


def frames_of(data: bytes) -> list[bytes]:
    contract = client().contract
    frames = []
    for piece in pieces(data):
        if piece and piece[0] & 1:
            kind, content = _KINDS[(piece[0] >> 1) % len(_KINDS)], piece[1:]
            if kind is ContentType.AUDIO:
                frames.append(contract.encode_response(kind, binary=content))
            else:
                frames.append(contract.encode_response(kind, text=content.decode("utf-8", "replace")))
        else:
            frames.append(piece[1:])
    return frames


def one_input(data: bytes) -> None:
    stream = DataflowStream(client(), AudioFormat("pcm16", 16000, 1), deadline_s=60)
    stream._call = FakeCall(frames_of(data))  # type: ignore[assignment]

    async def consume() -> None:
        async for item in stream.items():
            if isinstance(item, DataflowEvent):
                encodable(messages.event(item, raw=True))
                encodable(scrub(item.raw))
                message = render_audiocodes(item)
                if message is not None:
                    encodable(message)
            elif isinstance(item, DataflowResponse):
                assert isinstance(item.ok, bool) and (item.ok or item.error)
                encodable(scrub(item.raw))
            else:
                assert isinstance(item, UpstreamAudio)

    with contextlib.suppress(UpstreamProtocolError):
        run(consume())


def seeds() -> list[bytes]:
    def text(kind: ContentType, obj: object) -> bytes:
        return bytes([1 | (_KINDS.index(kind) << 1)]) + json.dumps(obj).encode()

    frames = [
        text(ContentType.RESPONSE, {"MessageName": "StartResponse", "OperationResult": "Success", "SessionId": "s"}),
        text(ContentType.EVENT, {"Name": "SR Partial", "Channel": 0, "Data": {"Text": "1"}}),
        text(ContentType.EVENT, {"event": {"name": "SR Milestone", "channel": "0", "data": {"text": "12"}}}),
        bytes([1 | (_KINDS.index(ContentType.AUDIO) << 1)]) + bytes(64),
        text(ContentType.RESPONSE, {"message-name": "finalize-response", "operation-result": "success"}),
        b"\x00\x0a\x02\x08\x07",
    ]
    return [with_pieces(frames)]
