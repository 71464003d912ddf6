"""The one place Data Flow's failures become the gateway's errors: a gRPC status (transport level) or a
refused StartResponse (API level)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
_AUTH_WORDS = ("token", "unauthor", "unauthent", "expired", "credential")
_GATEWAY_FIELDS = ("Token", "Tenant")  # what the gateway, not the client, put in a Start


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


def start_refused(text: str, start: Mapping[str, Any] | None = None) -> UpstreamError:
    """A failed StartResponse: the gateway's credential refused, or the session itself.

    Data Flow may quote what the client put in ``start`` (an unknown project, a setting): a word of
    the client's (a project ``expired-token-demo``) must not pass for a refused credential, or any
    client could make the gateway drop its token (and fetch one) and retry at will."""
    said = text.lower()
    for value in _client_strings(start or {}):
        if value in said and any(word in value for word in _AUTH_WORDS):
            said = said.replace(value, " ")
    if any(word in said for word in _AUTH_WORDS):
        return UpstreamAuthFailed(f"Data Flow refused the gateway's credential: {text}")
    return UpstreamRejected(f"Data Flow rejected the session: {text}", dataflow_message=text)


def _client_strings(message: object) -> set[str]:
    """Every string (keys included) of a Start, lower-cased, but the gateway's own Token and Tenant."""
    found: set[str] = set()
    todo = [message]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            found.add(item.lower())
        elif isinstance(item, Mapping):
            pairs = [(k, v) for k, v in item.items() if item is not message or k not in _GATEWAY_FIELDS]
            todo.extend(v for pair in pairs for v in pair)
        elif isinstance(item, list | tuple):
            todo.extend(item)
    return found
