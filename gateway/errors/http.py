"""The one way a gateway error becomes an HTTP answer.

Apart from the error tree so that code raising errors without answering HTTP (the relay, the audio
code) loads no Starlette.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from gateway.errors import GatewayError


def error_response(error: GatewayError) -> JSONResponse:
    """Any error as an HTTP answer: its status, the ``{"error": {...}}`` envelope, ``Retry-After`` when
    waiting can help, and the error's own header fields."""
    headers = ({"Retry-After": str(error.retry_after)} if error.retryable else {}) | error.answer_headers()
    return JSONResponse({"error": error.to_json()}, status_code=error.http_status, headers=headers)
