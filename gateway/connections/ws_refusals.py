"""WebSocket handshakes the websockets library refuses, answered and logged as every other refusal is.

uvicorn hands a handshake to websockets, which refuses some itself: no ``Sec-WebSocket-Key``, a version
other than 13, a method other than GET, a header line over its 8 KiB, more than 128 header lines. It
answered in plain text that quotes what the client sent (``invalid Sec-WebSocket-Key header:
<script>…``), without the headers every answer carries (gateway.routes.http_conventions), and logged one
bare INFO line per refusal (no path, no client). Here the answer is the error envelope in fixed wording
(a header's name, never its value) with those headers, and the line is the access log's
(``WS /v1/stream 400``), like any other request's.

A header line may be as long as the HTTP parser lets a whole head be (``GATEWAY_MAX_REQUEST_HEAD_BYTES``,
16 KiB by default): a browser's large ``Cookie`` line passed on HTTP requests and was refused 431 on
the WebSocket (:func:`allow_header_lines`).
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import MutableMapping
from http import HTTPStatus
from typing import Any, Final

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets import http11
from websockets.datastructures import Headers
from websockets.exceptions import HeaderLineTooLong, InvalidHeader, RequestLineTooLong, TooManyHeaders
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.typing import StatusLike

from gateway.connections import below_app
from gateway.connections.bad_requests import envelope
from gateway.errors import ErrorCode
from gateway.logs.access import refused_handshake_line
from gateway.routes.http_conventions import HEADERS

#: websockets' INFO line for each refusal: the access line replaces it.
_REFUSAL_LINES: Final = frozenset({"connection rejected (%d %s)", "HTTP response sent (%d %s)"})
_NAME_CHARS: Final = 40
_CODES: Final = {
    HTTPStatus.METHOD_NOT_ALLOWED: ErrorCode.METHOD_NOT_ALLOWED,
    HTTPStatus.REQUEST_URI_TOO_LONG: ErrorCode.REQUEST_HEAD_TOO_LARGE,
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: ErrorCode.REQUEST_HEAD_TOO_LARGE,
}
#: What websockets answers when it cannot read the request (uvicorn answers 400 for the rest).
_STATUSES: Final[dict[type[Exception], HTTPStatus]] = {
    RequestLineTooLong: HTTPStatus.REQUEST_URI_TOO_LONG,
    HeaderLineTooLong: HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
    TooManyHeaders: HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
}
_MESSAGES: Final = {
    HTTPStatus.METHOD_NOT_ALLOWED: "a WebSocket handshake is a GET request",
    HTTPStatus.REQUEST_URI_TOO_LONG: "the request target is too long",
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: "the handshake's header lines are too long or too many",
    HTTPStatus.INTERNAL_SERVER_ERROR: "the WebSocket handshake failed",
}


def allow_header_lines(max_head_bytes: int) -> None:
    """Let websockets read a header line as long as the head the HTTP parser already bounded. Its limit
    is a module setting (``WEBSOCKETS_MAX_LINE_LENGTH`` in its environment), read at each parse; it is
    only ever raised here."""
    http11.MAX_LINE_LENGTH = max(http11.MAX_LINE_LENGTH, max_head_bytes)


def refusal(status: HTTPStatus, error: Exception | None) -> tuple[ErrorCode, str]:
    """A refused handshake's code and message: the library's reason in fixed words."""
    code = _CODES.get(status, ErrorCode.BAD_REQUEST if status < 500 else ErrorCode.INTERNAL_ERROR)
    if isinstance(error, InvalidHeader):  # its name is the header the library checked; its value the client's
        name = "".join(c for c in error.name if c.isascii() and (c.isalnum() or c == "-"))[:_NAME_CHARS]
        missing = error.value is None
        return code, f"{'missing' if missing else 'invalid'} {name} header in the WebSocket handshake"
    return code, _MESSAGES.get(status, "invalid WebSocket handshake")


class _RefusalLinesDropped(logging.LoggerAdapter):  # type: ignore[type-arg]
    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if msg not in _REFUSAL_LINES:
            super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs  # the adapter adds nothing


class EnvelopeRefusals(ServerProtocol):
    """websockets' server side whose refusals are the gateway's envelope."""

    def reject(self, status: StatusLike, text: str) -> Response:
        status = HTTPStatus(status)
        code, message = refusal(status, self.handshake_exc)
        body = envelope(code, message)
        headers = Headers(
            [
                ("Date", email.utils.formatdate(usegmt=True)),
                ("Connection", "close"),
                ("Content-Length", str(len(body))),
                ("Content-Type", "application/json"),
                *HEADERS.items(),
            ]
        )
        return Response(status.value, status.phrase, headers, body)


class RefusingProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with :class:`EnvelopeRefusals` for its handshake, and an
    access line for each handshake it refuses."""

    _began = 0.0
    _target: str | None = None  # the request line's target, for a refusal made before the request is read
    _first_read = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        made = self.conn  # made again, with the same settings
        self.conn = EnvelopeRefusals(
            extensions=made.available_extensions,
            max_size=(made.max_message_size, made.max_fragment_size),
            logger=_RefusalLinesDropped(made.logger, {}),
        )

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        # A parse error (a frame over the size cap) keeps its traceback, whose frame holds the protocol:
        # a cycle only a full collection would free.
        self.conn.parser_exc = self.conn.handshake_exc = None

    def connection_made(self, transport: Any) -> None:
        self._began = time.perf_counter()
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._first_read:  # uvicorn hands the handshake on in one piece, request line first
            self._first_read, self._target = False, _request_target(data)
        super().data_received(data)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if (status := self.response.status_code) != 101:  # counted in requests_refused, as the app's refusals
            below_app.count(self.app, status, refusal(HTTPStatus(status), self.conn.handshake_exc)[0])
            refused_handshake_line(self.app, event.path, status, self._began, self.client)

    def handle_handshake_exception(self) -> None:
        error = self.conn.handshake_exc
        status = next((s for kind, s in _STATUSES.items() if isinstance(error, kind)), HTTPStatus.BAD_REQUEST)
        below_app.count(self.app, status, refusal(status, error)[0])
        super().handle_handshake_exception()
        refused_handshake_line(self.app, self._target, status, self._began, self.client)


def _request_target(data: bytes) -> str | None:
    """The target of the request line uvicorn hands on (``GET <target> HTTP/1.1``), if whole in ``data``."""
    line, found, _ = data.partition(b"\r\n")
    parts = line.split(b" ")
    return parts[1].decode("latin-1") if found and len(parts) == 3 else None
