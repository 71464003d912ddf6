"""A request asking to upgrade to a protocol other than WebSocket (``Upgrade: h2c``), over raw sockets
against the real gateway. httptools has llhttp skip the body of any request whose upgrade flag is set,
and such a request is served as plain HTTP: its declared body was parsed as further requests. Behind a
proxy that is request smuggling (the body ran as requests the proxy never saw: paths it blocks, a
forged X-Forwarded-For on its trusted connection; through nginx: tests/system/test_proxy_smuggling.py).
Now one with a body is refused 400 and its connection closed; a bodyless one is served, and a request
pipelined behind it in the same read is answered too (it was dropped unanswered)."""

from __future__ import annotations

import json
import re

import pytest

from tests.support.flood import converse
from tests.support.harness import RunningGateway

HIDDEN = b"GET /healthz?hidden=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def statuses(answered: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", answered)]


def h2c_head(method: bytes, path: bytes, body_headers: bytes) -> bytes:
    return (
        b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n%s\r\n" % (method, path, body_headers)
    )


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_behind_another_upgrade_is_refused_never_run(gw: RunningGateway, framing: str) -> None:
    if framing == "chunked":
        head, body = h2c_head(b"POST", b"/v1/tokens", b"Transfer-Encoding: chunked\r\n"), chunked(HIDDEN)
    else:
        head, body = h2c_head(b"POST", b"/v1/tokens", b"Content-Length: %d\r\n" % len(HIDDEN)), HIDDEN
    answered = await converse(gw.port, head, body)
    assert statuses(answered) == [400], answered  # was [422, 200]: the body ran as GET /healthz
    assert b'"status"' not in answered
    error = json.loads(answered.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "bad_request"
    assert "other than WebSocket (h2c) may not have a body" in error["message"]
    assert b"connection: close" in answered.lower()


async def test_a_bodyless_request_asking_for_h2c_is_served_with_the_one_behind_it(gw: RunningGateway) -> None:
    head = h2c_head(b"GET", b"/healthz", b"Content-Length: 0\r\n")
    answered = await converse(gw.port, head + HIDDEN)  # one read: the second was dropped unanswered
    assert statuses(answered) == [200, 200], answered
    assert answered.count(b'\r\n\r\n{"status":"ok","upstream"') == 2  # two health answers


@pytest.mark.ws
async def test_a_websocket_handshake_is_still_an_upgrade(gw: RunningGateway) -> None:
    head = (
        b"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert statuses(await converse(gw.port, head)) == [101]
