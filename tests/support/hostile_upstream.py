"""A Data Flow that misbehaves on purpose: a real grpc.aio server whose every Stream is played by a
test's coroutine (``Behaviour``), over the wire contract the gateway is configured with.

Helpers answer Start, send events and read what the gateway sends, so a behaviour is a few lines:
answer Start and flood events, never answer, stop reading audio, end with an odd status. ``Flood`` is
such a behaviour; ``native_session`` runs one native client session through a gateway in front of it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from gateway.settings import Settings
from gateway.upstream.contract import ContentType, Frame, WireContract
from tests.support.harness import Transcript, read_all, running_gateway, ws_connect
from tests.support.native_client import start_message
from tests.support.settings import SIM_TENANT, SIM_TOKEN
from tests.support.stream_server import serve_stream

PROTO_MODULE = "gateway.upstream._proto.dataflow_pb2"
METHOD_PATH = "/dataflow/Stream"
Context = grpc.aio.ServicerContext[bytes, bytes]


class Peer:
    """One upstream stream as the hostile server sees it."""

    def __init__(self, contract: WireContract, requests: AsyncIterator[bytes], context: Context) -> None:
        self.contract, self.requests, self.context = contract, requests, context
        self.audio_bytes = 0

    async def next_frame(self) -> Frame | None:
        """The gateway's next message (None at the end of its input)."""
        async for data in self.requests:
            frame = self.contract.decode_request(data)
            if frame.content_type is ContentType.AUDIO:
                self.audio_bytes += len(frame.binary)
            return frame
        return None

    async def read_start(self) -> dict[str, Any]:
        frame = await self.next_frame()
        assert frame is not None and frame.content_type is ContentType.REQUEST
        start: dict[str, Any] = json.loads(frame.text)
        return start

    async def send_json(self, kind: ContentType, message: dict[str, Any] | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        await self.context.write(self.contract.encode_response(kind, text=text))

    async def send_raw_text(self, kind: ContentType, content: bytes) -> int:
        """A message whose text field holds ``content`` as it is, UTF-8 or not (the contract encodes only
        str): a same-sized placeholder is encoded, then swapped for it, so every length prefix stays right.
        Returns the message's size in bytes."""
        placeholder = "\x7f" * len(content)
        data = self.contract.encode_response(kind, text=placeholder)
        assert data.count(placeholder.encode()) == 1
        await self.context.write(data.replace(placeholder.encode(), content))
        return len(data)

    async def answer_start(self, session_id: str = "hostile-1", *, read: bool = True) -> None:
        if read:
            await self.read_start()
        await self.send_json(
            ContentType.RESPONSE,
            {"MessageName": "StartResponse", "operation-result": "success", "SessionId": session_id},
        )

    async def send_event(self, name: str, **data: Any) -> None:
        await self.send_json(ContentType.EVENT, {"Name": name, "Channel": 0, "Data": data})

    async def read_until_finalize(self) -> None:
        """Read (and count) audio until Finalize or Stop, or the end of the input."""
        while (frame := await self.next_frame()) is not None:
            if frame.content_type is ContentType.REQUEST and json.loads(frame.text).get("MessageName") in (
                "Finalize",
                "Stop",
            ):
                return


Behaviour = Callable[[Peer], Awaitable[None]]


class HostileUpstream:
    """``behaviour`` plays each Stream; ``peers`` holds every stream opened so far."""

    def __init__(self, behaviour: Behaviour, options: list[tuple[str, Any]] | None = None) -> None:
        self.behaviour = behaviour
        self.options = options or []
        self.contract = WireContract(PROTO_MODULE, METHOD_PATH)
        self.peers: list[Peer] = []
        self.port = 0
        self._server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> HostileUpstream:
        self._server, self.port = await serve_stream(self._handle, METHOD_PATH, self.options)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._server is not None:
            await self._server.stop(None)

    async def _handle(self, requests: AsyncIterator[bytes], context: Context) -> None:
        peer = Peer(self.contract, requests, context)
        self.peers.append(peer)
        await self.behaviour(peer)

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "upstream_target": self.target,
            "upstream_token": SIM_TOKEN,
            "upstream_tenant": SIM_TENANT,
            "upstream_method_path": METHOD_PATH,
            "upstream_proto_module": PROTO_MODULE,
            "default_project": "demo",
            "auth": "none",
            "allow_insecure_no_auth": True,
            "_env_file": None,
        }
        values.update(overrides)
        return Settings(**values)


async def forever() -> None:
    await asyncio.Event().wait()


async def native_session(upstream: HostileUpstream, **settings: Any) -> tuple[dict[str, Any], Transcript, float]:
    """Start, send 100 ms of audio, finalize; the first message, the rest, and the seconds it all took.
    The client reads frames of any size: what it is sent is measured, not refused."""
    async with running_gateway(upstream.settings(**settings)) as gw, ws_connect(gw.ws_url(), max_size=None) as ws:
        began = time.monotonic()
        await ws.send(start_message())
        first: dict[str, Any] = json.loads(await ws.recv())
        if first["type"] == "started":
            await ws.send(bytes(3200))
            await ws.send(json.dumps({"type": "finalize"}))
        transcript = await read_all(ws, timeout=20)
        return first, transcript, time.monotonic() - began


class Flood:
    """Right after Start (or, ``before_start``, before answering it): ``count`` events of ``size`` bytes as
    fast as gRPC lets them go (``written`` counts those gRPC took), then (once the client finalizes) a
    FinalResult."""

    def __init__(self, count: int, size: int, *, before_start: bool = False) -> None:
        self.count, self.size, self.written = count, size, 0
        self.before_start = before_start

    async def __call__(self, peer: Peer) -> None:
        await (peer.read_start() if self.before_start else peer.answer_start())
        for n in range(self.count):
            await peer.send_event("Pad", N=n, Pad="p" * self.size)
            self.written += 1
        if self.before_start:
            await peer.answer_start("early-1", read=False)
        await peer.read_until_finalize()
        await peer.send_event("FinalResult")
        await peer.send_event("FinalResult")
