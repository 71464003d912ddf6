"""Requests uvicorn's HTTP parser cannot take as sent: answered in the gateway's error envelope, logged a
burst at a time.

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
_MORE: Final = "%(count)d more requests not taken as sent in the last %(seconds).1f s (%(reasons)s)"


def bad_request_log(window_s: float = WINDOW_S) -> BurstLog:
    """One per server: its window's timer runs on the server's loop."""
    return BurstLog(logging.getLogger("uvicorn.error"), _MORE, window_s)


def parser_reason(error: Exception) -> str:
    """httptools' reason for refusing a request (llhttp's fixed wording), printable and short."""
    text = "".join(c if c.isprintable() and c.isascii() else "?" for c in str(error))[:REASON_CHARS]
    return text or "malformed request"


def bad_request_body(reason: str) -> bytes:
    """The 400's body, in the envelope every other answer has."""
    error = {"code": ErrorCode.BAD_REQUEST.value, "message": f"invalid HTTP request: {reason}", "retryable": False}
    return json.dumps({"error": error}).encode()
