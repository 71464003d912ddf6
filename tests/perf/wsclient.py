"""A lean client for the load generator: websockets' sans-I/O protocol on a plain asyncio Protocol.

The websockets asyncio client runs reader tasks and queues per connection; with hundreds of
sessions on the same two cores as the gateway it took a third of a core and queued what it
measured behind its own tasks. Here the same library does the framing, masking, handshake, ping
and close, but every message is handled in ``data_received``, stamped with its arrival time the
moment the bytes are read, and handed to a callback: no task switch per message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

TEXT, BINARY = Opcode.TEXT, Opcode.BINARY

#: on_message(opcode, payload, arrival_ns) for every complete text or binary message
OnMessage = Callable[[Opcode, bytes, int], None]


class LeanWebSocket(asyncio.Protocol):
    def __init__(self, url: str, on_message: OnMessage) -> None:
        self._ws = ClientProtocol(parse_uri(url), max_size=None)
        self._on_message = on_message
        self._fragments: list[bytes] = []
        self._opcode = TEXT
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int | None] = loop.create_future()

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    # --- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        self._ws.send_request(self._ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()  # the clock every process shares (see gateway/simulator/bench.py)
        self._ws.receive_data(data)
        for event in self._ws.events_received():
            if isinstance(event, Response):
                self._opened(event)
            elif isinstance(event, Frame):
                self._frame(event, now)
        self._flush()  # pongs and close answers the protocol queued

    def connection_lost(self, exc: Exception | None) -> None:
        self._ws.receive_eof()  # the protocol reaches CLOSED and reports the close code it received
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed during the handshake: {exc}"))
        if not self.closed.done():
            self.closed.set_result(self._ws.close_code)

    # --- sending --------------------------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        if self._ws.state is State.OPEN:
            self._ws.send_text(text.encode())
            self._flush()

    def send_binary(self, data: bytes) -> None:
        if self._ws.state is State.OPEN:
            self._ws.send_binary(data)
            self._flush()

    async def close(self, code: int = 1000) -> int | None:
        if self._ws.state is State.OPEN:
            self._ws.send_close(code)
            self._flush()
        try:
            return await asyncio.wait_for(asyncio.shield(self.closed), 10)
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()
            return self._ws.close_code

    # --- internals ------------------------------------------------------------------------------------

    def _opened(self, response: Response) -> None:
        if self._ws.handshake_exc is not None:
            self.opened.set_exception(ConnectionError(f"handshake refused: {response.status_code}"))
        else:
            self.opened.set_result(None)

    def _frame(self, frame: Frame, now: int) -> None:
        if frame.opcode in (TEXT, BINARY):
            self._opcode = frame.opcode
        elif frame.opcode is not Opcode.CONT:
            return  # ping, pong, close: the protocol answers them itself
        self._fragments.append(frame.data)
        if frame.fin:
            message, self._fragments = b"".join(self._fragments), []
            self._on_message(self._opcode, message, now)

    def _flush(self) -> None:
        assert self.transport is not None
        for chunk in self._ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
            else:  # the protocol's end-of-stream marker: the close handshake is over
                self.transport.close()
        if self._ws.close_expected() and not self.transport.is_closing():
            self.transport.close()


async def connect(url: str, on_message: OnMessage) -> LeanWebSocket:
    uri = parse_uri(url)
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: LeanWebSocket(url, on_message), uri.host, uri.port)
    await asyncio.wait_for(protocol.opened, 30)
    return protocol
