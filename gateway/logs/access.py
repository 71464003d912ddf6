"""The access log: one structured line per HTTP request and per WebSocket, when it ends.

Fields: method (``WS`` for a WebSocket), path with credentials masked (``/t/<secret>/`` and
credential query parameters), status (101 for an accepted WebSocket), duration_ms, client, and the
session id when the request started one (plus the close code of a WebSocket that was accepted, 1006 when
it was lost with no close seen: one refused at its handshake has none). The path is masked before the
line is made, from the request as the client sent it. A WebSocket handshake refused below the
application gets its line too (:func:`refused_handshake_line`). Lines of requests refused before a
session are bounded per client address (gateway.logs.refused_lines).
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.logs.context import AccessNote, current_note
from gateway.logs.formats import MESSAGE_FORMAT, SHOWN_IN_MESSAGE
from gateway.logs.redact import clip, redact_path
from gateway.logs.refused_lines import RefusedLines

log = logging.getLogger("gateway.access")
_MESSAGE = "%s %s %d %.1f ms"


class AccessLog:
    """ASGI middleware, outermost: it times the whole request and sees the path before anything
    rewrites it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.refused = RefusedLines()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            try:
                await self.app(scope, receive, send)
            finally:  # what the last window of refused requests counted, told at shutdown
                self.refused.close()
            return
        if scope["type"] not in ("http", "websocket") or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        path = redact_path(str(scope["path"]), scope.get("query_string", b"").decode("latin-1"))
        seen: dict[str, Any] = {"status": None, "close_code": None}

        async def sending(message: Message) -> None:
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                seen["status"] = message["status"]
            elif kind == "websocket.accept":
                seen["status"] = 101
            elif kind == "websocket.close":
                seen["status"] = seen["status"] or 403  # closed before accept: uvicorn answers 403 (no close code)
                seen["close_code"] = seen["close_code"] or message.get("code", 1000)
            await send(message)

        async def receiving() -> Message:
            message = await receive()
            if message["type"] == "websocket.disconnect" and seen["close_code"] is None:
                seen["close_code"] = message.get("code")
            return message

        note = AccessNote()
        reset = current_note.set(note)
        try:
            await self.app(scope, receiving, sending)
        finally:
            current_note.reset(reset)
            self._line(scope, path, seen, note, began)

    def _line(self, scope: Scope, path: str, seen: dict[str, Any], note: AccessNote, began: float) -> None:
        websocket = scope["type"] == "websocket"
        status = seen["status"] or 500  # the app raised before answering: uvicorn answers 500
        if status >= 400 and note.session_id is None and not self.refused.admit(scope.get("client"), status):
            return
        more: dict[str, Any] = {}
        if note.session_id is not None:
            more["session_id"] = note.session_id
        if websocket and seen["status"] == 101:  # a socket was opened; 1006: it was lost, no close seen (a reset
            more["close_code"] = seen["close_code"] or 1006  # met by a send, before any read saw the disconnect)
        write_line(
            "WS" if websocket else str(scope.get("method", "")),
            path,
            status,
            began,
            scope.get("client"),
            **more,
        )


def refused_handshake_line(
    app: Any, target: str | None, status: int, began: float, client: tuple[str, int] | None
) -> None:
    """The line of a WebSocket handshake refused below the application (gateway.connections.ws_refusals):
    ``target`` as the request line had it (``None`` when it could not be read), masked like any path;
    ``app`` uvicorn's, the access log among its layers (whose per-address bound it is under)."""
    if not log.isEnabledFor(logging.INFO):
        return
    layer = app
    while layer is not None and not isinstance(layer, AccessLog):
        layer = getattr(layer, "app", None)
    if layer is not None and not layer.refused.admit(client, status):
        return
    raw_path, _, query = (target or "-").partition("?")
    write_line("WS", redact_path(unquote(raw_path), query), status, began, client)


def write_line(method: str, path: str, status: int, began: float, client: Any, **more: Any) -> None:
    """One access line; ``path`` already masked, ``began`` a ``time.perf_counter()`` reading. The path is
    cut as any field is (the message repeated up to 8192 characters of it, each a 6-byte JSON escape for a
    control character the client encoded in 3: a 16 KiB request head was a 38 KB line)."""
    duration_ms = round((time.perf_counter() - began) * 1000, 1)
    path = clip(path)
    fields: dict[str, Any] = {
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": duration_ms,
        "client": f"{client[0]}:{client[1]}" if client else None,
        **more,
    }
    # Text lines make the message again of these fields, the path quoted if it is more than one bare word.
    fields[SHOWN_IN_MESSAGE], fields[MESSAGE_FORMAT] = ("method", "path", "status", "duration_ms"), _MESSAGE
    log.info(_MESSAGE, method, path, status, duration_ms, extra=fields)
