"""The access line of an accepted WebSocket always has a ``close_code``: one whose connection was lost with
no close seen by the app (a reset met by a send, before any read saw the disconnect) had none, 101 lines in
13 000 of a churn run (README: "close_code for an accepted WebSocket"). It is 1006 now, as RFC 6455 names
a close with no close frame. Driven through the middleware with ASGI messages: which side meets a reset
first is the kernel's choice, so over a socket it cannot be made to happen on purpose."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from gateway.logs.access import AccessLog
from tests.support.harness import RunningGateway, next_message, ws_connect
from tests.support.native_client import start_message

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


@pytest.mark.ws
async def test_a_client_closing_an_accepted_stream_has_its_code_in_the_access_line(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """Over a real socket: a client closes its session's /v1/stream with 4001 and the access line's
    ``close_code`` is 4001, the client's own (a mutant dropped the code the client sent: the line said
    1006, a connection lost, for a client that had closed it cleanly)."""
    caplog.set_level(logging.INFO, logger="gateway.access")
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message())
        await next_message(ws, "started")
        await ws.send(b"\0" * 3200)
        await ws.close(4001, "bye")
    async with asyncio.timeout(5):
        while not (lines := [r.__dict__ for r in caplog.records if r.name == "gateway.access"]):
            await asyncio.sleep(0.05)
    [line] = [entry for entry in lines if entry.get("method") == "WS"]
    assert (line["path"], line["status"], line["close_code"]) == ("/v1/stream", 101, 4001), json.dumps(
        {k: line.get(k) for k in ("path", "status", "close_code")}
    )
