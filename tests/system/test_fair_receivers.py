"""Three webhook receivers, two of them hung (they accept the connection and never answer): the healthy
one's webhooks still go at once, over real 127.0.0.1 sockets. Before, one receiver could hold half of
the places in flight and half of the pending room, so two hung receivers held all of both: the healthy
one's webhooks waited for a hung attempt's timeout, or were dropped as over the pending limit. Now
each receiver keeps a reserve the others cannot take (gateway/webhooks/shares.py), and a single
receiver still has every place."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from gateway.auth import key_digest
from gateway.webhooks.delivery import RetryPolicy, WebhookDeliverer
from tests.support.harness import GatewayFactory
from tests.support.raw_webhook_receiver import counted, hang, no_content, raw_receiver, target
from tests.support.settings import SECRETS
from tests.support.twilio_webhooks import SECRET, twilio_call
from tests.support.webhook_receiver import webhook_receiver

HUNG_TIMEOUT_S = 4.0  # one attempt to a hung receiver ends after this
KEYS = {name: f"dfg_fair-receivers-{name}-never-logged" for name in ("hung1", "hung2", "healthy")}
SECRETS.update(KEYS.values())


async def test_two_hung_receivers_leave_places_and_pending_room_for_the_third() -> None:
    policy = RetryPolicy(attempts=1, window_s=60, timeout_s=HUNG_TIMEOUT_S)
    async with raw_receiver(hang) as hung1, raw_receiver(hang) as hung2, raw_receiver(no_content) as fine:
        webhooks = WebhookDeliverer(policy, 4, CollectorRegistry(), max_pending=30, receivers=3)
        try:
            for i in range(40):  # more than either hung receiver may hold, of places and of pending room
                webhooks.submit(target(hung1.url), {"type": "event", "i": i})
                webhooks.submit(target(hung2.url), {"type": "event", "i": i})
            await asyncio.sleep(0.3)  # the hung receivers have taken all they may
            hung_started = len(hung1.started) + len(hung2.started)
            hung_pending = webhooks.pending
            started = time.monotonic()
            for i in range(5):
                webhooks.submit(target(fine.url), {"type": "summary", "i": i})
            async with asyncio.timeout(HUNG_TIMEOUT_S - 1):  # delivered: counted once its answer is read
                while counted(webhooks, "delivered") < 5:  # (the receiver's count came first: a CI failure)
                    await asyncio.sleep(0.01)
            took = time.monotonic() - started
        finally:
            await webhooks.aclose()
    assert fine.requests == 5
    assert hung_started == 3  # of the 4 places: one is kept for the healthy receiver (before: 2 + 2)
    assert hung_pending == 25  # of the 30 pending: 5 are kept for the healthy receiver (before: 15 + 15)
    assert counted(webhooks, "delivered") == 5 and took < 1.0, took


async def test_a_single_receiver_still_has_every_place() -> None:
    async with raw_receiver(hang) as hung:
        webhooks = WebhookDeliverer(RetryPolicy(attempts=1, timeout_s=HUNG_TIMEOUT_S), 4, CollectorRegistry())
        try:
            for i in range(6):
                webhooks.submit(target(hung.url), {"type": "event", "i": i})
            await asyncio.sleep(0.3)
            assert len(hung.started) == 4
        finally:
            await webhooks.aclose()


@pytest.mark.ws
async def test_through_the_gateway_a_healthy_receivers_results_do_not_wait_for_two_hung_ones(
    gateway_factory: GatewayFactory,
) -> None:
    """Per API key receivers: calls of two keys whose receivers hang fill their places first."""
    async with (
        raw_receiver(hang) as hung1,
        raw_receiver(hang) as hung2,
        webhook_receiver(SECRET) as healthy,
    ):
        keys = [
            {"name": "hung1", "sha256": key_digest(KEYS["hung1"]), "webhook_url": hung1.url},
            {"name": "hung2", "sha256": key_digest(KEYS["hung2"]), "webhook_url": hung2.url},
            {"name": "healthy", "sha256": key_digest(KEYS["healthy"])},  # the default receiver
        ]
        settings = {"webhook_url": healthy.url, "webhook_secret": SECRET, "webhook_concurrency": 4,
                    "webhook_timeout_s": HUNG_TIMEOUT_S, "webhook_attempts": 1}  # fmt: skip
        async with gateway_factory(auth="required", api_keys=keys, **settings) as gw:
            await asyncio.gather(
                *(twilio_call(gw, "1", "2", path=f"/t/{KEYS[k]}/v1/twilio") for k in ("hung1", "hung2"))
            )
            async with asyncio.timeout(5):
                while len(hung1.started) + len(hung2.started) < 3:
                    await asyncio.sleep(0.01)
            await twilio_call(gw, "3", "4", path=f"/t/{KEYS['healthy']}/v1/twilio")
            ended = time.monotonic()
            await healthy.wait_for(lambda r: bool(r.payloads("summary")), timeout=HUNG_TIMEOUT_S * 2)
            took = time.monotonic() - ended
            hung_started = len(hung1.started) + len(hung2.started)
    assert sorted(e["event"]["text"] for e in healthy.payloads("event")) == ["3", "4"]
    assert healthy.bad_signatures == 0
    assert hung_started == 3  # 3 of the 4 places; one kept for the healthy receiver
    assert took < 1.5, took  # before: it waited for a hung attempt's timeout (4 s)
