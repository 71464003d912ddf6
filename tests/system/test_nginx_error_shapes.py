"""nginx's own answers behind the project's template are in the gateway's error envelope, over raw sockets.

The gateway answers every error as ``{"error": {"code", "message", "retryable"}}`` with
``content-type: application/json``; nginx answered the requests it refuses itself (a malformed one,
TRACE, a transfer coding other than chunked, an HTTP version other than 1.x, the operator paths the
template hides) with its HTML pages. Now each gets the gateway's code for the same request, and the
same envelope as the gateway's own answer where the gateway would refuse it too. A head that does not
arrive within the gateway's header timeout (10 s) loses its connection as soon behind nginx (nginx's
default was 60 s); nginx closes it without an answer, where the gateway alone answers 408.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.lb_stack import (
    NGINX_TEMPLATE,
    Stack,
    free_port,
    nginx_binary,
    nginx_command,
    nginx_config,
    wait_http_ok,
)
from tests.support.settings import offline_settings

TOKEN = "nginx-error-shapes-simulator-token"
JSON = "application/json"
HEADER_TIMEOUT_S = offline_settings().http_header_timeout_s  # GATEWAY_HTTP_HEADER_TIMEOUT_S's default

pytestmark = [pytest.mark.needs_binary, pytest.mark.ws, pytest.mark.timeout(90)]


@contextlib.asynccontextmanager
async def one_replica(tmp_path: Path) -> AsyncIterator[tuple[int, int]]:
    """The simulator, one gateway and nginx (both backend lines at that gateway): (nginx, gateway) ports."""
    stack = Stack(tmp_path)
    sim_port, gateway_port, lb_port = free_port(), free_port(), free_port()
    try:
        stack.start_simulator(sim_port, TOKEN)
        stack.start_gateway("gateway", gateway_port, sim_port, TOKEN, 2.0)
        config = nginx_config(tmp_path, lb_port, [gateway_port, gateway_port])
        stack.start("nginx", nginx_command(nginx_binary(), config, "-g", "daemon off;"))
        await wait_http_ok(f"http://127.0.0.1:{gateway_port}/readyz", stack.processes["gateway"])
        await wait_http_ok(f"http://127.0.0.1:{lb_port}/healthz", stack.processes["nginx"])
        yield lb_port, gateway_port
    finally:
        stack.close()


class Answer:
    """One HTTP answer read off a raw socket."""

    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.raw = raw
        self.status = int(lines[0].split(" ")[1]) if lines[0].startswith("HTTP/1.1 ") else 0
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}

    def error(self) -> dict[str, Any]:
        assert self.headers.get("content-type") == "application/json", self.raw[:300]
        envelope: dict[str, Any] = json.loads(self.body)
        assert set(envelope) == {"error"}, envelope
        assert envelope["error"]["retryable"] is False, envelope
        assert set(envelope["error"]) == {"code", "message", "retryable"}, envelope
        return envelope


def outline(answer: Answer) -> tuple[int, str | None, object, object]:
    """Status, content type, and the envelope's code and retryable (None where the body is no envelope)."""
    try:
        error = json.loads(answer.body)["error"]
        code, retryable = error["code"], error["retryable"]
    except (ValueError, KeyError, TypeError):
        code = retryable = None
    return answer.status, answer.headers.get("content-type"), code, retryable


async def exchange(port: int, request: bytes, timeout_s: float = 5.0) -> Answer:
    """``request`` in one write; the answer, read to its Content-Length or until nginx closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        raw = b""
        async with asyncio.timeout(timeout_s):
            while chunk := await reader.read(65536):
                raw += chunk
                _, found, body = raw.partition(b"\r\n\r\n")
                length = Answer(raw).headers.get("content-length") if found else None
                if length is not None and len(body) >= int(length):
                    break
        return Answer(raw)
    finally:
        writer.close()


def get(path: str, method: str = "GET", host: str = "127.0.0.1") -> bytes:
    body = "Content-Length: 0\r\n" if method == "POST" else ""
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{body}\r\n".encode()


#: Requests nginx refuses itself, and the status and code each must get.
REFUSED = {
    "no Host": (b"GET /healthz HTTP/1.1\r\n\r\n", 400, "bad_request"),
    "two Hosts": (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: 127.0.0.2\r\n\r\n", 400, "bad_request"),
    "Content-Length with Transfer-Encoding": (
        b"POST /v1/transcribe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    # Read where the body streams to the replica (location /, whose error_page list is its own).
    "bad chunk size": (
        b"POST /v1/transcribe HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
        400,
        "bad_request",
    ),
    "OPTIONS *": (b"OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, "bad_request"),
    "%00 in the path": (get("/healthz%00x"), 400, "bad_request"),
    "TRACE": (get("/healthz", "TRACE"), 405, "method_not_allowed"),
    "Transfer-Encoding: gzip, chunked": (
        b"POST /v1/transcribe HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
        "unsupported_transfer_encoding",
    ),
    # Refused in the request line: no URI yet (a named location would answer 500).
    "HTTP/2.0 request line": (b"GET /healthz HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n", 505, "bad_request"),
    "malformed request line": (b"G@T /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, "bad_request"),
}

#: The operator paths the template answers 404 itself.
HIDDEN = {
    "/metrics": get("/metrics"),
    "/readyz": get("/readyz"),
    "/internal/drain": get("/internal/drain", "POST"),
    "/t/<key>/metrics": get("/t/some-key/metrics"),
    "/t/<key>/readyz": get("/t/some-key/readyz"),
    "/t/<key>/internal/drain": get("/t/some-key/internal/drain", "POST"),
    "its own error URI": get("/.well-known/dataflow-gateway/bad-request"),
}


async def test_nginx_refuses_malformed_requests_in_the_gateways_error_shape(tmp_path: Path) -> None:
    async with one_replica(tmp_path) as (lb_port, gateway_port):
        got = {name: outline(await exchange(lb_port, request)) for name, (request, _, _) in REFUSED.items()}
        assert got == {name: (status, JSON, code, False) for name, (_, status, code) in REFUSED.items()}

        # Where the gateway refuses the same request itself, nginx's answer is the gateway's own.
        for request in (REFUSED["TRACE"][0], REFUSED["Transfer-Encoding: gzip, chunked"][0]):
            through_nginx, direct = await exchange(lb_port, request), await exchange(gateway_port, request)
            assert (through_nginx.status, through_nginx.error()) == (direct.status, direct.error())


async def test_nginx_answers_the_operator_paths_404_as_the_gateway_answers_an_unknown_path(tmp_path: Path) -> None:
    async with one_replica(tmp_path) as (lb_port, gateway_port):
        unknown = await exchange(gateway_port, get("/no-such-path"))
        assert unknown.status == 404
        assert unknown.error()["error"]["code"] == "not_found"
        got = {name: outline(await exchange(lb_port, request)) for name, request in HIDDEN.items()}
        assert got == dict.fromkeys(HIDDEN, (404, JSON, "not_found", False))
        for request in HIDDEN.values():  # the gateway's message too
            assert (await exchange(lb_port, request)).error() == unknown.error()
        # The gateway's own answers pass through untouched (error_page does not apply to them): its 404
        # for an unknown path, its 400 for a Host it does not answer to.
        passed = await exchange(lb_port, get("/no-such-path"))
        assert (passed.status, passed.error()) == (404, unknown.error())
        assert passed.headers.get("x-content-type-options") == "nosniff"  # the gateway's, not nginx's
        foreign = await exchange(lb_port, get("/no-such-path", host="elsewhere.example"))
        assert foreign.status == 400
        assert foreign.error()["error"]["code"] == "invalid_host"


async def test_a_late_head_behind_nginx_loses_its_connection_within_the_gateways_header_timeout(
    tmp_path: Path,
) -> None:
    """The gateway answers 408 start_timeout to a head not complete within 10 s; nginx (default 60 s)
    now closes such a connection at 10 s too. nginx sends no answer then (its 408 is only logged); if
    it ever does, it must be in the gateway's shape."""
    async with one_replica(tmp_path) as (lb_port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", lb_port)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
            await writer.drain()
            began = time.monotonic()
            try:
                async with asyncio.timeout(HEADER_TIMEOUT_S + 2):
                    answered = await reader.read()
            except TimeoutError:
                pytest.fail(f"nginx still waited for the head after {HEADER_TIMEOUT_S + 2:g} s")
            waited = time.monotonic() - began
        finally:
            writer.close()
        assert HEADER_TIMEOUT_S - 1 < waited < HEADER_TIMEOUT_S + 2, waited
        if answered:
            answer = Answer(answered)
            assert answer.status == 408, answered[:300]
            assert answer.error()["error"]["code"] == "start_timeout"
    # ... and stays in step with the gateway's default if that changes.
    timeout = re.search(r"^\s*client_header_timeout (\d+)s;", NGINX_TEMPLATE.read_text(), re.MULTILINE)
    assert timeout is not None, "the template sets no client_header_timeout (nginx's default: 60 s)"
    assert float(timeout.group(1)) == HEADER_TIMEOUT_S
