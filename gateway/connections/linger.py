"""A connection's transport whose close is staged and bounded in time.

asyncio's and uvloop's ``Transport.close()`` first write out what is still buffered, with no deadline:
a client that stops reading keeps a closed connection open forever (its kernel keeps answering the
zero-window probes), with its socket and everything buffered for it. uvicorn closes that way after
every timeout it has, and so after every one of the gateway's.

And a socket closed while its client's data waits unread in it, or that its client sends to after the
close, is reset by the kernel, which throws away what the client has not received yet (the end of an
answer, a WebSocket close frame), and a client still sending meets the reset on its next write, before
it reads the answer's end. So the close is staged (RFC 9112 9.6): the end of the stream follows what was
written (a half-close), what the client still sends is read and thrown away
(gateway.connections.closing_reads), and the socket is closed once the client's kernel has
acknowledged all that was written and the client is done sending: it ended its stream, or sent
nothing for ``QUIET_S``. One that sends on :data:`SENDING_ON_S` after taking all (a slowloris after
its 408) is closed anyway, as is one past ``DISCARD_BYTES``.

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

from gateway.connections.closing_reads import QUIET_S, ClosingReads

#: A closing connection is let go at the latest this many ``linger_s`` after its close (60 s by default),
#: however slowly it is taking what is left: 64 KiB taken at a few hundred bytes a period would be hours.
LINGER_PERIODS = 6
#: A closing connection is looked at first after FIRST_LOOK_S (a round trip on most networks: what was
#: just written is acknowledged by then), then at twice the last wait, up to CHECK_S (or ``linger_s``).
#: Once all is taken and its client is done sending it is closed by the next look (or at its end).
FIRST_LOOK_S = 0.01
CHECK_S = 1.0
#: A client that sends on this long after taking all that was written is closed on (a reset, if it still
#: sends): one that reads its answer stops within its read loop's turn, and a slowloris after its 408 or
#: a refused client need not keep its place (and the connection cap's) a linger period longer.
SENDING_ON_S = 1.0


def unacknowledged_bytes(transport: asyncio.BaseTransport) -> int:
    """What the kernel holds for the client that the client's kernel has not acknowledged (Linux's
    SIOCOUTQ, the end of the stream included); 0 once the client reset the connection (where reading is
    paused nothing else would notice), once the socket is closed, or where unknown."""
    sock = transport.get_extra_info("socket")
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            return 0
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4))  # TIOCOUTQ is SIOCOUTQ on sockets
    except (AttributeError, OSError, ValueError):
        return 0
    return int(struct.unpack("i", queued)[0])


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
        self._all_taken_at: float | None = None  # when the client had taken all that was written
        self._look: asyncio.TimerHandle | None = None
        self._reads: ClosingReads | None = None  # what the client sends while lingering

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
            self._reads = ClosingReads(self._transport, self._loop, self._look_now)
            self._transport.set_protocol(self._reads)
            self._transport.resume_reading()
            if not self._half_close():  # the end of the stream follows what is buffered
                return
        else:
            self._transport.pause_reading()  # what the client sends now is never read: its answer is final
            self._transport.close()
        now = self._loop.time()
        self._deadline, self._left, self._taken_at = now + LINGER_PERIODS * self._linger_s, self._left_to_take(), now
        self._check()

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

    def _quiet_s(self) -> float:
        return min(QUIET_S, self._linger_s)

    def _client_done(self) -> bool:
        """The client sends no more (or need not be waited for): closed now, its socket gets no reset."""
        if self._reads is None or self._transport.is_closing():
            return True
        return self._reads.done_sending(self._quiet_s())

    def _look_now(self) -> None:  # the client ended its stream, or sent too much
        if self._look is not None:
            self._look.cancel()
            self._check()

    def _check(self) -> None:
        self._look = None
        left, now = self._left_to_take(), self._loop.time()
        if left == 0 and self._client_done():  # the client has the end of the stream and sends no more
            self._transport.close()
            return
        if left < self._left:
            self._left, self._taken_at = left, now
        if left == 0 and self._all_taken_at is None:
            self._all_taken_at = now
        if self._all_taken_at is not None and now - self._all_taken_at >= min(SENDING_ON_S, self._linger_s):
            self._transport.close()  # it had all, and sends on regardless
            return
        if now - self._taken_at >= self._linger_s or now >= self._deadline:
            self._transport.abort()  # it takes nothing
            return
        if left == 0 and self._reads is not None:  # looked at again once it may be quiet
            wait = self._quiet_s() - self._reads.quiet_for_s()
        else:
            wait = self._wait
            self._wait = min(2 * self._wait, CHECK_S, self._linger_s)
        self._look = self._loop.call_later(max(FIRST_LOOK_S, min(wait, self._deadline - now)), self._check)

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
