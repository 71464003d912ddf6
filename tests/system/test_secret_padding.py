"""A Standard Webhooks secret whose base64 has no ``=`` padding (``whsec_`` + unpadded base64, as some
generators write it) is taken as the ``standardwebhooks`` library takes it: the gateway starts and its
signatures verify with the library. Before, the gateway refused to start with it. A secret that is not
base64 even once padded (a length of 4n+1, URL-safe characters, an empty key) is still refused."""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr

from gateway.auth import key_digest
from gateway.settings import SettingsError
from gateway.webhooks.targets import WebhookTargets
from tests.support.harness import GatewayFactory
from tests.support.settings import SECRETS, offline_settings
from tests.support.twilio_webhooks import twilio_call
from tests.support.webhook_receiver import webhook_receiver

KEY_ONE_PAD = b"unpadded-webhook-secret-32-bytes"  # 32 bytes: base64 ends with one "="
KEY_TWO_PADS = b"unpadded-key-of-thirty-one-byte"  # 31 bytes: base64 ends with "=="
UNPADDED = {len(k): "whsec_" + base64.b64encode(k).decode().rstrip("=") for k in (KEY_ONE_PAD, KEY_TWO_PADS)}
API_KEY = "dfg_unpadded-secret-key-never-logged"
SECRETS.update({*UNPADDED.values(), API_KEY})


@pytest.mark.ws
@pytest.mark.parametrize("size", sorted(UNPADDED))
async def test_an_unpadded_secret_signs_what_the_standardwebhooks_library_verifies(
    gateway_factory: GatewayFactory, size: int
) -> None:
    secret = UNPADDED[size]
    assert not secret.endswith("=") and len(secret.removeprefix("whsec_")) % 4 != 0
    async with (
        webhook_receiver(secret) as receiver,  # verifies with standardwebhooks' Webhook(secret)
        gateway_factory(webhook_url=receiver.url, webhook_secret=secret, webhook_backoff_s=0.05) as gw,
    ):
        await twilio_call(gw, "12")
        await receiver.wait_for(lambda r: bool(r.payloads("summary")))
    assert [e["event"]["text"] for e in receiver.payloads("event")] == ["12"]
    assert receiver.bad_signatures == 0 and len(receiver.attempts) == 2


@pytest.mark.ws
async def test_an_api_keys_own_unpadded_secret_signs_its_webhooks(gateway_factory: GatewayFactory) -> None:
    secret = UNPADDED[31]
    async with webhook_receiver(secret) as receiver:
        keys = [{"name": "crm", "sha256": key_digest(API_KEY), "webhook_url": receiver.url, "webhook_secret": secret}]
        async with gateway_factory(auth="required", api_keys=keys, webhook_backoff_s=0.05) as gw:
            await twilio_call(gw, "3", path=f"/t/{API_KEY}/v1/twilio")
            await receiver.wait_for(lambda r: bool(r.payloads("summary")))
    assert [e["event"]["text"] for e in receiver.payloads("event")] == ["3"] and receiver.bad_signatures == 0


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_" + base64.b64encode(KEY_ONE_PAD).decode()[:41],  # 41 characters: no padding makes it base64
        "whsec_" + base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode().rstrip("="),  # URL-safe alphabet
        "whsec_" + base64.b64encode(b"short").decode().rstrip("="),  # too short a key
        "whsec_===",
    ],
    ids=["4n+1-chars", "url-safe", "short", "only-padding"],
)
def test_a_secret_that_is_not_base64_even_padded_still_stops_the_gateway(secret: str) -> None:
    settings = offline_settings(webhook_url="https://hooks.example.test/x", webhook_secret=SecretStr(secret))
    with pytest.raises(SettingsError) as failed:
        WebhookTargets.from_settings(settings)
    assert secret not in str(failed.value) and "GATEWAY_WEBHOOK_SECRET" in str(failed.value)


def test_a_key_under_16_bytes_stops_the_gateway_and_16_bytes_start_it() -> None:
    """README: a webhook secret needs at least 16 random bytes. A 15-byte key (valid base64) is refused
    as too short, naming the setting and never the value; a 16-byte key signs."""
    short = "whsec_" + base64.b64encode(b"fifteen-bytes!!").decode()
    enough = "whsec_" + base64.b64encode(b"sixteen-bytes!!!").decode()
    SECRETS.update({short, enough})
    url = "https://hooks.example.test/x"
    with pytest.raises(SettingsError) as failed:
        WebhookTargets.from_settings(offline_settings(webhook_url=url, webhook_secret=SecretStr(short)))
    message = str(failed.value)
    assert "GATEWAY_WEBHOOK_SECRET is too short: use at least 16 random bytes" in message, message
    assert short not in message
    WebhookTargets.from_settings(offline_settings(webhook_url=url, webhook_secret=SecretStr(enough)))
