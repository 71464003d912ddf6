"""Requests uvicorn's HTTP parser cannot take as sent, and the other answers made below the application
(408 for a head too late, 431 for one too large, 501 for a transfer coding it does not apply, RFC 9112
6.1): in the gateway's error envelope, the malformed ones logged a burst at a time.

uvicorn logs a WARNING for every malformed request and for every request asking for an upgrade other
than WebSocket (``curl --http2`` sends ``Upgrade: h2c`` with each plain-HTTP request), and answers the
malformed ones in plain text: any client could write the log at its own rate, one line per request.
Here the first is logged at once and the rest counted per 10 s window (gateway.logs.bursts); the
reason is the parser's own fixed wording, never what the client sent.
"""

from __future__ import annotations

import json
import logging
from typing import Final

from gateway.errors import ErrorCode
from gateway.logs.bursts import WINDOW_S, BurstLog

REASON_CHARS: Final = 80
UNSUPPORTED_UPGRADE: Final = "unsupported upgrade"
UPGRADE_WITH_A_BODY: Final = "unsupported upgrade with a body"
_MORE: Final = "%(count)d more requests not taken as sent in the last %(seconds).1f s (%(reasons)s)"


def bad_request_log(window_s: float = WINDOW_S) -> BurstLog:
    """One per server: its window's timer runs on the server's loop."""
    return BurstLog(logging.getLogger("uvicorn.error"), _MORE, window_s)


def parser_reason(error: Exception) -> str:
    """httptools' reason for refusing a request (llhttp's fixed wording), printable and short."""
    text = "".join(c if c.isprintable() and c.isascii() else "?" for c in str(error))[:REASON_CHARS]
    return text or "malformed request"


def envelope(code: ErrorCode, message: str) -> bytes:
    """An answer's body made below the application, in the envelope every other answer has."""
    return json.dumps({"error": {"code": code.value, "message": message, "retryable": False}}).encode()


HEAD_TOO_LARGE: Final = envelope(ErrorCode.REQUEST_HEAD_TOO_LARGE, "the request head is too large")
TRAILERS_TOO_LARGE: Final = envelope(ErrorCode.REQUEST_HEAD_TOO_LARGE, "the request's trailer section is too large")
UNKNOWN_TRANSFER_CODING: Final = envelope(
    ErrorCode.UNSUPPORTED_TRANSFER_ENCODING,
    "Transfer-Encoding may only be chunked (a content coding goes in Content-Encoding)",
)


#: httptools has llhttp skip the body of any request asking to upgrade, and a request asking for another
#: protocol (h2c) is served as plain HTTP: its body would be parsed as further requests, run unseen by a
#: proxy in front (request smuggling: paths the proxy blocks, X-Forwarded-For on its trusted connection).
UPGRADE_WITH_BODY: Final = envelope(
    ErrorCode.BAD_REQUEST,
    "a request asking to upgrade to a protocol other than WebSocket (h2c) may not have a body: send it without Upgrade",
)


def declares_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request's head says a body follows (a chunked one, or a Content-Length other than 0)."""
    for name, value in headers:
        name = name.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip(b" \t0")):
            return True
    return False


def late_head_body(timeout_s: float) -> bytes:
    return envelope(ErrorCode.START_TIMEOUT, f"the request head did not arrive within {timeout_s:g} s")


def bad_request_body(reason: str) -> bytes:
    return envelope(ErrorCode.BAD_REQUEST, f"invalid HTTP request: {reason}")


def unknown_transfer_coding(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether ``Transfer-Encoding`` names a coding besides ``chunked`` (httptools takes ``gzip, chunked``
    and hands the body on still gzip-coded)."""
    codings = (value.lower().split(b",") for name, value in headers if name.lower() == b"transfer-encoding")
    return any(coding.strip() != b"chunked" for listed in codings for coding in listed)
