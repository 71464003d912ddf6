"""The gateway's error tree.

Every failure a client can see is one of these. Each class knows the WebSocket close code and
the HTTP status it maps to, a stable machine-readable ``code``, and whether retrying can help.
Messages must never contain secrets or audio: they are sent to clients and logged as they are.
"""

from __future__ import annotations

from typing import Any, ClassVar


class GatewayError(Exception):
    """Base of every error the gateway reports to a client."""

    code: ClassVar[str] = "internal_error"
    ws_close_code: ClassVar[int] = 1011
    http_status: ClassVar[int] = 500
    retryable_by_default: ClassVar[bool] = False

    def __init__(self, message: str, *, code: str | None = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = code or self.code
        self.retryable = self.retryable_by_default if retryable is None else retryable

    def to_json(self) -> dict[str, Any]:
        return {"code": self.error_code, "message": self.message, "retryable": self.retryable}

    def __str__(self) -> str:
        return f"{self.error_code}: {self.message}"


# --- client mistakes -------------------------------------------------------------------------


class BadRequest(GatewayError):
    """The client sent something the protocol does not allow."""

    code = "bad_request"
    ws_close_code = 1008
    http_status = 422


class InvalidMessage(BadRequest):
    """A control message that is not valid JSON or not a known message."""

    code = "invalid_message"
    ws_close_code = 1007


class AudioFormatError(BadRequest):
    """An audio format the gateway cannot accept or convert."""

    code = "unsupported_audio_format"
    ws_close_code = 1003
    http_status = 415


class MessageTooBig(BadRequest):
    code = "message_too_big"
    ws_close_code = 1009
    http_status = 413


class UploadTooLarge(MessageTooBig):
    """An uploaded body over ``max_upload_bytes`` (found while streaming; the upstream is cancelled)."""

    code = "upload_too_large"


class Unauthorized(GatewayError):
    code = "unauthorized"
    ws_close_code = 1008
    http_status = 401


class Forbidden(GatewayError):
    code = "forbidden"
    ws_close_code = 1008
    http_status = 403


# --- limits and lifecycle -----------------------------------------------------------------------


class CapacityExceeded(GatewayError):
    code = "capacity_exceeded"
    ws_close_code = 1013
    http_status = 503
    retryable_by_default = True


class RateLimited(GatewayError):
    code = "rate_limited"
    ws_close_code = 1013
    http_status = 429
    retryable_by_default = True


class LimitReached(GatewayError):
    """A per-session policy limit ended the session (idle, max duration, audio too fast)."""

    code = "limit_reached"
    ws_close_code = 1008
    http_status = 408


class GoingAway(GatewayError):
    """This replica is draining; the client should reconnect (the load balancer picks another)."""

    code = "going_away"
    ws_close_code = 1001
    http_status = 503
    retryable_by_default = True


class ClientTooSlow(GatewayError):
    """The client does not read its events; the session cannot hold them forever."""

    code = "client_too_slow"
    ws_close_code = 1008
    http_status = 500


# --- upstream (Data Flow) failures ----------------------------------------------------------------


class UpstreamError(GatewayError):
    code = "upstream_error"
    ws_close_code = 1011
    http_status = 502
    #: gRPC status name when the failure was transport-level (for metrics), else None.
    grpc_status: str | None = None


class UpstreamUnavailable(UpstreamError):
    """Data Flow cannot be reached or dropped the stream (transport level)."""

    code = "upstream_unavailable"
    http_status = 503
    retryable_by_default = True


class UpstreamTimeout(UpstreamError):
    """Data Flow did not answer within the configured bound."""

    code = "upstream_timeout"
    http_status = 504
    retryable_by_default = True


class UpstreamRejected(UpstreamError):
    """Data Flow answered a request with an API-level failure (e.g. a failed StartResponse)."""

    code = "upstream_rejected"
    http_status = 502

    def __init__(self, message: str, *, dataflow_message: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.dataflow_message = dataflow_message


class UpstreamAuthFailed(UpstreamError):
    """The gateway's own Data Flow credential was refused or could not be obtained."""

    code = "upstream_auth_failed"
    http_status = 502
    retryable_by_default = True


class UpstreamProtocolError(UpstreamError):
    """Data Flow sent something the gateway cannot read."""

    code = "upstream_protocol_error"
