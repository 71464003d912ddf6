"""Twilio calls whose results the gateway sends as signed webhooks: the secrets they are signed with (the
webhook tests' ``SECRET``, the /v1/twilio tests' ``WEBHOOK_SECRET``), the settings that aim a gateway's
webhooks at a receiver, a whole call through a gateway, and the gateway's delivery counts."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from tests.support import telephony
from tests.support.harness import RunningGateway, read_all, ws_connect
from tests.support.settings import SECRETS
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "whsec_" + base64.b64encode(b"result-webhook-secret-0123456789").decode()
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"twilio-webhook-secret-32-bytes!!").decode()
SECRETS.update({SECRET, WEBHOOK_SECRET})


def deliveries(gw: RunningGateway, outcome: str) -> float:
    value = gw.gateway.metrics.registry.get_sample_value("dataflow_gateway_webhook_deliveries_total",
                                                         {"outcome": outcome})  # fmt: skip
    return value or 0.0


async def until_counted(gw: RunningGateway, outcome: str, count: int) -> None:
    """The receiver has answered before the gateway reads the answer: wait for the count to land."""
    async with asyncio.timeout(15):
        while deliveries(gw, outcome) < count:
            await asyncio.sleep(0.02)


async def twilio_call(gw: RunningGateway, *utterances: str, path: str = "/v1/twilio") -> None:
    async with ws_connect(gw.ws_url(path)) as ws:
        await ws.send(telephony.twilio_connected())
        await ws.send(telephony.twilio_start())
        for frame in telephony.twilio_media(*utterances):
            await ws.send(frame)
        await ws.send(telephony.twilio_stop())
        seen = await read_all(ws, timeout=15)
    assert seen.messages == [] and seen.close_code == 1000


def hooks(receiver: WebhookReceiver, **extra: Any) -> dict[str, Any]:
    return {"webhook_url": receiver.url, "webhook_secret": WEBHOOK_SECRET, "webhook_backoff_s": 0.05, **extra}
