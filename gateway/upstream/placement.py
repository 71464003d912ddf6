"""Placing a stream on the pool until gRPC has really sent it: peers that cap streams per connection.

HTTP/2 lets the peer cap the streams it takes on one connection (SETTINGS_MAX_CONCURRENT_STREAMS: a
gRPC server's ``max_concurrent_streams``, nginx's ``http2_max_concurrent_streams``). gRPC Python does
not tell the client that value, and a stream over it neither fails nor is refused: gRPC core holds it
inside the transport until another stream on that connection ends. Measured with grpcio 1.85:

- ``call.wait_for_connection()`` returns once the stream's headers are written (it has a stream id):
  within milliseconds when the connection has a free slot, whether or not the server has answered.
  A held stream's does not return, nor does its first write, until a slot frees;
- a held stream that is cancelled never reaches the server (no handler runs, no message arrives);
- the experimental ``grpc.http.max_concurrent_streams_reject_on_client`` (fail such a stream with
  RESOURCE_EXHAUSTED) blocks the event loop inside the call's start until the stream's deadline:
  unusable.

So a stream is placed, then awaited until it is sent. One still held after ``PROBE_S`` on a READY
connection whose ``k >= 1`` other live streams were sent, none of them during that time, waits for a
slot: the peer takes ``k`` streams there, the pool learns that cap (and warns), and the stream is
cancelled, never having been sent, so nothing can be duplicated, and placed again within the caller's
Start deadline. Start is written only once the stream is sent.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from gateway.upstream.pool import Connection, ConnectionPool

#: How long a stream may wait for gRPC to send it on a connection that sent others before it counts as held.
PROBE_S = 0.5
_LAG = 1.5  # a probe that took longer than this many PROBE_S ran on a busy loop: look again, do not judge

Call = grpc.aio.StreamStreamCall[bytes, bytes]


class Placement:
    """One stream being placed: :meth:`sent` returns its call once gRPC has sent it."""

    def __init__(self, pool: ConnectionPool, method_path: str, deadline_s: float) -> None:
        self._pool = pool
        self._method_path = method_path
        self._deadline = time.monotonic() + deadline_s
        self._connection: Connection | None = None
        self._held_beside = 0  # streams sent on its connection while it was held there (0: not held)
        self.moves = 0

    async def sent(self) -> Call:
        """The call, once gRPC has sent it; raises the RPC's error if it failed before that."""
        while True:
            remaining = max(0.001, self._deadline - time.monotonic())
            connection, call = self._pool.open_call(self._method_path, remaining)
            self._connection, self._held_beside = connection, 0
            try:
                held = await self._held(connection, call)
            except BaseException:  # the Start deadline, or the RPC failed: a stream still held was never sent
                if not call.done():
                    self._held_beside = len(connection.sent)
                call.cancel()
                raise
            if not held:
                if not call.done():
                    connection.sent.add(call)  # (until it ends: the pool's done callback drops it)
                connection.last_sent_at = time.monotonic()
                return call
            call.cancel()  # never sent: nothing reached Data Flow
            self.moves += 1
            self._pool.stats.moved += 1

    async def _held(self, connection: Connection, call: Call) -> bool:
        """False once gRPC has sent the stream; True when it is found held for a free slot."""
        waiting = asyncio.ensure_future(call.wait_for_connection())
        step = PROBE_S
        try:
            while True:
                began = time.monotonic()
                done, _ = await asyncio.wait((waiting,), timeout=step)
                if done:
                    waiting.result()  # the RPC's error, if it ended before it was sent
                    return False
                now = time.monotonic()
                on_time = now - began <= _LAG * step  # a late wake-up (a busy loop) proves nothing
                # Held at a cap, no stream on the connection is sent while it waits; a burst on a busy
                # process sends others meanwhile: that is a queue, not a cap.
                quiet = now - connection.last_sent_at >= PROBE_S
                ready = connection.channel.get_state() is grpc.ChannelConnectivity.READY
                if connection.sent and ready and quiet and on_time:
                    self._pool.learn_cap(connection, len(connection.sent))
                    return True
                step = PROBE_S / 5  # then look often, so a burst's end is noticed soon
        finally:
            if not waiting.done():
                waiting.cancel()
            elif not waiting.cancelled():
                waiting.exception()  # retrieved (raised above, or moot once cancelled)

    def stall_hint(self) -> str:
        """Why a Start went unanswered when the stream was never sent ('' when it was sent)."""
        if not self._held_beside or self._connection is None:
            return ""
        return (
            f": the stream was never sent, gRPC held it for a free stream slot on an upstream connection "
            f"carrying {self._held_beside} streams; the upstream (or a proxy in front of it) may cap streams "
            f"per connection below GATEWAY_UPSTREAM_MAX_STREAMS_PER_CONNECTION ({self._pool.max_streams})"
        )
