"""Signals during a drain, on a real ``dataflow-gateway serve`` process (gateway/server.py).

A second SIGTERM skips what is left of the drain's budget but not its goodbye: every live connection
gets ``going_away`` and close 1001 at once (it went to uvicorn's own shutdown: 1012, no message,
``client_disconnected``). A drain whose only stragglers are closing connections of clients that read
nothing ends without an ERROR line (it logged uvicorn's "Cancel 0 running task(s)" as one).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.logs.filters import ClientMistakeFilter
from tests.support import audiocodes_client
from tests.support.gateway_process import GatewayProcess, gateway_process
from tests.support.harness import next_message, read_all, ws_connect
from tests.support.native_client import start_message
from tests.support.non_readers import EVENT, non_reader
from tests.support.raw_ws import OP_TEXT, handshake_request

pytestmark = pytest.mark.ws

BUDGET_S = 30  # far longer than the test: the second signal must not wait for it
SEND_TIMEOUT_S = 2


def log_lines(gw: GatewayProcess) -> list[dict[str, Any]]:
    """Every stderr line, parsed (the process logs JSON: its stderr is a file)."""
    return [json.loads(line) for line in gw.log.read_text().splitlines() if line.strip()]


def assert_no_error_lines(lines: list[dict[str, Any]]) -> None:
    bad = [line for line in lines if line["level"] in ("error", "critical") or "exc" in line]
    assert not bad, bad
    assert not any("Traceback" in json.dumps(line) for line in lines)


async def test_a_second_sigterm_says_goodbye_to_every_connection_at_once(tmp_path: Path) -> None:
    env = {"GATEWAY_DRAIN_BUDGET_S": str(BUDGET_S), "GATEWAY_CLIENT_SEND_TIMEOUT_S": str(SEND_TIMEOUT_S),
           "GATEWAY_LOG_LEVEL": "info", "GATEWAY_LOG_FORMAT": "json", "GATEWAY_WS_PING_INTERVAL_S": "60"}  # fmt: skip
    async with gateway_process(tmp_path, env) as gw:
        async with (
            ws_connect(gw.ws_url("/v1/stream")) as native,
            ws_connect(gw.ws_url("/v1/audiocodes?project=demo")) as audiocodes,
        ):
            await native.send(start_message())
            await next_message(native, "started")
            await audiocodes.send(audiocodes_client.start())
            await audiocodes_client.until(audiocodes, "started")
            gw.process.send_signal(signal.SIGTERM)
            assert (await next_message(native, "error"))["code"] == "draining"
            second = time.monotonic()
            gw.process.send_signal(signal.SIGTERM)
            native_end, audiocodes_end = await asyncio.gather(
                read_all(native, timeout=10), read_all(audiocodes, timeout=10)
            )
            took = time.monotonic() - second
        assert took < SEND_TIMEOUT_S, took  # well within the budget: the goodbye at once
        assert native_end.close_code == 1001 and native.close_reason == "going_away"
        assert native_end.errors() == ["going_away"]
        assert native_end.of_type("closed")[-1]["reason"] == "going_away"
        assert audiocodes_end.close_code == 1001 and audiocodes.close_reason == "going_away"
        assert [m["type"] for m in audiocodes_end.messages] == ["error"]
        assert audiocodes_end.messages[0]["reason"].startswith("going_away")
        assert await asyncio.to_thread(gw.process.wait, SEND_TIMEOUT_S + 8) == -signal.SIGTERM
        assert time.monotonic() - second < SEND_TIMEOUT_S + 8
    lines = log_lines(gw)
    assert sorted(line["outcome"] for line in lines if line["msg"] == "session ended") == ["going_away"] * 2
    assert sorted(line["close_code"] for line in lines if line.get("method") == "WS") == [1001, 1001]
    assert any(line["msg"].startswith("second signal: the drain's budget is cut short") for line in lines)
    # The drain's last line counts those the second signal sent away (it said 0: they were gone by then).
    drained = [line["msg"] for line in lines if line["msg"].startswith("drained:")]
    assert drained == ["drained: 2 connections were sent away with going_away (audiocodes 1, native 1); "
                       "0 slots still held"], drained  # fmt: skip
    assert_no_error_lines(lines)


async def test_a_drain_with_a_client_that_reads_nothing_logs_no_error(tmp_path: Path) -> None:
    """Its connection is still closing (the goodbye unread) when uvicorn's graceful timeout passes, with
    no task of the app left: a WARNING, and the server aborts it (the exit stays bounded)."""
    budget_s, send_timeout_s, graceful_s = 1, 1, 5
    env = {"GATEWAY_DRAIN_BUDGET_S": str(budget_s), "GATEWAY_CLIENT_SEND_TIMEOUT_S": str(send_timeout_s),
           "GATEWAY_LOG_LEVEL": "info", "GATEWAY_LOG_FORMAT": "json", "GATEWAY_WS_PING_INTERVAL_S": "60"}  # fmt: skip
    async with gateway_process(tmp_path, env) as gw:
        client = await non_reader(gw.port)
        try:
            await client.send_raw(handshake_request(gw.port))
            assert await client.read_response() == 101
            await client.send(OP_TEXT, start_message().encode())
            await asyncio.sleep(0.5)  # started: what it sends now is echoed back and never read
            try:
                async with asyncio.timeout(3):
                    for _ in range(40):
                        await client.send(OP_TEXT, EVENT.encode())
            except (TimeoutError, ConnectionError):
                pass  # the gateway stopped reading it (backpressure): its buffers are full
            began = time.monotonic()
            gw.process.send_signal(signal.SIGTERM)
            limit = budget_s + send_timeout_s + graceful_s + 4
            assert await asyncio.to_thread(gw.process.wait, limit) == -signal.SIGTERM
            assert time.monotonic() - began < limit
        finally:
            client.abort()
    lines = log_lines(gw)
    assert_no_error_lines(lines)
    timeout_lines = [line for line in lines if line["msg"].startswith("Graceful shutdown timeout exceeded")]
    assert [line["level"] for line in timeout_lines] == ["warning"]  # the straggler was there, and aborted


def test_only_a_timeout_with_no_task_cancelled_is_lowered() -> None:
    """uvicorn's line when it cancels running requests stays an ERROR: something was cut."""
    template = "Cancel %s running task(s), timeout graceful shutdown exceeded"
    quiet = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, template, (0,), None)
    loud = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, template, (1,), None)
    assert ClientMistakeFilter().filter(quiet) and ClientMistakeFilter().filter(loud)
    assert (quiet.levelname, quiet.levelno) == ("WARNING", logging.WARNING)
    assert (loud.levelname, loud.getMessage()) == ("ERROR", template % 1)
