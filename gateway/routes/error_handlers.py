"""Every error the app answers is in the gateway's ``{"error": {...}}`` envelope, and counted.

FastAPI and Starlette answer their own errors (unknown path, wrong method, request validation, an
``HTTPException``, an unhandled exception) with ``{"detail": ...}`` or plain text; the handlers here
render them through :func:`~gateway.errors.http.error_response` instead. :class:`RefusalCounter` counts
every error answer by status and error code (never by anything the client chose).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import BadRequest, ErrorCode, GatewayError
from gateway.errors.http import error_response
from gateway.observability import GatewayMetrics
from gateway.routes.http_conventions import HEADERS

log = logging.getLogger(__name__)

_STATUS_CODES = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}
_STATUS_MESSAGES = {404: "no such path", 405: "this path does not take that method"}
_MAX_PROBLEMS_CHARS = 1000  # a body with thousands of wrong fields gets a bounded message
_MAX_ENVELOPE_BYTES = 16 * 1024  # error envelopes are small; anything larger is not one


def _metrics(scope: Scope) -> GatewayMetrics | None:
    app = scope.get("app")
    gateway = getattr(getattr(app, "state", None), "gateway", None)
    return getattr(gateway, "metrics", None)


def _with_status(error: GatewayError, status: int, headers: Mapping[str, str] | None = None) -> Response:
    """The envelope of ``error`` with Starlette's status (and its headers, e.g. 405's ``Allow``)."""
    response = error_response(error)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _websocket_only(request: Request) -> bool:
    """Is the path a WebSocket endpoint's (asked for without an upgrade)?"""
    scope = {**request.scope, "type": "websocket"}
    routes = getattr(request.app, "routes", ())
    return any(route.matches(scope)[0] is Match.FULL for route in routes)  # HTTP routes match no WebSocket


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status == 404 and _websocket_only(request):
        # "no such path" would send the caller looking for a typo: the path is right, the protocol is not.
        message = "this path takes WebSocket connections only (ws:// or wss://, with an Upgrade)"
        return _with_status(BadRequest(message), 426, {"Upgrade": "websocket"})
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
    message = detail or _STATUS_MESSAGES.get(status, phrase.lower())
    code = _STATUS_CODES.get(status, ErrorCode.BAD_REQUEST if status < 500 else ErrorCode.INTERNAL_ERROR)
    return _with_status(GatewayError(message, code=code), status, exc.headers)


def validation_problems(exc: RequestValidationError) -> str:
    """``loc: msg`` for each problem (pydantic's messages name the rule, never the value sent)."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors() if isinstance(e, dict)
    )
    return problems[:_MAX_PROBLEMS_CHARS]


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    error = BadRequest(f"invalid parameters: {validation_problems(exc)}", code=ErrorCode.INVALID_PARAMETERS)
    return error_response(error)


async def _unhandled(request: Request, exc: Exception) -> Response:
    # Starlette's outermost middleware calls this (and re-raises, so the traceback is still logged);
    # the answer passes no other middleware, so it is counted here.
    if (metrics := _metrics(request.scope)) is not None:
        metrics.refused(500, ErrorCode.INTERNAL_ERROR)
    response = error_response(GatewayError("internal error", code=ErrorCode.INTERNAL_ERROR))
    response.headers.update(HEADERS)  # no middleware adds them to this answer
    return response


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unhandled)
    app.router.default = _WebSocketNotFound(app.router.default)


class _WebSocketNotFound:
    """The router's answer to a path no route takes: a WebSocket handshake gets 404 in the envelope (counted
    by :class:`RefusalCounter`, like an HTTP request's 404) where Starlette closed it before accepting,
    which uvicorn answered 403 with no body (not counted, and unlike the HTTP answer for the same path).
    HTTP requests keep Starlette's answer (404 through :func:`_http_exception`)."""

    def __init__(self, default: ASGIApp) -> None:
        self.default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or "websocket.http.response" not in scope.get("extensions", {}):
            await self.default(scope, receive, send)  # a server without denial responses: its 403
            return
        response = _with_status(GatewayError(_STATUS_MESSAGES[404], code=ErrorCode.NOT_FOUND), 404)
        await response(scope, receive, send)


def envelope_code(body: bytes) -> str | None:
    """The ``code`` of an error envelope, or None when ``body`` is not one."""
    if not body or len(body) > _MAX_ENVELOPE_BYTES or not body.startswith(b'{"error"'):
        return None
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


_STARTS = frozenset({"http.response.start", "websocket.http.response.start"})
_BODIES = frozenset({"http.response.body", "websocket.http.response.body"})


class RefusalCounter:
    """ASGI middleware: every answer in the error envelope (HTTP requests, and WebSocket handshakes
    refused with an HTTP status) adds one to ``requests_refused{status, reason}``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        status = 0

        async def observe(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind in _STARTS:
                status = int(message["status"])
            elif status >= 400 and kind in _BODIES:
                code = envelope_code(message.get("body", b""))
                metrics = _metrics(scope)
                if code is not None and metrics is not None:
                    metrics.refused(status, code)
                status = 0  # only the first body message can hold the envelope
            await send(message)

        await self.app(scope, receive, observe)
