"""Filters that shape what uvicorn and the WebSocket library log, and the redaction backstop.

:class:`HandshakeLines` sits on the ``uvicorn.error`` logger, the logger uvicorn hands to the
WebSocket library: it sees each handshake and frame line as it is made, with its arguments, and
masks credential headers by name, the request target's credentials, and frame payloads (audio and
start messages with tokens) before any handler does. :class:`Redactor` sits on the handler: every
line's text, extra fields and traceback pass it, whoever made them. :func:`outbound_origins_only`
puts :class:`OutboundRequestLines` on httpx's logger, whoever configured logging.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from gateway.logs.context import response_cut
from gateway.logs.formats import extra_fields
from gateway.logs.redact import MAX_FIELD_CHARS, SecretText, clip, redact_header, redact_target, url_origin

_UVICORN_WS_ACCESS = '%s - "WebSocket %s"'  # uvicorn's own WebSocket access lines: gateway.access replaces them
#: The WebSocket library's INFO line for every socket it opens, a quarter of a churning client's lines:
#: the access line of the socket says the same, with fields.
_SAID_BY_THE_ACCESS_LINE = frozenset({"connection open"})
_HEADER_LINES = ("< %s: %s", "> %s: %s")
_FRAME_LINES = ("< %s", "> %s")
_REQUEST_LINES = ("< %s %s %s", "< GET %s HTTP/1.1")
#: A line's text may quote what a client sent (an unknown message type, a project): cut, as fields are.
_MAX_MESSAGE_CHARS = 8 * MAX_FIELD_CHARS


_UNFINISHED = "ASGI callable returned without completing response."
#: uvicorn's ERROR when connections outlive its graceful shutdown timeout, with how many request tasks it cancels.
_GRACEFUL_TIMEOUT = "Cancel %s running task(s), timeout graceful shutdown exceeded"
_HTTPX_REQUEST_LINE = 'HTTP Request: %s %s "%s %d %s"'  # httpx's INFO line for each request it sends


class ClientMistakeFilter(logging.Filter):
    """uvicorn logs a client's invalid UTF-8 text frame as an ERROR with a traceback, so one client
    could flood the log; it is the client's mistake (closed with 1007): one short INFO line. Likewise
    its ERROR for a response the app cut on purpose (:data:`response_cut`): the client's doing, INFO.
    And its ERROR when the graceful shutdown timeout passes with no task to cancel: what was left were
    connections closing whose clients take nothing more (gateway.connections.linger), which the
    server then aborts; every drain with such a client ends so. A WARNING: nothing of the gateway's
    was cut, and alerts on ERROR stay for real failures (a cancelled request is still an ERROR)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Invalid UTF-8 sequence received from client"):
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        elif record.msg == _UNFINISHED and (reason := response_cut.get()) is not None:
            record.msg, record.args = "Response left unfinished and connection closed: %s", (reason,)
            record.levelno, record.levelname = logging.INFO, "INFO"
        elif record.msg == _GRACEFUL_TIMEOUT and record.args == (0,):
            record.msg, record.args = (
                "Graceful shutdown timeout exceeded with no request running: connections still closing, "
                "whose clients read nothing more, are aborted",
                (),
            )
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class HandshakeLines(logging.Filter):
    """Masks credentials in the WebSocket library's handshake lines and payloads in its frame lines;
    drops uvicorn's WebSocket access lines and the library's "connection open" (the gateway's access log
    has them, with fields)."""

    def filter(self, record: logging.LogRecord) -> bool:
        template, args = record.msg, record.args
        if not isinstance(template, str) or not isinstance(args, tuple):
            return True
        if template.startswith(_UVICORN_WS_ACCESS) or template in _SAID_BY_THE_ACCESS_LINE:
            return False
        if template in _HEADER_LINES and len(args) == 2:
            record.args = (args[0], redact_header(str(args[0]), str(args[1])))
        elif template in _REQUEST_LINES:
            record.args = tuple(redact_target(str(a)) if str(a).startswith("/") else a for a in args)
        elif template in _FRAME_LINES and len(args) == 1 and hasattr(args[0], "opcode"):
            frame: Any = args[0]
            record.args = (f"{frame.opcode.name} [{len(frame.data)} bytes]",)
        return True


class Redactor(logging.Filter):
    """The backstop on the handler: masks credential shapes and the process's own secrets in the
    message, string extra fields and traceback of every line."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.clean = SecretText(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        # Masked first, then cut: a secret cut in two would no longer match what masks it.
        record.msg, record.args = clip(self.clean(record.getMessage()), _MAX_MESSAGE_CHARS), ()
        for key, value in extra_fields(record).items():
            record.__dict__[key] = self._clean_value(value)
        if record.exc_info:
            record.exc_text = self.clean(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.clean(record.exc_text)
        if record.stack_info:
            record.stack_info = self.clean(record.stack_info)
        return True

    def _clean_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return clip(self.clean(value))
        if isinstance(value, dict):
            return {k: self._clean_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean_value(v) for v in value]
        return value


class OutboundRequestLines(logging.Filter):
    """httpx logs each request's whole URL at INFO. A webhook receiver's URL may carry its credential in
    the path (many receivers work that way), which no text shape can tell from a path: the line keeps
    the URL's origin only (no user, path or query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _HTTPX_REQUEST_LINE and isinstance(record.args, tuple) and len(record.args) == 5:
            method, url, *rest = record.args
            record.args = (method, url_origin(str(url)), *rest)
        return True


def outbound_origins_only() -> None:
    """Puts :class:`OutboundRequestLines` on httpx's logger once (its clients call this when made), so the
    line is cut whatever logging an embedding application configured."""
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, OutboundRequestLines) for f in httpx_log.filters):
        httpx_log.addFilter(OutboundRequestLines())
