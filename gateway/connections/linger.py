"""A connection's transport whose close is staged and bounded in time.

asyncio's and uvloop's ``Transport.close()`` first write out what is still buffered, with no deadline:
a client that stops reading keeps a closed connection open forever (its kernel keeps answering the
zero-window probes), with its socket and everything buffered for it. uvicorn closes that way after
every timeout it has, and so after every one of the gateway's.

And a socket closed while its client's data waits unread in it, or that its client sends to after the
close, is reset by the kernel, which throws away what the client has not received yet: the end of an
answer, a WebSocket close frame. A client still sending (an upload cut short, a refused request with
a body, a browser streaming audio past a limit) then meets the reset on its next write, before it
reads the answer's end (Chromium reports 1006 where the gateway closed with 1009). So the close is
staged (RFC 9112 9.6): the end of the stream follows what was written (a half-close), what the client
still sends is read and thrown away (the connection's protocol sees none of it: the answer is final),
and the socket is closed once the client's kernel has acknowledged all that was written and the
client is done sending: it ended its stream, or it sent nothing for :data:`QUIET_S`. Past
:data:`DISCARD_BYTES` reading stops and the close goes on without waiting for the client.

:class:`LingeringTransport` gives a closing connection ``linger_s`` at a time to take what is left
(the gateway's buffer and the kernel's); once a whole period passes with nothing taken it is aborted,
and at the latest :data:`LINGER_PERIODS` periods after its close: a client that takes a few bytes a
period could otherwise keep it for hours. Transports that cannot half-close (TLS) close as asyncio
does, under the same bounds.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios
from typing import Any

#: A closing connection is let go at the latest this many ``linger_s`` after its close (60 s by default),
#: however slowly it is taking what is left: 64 KiB taken at a few hundred bytes a period would be hours.
LINGER_PERIODS = 6
#: A closing connection is looked at first after FIRST_LOOK_S (a round trip on most networks: what was
#: just written is acknowledged by then), then at twice the last wait, up to CHECK_S (or ``linger_s``).
#: Once all is taken it is closed by the next look; its client has had the end of the stream already.
FIRST_LOOK_S = 0.01
CHECK_S = 1.0
#: A closing connection's client is done sending once it sent nothing for this long (or ended its
#: stream): one that read the close stops within its read loop's turn; a browser's is a few ms.
QUIET_S = 0.25
#: What a closing connection's client may still send, read and thrown away: 0.8 s of a 10 MB/s upload.
#: Past it reading stops, and the close no longer waits for the client (a reset if it sends on).
DISCARD_BYTES = 8 * 1024 * 1024


def unacknowledged_bytes(transport: asyncio.BaseTransport) -> int:
    """What the kernel holds for the client that the client's kernel has not acknowledged (Linux's
    SIOCOUTQ, the end of the stream included); 0 once the client reset the connection (reading is
    paused, so nothing else would notice), once the socket is closed, or where unknown."""
    sock = transport.get_extra_info("socket")
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            return 0
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4))  # TIOCOUTQ is SIOCOUTQ on sockets
    except (AttributeError, OSError, ValueError):
        return 0
    return int(struct.unpack("i", queued)[0])


def unread_bytes(transport: asyncio.BaseTransport) -> int:
    """What the client sent that waits unread in the kernel (Linux's SIOCINQ); 0 where unknown."""
    sock = transport.get_extra_info("socket")
    try:
        queued = fcntl.ioctl(sock.fileno(), termios.FIONREAD, bytes(4))  # FIONREAD is SIOCINQ on sockets
    except (AttributeError, OSError, ValueError):
        return 0
    return int(struct.unpack("i", queued)[0])


class _Discarding(asyncio.Protocol):
    """A closing connection's protocol: what the client still sends is counted and thrown away, and the
    connection's end reaches the protocol it had."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # Both let go at the end: the protocol it had holds the transport that holds this (a cycle).
        self._transport: asyncio.Transport | None = transport
        self._ended: asyncio.BaseProtocol | None = transport.get_protocol()
        self.taken = 0
        self.last = loop.time()  # when the client last sent something (from the close on)
        self.eof = False

    def data_received(self, data: bytes) -> None:
        self.taken += len(data)
        self.last = self._loop.time()
        if self.taken > DISCARD_BYTES and self._transport is not None:
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        return True  # the half-close stays: the linger closes once what was written is taken

    def connection_lost(self, exc: Exception | None) -> None:
        ended, self._ended, self._transport = self._ended, None, None
        if ended is not None:
            ended.connection_lost(exc)

    def done_sending(self, quiet_s: float) -> bool:
        if self.eof or self.taken > DISCARD_BYTES or self._transport is None:
            return True
        return self._loop.time() - self.last >= quiet_s and unread_bytes(self._transport) == 0


class LingeringTransport(asyncio.Transport):
    """Wraps the server's transport of one connection (HTTP, then WebSocket after an upgrade)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, linger_s: float) -> None:
        super().__init__()
        self._transport, self._loop, self._linger_s = transport, loop, linger_s
        self._closing = False
        self._deadline = 0.0
        self._left = 0  # what was left to take at the last look
        self._wait = FIRST_LOOK_S  # until the next look
        self._taken_at = 0.0  # when the client last took some of it
        self._discarding: _Discarding | None = None  # what the client sends while lingering

    def close(self) -> None:
        self._close(staged=True)

    def close_at_once(self) -> None:
        """Closed as asyncio closes (what is buffered is written, under the same bounds), not in stages:
        for refusals under a connection flood, where a descriptor held a round trip longer for each
        counts for more than a reset the client may get instead of its answer."""
        self._close(staged=False)

    def _close(self, *, staged: bool) -> None:
        if self._closing:
            return
        self._closing = True
        if self._transport.is_closing():
            return
        if staged and self._transport.can_write_eof():
            self._discarding = _Discarding(self._transport, self._loop)
            self._transport.set_protocol(self._discarding)
            self._transport.resume_reading()
            if not self._half_close():  # the end of the stream follows what is buffered
                return
        else:
            self._transport.pause_reading()  # what the client sends now is never read: its answer is final
            self._transport.close()
        left = self._left_to_take()
        if left == 0 and self._client_done():
            self._transport.close()
            return
        now = self._loop.time()
        self._deadline, self._left, self._taken_at = now + LINGER_PERIODS * self._linger_s, left, now
        self._loop.call_later(self._wait, self._check)

    def _half_close(self) -> bool:
        """asyncio shuts the socket's write side at once when nothing is buffered, and raises ENOTCONN if
        the client has reset it already (unnoticed while reading is paused): then it is aborted."""
        try:
            self._transport.write_eof()
        except OSError:
            self._transport.abort()
            return False
        return True

    def _left_to_take(self) -> int:
        if self._transport.is_closing() and self._transport.get_write_buffer_size() == 0:
            return 0  # closed (asyncio's own close, or the client went)
        return self._transport.get_write_buffer_size() + unacknowledged_bytes(self._transport)

    def _client_done(self) -> bool:
        """The client sends no more (or need not be waited for): closed now, its socket gets no reset."""
        if self._discarding is None or self._transport.is_closing():
            return True
        return self._discarding.done_sending(min(QUIET_S, self._linger_s))

    def _check(self) -> None:
        left, now = self._left_to_take(), self._loop.time()
        if left == 0 and self._client_done():  # the client has the end of the stream and sends no more
            self._transport.close()
            return
        if left < self._left:
            self._left, self._taken_at = left, now
        if now - self._taken_at >= self._linger_s or now >= self._deadline:
            self._transport.abort()  # it takes nothing, or it sent on for a whole period after taking all
            return
        self._wait = min(2 * self._wait, CHECK_S, self._linger_s)
        if left == 0 and self._discarding is not None:  # all taken: looked at again once it may be quiet
            self._wait = max(FIRST_LOOK_S, self._discarding.last + min(QUIET_S, self._linger_s) - now)
        self._loop.call_later(min(self._wait, self._deadline - now), self._check)

    # --- everything else as the wrapped transport ---------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._closing or self._transport.is_closing()

    def abort(self) -> None:
        self._transport.abort()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing:  # after the close nothing more is sent, as with asyncio's own close
            self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        if not self._closing:
            self._transport.writelines(list_of_data)

    def write_eof(self) -> None:
        if not self._closing:
            self._half_close()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def pause_reading(self) -> None:
        if not self._closing:  # while lingering, what the client sends is read and thrown away
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._closing:
            self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)
