"""A session's first Start, tried again through an outage as a live stream's failure is.

A telephony platform does not retry a call's start: a call that began during a two-second Data Flow
restart was refused ``upstream_unavailable`` in milliseconds and lost its whole transcript, while the
calls already live rode the restart out. A first Start that could not reach Data Flow (gRPC
UNAVAILABLE: refused, unreachable, restarting) is tried again on a new stream with the
recovery's budget and back-off (GATEWAY_UPSTREAM_RECOVERY_ATTEMPTS within
GATEWAY_UPSTREAM_RECOVERY_WINDOW_S); any other failure, the budget spent, or the session torn down
(the client left, a drain) ends the start as before. The client's audio waits meanwhile, as it waits
for any Start's answer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from gateway.dataflow.messages import DataflowResponse, StartRequest
from gateway.errors import UpstreamError, UpstreamUnavailable
from gateway.relay.failures import StreamFailures
from gateway.relay.recovery_policy import AttemptBudget
from gateway.relay.stream import UpstreamStream


async def first_start(
    first: UpstreamStream,
    open_next: Callable[[], UpstreamStream],
    request: StartRequest,
    budget: AttemptBudget,
    failures: StreamFailures,
    torn_down: asyncio.Event,
) -> DataflowResponse:
    """Start ``first``; while that fails as an outage does and the budget allows, wait and start the
    stream ``open_next()`` makes (the session's stream from then on, so that a tear-down reaches it)."""
    stream = first
    budget.begin(fresh=True)
    budget.next_wait()  # the first attempt: this one, at once
    while True:
        try:
            response = await stream.start(request)
        except UpstreamError as exc:
            failure = exc.detached()
            stream.cancel()  # (it did, as every failed start does: said here, not assumed)
        else:
            if budget.used > 1:
                budget.recovered()  # a stream failing soon after goes on with this budget
            return response
        if torn_down.is_set():  # the client left, or a drain: its own end, no failure of Data Flow's
            raise failure.detached()  # not the one in a local: its traceback would hold this frame
        wait_s = budget.next_wait() if outage(failure) else None
        if wait_s is not None or budget.used > 1:  # a lone failure is the session's error, counted there
            failures.start_failed(failure, retrying=wait_s is not None)
        if wait_s is None:
            raise failure.detached()  # not the one in a local: its traceback would hold this frame
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await torn_down.wait()
        if torn_down.is_set():
            raise UpstreamUnavailable("the session was closed while its start waited for Data Flow")
        stream = open_next()


def outage(error: UpstreamError) -> bool:
    """Data Flow could not be reached (UNAVAILABLE: refused, unreachable, restarting). A Start that
    reached it and failed otherwise (a busy node's RESOURCE_EXHAUSTED, INTERNAL, a stream it closed),
    or met a certificate the gateway does not trust, is reported at once: a new call would only add
    load, or wait 10 s for the same answer."""
    return isinstance(error, UpstreamUnavailable) and error.out_of_reach
