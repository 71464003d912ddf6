"""A connection's transport whose close is bounded in time.

asyncio's and uvloop's ``Transport.close()`` first write out what is still buffered, with no deadline:
a client that stops reading keeps a closed connection open forever (its kernel keeps answering the
zero-window probes), with its socket and everything buffered for it. uvicorn closes that way after
every timeout it has, and so after every one of the gateway's. :class:`LingeringTransport` lets a
closing connection take what it was sent while it takes some of it in each ``linger_s``; once a whole
period passes with nothing taken, the connection is aborted.
"""

from __future__ import annotations

import asyncio
from typing import Any


class LingeringTransport(asyncio.Transport):
    """Wraps the server's transport of one connection (HTTP, then WebSocket after an upgrade)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, linger_s: float) -> None:
        super().__init__()
        self._transport, self._loop, self._linger_s = transport, loop, linger_s
        self._lingering = False

    def close(self) -> None:
        closing = self._transport.is_closing()
        self._transport.close()
        if not closing and not self._lingering and (left := self._transport.get_write_buffer_size()) > 0:
            self._lingering = True
            self._loop.call_later(self._linger_s, self._check, left)

    def _check(self, before: int) -> None:
        left = self._transport.get_write_buffer_size()
        if left == 0:  # all taken (or the connection is gone): closed already
            return
        if left < before:
            self._loop.call_later(self._linger_s, self._check, left)
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
