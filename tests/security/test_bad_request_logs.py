"""Requests the HTTP parser cannot take as sent do not write the log at the client's rate. uvicorn logged a
WARNING for every malformed request and for every request with an upgrade other than WebSocket (as
``curl --http2`` sends over plain HTTP), and answered malformed ones in plain text. Now the first is logged
at once and the rest are counted per window; a malformed request gets 400 in the error envelope. The
other answers made below the application use it too: 501 for a transfer coding besides chunked (it was
handed on still coded), 408 for a head that comes too late (it had an empty body). Real uvicorn on port 0,
raw sockets as clients."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import json
import logging
from collections.abc import AsyncIterator

import pytest

from gateway.connections import http as http_protocol
from gateway.connections.bad_requests import bad_request_log
from tests.support.harness import GatewayFactory, RunningGateway
from tests.support.probes import wait_for

WINDOW_S = 0.5  # the burst window of these gateways (10 s in production)
MALFORMED = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header: x\r\n\r\n"
H2C = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
H2C += b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"


@pytest.fixture
def short_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each gateway's burst log with a short window, so a test sees the window's line."""
    monkeypatch.setattr(http_protocol, "bad_request_log", functools.partial(bad_request_log, WINDOW_S))


@contextlib.asynccontextmanager
async def connected(gw: RunningGateway) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        yield reader, writer
    finally:
        writer.transport.abort()


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "uvicorn.error" and text in r.getMessage()]


@pytest.mark.usefixtures("short_window")
async def test_malformed_requests_are_answered_in_the_envelope_and_logged_a_burst_at_a_time(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    async with gateway_factory() as gw:
        for _ in range(200):
            async with connected(gw) as (reader, writer):
                writer.write(MALFORMED)
                answer = await asyncio.wait_for(reader.read(), 5)  # read to the end: the connection closes
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400 "), head
            assert b"content-type: application/json" in head and b"x-content-type-options: nosniff" in head
            error = json.loads(body)["error"]
            assert error["code"] == "bad_request" and error["message"].startswith("invalid HTTP request: ")
            assert "Bad Header" not in error["message"]  # the parser's words, not the client's
        with contextlib.suppress(TimeoutError):  # every one counted once its window is over
            await wait_for(lambda: counted(caplog) == 199, timeout=5 * WINDOW_S)
    first = lines(caplog, "Invalid HTTP request received")
    assert len(first) == 1 and first[0].levelno == logging.WARNING, [r.getMessage() for r in first]
    told = lines(caplog, "more requests not taken as sent")
    assert counted(caplog) == 199, [r.getMessage() for r in told]
    spent = told[-1].created - first[0].created
    assert len(told) <= spent / WINDOW_S + 1, "at most one line per window"


def counted(caplog: pytest.LogCaptureFixture) -> int:
    return sum(int(r.getMessage().split()[0]) for r in lines(caplog, "more requests not taken as sent"))


@pytest.mark.usefixtures("short_window")
async def test_upgrades_other_than_websocket_are_served_and_logged_a_burst_at_a_time(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    async with gateway_factory() as gw, connected(gw) as (reader, writer):
        for _ in range(100):  # kept alive: one connection, 100 requests
            writer.write(H2C)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 "), head
            length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
            await reader.readexactly(length)
        with contextlib.suppress(TimeoutError):  # every one counted once its window is over
            await wait_for(lambda: counted(caplog) == 99, timeout=5 * WINDOW_S)
    assert len(lines(caplog, "Unsupported upgrade request")) == 1
    told = lines(caplog, "more requests not taken as sent")
    assert counted(caplog) == 99 and all("(unsupported upgrade: " in r.getMessage() for r in told), told


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"x-custom, chunked", b"gzip\r\nTransfer-Encoding: chunked"])
async def test_a_transfer_coding_besides_chunked_is_501_not_passed_on_coded(gw: RunningGateway, coding: bytes) -> None:
    """httptools takes ``gzip, chunked`` and hands the body on still gzip-coded: an upload was refused as
    unknown audio, a token request as malformed JSON. RFC 9112 6.1: 501 for a transfer coding not applied."""
    body = gzip.compress(b"{}")
    request = b"POST /v1/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    request += b"Transfer-Encoding: " + coding + b"\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    async with connected(gw) as (reader, writer):
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 501 "), head
        payload = await asyncio.wait_for(reader.read(), 5)  # to the end: the connection closes
    assert json.loads(payload)["error"]["code"] == "unsupported_transfer_encoding"


async def test_a_head_that_comes_too_late_is_408_in_the_envelope(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(http_header_timeout_s=0.5) as gw, connected(gw) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and no end of head
        answer = await asyncio.wait_for(reader.read(), 5)  # to the end: the connection closes
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), head
    error = json.loads(payload)["error"]
    assert error["code"] == "start_timeout" and error["message"] == "the request head did not arrive within 0.5 s"
