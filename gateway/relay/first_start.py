"""A session's first Start, tried again through an outage as a live stream's failure is.

A telephony platform does not retry a call's start: a call that began during a two-second Data Flow
restart was refused ``upstream_unavailable`` in milliseconds and lost its whole transcript, while the
calls already live rode the restart out. A first Start that fails with a cause a retry can cure
(``UpstreamUnavailable``: UNAVAILABLE, a reset, a restart) is tried again on a new stream with the
recovery's budget and back-off (GATEWAY_UPSTREAM_RECOVERY_ATTEMPTS within
GATEWAY_UPSTREAM_RECOVERY_WINDOW_S); any other failure, the budget spent, or the session torn down
(the client left, a drain) ends the start as before. The client's audio waits meanwhile, as it waits
for any Start's answer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from gateway.dataflow.messages import DataflowResponse, StartRequest
from gateway.errors import UpstreamUnavailable
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
    """Start ``first``; while that fails with a retryable cause and the budget allows, wait and start the
    stream ``open_next()`` makes (the session's stream from then on, so that a tear-down reaches it)."""
    stream = first
    budget.begin(fresh=True)
    budget.next_wait()  # the first attempt: this one, at once
    while True:
        try:
            response = await stream.start(request)
        except UpstreamUnavailable as exc:
            failure = exc.detached()  # (the failed stream cancelled itself)
        else:
            if budget.used > 1:
                budget.recovered()  # a stream failing soon after goes on with this budget
            return response
        wait_s = None if torn_down.is_set() else budget.next_wait()
        failures.start_failed(failure, retrying=wait_s is not None)
        if wait_s is None:
            raise failure
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await torn_down.wait()
        if torn_down.is_set():
            raise UpstreamUnavailable("the session was closed while its start waited for Data Flow")
        stream = open_next()
