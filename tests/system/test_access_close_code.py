"""The access line of an accepted WebSocket always has a ``close_code``: one whose connection was lost with
no close seen by the app (a reset met by a send, before any read saw the disconnect) had none, 101 lines in
13 000 of a churn run (README: "close_code for an accepted WebSocket"). It is 1006 now, as RFC 6455 names
a close with no close frame. Driven through the middleware with ASGI messages: which side meets a reset
first is the kernel's choice, so over a socket it cannot be made to happen on purpose."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from gateway.logs.access import AccessLog

SCOPE: dict[str, Any] = {"type": "websocket", "path": "/v1/stream", "query_string": b"", "client": ("127.0.0.1", 5)}


async def access_line(app_messages: list[Message], caplog: pytest.LogCaptureFixture, disconnect: int | None) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for message in app_messages:
            await send(message)
        if disconnect is not None:
            await receive()

    async def receive() -> Message:
        return {"type": "websocket.disconnect", "code": disconnect}

    async def send(message: Message) -> None:
        return None

    with caplog.at_level(logging.INFO, logger="gateway.access"):
        await AccessLog(app)(SCOPE, receive, send)
    [record] = [r for r in caplog.records if r.name == "gateway.access"]
    return record.__dict__


@pytest.mark.parametrize(
    ("sent", "disconnect", "status", "code"),
    [
        ([{"type": "websocket.accept"}], None, 101, 1006),  # lost: nothing read, no close sent
        ([{"type": "websocket.accept"}], 4001, 101, 4001),  # the client's own code
        ([{"type": "websocket.accept"}, {"type": "websocket.close", "code": 1000}], None, 101, 1000),
        ([{"type": "websocket.close", "code": 1008}], None, 403, None),  # refused before accept: no socket
    ],
)
async def test_an_accepted_websocket_has_a_close_code(
    caplog: pytest.LogCaptureFixture, sent: list[Message], disconnect: int | None, status: int, code: int | None
) -> None:
    line = await access_line(sent, caplog, disconnect)
    assert (line["status"], line.get("close_code")) == (status, code)
