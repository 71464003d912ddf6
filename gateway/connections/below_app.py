"""Answers made below the application (gateway.connections.http: 400 for a request the parser refuses,
408 for a head too late, 431 for one too large, 501 for a transfer coding it does not apply), counted
and logged as the application's own refusals are.

The application's error answers are counted in ``requests_refused{status, reason}`` by the middleware
that sees them (gateway.routes.error_handlers); these never reach it, so a flood of bad requests or of
slow heads moved no metric. Each is counted here by its status and error code (a closed set), and
logged a burst at a time in the bad requests' log (gateway.connections.bad_requests): a client choosing
to send them cannot write the log at its own rate. What a line says is fixed wording and the gateway's
own limits, never what the client sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.connections.cap import app_gateway
from gateway.errors import ErrorCode
from gateway.logs.bursts import BurstLog


@dataclass(frozen=True, slots=True)
class Refusal:
    """An answer made below the application: its status, error code and log line (a %-format of ``args``);
    ``reason`` counts it in the burst's window line."""

    status: int
    code: ErrorCode
    line: str
    args: tuple[object, ...]
    reason: str

    def tell(self, app: Any, bursts: BurstLog) -> None:
        """Count it on the gateway behind uvicorn's ``app`` (none yet: not counted), log it a burst at a time."""
        bursts.warn(self.line, *self.args, reason=self.reason)
        count(app, self.status, self.code)


def count(app: Any, status: int, code: ErrorCode) -> None:
    """One answer made below the application (a WebSocket handshake the library refuses too), counted on the
    gateway behind uvicorn's ``app`` (none yet: not counted)."""
    gateway = app_gateway(app)
    if gateway is not None:
        gateway.metrics.refused(status, code.value)


def bad_request(reason: str) -> Refusal:
    """``reason``: the parser's own wording (gateway.connections.bad_requests.parser_reason)."""
    line = "Invalid HTTP request received (%s): answered 400"
    return Refusal(400, ErrorCode.BAD_REQUEST, line, (reason,), reason)


def head_too_large(max_bytes: int) -> Refusal:
    line = "Request head over %d bytes: answered 431"
    return Refusal(431, ErrorCode.REQUEST_HEAD_TOO_LARGE, line, (max_bytes,), "request head too large")


def trailers_too_large(max_bytes: int) -> Refusal:
    line = "Trailer section over %d bytes: answered 431"
    return Refusal(431, ErrorCode.REQUEST_HEAD_TOO_LARGE, line, (max_bytes,), "trailer section too large")


def head_too_late(timeout_s: float) -> Refusal:
    line = "Request head not complete within %g s: answered 408"
    return Refusal(408, ErrorCode.START_TIMEOUT, line, (timeout_s,), "request head too late")


def unknown_transfer_coding() -> Refusal:
    line = "Transfer-Encoding other than chunked: answered 501"
    return Refusal(501, ErrorCode.UNSUPPORTED_TRANSFER_ENCODING, line, (), "unknown transfer coding")
