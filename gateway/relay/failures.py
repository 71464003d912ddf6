"""Upstream streams that fail under a live session: counted and told, even when a recovery hides them.

A recovery moves the session to a new stream and the client sees only ``upstream_recovered``; the
operator saw no more (no counter by cause, no line), so a Data Flow failing streams all day looked
healthy. Each failure a recovery meets — the one that began it and each new stream that failed to
start — is counted by error code and gRPC status, and logged as a WARNING a burst at a time (an outage
fails every live session at once). Only codes and statuses: never a client's text or Data Flow's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway.errors import UpstreamError
from gateway.logs.bursts import BurstLog

log = logging.getLogger(__name__)

_LINES = BurstLog(log, "%(count)d more upstream stream failures in the last %(seconds).1f s (%(reasons)s)")

Count = Callable[[UpstreamError], None]


def not_counted(error: UpstreamError) -> None:
    """For a stream no one counts (a test's, a tool's)."""


class StreamFailures:
    """What one session's recovering stream reports of the failures it meets."""

    def __init__(self, count: Count = not_counted) -> None:
        self._count = count

    def failed(self, error: UpstreamError | None, *, reopening: bool) -> None:
        """``error`` ended a stream (``reopening``: a new stream that failed to take over); None: none did."""
        if error is None:
            return
        self._count(error)
        code, status = error.error_code.value, error.grpc_status or "none"
        what = "a new upstream stream failed to take over" if reopening else "an upstream stream failed"
        _LINES.warn("%s (%s, gRPC status %s); the session is being recovered", what, code, status, reason=code)


def close() -> None:
    """Tells what the open window counted (at shutdown)."""
    _LINES.close()
