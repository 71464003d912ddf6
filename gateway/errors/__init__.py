"""The gateway's errors: every failure a client can see, and the one way each is rendered.

The tree::

    Exception
    ├── ClientGone                      the client's connection is over: nobody to tell (never rendered)
    └── GatewayError                    reported to a client: code, message, retryable
        ├── BadRequest                  the client broke the protocol (422, close 1008)
        │   ├── InvalidMessage          not JSON, not an object, nested too deep (close 1007)
        │   ├── InvalidHost             a Host header the gateway does not serve (400)
        │   ├── InvalidState            valid, but not now: before start, after finalize (409)
        │   ├── AudioFormatError        audio the gateway cannot take or convert (415, close 1003)
        │   └── UnsupportedContentEncoding  a body in a coding the route does not take (415)
        ├── Unauthorized                no or a wrong credential (401)
        ├── Forbidden                   a credential or origin that may not do this (403)
        ├── LimitError                  a limit ended or refused the work
        │   ├── LimitReached            a session limit: idle, duration, start timeout (408)
        │   ├── MessageTooBig           a WebSocket message over the cap (413, close 1009)
        │   │   └── UploadTooLarge      an upload body over the cap
        │   ├── AudioTooLong            an upload's decoded audio is over the limit (413)
        │   ├── AudioTooCostly          an upload costs too much CPU to decode (422)
        │   ├── BudgetSpent             the caller's audio budget is spent (429, retryable)
        │   ├── ClientTooSlow           the client does not read its events
        │   ├── CapacityExceeded        this replica is full (503, close 1013, retryable)
        │   └── RateLimited             a key's or address's quota (429, close 1013, retryable)
        ├── GoingAway                   this replica is draining (503, close 1001, retryable)
        ├── TokensNotConfigured         browser tokens are off: no signing key (501)
        └── UpstreamError               Data Flow failed (502, close 1011)
            ├── UpstreamUnavailable     unreachable or dropped the stream (503, retryable)
            ├── UpstreamTimeout         did not answer in time (504, retryable)
            ├── UpstreamRejected        refused a request (API-level failure)
            ├── UpstreamAuthFailed      refused the gateway's own credential (retryable)
            └── UpstreamProtocolError   sent what the gateway cannot read

Each class knows its close code, HTTP status and whether a retry can help; its code is an
:class:`~gateway.errors.codes.ErrorCode` (the class's, or a more precise one from the raise site).
:func:`gateway.errors.http.error_response` is the one place an error becomes an HTTP answer (kept
apart so the relay, which raises these errors, loads no Starlette). Messages never carry secrets or audio.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Self

from gateway.errors.codes import ErrorCode as ErrorCode  # re-exported: callers import it from here


class ClientGone(Exception):
    """The client's connection is closed, or did not take a message: there is nobody left to tell."""


class GatewayError(Exception):
    """Base of every error the gateway reports to a client."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL_ERROR
    ws_close_code: ClassVar[int] = 1011
    http_status: ClassVar[int] = 500
    retryable_by_default: ClassVar[bool] = False
    #: Seconds a client should wait before retrying (HTTP ``Retry-After``), for retryable errors.
    retry_after_s: ClassVar[int] = 1

    def __init__(
        self, message: str, *, code: ErrorCode | None = None, retryable: bool | None = None, retry_after_s: int = 0
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_code: ErrorCode = code or self.code
        self.retryable = self.retryable_by_default if retryable is None else retryable
        self.retry_after = retry_after_s or self.retry_after_s  # when known (a budget refills), the truth

    def answer_headers(self) -> dict[str, str]:
        """Header fields the HTTP answer carries besides ``Retry-After``."""
        return {}

    def to_json(self) -> dict[str, Any]:
        return {"code": self.error_code.value, "message": self.message, "retryable": self.retryable}

    def __str__(self) -> str:
        return f"{self.error_code}: {self.message}"

    def detached(self) -> Self:
        """A copy without the traceback (and chained errors) that raising left on this one: what to keep
        after it was raised, and to raise again from where it is kept. A traceback holds the frames it
        went through, their locals hold the keeper: a cycle that holds a whole session until a full
        collection, and those are rare here (gateway/runtime.py)."""
        return copy.copy(self)  # rebuilt from its args and attributes: no __traceback__, __context__


class BadRequest(GatewayError):
    """The client sent something the protocol does not allow."""

    code = ErrorCode.BAD_REQUEST
    ws_close_code = 1008
    http_status = 422


class InvalidMessage(BadRequest):
    """A control message that is not valid JSON, not an object, or nested too deep."""

    code = ErrorCode.INVALID_MESSAGE
    ws_close_code = 1007


class InvalidHost(BadRequest):
    """A request for a host name this gateway does not serve (DNS rebinding)."""

    code = ErrorCode.INVALID_HOST
    http_status = 400


class InvalidState(BadRequest):
    """A valid message that the session cannot take in its current state."""

    code = ErrorCode.INVALID_STATE
    http_status = 409


class AudioFormatError(BadRequest):
    """An audio format the gateway cannot accept or convert."""

    code = ErrorCode.UNSUPPORTED_AUDIO_FORMAT
    ws_close_code = 1003
    http_status = 415


class UnsupportedContentEncoding(BadRequest):
    """A body in a ``Content-Encoding`` the route does not take; the answer names the codings that would
    do (RFC 9110 15.5.16): gzip and deflate for uploads, none (``identity``) elsewhere."""

    code = ErrorCode.UNSUPPORTED_CONTENT_ENCODING
    http_status = 415

    def __init__(self, message: str, *, accepted: str) -> None:
        super().__init__(message)
        self.accepted = accepted

    def answer_headers(self) -> dict[str, str]:
        return {"Accept-Encoding": self.accepted}


class Unauthorized(GatewayError):
    code = ErrorCode.UNAUTHORIZED
    ws_close_code = 1008
    http_status = 401


class Forbidden(GatewayError):
    code = ErrorCode.FORBIDDEN
    ws_close_code = 1008
    http_status = 403


class LimitError(GatewayError):
    """A limit refused or ended the work (what limit: the subclass and the code)."""

    code = ErrorCode.LIMIT_REACHED
    ws_close_code = 1008
    http_status = 408


class LimitReached(LimitError):
    """A per-session policy limit ended the session (idle, max duration, start timeout)."""


class MessageTooBig(LimitError):
    code = ErrorCode.MESSAGE_TOO_BIG
    ws_close_code = 1009
    http_status = 413


class UploadTooLarge(MessageTooBig):
    """An uploaded body over ``max_upload_bytes`` (found while streaming; the upstream is cancelled)."""

    code = ErrorCode.UPLOAD_TOO_LARGE


class AudioTooLong(LimitError):
    """An upload's decoded audio is longer than the limit (a decompression bomb, or just a long file)."""

    code = ErrorCode.AUDIO_TOO_LONG
    http_status = 413


class AudioTooCostly(LimitError):
    """An upload cost FFmpeg's decoding more CPU per second of audio than allowed (many channels at a very
    high rate, packets that decode to nothing); what was decoded before is finalized and counts."""

    code = ErrorCode.AUDIO_TOO_COSTLY
    http_status = 422


class BudgetSpent(LimitError):
    """The caller's audio budget for the last minute ran out during a session (charged as audio is
    accepted); a session refused for a spent budget gets RateLimited."""

    code = ErrorCode.AUDIO_BUDGET_SPENT
    http_status = 429
    retryable_by_default = True


class ClientTooSlow(LimitError):
    """The client does not read its events; the session cannot hold them forever."""

    code = ErrorCode.CLIENT_TOO_SLOW
    http_status = 500


class CapacityExceeded(LimitError):
    code = ErrorCode.CAPACITY_EXCEEDED
    ws_close_code = 1013
    http_status = 503
    retryable_by_default = True


class RateLimited(LimitError):
    code = ErrorCode.RATE_LIMITED
    ws_close_code = 1013
    http_status = 429
    retryable_by_default = True
    retry_after_s = 60  # quotas and throttles count per minute


class GoingAway(GatewayError):
    """This replica is draining; the client should reconnect (the load balancer picks another)."""

    code = ErrorCode.GOING_AWAY
    ws_close_code = 1001
    http_status = 503
    retryable_by_default = True


class TokensNotConfigured(GatewayError):
    """A browser token was asked of a gateway with no signing key: its own setting, not Data Flow's failure,
    and no retry helps until an operator sets one."""

    code = ErrorCode.TOKENS_NOT_CONFIGURED
    http_status = 501


class UpstreamError(GatewayError):
    code = ErrorCode.UPSTREAM_ERROR
    ws_close_code = 1011
    http_status = 502
    #: gRPC status name when the failure was transport-level (for metrics), else None.
    grpc_status: str | None = None
    #: Data Flow was out of reach (UNAVAILABLE, and no TLS handshake it failed): a retry soon may cure it.
    out_of_reach: bool = False


class UpstreamUnavailable(UpstreamError):
    """Data Flow cannot be reached or dropped the stream (transport level)."""

    code = ErrorCode.UPSTREAM_UNAVAILABLE
    http_status = 503
    retryable_by_default = True


class UpstreamTimeout(UpstreamError):
    """Data Flow did not answer within the configured bound."""

    code = ErrorCode.UPSTREAM_TIMEOUT
    http_status = 504
    retryable_by_default = True


class UpstreamRejected(UpstreamError):
    """Data Flow answered a request with an API-level failure (e.g. a failed StartResponse)."""

    code = ErrorCode.UPSTREAM_REJECTED

    def __init__(self, message: str, *, dataflow_message: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.dataflow_message = dataflow_message


class UpstreamAuthFailed(UpstreamError):
    """The gateway's own Data Flow credential was refused or could not be obtained."""

    code = ErrorCode.UPSTREAM_AUTH_FAILED
    retryable_by_default = True


class UpstreamProtocolError(UpstreamError):
    """Data Flow sent something the gateway cannot read."""

    code = ErrorCode.UPSTREAM_PROTOCOL_ERROR
