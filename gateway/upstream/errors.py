"""The one place Data Flow's failures become the gateway's errors: a gRPC status (transport level) or a
refused StartResponse (API level)."""

from __future__ import annotations

import unicodedata
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
_MAX_SESSION_ID = 128
_MAX_SCANNED = 4096  # a credential refusal is a sentence, not a page
_AUTH_WORDS = ("token", "unauthor", "unauthent", "expired", "credential")
_GATEWAY_FIELDS = ("Token", "Tenant")  # what the gateway, not the client, put in a Start
#: How gRPC core says a message or its metadata was over a size limit (RESOURCE_EXHAUSTED): the same
#: message would be refused again on a new stream, so this is no outage to retry.
_SIZE_LIMIT_WORDS = ("larger than max", "exceeds hard limit", "exceeds soft limit")
#: How gRPC core words a GOAWAY that a server's keepalive enforcement sent (ENHANCE_YOUR_CALM,
#: "too_many_pings") in the status of the streams it ended.
_PING_REFUSAL_WORDS = ("too many pings", "too_many_pings")
#: How gRPC core words a connection whose TLS handshake failed (``Tls handshake failed``, ``Ssl …``,
#: ``CERTIFICATE_VERIFY_FAILED``).
_TLS_FAILURE_WORDS = ("handshake failed", "certificate_verify_failed", "certificate verify failed")


#: Control and format characters, lone surrogates (no UTF-8 for them: a strict JSON parser refuses the
#: message) and the line and paragraph separators (a line break to JavaScript and to many log readers).
_SHOWN_AS_REPLACEMENT = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))


def printable(text: str, limit: int = _MAX_DETAILS) -> str:
    """Data Flow's own words as the gateway quotes them, to a client or a log: at most ``limit``
    characters (an ellipsis marks a cut), and every control or format character (a newline that forges
    a log line, a terminal escape, a bidi override) shown as U+FFFD."""
    cut = text[:limit]
    clean = "".join("\ufffd" if unicodedata.category(c) in _SHOWN_AS_REPLACEMENT else c for c in cut)
    return clean if len(text) <= limit else clean + "…"


def quoted_session_id(value: str | None) -> str | None:
    """A StartResponse's session id as the gateway repeats it (in ``started``, in every log line of the
    session): an id, not a megabyte or a forged line."""
    return None if value is None else printable(value, _MAX_SESSION_ID)


def error_from_status(code: grpc.StatusCode, details: str | None) -> UpstreamError:
    if code is grpc.StatusCode.OK:  # the RPC ended cleanly while the gateway still had something to say
        return UpstreamUnavailable("Data Flow closed the stream")
    text = printable((details or "").strip())
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
    elif code is grpc.StatusCode.RESOURCE_EXHAUSTED and any(words in text for words in _SIZE_LIMIT_WORDS):
        error = UpstreamProtocolError(
            f"a message or its metadata was over a gRPC size limit (GATEWAY_UPSTREAM_MAX_MESSAGE_BYTES; {described})"
        )
    elif code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
        error = UpstreamRejected(f"Data Flow rejected the stream ({described})", dataflow_message=text)
    else:
        # UNAVAILABLE, CANCELLED, ABORTED, INTERNAL, UNKNOWN, RESOURCE_EXHAUSTED, DATA_LOSS: retryable.
        error = UpstreamUnavailable(f"Data Flow stream failed ({described})")
    error.grpc_status = code.name
    # A failed TLS handshake (a certificate the gateway does not trust) is UNAVAILABLE too, but it is the
    # configuration's, not an outage: a new connection meets the same certificate.
    error.out_of_reach = code is grpc.StatusCode.UNAVAILABLE and not any(
        words in (details or "")[:_MAX_SCANNED].lower() for words in _TLS_FAILURE_WORDS
    )
    return error


def pings_refused(code: grpc.StatusCode, details: str | None) -> bool:
    """The stream ended because the server took the gateway's keepalive pings for abuse."""
    said = (details or "")[:_MAX_SCANNED].lower()
    return code is grpc.StatusCode.UNAVAILABLE and any(words in said for words in _PING_REFUSAL_WORDS)


def start_refused(text: str, start: Mapping[str, Any] | None = None) -> UpstreamError:
    """A failed StartResponse: the gateway's credential refused, or the session itself.

    Data Flow may quote what the client put in ``start`` (an unknown project, a setting): a word of
    the client's (a project ``expired-token-demo``) must not pass for a refused credential, or any
    client could make the gateway drop its token (and fetch one) and retry at will. A refusal longer
    than _MAX_SCANNED is no credential's: not read for one (its size is Data Flow's to choose, the
    number of strings it is searched for the client's), and quoted cut short."""
    said = text.lower() if len(text) <= _MAX_SCANNED else ""
    for value in _client_strings(start or {}) if said else ():
        if value in said and any(word in value for word in _AUTH_WORDS):
            said = said.replace(value, " ")
    quoted = printable(text.strip())
    if any(word in said for word in _AUTH_WORDS):
        return UpstreamAuthFailed(f"Data Flow refused the gateway's credential: {quoted}")
    return UpstreamRejected(f"Data Flow rejected the session: {quoted}", dataflow_message=quoted)


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
