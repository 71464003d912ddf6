"""Every refusal moves a metric. Answers made below the application (400 for a request the parser refuses,
431 for a head too large, 408 for a head too late) were counted nowhere, and 431 and 408 logged nothing; a
WebSocket handshake to an unknown path was closed before accept (uvicorn's bare 403, not counted, its
access line with a close code though no socket was opened) and one with a bad ``Sec-WebSocket-Version``
(400) was not counted; a start refused after the socket was accepted (an audio format the dialect cannot
take, closed 1003; no start within ``start_timeout``, 1008) moved no counter, while a project name too long
counted as a denial. Now each is in ``requests_refused_total{status, reason}`` (answers) or
``denials_total{reason}`` (refused starts), labelled by its error code, exactly once. Real uvicorn on
port 0; raw sockets for the protocol-level cases, the ``websockets`` client for the starts."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from starlette.types import Message, Receive, Scope, Send

from gateway.connections import http as http_protocol
from gateway.connections.bad_requests import bad_request_log
from gateway.logs.access import AccessLog
from tests.support import telephony, ws_mode
from tests.support.harness import GatewayFactory, RunningGateway, ws_connect
from tests.support.native_client import start_message
from tests.support.probes import wait_for

WINDOW_S = 2.0  # the bad requests' burst window of these gateways (10 s in production): the 408 takes 0.3 s
REFUSED = "dataflow_gateway_requests_refused_total"
DENIALS = "dataflow_gateway_denials_total"


def refused(gw: RunningGateway, status: int, reason: str) -> float:
    value = gw.gateway.metrics.registry.get_sample_value(REFUSED, {"status": str(status), "reason": reason})
    return value or 0.0


def denied(gw: RunningGateway, reason: str) -> float:
    return gw.gateway.metrics.registry.get_sample_value(DENIALS, {"reason": reason}) or 0.0


async def first_line(port: int, request: bytes, wait_s: float = 5) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        answer = await asyncio.wait_for(reader.read(), wait_s)  # to the end: the connection closes
    finally:
        writer.transport.abort()
    return answer.split(b"\r\n", 1)[0]


def handshake(path: bytes = b"/v1/stream", version: bytes = b"13") -> bytes:
    ws_mode.count_handshake()
    key = base64.b64encode(os.urandom(16))
    return (
        b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: " + version + b"\r\n\r\n"
    )


def uvicorn_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "uvicorn.error" and r.levelno == logging.WARNING]


async def test_answers_below_the_application_are_counted_and_logged_a_burst_at_a_time(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    monkeypatch.setattr(http_protocol, "bad_request_log", functools.partial(bad_request_log, WINDOW_S))
    async with gateway_factory(http_header_timeout_s=0.3, max_request_head_bytes=4096) as gw:
        before = {(431, "request_head_too_large"): 0.0, (408, "start_timeout"): 0.0, (400, "bad_request"): 0.0}
        assert {key: refused(gw, *key) for key in before} == before
        big = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 8000 + b"\r\n\r\n"
        assert await first_line(gw.port, big) == b"HTTP/1.1 431 Request Header Fields Too Large"
        late = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # and no end of head
        assert await first_line(gw.port, late) == b"HTTP/1.1 408 Request Timeout"
        assert await first_line(gw.port, b"GET /x\x01 HTTP/1.1\r\nHost: a\r\n\r\n") == b"HTTP/1.1 400 Bad Request"
        after = {key: refused(gw, *key) for key in before}
        with contextlib.suppress(TimeoutError):  # the window's line, once it is over
            await wait_for(lambda: any("more requests" in line for line in uvicorn_lines(caplog)), 5 * WINDOW_S)
    assert after == {key: 1.0 for key in before}, after
    lines = uvicorn_lines(caplog)
    assert lines[0] == "Request head over 4096 bytes: answered 431", lines  # the first at once
    [window] = [line for line in lines if "more requests" in line]
    assert window.startswith("2 more requests not taken as sent in the last "), window
    assert "request head too late: 1" in window and "Invalid char in url path: 1" in window, window


@pytest.mark.ws
async def test_a_websocket_handshake_to_an_unknown_path_is_a_counted_404_without_a_close_code(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    assert refused(gw, 404, "not_found") == 0.0
    assert await first_line(gw.port, handshake(b"/v1/nope")) == b"HTTP/1.1 404 Not Found"
    await wait_for(lambda: any(getattr(r, "path", None) == "/v1/nope" for r in caplog.records), 5)
    assert refused(gw, 404, "not_found") == 1.0
    [line] = [r for r in caplog.records if r.name == "gateway.access" and getattr(r, "path", None) == "/v1/nope"]
    assert getattr(line, "status", None) == 404 and not hasattr(line, "close_code"), line.__dict__


@pytest.mark.ws
async def test_a_handshake_with_a_bad_websocket_version_is_counted(gw: RunningGateway) -> None:
    assert refused(gw, 400, "bad_request") == 0.0
    assert await first_line(gw.port, handshake(version=b"8")) == b"HTTP/1.1 400 Bad Request"
    assert refused(gw, 400, "bad_request") == 1.0


async def _refused_with(url: str, messages: list[str]) -> int | None:
    """The close code the gateway ends the connection with, after ``messages``."""
    try:
        async with ws_connect(url) as ws:
            for message in messages:
                await ws.send(message)
            async with asyncio.timeout(10):
                async for _ in ws:
                    pass
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    return ws.close_code


_TWILIO: dict[str, Any] = json.loads(telephony.twilio_start())
_TWILIO["start"]["mediaFormat"] = {"encoding": "audio/opus", "sampleRate": 48000, "channels": 2}
OPUS_AUDIOCODES = {"type": "start", "language": "en-US", "format": "raw", "encoding": "OPUS", "sampleRateHz": 48000}
OPUS_PROJECT_RUNNER = {"Type": "Start", "Audio": {"Encoding": "opus", "SampleRate": 48000, "Channels": 1}}


@pytest.mark.ws
async def test_starts_refused_after_accept_are_counted_as_denials(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(start_timeout_s=0.5) as gw:
        url: Callable[[str], str] = gw.ws_url
        assert denied(gw, "unsupported_audio_format") == denied(gw, "start_timeout") == 0.0
        assert denied(gw, "invalid_start") == 0.0
        twilio = [telephony.twilio_connected(), json.dumps(_TWILIO)]
        assert await _refused_with(url("/v1/twilio?project=demo"), twilio) == 1003
        assert await _refused_with(url("/v1/audiocodes"), [json.dumps(OPUS_AUDIOCODES)]) == 1003
        assert await _refused_with(url("/project-runner/demo"), [json.dumps(OPUS_PROJECT_RUNNER)]) == 1003
        assert await _refused_with(url("/v1/stream"), []) == 1008  # no start within 0.5 s
        assert await _refused_with(url("/v1/stream"), [start_message(project="p" * 1000)]) is not None
        reasons = ("unsupported_audio_format", "start_timeout", "invalid_start")
        counts = {reason: denied(gw, reason) for reason in reasons}
    # Each refused start once, by its code; the project too long still once (it was counted before).
    assert counts == {"unsupported_audio_format": 3.0, "start_timeout": 1.0, "invalid_start": 1.0}, counts


async def test_a_websocket_closed_before_accept_has_no_close_code_in_its_access_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An app that closes a handshake before accepting it (uvicorn answers 403): no socket was opened, so
    its access line has no ``close_code`` (it said 1000)."""
    caplog.set_level(logging.INFO, logger="gateway.access")

    async def refuses(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "websocket.close", "code": 1000})

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        return None

    scope: Scope = {"type": "websocket", "path": "/v1/closed", "query_string": b"", "client": ("127.0.0.1", 5)}
    await AccessLog(refuses)(scope, receive, send)
    [line] = [r for r in caplog.records if r.name == "gateway.access"]
    assert line.getMessage().startswith("WS /v1/closed 403 "), line.getMessage()
    assert not hasattr(line, "close_code"), line.__dict__
