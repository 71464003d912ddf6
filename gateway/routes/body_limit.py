"""Request bodies of every HTTP route but the uploads, bounded in size and in time.

FastAPI reads and parses a whole JSON body before the handler runs, with neither bound: one POST of
256 MiB held +775 MiB before its 401, and a body sent a byte a second held its request for as long as
it lasted. :class:`BodyLimit` answers 413 ``message_too_big`` past ``max_bytes`` (from
``Content-Length`` before anything is read, otherwise while the body streams), 408 ``start_timeout``
when the body is not complete ``timeout_s`` after its head, and 415 ``unsupported_content_encoding``
for a body with a ``Content-Encoding`` (these routes take small JSON), then closes the connection.
The upload routes stream their bodies and keep their own limits (:mod:`gateway.upload`): their paths
are exempt. This module knows paths, never routes or credentials.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import ErrorCode, GatewayError, LimitReached, MessageTooBig, UnsupportedContentEncoding
from gateway.errors.http import error_response

_DISCONNECT: Message = {"type": "http.disconnect"}


class BodyLimit:
    """ASGI middleware: every HTTP request body outside ``unbounded_paths`` within ``max_bytes`` and
    ``timeout_s``. Runs after :class:`~gateway.security.CredentialScrubber`, so ``/t/<secret>/`` paths
    are compared as rewritten."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout_s: float, unbounded_paths: frozenset[str]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.unbounded = unbounded_paths  # exact: the app does not redirect a trailing slash (gateway.app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.unbounded:
            await self.app(scope, receive, send)
            return
        await _BoundedBody(self, scope, receive, send).run()


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # uvicorn's parser refuses it before the app is called
    return None


def _coded(scope: Scope) -> bool:
    """Whether the request has a body (chunked, or a length above 0) in a coding other than ``identity``."""
    headers = scope.get("headers", ())
    if not any(
        name == b"transfer-encoding" or (name == b"content-length" and value.strip(b" 0")) for name, value in headers
    ):
        return False
    codings = (value.lower().split(b",") for name, value in headers if name == b"content-encoding")
    return any(coding.strip() not in (b"", b"identity") for listed in codings for coding in listed)


class _BoundedBody:
    """One request: counts its body as the app reads it, answers the refusal itself, and then tells
    the app the client is gone (whatever the app answers after that goes nowhere)."""

    def __init__(self, limit: BodyLimit, scope: Scope, receive: Receive, send: Send) -> None:
        self.limit, self.scope, self._receive, self._send = limit, scope, receive, send
        self.deadline = asyncio.get_running_loop().time() + limit.timeout_s
        self.received = 0
        self.complete = False  # the whole body is in: receive() now only waits for a disconnect
        self.started = False  # the app started its response: too late to refuse
        self.refused = False

    async def run(self) -> None:
        declared = _content_length(self.scope)
        if declared is not None and declared > self.limit.max_bytes:
            await self.refuse(self.too_big())  # before a byte of it is read (and before any 100 Continue)
            return
        if _coded(self.scope):  # these bodies are small JSON: a coded one is refused, not parsed as garbage
            await self.refuse(UnsupportedContentEncoding("send the request body without a Content-Encoding",
                                                         accepted="identity"))  # fmt: skip
            return
        await self.limit.app(self.scope, self.receive, self.send)

    def too_big(self) -> GatewayError:
        return MessageTooBig(f"the request body is larger than the limit of {self.limit.max_bytes} bytes")

    async def receive(self) -> Message:
        if self.refused:
            return _DISCONNECT
        if self.complete:
            return await self._receive()
        try:
            # One deadline for the whole body: a byte a second must not reset it.
            async with asyncio.timeout_at(self.deadline):
                message = await self._receive()
        except TimeoutError:
            limit = f"the request body did not arrive within {self.limit.timeout_s:g} s"
            await self.refuse(LimitReached(limit, code=ErrorCode.START_TIMEOUT))
            return _DISCONNECT
        if message["type"] != "http.request":
            self.complete = True  # the client left: uvicorn answers every later receive() at once
            return message
        self.received += len(message.get("body", b""))
        if self.received > self.limit.max_bytes:
            await self.refuse(self.too_big())
            return _DISCONNECT
        self.complete = not message.get("more_body", False)
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return  # the client has its answer; the app's own (a 400 for the "disconnect") is dropped
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    async def refuse(self, error: GatewayError) -> None:
        self.refused = True
        if self.started:
            return  # a response is under way: the app sees a disconnect and stops
        response = error_response(error)
        # Closing stops the rest of the body at the socket instead of reading and discarding it.
        response.headers["Connection"] = "close"
        await response(self.scope, _no_receive, self._send)


async def _no_receive() -> Message:
    return _DISCONNECT
