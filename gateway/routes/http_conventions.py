"""What every HTTP answer of the app follows, whatever route (or no route) made it.

- ``HEAD`` is answered wherever ``GET`` is (RFC 9110 requires it of a general-purpose server; uptime
  monitors probe with it): FastAPI routes declared for GET answered 405 to it. The app sees a GET and
  the body is dropped on the way out; the head, ``Content-Length`` included, is the GET's.
- ``X-Content-Type-Options: nosniff`` on every answer, and a Content-Security-Policy that runs nothing and
  may not be framed on every answer that brings no policy of its own (JSON, YAML, metrics, errors that
  quote what a client sent): opened as a page, such an answer can neither run script nor be framed.
  The pages (demo, docs) set their own policy, which is kept.

Starlette's answer to an unhandled exception passes no middleware: its handler adds :data:`HEADERS` itself.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The headers added to an answer that lacks them (names lower case, as ASGI carries them).
HEADERS = {
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}
_ENCODED = [(name.encode(), value.encode()) for name, value in HEADERS.items()]
_STARTS = frozenset({"http.response.start", "websocket.http.response.start"})


def _with_defaults(message: Message) -> Message:
    headers = list(message.get("headers", ()))
    present = {bytes(name).lower() for name, _ in headers}
    missing = [(name, value) for name, value in _ENCODED if name not in present]
    return {**message, "headers": headers + missing} if missing else message


class HttpConventions:
    """ASGI middleware, outermost: it sees the answers of every other middleware too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        head_only = scope["type"] == "http" and scope["method"] == "HEAD"
        if head_only:
            scope = {**scope, "method": "GET"}  # a copy: the server still knows the request was HEAD

        async def conventional(message: Message) -> None:
            if message["type"] in _STARTS:
                message = _with_defaults(message)
            elif head_only and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app(scope, receive, conventional)
