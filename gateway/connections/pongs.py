"""uvicorn's sans-I/O WebSocket protocol with its answers to control frames bounded in bytes.

uvicorn writes a pong for every ping as it arrives, whether or not the client reads: a client that
sends pings and reads nothing has the gateway buffer its pongs without limit (tens of MiB a second
on a fast link, kept until the connection ends). Here, while the transport's buffer is over its
high-water mark, a pong is held rather than written, and only the latest held one goes out once the
client reads again: RFC 6455 (5.5.3) allows answering only the most recent of several pings. Both
WebSocket modes use this protocol (the fast path is built on it, gateway.ws_protocol).
"""

from __future__ import annotations

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

#: The first byte of a server's (unmasked, unfragmented) pong frame.
_PONG = 0x8A


class BoundedControlProtocol(WebSocketsSansIOProtocol):
    _pong_due: bytes | None = None

    def handle_ping(self) -> None:
        output = self.conn.data_to_send()
        if self.writable.is_set() or not all(data[:1] == bytes([_PONG]) for data in output):
            self.transport.write(b"".join(output))
        elif output:
            self._pong_due = output[-1]  # the client reads nothing: only the latest pong is kept

    def resume_writing(self) -> None:
        super().resume_writing()
        pong, self._pong_due = self._pong_due, None
        if pong is not None and not self.transport.is_closing():
            self.transport.write(pong)
