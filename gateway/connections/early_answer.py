"""An answer made while its request's body is still coming says so: ``connection: close``
(gateway.connections.http wraps each request cycle with it).

And the connection ends after it (gateway.connections.http, ``on_response_complete``): uvicorn read
and dropped the rest of a body answered early (a 413, 401 or 422 mid-upload) for as long as the client
sent it, each read putting off the keep-alive timeout: 23 GB in 15 s after a 413 for 1 MiB. Now nothing
more is taken from the connection, its write side is shut after the answer (the client reads it, then
end of stream), and the keep-alive timeout (5 s), which reads no longer put off, closes it. Reading on
until then spares the client a reset while it sends."""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

Message = MutableMapping[str, Any]  # an ASGI message (this layer knows uvicorn and ASGI, not Starlette)


def say_close_on_early_answers(cycle: RequestResponseCycle) -> None:
    """An answer made while its request's body is still coming (a 401 or 413 on an upload, a 200 from a
    route that reads no body) says ``connection: close``: the connection ends after it, and a client that
    pools connections sent its next request on it and lost it ("server disconnected", RFC 9112 9.6).

    An error is marked at its start. A success may stream while the body is read (an upload's results),
    so only a whole one (with a ``content-length``) is looked at: its start is held until its first body
    message and marked if that message ends the answer while the body is still coming. A streamed
    success is never held (a client may wait for its head), so one that ends before its body is in still
    ends without the header; no route makes one. uvicorn takes the header for "close once
    answered", which would reset a client still sending its body before it reads the answer: if the body
    is still coming when the answer ends, the connection ends as an early answer does
    (gateway.connections.http, ``_end_after_early_answer``); if it is all in, uvicorn closes it."""
    # The wrapper reaches its cycle through a weak reference: a strong one (or uvicorn's bound send) would
    # make a reference cycle of every request, its transport in it, for the cycle collector to find.
    this = weakref.ref(cycle)
    keep_alive: bool | None = None  # uvicorn's before the header: it said close
    held: Message | None = None  # a success's start, until its first body message

    def close_said(start: Message, cycle: RequestResponseCycle) -> Message:
        nonlocal keep_alive
        if _has_header(start, b"connection"):  # as the app says
            return start
        keep_alive = cycle.keep_alive
        return {**start, "headers": [*start.get("headers", ()), (b"connection", b"close")]}

    async def marked(message: Message) -> None:
        nonlocal held
        cycle = this()
        assert cycle is not None  # it is the cycle's ASGI task that calls this
        kind = message["type"]
        if kind == "http.response.start" and cycle.more_body:
            if message["status"] >= 400:
                message = close_said(message, cycle)
            elif _has_header(message, b"content-length"):
                held = message  # a whole answer, whose body follows at once; a streamed one is not held
                return
        elif held is not None:
            start, held = held, None
            whole = kind == "http.response.body" and not message.get("more_body")
            await _UVICORN_SEND(cycle, close_said(start, cycle) if whole and cycle.more_body else start)
        if keep_alive is not None and kind == "http.response.body" and not message.get("more_body"):
            cycle.keep_alive = keep_alive and cycle.more_body  # the answer ends here
        await _UVICORN_SEND(cycle, message)

    cast(Any, cycle).send = marked  # read by the ASGI task, which starts after this


def _has_header(start: Message, header: bytes) -> bool:
    """Whether this ``http.response.start`` carries ``header`` (a lower-case name) in any case."""
    return any(bytes(name).lower() == header for name, _ in start.get("headers", ()))


_UVICORN_SEND: Callable[[RequestResponseCycle, Message], Awaitable[None]] = cast(Any, RequestResponseCycle.send)
