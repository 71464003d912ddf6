"""Result webhooks against hostile receivers over real 127.0.0.1 sockets (raw asyncio servers, so an
answer can trickle, be huge, or never come): an attempt is bounded as a whole and reads only a few KiB of
the answer, pending webhooks are capped per process, and no attempt starts after the retry window."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from prometheus_client import CollectorRegistry

from gateway.webhooks.delivery import RetryPolicy, WebhookDeliverer
from gateway.webhooks.targets import WebhookTargets
from tests.support.harness import GatewayFactory
from tests.support.raw_webhook_receiver import (
    URL_TOKEN,
    RawReceiver,
    counted,
    deliverer,
    hang,
    no_content,
    raw_receiver,
    target,
)
from tests.support.twilio_webhooks import SECRET, deliveries, twilio_call, until_counted


async def trickle(receiver: RawReceiver, writer: asyncio.StreamWriter) -> None:
    """200 at once, then a chunked body one byte every 0.2 s, for ever: httpx's per-read timeout never trips."""
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    while not receiver.closing.is_set():
        writer.write(b"1\r\nx\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)


HUGE = 64 << 20


async def huge(receiver: RawReceiver, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % HUGE)
    chunk = b"x" * (256 << 10)
    while receiver.sent < HUGE:
        writer.write(chunk)
        await writer.drain()
        receiver.sent += len(chunk)
    await receiver.closing.wait()


async def settled(webhooks: WebhookDeliverer, within: float) -> None:
    async with asyncio.timeout(within):
        while webhooks.pending:
            await asyncio.sleep(0.02)


async def test_a_trickling_answer_times_out_and_frees_the_place_for_other_receivers() -> None:
    policy = RetryPolicy(attempts=2, window_s=30, timeout_s=0.4, backoff_s=0.05)
    async with (
        raw_receiver(trickle) as slow,
        raw_receiver(no_content) as fine,
        deliverer(policy, concurrency=1) as webhooks,
    ):
        webhooks.submit(target(slow.url), {"type": "summary"})
        await asyncio.sleep(0.1)  # the slow one holds the only place first
        webhooks.submit(target(fine.url), {"type": "summary"})
        started = time.monotonic()
        await settled(webhooks, within=5)
        took = time.monotonic() - started
    assert slow.requests == 2 and fine.requests == 1  # two bounded attempts, then given up
    assert counted(webhooks, "dropped") == 1 and counted(webhooks, "delivered") == 1
    assert took < 2


async def test_only_a_few_kib_of_a_huge_answer_are_read() -> None:
    async with raw_receiver(huge) as receiver, deliverer(RetryPolicy(attempts=1), concurrency=4) as webhooks:
        webhooks.submit(target(receiver.url), {"type": "event"})
        await settled(webhooks, within=10)
        await asyncio.sleep(0.3)  # what the receiver could still push into the socket's buffers
    assert counted(webhooks, "delivered") == 1  # the status is all that matters
    assert receiver.sent < 16 << 20, receiver.sent  # the deliverer hung up; it did not read 64 MiB


async def test_no_attempt_starts_after_the_retry_window_even_waiting_for_a_place() -> None:
    policy = RetryPolicy(attempts=5, window_s=1.0, timeout_s=0.4, backoff_s=0.05)
    async with raw_receiver(hang) as receiver, deliverer(policy, concurrency=1) as webhooks:
        queued = time.monotonic()
        for i in range(10):
            webhooks.submit(target(receiver.url), {"type": "event", "i": i})
        await settled(webhooks, within=10)
        took = time.monotonic() - queued
    starts = [round(at - queued, 2) for at in receiver.started]
    assert starts and max(starts) < 1.0 + 0.2, starts
    assert counted(webhooks, "dropped") == 10 and counted(webhooks, "delivered") == 0
    assert took < 1.0 + 0.4 + 0.5, took  # the last attempt started in the window and timed out


async def test_a_webhook_that_never_got_a_place_is_dropped_after_0_attempts(caplog: pytest.LogCaptureFixture) -> None:
    """Its drop line says no attempt was made (it never reached the receiver), not one that failed."""
    policy = RetryPolicy(attempts=3, window_s=0.3, timeout_s=1.0, backoff_s=0.05)
    async with raw_receiver(hang) as receiver, deliverer(policy, concurrency=1) as webhooks:
        with caplog.at_level(logging.WARNING, logger="gateway.webhooks.delivery"):
            webhooks.submit(target(receiver.url), {"type": "event", "i": 0})  # holds the only place for 1 s
            late = webhooks.submit(target(receiver.url), {"type": "event", "i": 1})
            await settled(webhooks, within=5)
    assert len(receiver.started) == 1 and counted(webhooks, "dropped") == 2
    drops = [r.getMessage() for r in caplog.records if "dropped after" in r.getMessage()]
    assert drops[0] == f"webhook {late} dropped after 0 attempts: no delivery place free within the retry window"


async def test_pending_webhooks_are_capped_by_count_and_bytes_and_the_excess_dropped_once_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = RetryPolicy(attempts=1, window_s=60, timeout_s=30)
    caplog.set_level(logging.WARNING, logger="gateway.webhooks")
    async with raw_receiver(hang) as receiver:
        async with deliverer(policy, concurrency=1) as webhooks:
            for i in range(1010):
                webhooks.submit(target(receiver.url), {"type": "event", "i": i})
            by_count = (webhooks.pending, counted(webhooks, "dropped"))
        async with deliverer(policy, concurrency=1) as webhooks:
            for _ in range(20):
                webhooks.submit(target(receiver.url), {"type": "summary", "text": "y" * (1 << 20)})
            by_bytes = (webhooks.pending, counted(webhooks, "dropped"))
    assert by_count == (1000, 10), by_count
    assert by_bytes == (15, 5), by_bytes  # 16 MiB hold 15 bodies of just over 1 MiB
    full = [r.getMessage() for r in caplog.records if "queue full" in r.getMessage()]
    assert len(full) == 2, full  # one line per overload, not one per webhook
    assert not any(URL_TOKEN in r.getMessage() or "y" * 64 in r.getMessage() for r in caplog.records)


async def test_a_hung_receiver_holds_at_most_half_and_the_other_receivers_results_still_go() -> None:
    """Two receivers: one accepts connections and never answers. Before, it took every place in flight and
    the whole pending room, and the healthy receiver's results were dropped."""
    policy = RetryPolicy(attempts=1, window_s=60, timeout_s=30)
    async with raw_receiver(hang) as hung, raw_receiver(no_content) as fine:
        webhooks = WebhookDeliverer(policy, 4, CollectorRegistry(), max_pending=20, receivers=2)
        try:
            for i in range(30):
                webhooks.submit(target(hung.url), {"type": "event", "i": i})
            await asyncio.sleep(0.3)  # the hung receiver has taken all it may
            for i in range(5):
                webhooks.submit(target(fine.url), {"type": "summary", "i": i})
            async with asyncio.timeout(5):
                while fine.requests < 5:
                    await asyncio.sleep(0.02)
            hung_pending = webhooks.pending
        finally:
            await webhooks.aclose()
    assert len(hung.started) == 2  # half of the 4 places
    assert hung_pending == 10  # half of the 20 pending: the other 20 were dropped, counted
    assert counted(webhooks, "delivered") == 5


@pytest.mark.ws
async def test_a_trickling_receiver_does_not_hold_the_gateways_deliveries(gateway_factory: GatewayFactory) -> None:
    settings = {"webhook_secret": SECRET, "webhook_timeout_s": 0.3, "webhook_attempts": 2,
                "webhook_backoff_s": 0.05, "webhook_concurrency": 1}  # fmt: skip
    async with raw_receiver(trickle) as receiver, gateway_factory(webhook_url=receiver.url, **settings) as gw:
        await twilio_call(gw, "7")
        started = time.monotonic()
        await until_counted(gw, "dropped", 2)  # the final event and the summary, each tried twice
        took = time.monotonic() - started
        async with asyncio.timeout(1):  # a delivery leaves the pending set in its done callback, a loop turn later
            while gw.gateway.webhooks.pending:
                await asyncio.sleep(0.01)
    assert receiver.requests == 4 and deliveries(gw, "delivered") == 0
    assert took < 5


def test_the_receivers_shared_among_are_the_distinct_urls() -> None:
    a, b = target("http://127.0.0.1:1/a"), target("http://127.0.0.1:1/b")
    assert WebhookTargets(None, {}).receivers == 0
    assert WebhookTargets(a, {"k1": target(a.url), "k2": None}).receivers == 1  # one receiver: no shares
    assert WebhookTargets(a, {"k1": b, "k2": target(b.url)}).receivers == 2
