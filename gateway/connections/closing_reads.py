"""What a closing connection's client still sends: read and thrown away, so that its socket is not reset.

Linux resets a socket closed while its client's data waits unread in it, or that its client sends to
after the close, and a client still sending then meets the reset on its next write, before it reads the
answer's end it was sent (Chromium reports 1006 where the gateway closed with 1009). So while a
connection lingers (gateway.connections.linger) :class:`ClosingReads` takes its place as the
connection's protocol: what comes is counted and dropped (the protocol it had sees none of it: its
answer is final), and the linger asks :meth:`ClosingReads.done_sending` before it closes.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios
from collections.abc import Callable

#: A closing connection's client is done sending once it sent nothing for this long (or ended its
#: stream): one that read the close stops within its read loop's turn; a browser's is a few ms.
QUIET_S = 0.25
#: What a closing connection's client may still send, read and thrown away: 0.8 s of a 10 MB/s upload.
#: Past it reading stops, and the close no longer waits for the client (a reset if it sends on).
DISCARD_BYTES = 8 * 1024 * 1024
#: Where Linux's ``struct tcp_info`` keeps ``tcpi_last_data_recv`` (ms since data last came).
_LAST_DATA_RECV_AT = 52


def unread_bytes(transport: asyncio.BaseTransport) -> int:
    """What the client sent that waits unread in the kernel (Linux's SIOCINQ); 0 where unknown."""
    sock = transport.get_extra_info("socket")
    try:
        queued = fcntl.ioctl(sock.fileno(), termios.FIONREAD, bytes(4))  # FIONREAD is SIOCINQ on sockets
    except (AttributeError, OSError, ValueError):
        return 0
    return int(struct.unpack("i", queued)[0])


def since_client_sent_s(transport: asyncio.BaseTransport) -> float | None:
    """Seconds since the client's data last reached the kernel, before the close or after it (Linux's
    TCP_INFO); None where unknown."""
    sock = transport.get_extra_info("socket")
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (AttributeError, OSError, ValueError):
        return None
    if len(info) < _LAST_DATA_RECV_AT + 4:
        return None
    return int(struct.unpack_from("I", info, _LAST_DATA_RECV_AT)[0]) / 1000


class ClosingReads(asyncio.Protocol):
    """A closing connection's protocol in place of the one it had, which still gets the connection's end
    (and the transport's write flow, so its own timers stop as they would)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, look: Callable[[], None]) -> None:
        self._loop = loop
        # All let go at the end: each holds what holds this (cycles).
        self._look: Callable[[], None] | None = look  # the linger looks now (the client ended, or sent too much)
        self._transport: asyncio.Transport | None = transport
        self._ended: asyncio.BaseProtocol | None = transport.get_protocol()
        self.taken = 0
        self._closed_at = loop.time()
        # When this last read; from the close where the client's data waited unread: a full window may
        # have held it back, so the kernel's count of its quiet time says nothing of what it has queued.
        self._last: float | None = self._closed_at if unread_bytes(transport) else None
        self.eof = False

    def data_received(self, data: bytes) -> None:
        self.taken += len(data)
        self._last = self._loop.time()
        if self.taken > DISCARD_BYTES and self._transport is not None:
            self._transport.pause_reading()
            self._look_now()

    def eof_received(self) -> bool:
        self.eof = True
        self._look_now()
        return True  # the linger closes (once what was written is taken)

    def pause_writing(self) -> None:
        if self._ended is not None:
            self._ended.pause_writing()

    def resume_writing(self) -> None:
        if self._ended is not None:
            self._ended.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        ended, self._ended, self._transport, self._look = self._ended, None, None, None
        if ended is not None:
            ended.connection_lost(exc)

    def _look_now(self) -> None:
        if self._look is not None:
            self._look()

    def quiet_for_s(self) -> float:
        """How long the client has sent nothing: the kernel's count (data read before the close counts), or
        the time since the close or the last read where it does not say."""
        own = self._loop.time() - (self._closed_at if self._last is None else self._last)
        since = since_client_sent_s(self._transport) if self._transport is not None else None
        if since is None:
            return own
        return since if self._last is None else min(since, own)

    def done_sending(self, quiet_s: float) -> bool:
        """It ended its stream, sent too much, went, or sent nothing for ``quiet_s`` and nothing waits unread."""
        if self.eof or self.taken > DISCARD_BYTES or self._transport is None:
            return True
        return self.quiet_for_s() >= quiet_s and unread_bytes(self._transport) == 0
