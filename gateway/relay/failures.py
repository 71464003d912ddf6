"""Upstream streams that fail under a session (live, or retrying its first Start through an outage):
counted and told, even when a recovery hides them.

A recovery moves the session to a new stream and the client sees only ``upstream_recovered``; the
operator saw no more (no counter by cause, no line), so a Data Flow failing streams all day looked
healthy. Each failure a session's recovering stream meets — its stream failing (once, however many
sides of the session noticed it), and each new stream that failed to take over — is counted by error
code, and logged with its gRPC status as a WARNING a burst at a time (an outage fails every live
session at once), as are rotations that could not be made. The status is no label: which one a
failure shows depends on which side met it first (UNAVAILABLE, INTERNAL for a reset stream), so it
would add series at random. Only codes and statuses: never a client's text or Data Flow's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway.errors import UpstreamError, UpstreamUnavailable
from gateway.logs.bursts import BurstLog

log = logging.getLogger(__name__)

_FAILURES = BurstLog(log, "%(count)d more upstream stream failures in the last %(seconds).1f s (%(reasons)s)")
_ROTATIONS = BurstLog(log, "%(count)d more upstream stream rotations failed in the last %(seconds).1f s (%(reasons)s)")

Count = Callable[[UpstreamError], None]

_RECOVERING, _ENDS = "the session is being recovered", "the session ends with it"


def not_counted(error: UpstreamError) -> None:
    """For a stream no one counts (a test's, a tool's)."""


class StreamFailures:
    """What one session's recovering stream reports of the failures it meets."""

    def __init__(self, count: Count = not_counted) -> None:
        self._count = count
        self._last_failed = 0  # id() of the session's stream last counted as failed

    def failed(self, error: UpstreamError | None, stream: object, *, recovering: bool) -> None:
        """``stream``, the one the session streams to, failed with ``error`` (None: a rotation, no failure);
        ``recovering``: a new stream is tried, else the session ends with it."""
        if error is None or id(stream) == self._last_failed:
            return
        self._last_failed = id(stream)
        self._tell(error, "an upstream stream failed", _RECOVERING if recovering else _ENDS)

    def start_failed(self, error: UpstreamError, *, retrying: bool) -> None:
        """The session's first Start failed with a retryable cause; ``retrying``: another stream is tried."""
        then = "another is tried" if retrying else "its start fails with it"
        self._tell(error, "an upstream stream failed to start", then)

    def reopen_failed(self, error: UpstreamError) -> None:
        """A new stream failed to take over (another is tried if ``error`` is retryable and time is left)."""
        retrying = isinstance(error, UpstreamUnavailable)
        self._tell(error, "a new upstream stream failed to take over", _RECOVERING if retrying else _ENDS)

    def rotation_failed(self, error: UpstreamError | None) -> None:
        """A planned move to a new stream could not be made (the current stream goes on)."""
        code = error.error_code.value if error is not None else "no time left"
        _ROTATIONS.warn("an upstream stream rotation failed (%s); the current stream goes on", code, reason=code)

    def _tell(self, error: UpstreamError, what: str, then: str) -> None:
        self._count(error)
        code, status = error.error_code.value, error.grpc_status or "none"
        _FAILURES.warn("%s (%s, gRPC status %s); %s", what, code, status, then, reason=f"{code} ({status})")


def close() -> None:
    """Tells what the open windows counted (at shutdown)."""
    _FAILURES.close()
    _ROTATIONS.close()
