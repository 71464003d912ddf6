"""A connection's transport whose close is bounded in time.

asyncio's and uvloop's ``Transport.close()`` first write out what is still buffered, with no deadline:
a client that stops reading keeps a closed connection open forever (its kernel keeps answering the
zero-window probes), with its socket and everything buffered for it. uvicorn closes that way after
every timeout it has, and so after every one of the gateway's. :class:`LingeringTransport` lets a
closing connection take what it was sent while it takes some of it in each ``linger_s``; once a whole
period passes with nothing taken, the connection is aborted, and at the latest :data:`LINGER_PERIODS`
periods after its close: a client that takes a few bytes a period could otherwise keep it for hours.
"""

from __future__ import annotations

import asyncio
from typing import Any

#: A closing connection is let go at the latest this many ``linger_s`` after its close (60 s by default),
#: however slowly it is taking what is left: 64 KiB taken at a few hundred bytes a period would be hours.
LINGER_PERIODS = 6


class LingeringTransport(asyncio.Transport):
    """Wraps the server's transport of one connection (HTTP, then WebSocket after an upgrade)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, linger_s: float) -> None:
        super().__init__()
        self._transport, self._loop, self._linger_s = transport, loop, linger_s
        self._lingering = False
        self._deadline = 0.0

    def close(self) -> None:
        closing = self._transport.is_closing()
        self._transport.close()
        if not closing and not self._lingering and (left := self._transport.get_write_buffer_size()) > 0:
            self._lingering = True
            self._deadline = self._loop.time() + LINGER_PERIODS * self._linger_s
            self._loop.call_later(self._linger_s, self._check, left)

    def _check(self, before: int) -> None:
        left = self._transport.get_write_buffer_size()
        if left == 0:  # all taken (or the connection is gone): closed already
            return
        if left < before and (wait := min(self._linger_s, self._deadline - self._loop.time())) > 0:
            self._loop.call_later(wait, self._check, left)
        else:
            self._transport.abort()

    # --- everything else as the wrapped transport ---------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def abort(self) -> None:
        self._transport.abort()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self._transport.writelines(list_of_data)

    def write_eof(self) -> None:
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
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
