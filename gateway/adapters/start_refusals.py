"""Starts refused after the WebSocket was accepted, counted as every other refused session is.

A start the gateway refuses before it reaches Data Flow is a denial (``denials_total{reason}``, the
error code): a project over its length or not allowed, no slot, a spent budget were counted where they
were refused (gateway.security, gateway.relay.registry), but a start message the dialect could not take
(an audio format it does not convert, closed 1003; an invalid or out-of-place message) and a start that
never came (``start_timeout``, 1008) moved no counter at all. The driver (gateway.adapters.ws) counts
those here. What a connection ends with after a session ran (idle timeout, maximum duration, a drain)
is not a refused start, nor is a start Data Flow refused (an upstream failure, counted as such).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.errors import ErrorCode, GatewayError

if TYPE_CHECKING:
    from gateway.relay.registry import SessionRegistry

#: Why a connection without a session is ended that are not a refused start.
_NOT_A_START = frozenset({ErrorCode.IDLE_TIMEOUT, ErrorCode.MAX_DURATION, ErrorCode.GOING_AWAY})


def count_refused_start(registry: SessionRegistry, error: GatewayError) -> None:
    """``error`` refused a start (or its start never came in time) on an accepted WebSocket: a denial, by its
    error code (a closed set: never the client's words). A connection ended for being idle, too long or by a
    drain is not counted."""
    if error.error_code not in _NOT_A_START:
        registry.deny(error.error_code)
