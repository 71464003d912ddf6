"""WebSocket handshakes the websockets library refuses before the application sees them. They were answered
in its plain text, quoting the client's header value, without the headers every answer carries, and logged
as a bare INFO line with no path or client; a header line over its 8 KiB was refused 431 though the
gateway takes 16 KiB heads. Now: the error envelope in fixed words, the conventional headers, an access
line like any request's (credentials masked), and header lines as long as the head may be. Real uvicorn
on port 0, raw sockets as clients."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

import pytest

from tests.support.harness import GatewayFactory, RunningGateway
from tests.support.probes import wait_for

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
HOSTILE = "<script>alert(1)</script>"
SECRET = "s3cr3t-query-token-value"


def handshake(*lines: str, method: str = "GET", target: str = "/v1/stream") -> bytes:
    head = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket", "Connection: Upgrade", *lines]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")


@dataclass
class Refusal:
    request: bytes
    status: int
    code: str
    message: str


REFUSALS = {
    "no key": Refusal(
        handshake("Sec-WebSocket-Version: 13"),
        400,
        "bad_request",
        "missing Sec-WebSocket-Key header in the WebSocket handshake",
    ),
    "a key that is no key": Refusal(
        handshake(f"Sec-WebSocket-Key: {HOSTILE}", "Sec-WebSocket-Version: 13"),
        400,
        "bad_request",
        "invalid Sec-WebSocket-Key header in the WebSocket handshake",
    ),
    "two keys": Refusal(
        handshake(f"Sec-WebSocket-Key: {KEY}", f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 13"),
        400,
        "bad_request",
        "invalid Sec-WebSocket-Key header in the WebSocket handshake",
    ),
    "version 8": Refusal(
        handshake(f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 8"),
        400,
        "bad_request",
        "invalid Sec-WebSocket-Version header in the WebSocket handshake",
    ),
    "a malformed subprotocol list": Refusal(
        handshake(f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 13", f"Sec-WebSocket-Protocol: a {HOSTILE},,"),
        400,
        "bad_request",
        "invalid Sec-WebSocket-Protocol header in the WebSocket handshake",
    ),
    "POST": Refusal(
        handshake(f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 13", "Content-Length: 0", method="POST"),
        405,
        "method_not_allowed",
        "a WebSocket handshake is a GET request",
    ),
    "200 header lines": Refusal(  # refused while websockets reads the request (its limit is 128)
        handshake(f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 13", *(f"X-{n}: {HOSTILE}" for n in range(200))),
        431,
        "request_head_too_large",
        "the handshake's header lines are too long or too many",
    ),
}


async def answer_to(gw: RunningGateway, request: bytes) -> tuple[bytes, dict[str, str], bytes]:
    """The status line, headers and body of the answer; the connection must close after it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(request)
        raw = await asyncio.wait_for(reader.read(), 5)  # to the end: a refusal closes the connection
    finally:
        writer.transport.abort()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (f.partition(":") for f in fields)}
    return status_line.encode(), headers, body


@pytest.mark.ws
@pytest.mark.parametrize("case", list(REFUSALS))
async def test_a_refused_handshake_is_answered_in_the_envelope_without_the_clients_words(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    refusal = REFUSALS[case]
    caplog.set_level(logging.INFO)
    async with gateway_factory() as gw:
        status_line, headers, body = await answer_to(gw, refusal.request)
        await wait_for(lambda: access_lines(caplog), timeout=5)
    assert status_line.startswith(b"HTTP/1.1 %d " % refusal.status), status_line
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body) == {"error": {"code": refusal.code, "message": refusal.message, "retryable": False}}
    assert HOSTILE.encode() not in body
    if refusal.status == 405:
        assert headers["allow"] == "GET"
    [line] = access_lines(caplog)
    assert line.getMessage().startswith(f"WS /v1/stream {refusal.status} "), line.getMessage()
    assert line.__dict__["client"].startswith("127.0.0.1:")
    library_lines = [r.getMessage() for r in caplog.records if "connection rejected" in r.getMessage()]
    assert library_lines == [], "the access line replaces the library's bare line"


def access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "gateway.access"]


@pytest.mark.ws
async def test_a_refused_handshakes_line_masks_the_credential_in_its_target(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with gateway_factory() as gw:
        status_line, _, _ = await answer_to(
            gw, handshake("Sec-WebSocket-Version: 8", target=f"/v1/stream?token={SECRET}")
        )
        slashed, _, _ = await answer_to(
            gw, handshake(*(f"X-{n}: 1" for n in range(200)), target=f"/t/{SECRET}/v1/stream")
        )
        await wait_for(lambda: len(access_lines(caplog)) == 2, timeout=5)
    assert status_line.startswith(b"HTTP/1.1 400 ") and slashed.startswith(b"HTTP/1.1 431 ")
    paths = [line.__dict__["path"] for line in access_lines(caplog)]
    assert paths[0].startswith("/v1/stream?token=") and paths[1].startswith("/t/") and paths[1].endswith("/v1/stream")
    assert all(SECRET not in r.getMessage() and SECRET not in str(r.__dict__) for r in caplog.records)


@pytest.mark.ws
async def test_a_header_line_may_be_as_long_as_the_head_may_be(gateway_factory: GatewayFactory) -> None:
    """A browser's 9 KiB Cookie line: HTTP requests took it, the WebSocket handshake was refused 431."""
    cookie = "Cookie: " + "; ".join(f"c{n}={'v' * 80}" for n in range(100))
    assert 8 * 1024 < len(cookie) < 16 * 1024 - 512
    async with gateway_factory() as gw:
        accepted = handshake(f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 13", cookie)
        status_line, headers = await answer_to_upgrade(gw, accepted)
        assert status_line.startswith(b"HTTP/1.1 101 "), status_line
        assert headers["upgrade"].lower() == "websocket"
        too_long, _, body = await answer_to(gw, handshake(f"Sec-WebSocket-Key: {KEY}", cookie + "x" * 8 * 1024))
    assert too_long.startswith(b"HTTP/1.1 431 "), too_long  # over the head's bound: the HTTP parser's 431
    assert json.loads(body)["error"]["code"] == "request_head_too_large"


async def answer_to_upgrade(gw: RunningGateway, request: bytes) -> tuple[bytes, dict[str, str]]:
    """The head of a handshake's answer (the connection stays open when it is accepted)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.transport.abort()
    status_line, *fields = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (f.partition(":") for f in fields)}
    return status_line.encode(), headers
