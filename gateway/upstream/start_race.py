"""A Start whose write races the end of its RPC (grpc/grpc#36066).

A server that answers a stream without reading it (UNIMPLEMENTED for a method it does not serve, a proxy
refusing on headers) can end the RPC while grpc.aio is sending the Start: gRPC core refuses the write's
batch, and grpc.aio puts its own INTERNAL "Internal error from Core" in place of the server's status,
which is lost. With a server that answers from other threads, 1 start in 9 raced (2 in 5 on a loaded CI
machine), and a retry raced as often: so a second RPC does not write until it knows the server waits for
a message (:func:`ends_unread`), and then no race is left.

And a Start whose RPC the gateway cancels while its write waits (the client left during the start):
grpc.aio's write then waits for headers that are never sent, until the start timeout, holding the
session's slot (:func:`write_unless_ended`).
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


async def write_unless_ended(call: grpc.aio.StreamStreamCall[bytes, bytes], message: bytes) -> bool:
    """Write ``message``, or give up once ``call`` ended first (False). A call cancelled here before its
    headers went out never wakes its write: a client that left right after its start held its slot for
    GATEWAY_UPSTREAM_START_TIMEOUT_S (10 s; a start-and-leave loop filled a replica)."""
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()
    call.add_done_callback(lambda _: ended.set())
    write = loop.create_task(call.write(message), name="dataflow-start-write")
    waiting = loop.create_task(ended.wait(), name="dataflow-start-ended")
    try:
        await asyncio.wait((write, waiting), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (write, waiting):
            task.cancel()
        await asyncio.wait((write, waiting))  # (wait, not await: a cancellation of this task stays ours)
    if not write.cancelled():
        write.result()  # the write's own failure, as an awaited write raises it
        return True
    return False
