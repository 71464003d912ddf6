"""Failed webhook attempts are logged a burst at a time. Each failed attempt was an INFO line (``webhook
msg_…: the receiver answered 500``): a receiver answering 500 made five lines per webhook (3 webhooks, 15
lines; ~85 a second at the drop rate a receiver that is down sees). Now each attempt is a DEBUG line, and
the INFO lines are the first failure and one per window counting the rest by outcome (the receiver's
status or the exception's type, never its URL); the metrics count every attempt as before. Real
127.0.0.1 sockets."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest
from prometheus_client import CollectorRegistry

from gateway.webhooks.delivery import RetryPolicy, WebhookDeliverer
from tests.support.gateway_process import free_port
from tests.support.raw_webhook_receiver import URL_TOKEN, RawReceiver, counted, raw_receiver, target

WINDOW_S = 0.5
ATTEMPTS = 5
_SUMMARY = re.compile(r"(\d+) more webhook attempts failed in the last [\d.]+ s \((.+)\)")


async def server_error(_: RawReceiver, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()


async def _delivered(webhooks: WebhookDeliverer) -> None:
    async with asyncio.timeout(20):
        while webhooks.pending:
            await asyncio.sleep(0.02)


def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gateway.webhooks.delivery" and r.levelno == level]


async def test_failed_attempts_are_debug_each_and_info_a_burst_at_a_time(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.webhooks")
    policy = RetryPolicy(attempts=ATTEMPTS, window_s=20, timeout_s=2, backoff_s=0.05)
    webhooks = WebhookDeliverer(policy, 4, CollectorRegistry(), drop_window_s=WINDOW_S)
    closed = f"http://127.0.0.1:{free_port()}/hooks/{URL_TOKEN}"  # nothing listens: every attempt unreachable
    began = time.monotonic()
    try:
        async with raw_receiver(server_error) as failing:
            for i in range(3):
                webhooks.submit(target(failing.url), {"type": "event", "text": f"call-{i}"})
            webhooks.submit(target(closed), {"type": "event", "text": "call-closed"})
            await _delivered(webhooks)
    finally:
        await webhooks.aclose()  # tells what the open window counted
    took = time.monotonic() - began
    failures = 4 * ATTEMPTS
    assert counted(webhooks, "retried") == 4 * (ATTEMPTS - 1) and counted(webhooks, "dropped") == 4
    info = [line for line in _records(caplog, logging.INFO) if "attempt" in line or "receiver answered" in line]
    # Not one per attempt (20 in about a second): the first, at most one per window, and one at close.
    assert len(info) <= 2 + took / WINDOW_S < failures, (took, info)
    summaries = [_SUMMARY.fullmatch(line) for line in info[1:]]
    assert re.fullmatch(r"webhook msg_[0-9a-f]{32}: attempt 1 failed: (answered 500|unreachable \(\w+\))", info[0])
    assert all(summaries), info
    assert 1 + sum(int(m[1]) for m in summaries if m) == failures, info  # the lines account for each attempt
    reasons = " ".join(m[2] for m in summaries if m)
    assert "answered 500: " in reasons and "unreachable (ConnectError): " in reasons, reasons
    debug = [line for line in _records(caplog, logging.DEBUG) if re.search(r"attempt \d failed", line)]
    assert len(debug) == failures, debug  # each attempt still said, at DEBUG
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("gateway")]
    assert not any(URL_TOKEN in line or "call-" in line for line in ours)
