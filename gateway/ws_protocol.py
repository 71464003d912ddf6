"""uvicorn's sans-I/O WebSocket protocol with a fast path for audio frames.

A frame normally reaches the application through uvicorn's ASGI queue: a ``put`` and a reading pause
in the protocol, a task wake-up, Starlette's ``receive()``, a ``get`` and a reading resume — for every
20 ms frame of every call. Here the application may register a *sink* through the scope extension
:data:`FAST_RECEIVE`. While nothing waits in the ASGI queue, a complete message is first offered to
the sink, synchronously, in the protocol's ``data_received``: what the sink takes is done with (no
queue, no task switch, no reading pause); what it refuses — and everything behind a refused or
queued message — takes the normal path, in order. So the sink only sees a message when every earlier
one has been handed over, and it refuses whatever would have to wait (backpressure, pacing, a
control message): waiting stays the application's, reading pauses as before.

Two more extensions let a driver that waits (Data Flow's buffer full) notice a client that vanished:
:data:`ON_LOST` tells it of a lost connection at once, and :data:`PROBE` pings the client.

websockets' parser does all the framing (sizes, UTF-8, masking, fragments, control frames): the fast
path starts only after a whole message is parsed, exactly where uvicorn would queue it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from websockets.exceptions import InvalidState

from gateway.connections.pongs import ABORT, BoundedControlProtocol

__all__ = ["ABORT", "FAST_RECEIVE", "ON_LOST", "PROBE", "WRITABLE", "FastReceiveProtocol", "FrameSink"]

#: The scope extension: ``scope["extensions"][FAST_RECEIVE](sink)`` registers a sink (None removes it).
FAST_RECEIVE = "gateway.fast_receive"

#: The scope extension holding the protocol's ``writable`` event: set while a send goes out at once
#: (the transport's buffer is under its high-water mark), so a sender needs no timer for it.
WRITABLE = "gateway.writable"

#: The scope extension: ``scope["extensions"][ON_LOST](callback)`` has ``callback()`` called once the
#: connection is lost (None removes it). The ASGI queue says so too, but behind every message queued.
ON_LOST = "gateway.on_lost"

#: The scope extension: ``scope["extensions"][PROBE]()`` pings the client. While reading is paused a
#: vanished peer goes unnoticed; written to, its host answers with a reset and the next write fails.
PROBE = "gateway.probe"

#: A message as sent (bytes: binary, str: text) -> True when the sink took it.
FrameSink = Callable[[bytes | str], bool]

#: Messages one read may hand to the sink before the rest goes through the queue: a read can hold
#: thousands of tiny frames, and handling them all inside one callback would hold the event loop from
#: every other connection (the queued path yields to the loop between messages).
MESSAGES_PER_READ = 32


class FastReceiveProtocol(BoundedControlProtocol):
    _sink: FrameSink | None = None
    _fast_left = MESSAGES_PER_READ
    _on_lost: Callable[[], None] | None = None

    def scope_extensions(self) -> dict[str, Any]:
        return {
            **super().scope_extensions(),
            FAST_RECEIVE: self._register, WRITABLE: self.writable, ON_LOST: self._watch_lost, PROBE: self._probe,
        }  # fmt: skip

    def _register(self, sink: FrameSink | None) -> None:
        self._sink = sink

    def _watch_lost(self, callback: Callable[[], None] | None) -> None:
        self._on_lost = callback

    def _probe(self) -> None:
        if self.close_sent or self.transport.is_closing():
            return
        try:
            self.conn.send_ping(b"")  # an empty payload: uvicorn's keepalive ignores the pong
        except InvalidState:
            return
        self.transport.write(b"".join(self.conn.data_to_send()))

    def data_received(self, data: bytes) -> None:
        self._fast_left = MESSAGES_PER_READ
        super().data_received(data)

    def send_receive_event_to_app(self) -> None:
        sink = self._sink
        if sink is not None and self._fast_left > 0 and self.queue.empty() and not self.close_sent:
            frames = self.frames
            payload = frames[0] if len(frames) == 1 else b"".join(frames)
            message: bytes | str | None = payload
            if self.curr_msg_data_type == "text":
                try:
                    message = payload.decode()
                except UnicodeDecodeError:
                    message = None  # the normal path closes with 1007
            if message is not None and sink(message):
                self.frames = []
                self._fast_left -= 1
                return
        super().send_receive_event_to_app()

    def connection_lost(self, exc: Exception | None) -> None:
        # The sink is the application's (it holds its connection) and the scope holds our method:
        # both are cycles that would outlive the socket until a full collection.
        self._sink = None
        on_lost, self._on_lost = self._on_lost, None
        super().connection_lost(exc)  # takes the scope's extensions back
        if on_lost is not None:
            on_lost()
