"""The one place Data Flow's failures become the gateway's errors: a gRPC status (transport level) or a
refused StartResponse (API level)."""

from __future__ import annotations

import grpc

from gateway.errors import (
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

_MAX_DETAILS = 200


def error_from_status(code: grpc.StatusCode, details: str | None) -> UpstreamError:
    if code is grpc.StatusCode.OK:  # the RPC ended cleanly while the gateway still had something to say
        return UpstreamUnavailable("Data Flow closed the stream")
    text = (details or "").strip()[:_MAX_DETAILS]
    described = f"gRPC {code.name}" + (f": {text}" if text else "")
    error: UpstreamError
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        error = UpstreamTimeout(f"Data Flow stream deadline exceeded ({described})")
    elif code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        error = UpstreamAuthFailed(f"Data Flow refused the gateway's credential ({described})")
    elif code is grpc.StatusCode.UNIMPLEMENTED:
        error = UpstreamProtocolError(
            f"Data Flow does not serve the configured method; check GATEWAY_UPSTREAM_METHOD_PATH ({described})"
        )
    elif code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
        error = UpstreamRejected(f"Data Flow rejected the stream ({described})", dataflow_message=text)
    else:
        # UNAVAILABLE, CANCELLED, ABORTED, INTERNAL, UNKNOWN, RESOURCE_EXHAUSTED, DATA_LOSS: retryable.
        error = UpstreamUnavailable(f"Data Flow stream failed ({described})")
    error.grpc_status = code.name
    return error


def start_refused(text: str) -> UpstreamError:
    """A failed StartResponse: the gateway's credential refused, or the session itself."""
    lowered = text.lower()
    if any(word in lowered for word in ("token", "unauthor", "unauthent", "expired", "credential")):
        return UpstreamAuthFailed(f"Data Flow refused the gateway's credential: {text}")
    return UpstreamRejected(f"Data Flow rejected the session: {text}", dataflow_message=text)
