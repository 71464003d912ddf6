"""A Start whose write races the end of its RPC (grpc/grpc#36066).

A server that answers a stream without reading it (UNIMPLEMENTED for a method it does not serve, a proxy
refusing on headers) can end the RPC while grpc.aio is sending the Start: gRPC core refuses the write's
batch, and grpc.aio puts its own INTERNAL "Internal error from Core" in place of the server's status,
which is lost. With a server that answers from other threads, 1 start in 9 raced (2 in 5 on a loaded CI
machine), and a retry raced as often: so a second RPC does not write until it knows the server waits for
a message (:func:`ends_unread`), and then no race is left.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc

#: What grpc.aio says in place of the server's status when a write raced the RPC's end.
_LOST_TO_A_WRITE_RACE = "Internal error from Core"
#: How long the second RPC waits for the server's answer before it writes.
START_RACE_WAIT_S = 1.0


def status_lost_to_a_write_race(code: grpc.StatusCode, details: str | None) -> bool:
    """A write failed because the RPC had ended, and grpc.aio put its own INTERNAL in place of the status
    that ended it: the real reason is lost."""
    return code is grpc.StatusCode.INTERNAL and details == _LOST_TO_A_WRITE_RACE


async def ends_unread(call: grpc.aio.StreamStreamCall[bytes, bytes], wait_s: float) -> bool:
    """Does the server end ``call`` within ``wait_s`` without a message from the gateway?"""
    ended = asyncio.Event()
    call.add_done_callback(lambda _: ended.set())
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait_s):
            await ended.wait()
    return call.done()
