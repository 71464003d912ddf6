"""Every ``code`` a client can receive, as one closed set (metric labels come from it too)."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every ``code`` a client can receive (documented in README and the AsyncAPI document)."""

    INTERNAL_ERROR = "internal_error"
    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"  # no such path (HTTP 404)
    METHOD_NOT_ALLOWED = "method_not_allowed"  # HTTP 405
    INVALID_MESSAGE = "invalid_message"
    INVALID_START = "invalid_start"
    INVALID_UPDATE = "invalid_update"
    INVALID_EVENT = "invalid_event"
    INVALID_PARAMETERS = "invalid_parameters"
    INVALID_MULTIPART = "invalid_multipart"
    EMPTY_BODY = "empty_body"
    INVALID_HOST = "invalid_host"
    UNKNOWN_MESSAGE_TYPE = "unknown_message_type"
    UNSUPPORTED_AUDIO_FORMAT = "unsupported_audio_format"
    UNSUPPORTED_CONTENT_ENCODING = "unsupported_content_encoding"
    UNSUPPORTED_TRANSFER_ENCODING = "unsupported_transfer_encoding"  # a transfer coding but chunked (HTTP 501)
    REQUEST_HEAD_TOO_LARGE = "request_head_too_large"  # a request head or trailer section (HTTP 431)
    INVALID_CONTENT_ENCODING = "invalid_content_encoding"  # a gzip/deflate body that does not inflate
    MISALIGNED_AUDIO = "misaligned_audio"
    INVALID_STATE = "invalid_state"
    NOT_STARTED = "not_started"
    ALREADY_STARTED = "already_started"
    AUDIO_BEFORE_START = "audio_before_start"
    SESSION_FINALIZING = "session_finalizing"
    UNAUTHORIZED = "unauthorized"
    MISSING_CREDENTIAL = "missing_credential"
    INVALID_CREDENTIAL = "invalid_credential"
    INVALID_SIGNATURE = "invalid_signature"
    API_KEY_REQUIRED = "api_key_required"
    TOKEN_EXPIRED = "token_expired"  # noqa: S105 (a code, not a secret)
    TOKEN_REUSED = "token_reused"  # noqa: S105
    FORBIDDEN = "forbidden"  # /v1/audiohook: an open whose organizationId is not the header's
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    ORIGIN_MISMATCH = "origin_mismatch"
    PROJECT_NOT_ALLOWED = "project_not_allowed"
    LIMIT_REACHED = "limit_reached"
    START_TIMEOUT = "start_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    MAX_DURATION = "max_duration"
    AUDIO_BUDGET_SPENT = "audio_budget_spent"
    AUDIO_TOO_LONG = "audio_too_long"
    AUDIO_TOO_COSTLY = "audio_too_costly"
    MESSAGE_TOO_BIG = "message_too_big"
    UPLOAD_TOO_LARGE = "upload_too_large"
    CLIENT_TOO_SLOW = "client_too_slow"
    CAPACITY_EXCEEDED = "capacity_exceeded"
    RATE_LIMITED = "rate_limited"
    AUTH_THROTTLED = "auth_throttled"
    GOING_AWAY = "going_away"
    TOKENS_NOT_CONFIGURED = "tokens_not_configured"  # POST /v1/tokens without a signing key (HTTP 501)
    DRAINING = "draining"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_REJECTED = "upstream_rejected"
    UPSTREAM_AUTH_FAILED = "upstream_auth_failed"
    UPSTREAM_PROTOCOL_ERROR = "upstream_protocol_error"
    # Warnings (an upload's ``warnings``; the work goes on)
    HEADER_SIZE_MISMATCH = "header_size_mismatch"
    UNDECODABLE_AUDIO_SKIPPED = "undecodable_audio_skipped"
    DECLARED_FORMAT_MISMATCH = "declared_format_mismatch"
    UPSTREAM_RECOVERED = "upstream_recovered"
