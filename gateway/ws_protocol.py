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

websockets' parser does all the framing (sizes, UTF-8, masking, fragments, control frames): the fast
path starts only after a whole message is parsed, exactly where uvicorn would queue it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

#: The scope extension: ``scope["extensions"][FAST_RECEIVE](sink)`` registers a sink (None removes it).
FAST_RECEIVE = "gateway.fast_receive"

#: The scope extension holding the protocol's ``writable`` event: set while a send goes out at once
#: (the transport's buffer is under its high-water mark), so a sender needs no timer for it.
WRITABLE = "gateway.writable"

#: A message as sent (bytes: binary, str: text) -> True when the sink took it.
FrameSink = Callable[[bytes | str], bool]

#: Messages one read may hand to the sink before the rest goes through the queue: a read can hold
#: thousands of tiny frames, and handling them all inside one callback would hold the event loop from
#: every other connection (the queued path yields to the loop between messages).
MESSAGES_PER_READ = 32


class FastReceiveProtocol(WebSocketsSansIOProtocol):
    _sink: FrameSink | None = None
    _fast_left = MESSAGES_PER_READ

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        if not self.handshake_complete:  # refused at the handshake: no scope, no application
            extensions = cast(dict[str, Any] | None, self.scope.get("extensions"))
            if extensions is not None:
                extensions[FAST_RECEIVE] = self._register
                extensions[WRITABLE] = self.writable

    def _register(self, sink: FrameSink | None) -> None:
        self._sink = sink

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
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope.get("extensions", {}).pop(FAST_RECEIVE, None)
        super().connection_lost(exc)
