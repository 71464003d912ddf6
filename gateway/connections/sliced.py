"""uvicorn's HTTP protocol parsing what it reads a slice at a time, a bounded number of body pieces in one
turn of the event loop (gateway.connections.http builds on it).

uvicorn hands each read (up to 256 KiB) to the parser whole, and the parser calls back once per piece of
body, each piece copied onto the request's body so far: a read of one-byte chunks (six bytes on the
wire each) was 43 000 Python calls and as many ever longer copies in one callback, ~54 ms of the event
loop held from every session on the process, read after read. Now a read is parsed
:data:`PARSE_SLICE_BYTES` at a time, no further in one turn once :data:`BODY_PIECES_PER_TURN` pieces
were parsed (the rest waits for the next turn, reading paused), and a slice's pieces reach the request
as one. A client whose chunks are a few hundred bytes or more is parsed a whole read per turn, as before.
"""

from __future__ import annotations

import asyncio
import weakref

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: How much of a read is given to the parser at once.
PARSE_SLICE_BYTES = 4 * 1024
#: Body pieces parsed in one turn of the event loop before the rest of the read waits for the next
#: (~0.4 ms of a core); a slice under way is finished first.
BODY_PIECES_PER_TURN = 1024


class SlicedParseProtocol(HttpToolsProtocol):
    _stopped = False  # parses no more: what it reads is dropped
    _held = b""  # a read not parsed yet, from _held_from on
    _held_from = 0
    _held_paused = False  # reading paused while part of a read waits to be parsed
    _next_turn: asyncio.Handle | None = None
    _turn_pieces = 0  # body pieces parsed in this turn
    _pieces: list[bytes]  # this slice's body pieces, for the request as one

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._pieces = []
        self.flow = _Flow(self.transport, self)

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            return
        rest = self._held[self._held_from :]
        self._held, self._held_from = rest + data if rest else data, 0
        if self._next_turn is None:
            self._parse_held()

    def parse_slice(self, data: bytes) -> None:
        """Gives one slice of a read to the parser (a subclass bounds the request head here)."""
        self.parser.feed_data(data)

    def _parse_held(self) -> None:
        self._next_turn = None
        self._turn_pieces = 0
        # uvicorn pauses reading while a body waits past its high-water mark or a request behind another:
        # the rest is parsed once it reads on (_Flow).
        while self._held_from < len(self._held) and not self._stopped and not self.flow.read_paused:
            if self._turn_pieces >= BODY_PIECES_PER_TURN:
                self._next_turn = self.loop.call_soon(self._parse_held)
                break
            start = self._held_from
            self._held_from += PARSE_SLICE_BYTES
            self.parse_slice(self._held[start : self._held_from])
            self._hand_body()
        if self._stopped or self._held_from >= len(self._held):
            self._held, self._held_from = b"", 0
            self._unhold()
        elif not self._held_paused:
            self._held_paused = True
            self.transport.pause_reading()

    def read_on(self) -> None:
        """uvicorn reads on (its flow control was paused): what is held is parsed first, in a turn of its own."""
        if self._held_from < len(self._held):
            if self._next_turn is None:
                self._next_turn = self.loop.call_soon(self._parse_held)
        elif not self._held_paused:
            self.transport.resume_reading()

    def _unhold(self) -> None:
        if self._held_paused:
            self._held_paused = False
            if not self.flow.read_paused:
                self.transport.resume_reading()

    def stop_parsing(self) -> None:
        """Nothing more is parsed: what is held is dropped, and what comes is read and dropped."""
        self._stopped = True
        self._held, self._held_from = b"", 0
        self._unhold()

    def on_body(self, body: bytes) -> None:
        self._turn_pieces += 1
        self._pieces.append(body)

    def _hand_body(self) -> None:
        """What the parser gave of a request's body since the last time, to uvicorn as one piece."""
        if self._pieces:
            body = b"".join(self._pieces)
            self._pieces.clear()
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._hand_body()  # the end of a body, before its request is told it has all of it
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        # What a client sent behind its handshake is no WebSocket data; uvicorn drops it too.
        self.stop_parsing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._next_turn is not None:
            self._next_turn.cancel()
            self._next_turn = None
        self._held, self._held_from = b"", 0
        super().connection_lost(exc)


class _Flow(FlowControl):
    """uvicorn's flow control, reading on through the protocol: what it holds is parsed first."""

    def __init__(self, transport: asyncio.Transport, protocol: SlicedParseProtocol) -> None:
        super().__init__(transport)
        self._protocol = weakref.ref(protocol)  # the protocol holds this: a strong reference is a cycle

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            protocol = self._protocol()
            if protocol is not None:
                protocol.read_on()
