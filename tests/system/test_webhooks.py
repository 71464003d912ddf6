"""Signed result webhooks over real sockets: a Twilio call through the gateway to the simulator, the
results POSTed to a receiver that verifies each with the standardwebhooks package. At least once (retried
with the same id), bounded (attempts, time), counted, and waited for by a drain."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from typing import Any

import pytest
from pydantic import SecretStr

from gateway.adapters.call_results import WebhookResults
from gateway.auth import key_digest
from gateway.errors import BadRequest
from gateway.relay.items import Closed, Notice
from gateway.service import Gateway
from gateway.settings import SettingsError
from gateway.simulator.faults import Fault
from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from gateway.webhooks.signing import WebhookSigner
from gateway.webhooks.targets import WebhookTarget, WebhookTargets
from tests.support import telephony
from tests.support.harness import GatewayFactory, gateway_factory_for, read_all, ws_connect
from tests.support.settings import SECRETS, SIM_TENANT, SIM_TOKEN, offline_settings
from tests.support.twilio_webhooks import SECRET, deliveries, twilio_call, until_counted
from tests.support.webhook_receiver import WebhookReceiver, webhook_receiver

OTHER_SECRET = "whsec_" + base64.b64encode(b"another-webhook-secret-987654321").decode()
API_KEY = "dfg_webhook-key-never-logged"
SECRETS.update({SECRET, OTHER_SECRET, API_KEY})


def hooks(receiver: WebhookReceiver, **extra: Any) -> dict[str, Any]:
    return {"webhook_url": receiver.url, "webhook_secret": SECRET, "webhook_backoff_s": 0.05, **extra}


@pytest.mark.ws
async def test_a_receiver_failing_the_first_two_deliveries_gets_every_result_once(
    gateway_factory: GatewayFactory,
) -> None:
    async with webhook_receiver(SECRET, fail_first=2) as receiver, gateway_factory(**hooks(receiver)) as gw:
        await twilio_call(gw, "12", "34")
        await receiver.wait_for(lambda r: len(r.accepted) == 3)  # two final events and the summary
        await until_counted(gw, "delivered", 3)
        counts = {outcome: deliveries(gw, outcome) for outcome in ("delivered", "retried", "dropped")}
    assert sorted(e["event"]["text"] for e in receiver.payloads("event")) == ["12", "34"], receiver.dump()
    assert receiver.payloads("summary")[0]["transcript"] == [{"channel": 0, "text": "12 34"}]
    assert receiver.duplicates == [] and receiver.bad_signatures == 0
    assert set(receiver.attempts[:2]) <= set(receiver.accepted)  # the failed ones came again, same id
    assert len(receiver.attempts) == 5, receiver.attempts  # 3 results + 2 retries
    assert counts == {"delivered": 3, "retried": 2, "dropped": 0}, counts


@pytest.mark.ws
async def test_retries_are_bounded_and_a_timeout_counts_as_a_failure(gateway_factory: GatewayFactory) -> None:
    async with (
        webhook_receiver(SECRET, delay_s=0.6) as receiver,  # never answers within the attempt's timeout
        gateway_factory(**hooks(receiver, webhook_timeout_s=0.2, webhook_attempts=3)) as gw,
    ):
        await twilio_call(gw, "7")
        started = time.monotonic()
        await until_counted(gw, "dropped", 2)
        counts = {outcome: deliveries(gw, outcome) for outcome in ("delivered", "retried", "dropped")}
    assert time.monotonic() - started < 5
    # 2 webhooks x 3 attempts, then given up; on a loaded machine an attempt can time out (0.2 s) before
    # its request reaches the receiver, so the receiver may see fewer than the gateway made, never more.
    assert 4 <= len(receiver.attempts) <= 6, receiver.attempts
    assert counts == {"delivered": 0, "retried": 4, "dropped": 2}


@pytest.mark.ws
async def test_retries_stop_at_the_retry_window_whatever_the_attempts_left(gateway_factory: GatewayFactory) -> None:
    bounded = {"webhook_attempts": 20, "webhook_retry_window_s": 0.5, "webhook_backoff_s": 0.1}
    async with (
        webhook_receiver(SECRET, fail_first=1000) as receiver,  # a receiver that is down
        gateway_factory(**hooks(receiver, **bounded)) as gw,
    ):
        await twilio_call(gw, "7")
        started = time.monotonic()
        await until_counted(gw, "dropped", 2)
        given_up_after = time.monotonic() - started
    per_webhook = len(receiver.attempts) / 2
    assert 2 <= per_webhook <= 5, receiver.attempts  # waits of 0.05-0.1, 0.1-0.2, 0.2-0.4 s fit in 0.5 s
    assert given_up_after < 2


@pytest.mark.ws
async def test_a_refusal_is_not_retried_and_a_wrong_secret_fails_verification(
    gateway_factory: GatewayFactory,
) -> None:
    async with webhook_receiver(OTHER_SECRET) as receiver, gateway_factory(**hooks(receiver)) as gw:
        await twilio_call(gw, "5")
        await receiver.wait_for(lambda r: r.bad_signatures == 2)
        await until_counted(gw, "dropped", 2)
        assert receiver.accepted == {}
        assert len(receiver.attempts) == 2  # 401: the same request would fare no better
        assert deliveries(gw, "dropped") == 2


@pytest.mark.ws
async def test_a_drain_waits_for_pending_deliveries_within_its_budget(gateway_factory: GatewayFactory) -> None:
    async with webhook_receiver(SECRET, delay_s=0.5) as receiver, gateway_factory(**hooks(receiver)) as gw:
        await twilio_call(gw, "8")
        service: Gateway = gw.gateway
        assert service.webhooks.pending >= 1
        started = time.monotonic()
        await service.drain(budget_s=5)
        took = time.monotonic() - started
        assert service.webhooks.pending == 0
        assert len(receiver.accepted) == 2, receiver.dump()
    assert 0.4 < took < 5


@pytest.mark.ws
async def test_deliveries_are_concurrency_limited(gateway_factory: GatewayFactory) -> None:
    async with (
        webhook_receiver(SECRET, delay_s=0.2) as receiver,
        gateway_factory(**hooks(receiver, webhook_concurrency=1)) as gw,
    ):
        await asyncio.gather(twilio_call(gw, "1", "2"), twilio_call(gw, "3", "4"))  # 6 webhooks at about once
        await receiver.wait_for(lambda r: len(r.accepted) == 6)
    assert receiver.max_in_flight == 1


@pytest.mark.ws
async def test_an_api_key_sends_its_results_to_its_own_webhook(gateway_factory: GatewayFactory) -> None:
    keys = [{"name": "crm", "sha256": key_digest(API_KEY), "webhook_secret": OTHER_SECRET}]
    async with (
        webhook_receiver(SECRET) as default,
        webhook_receiver(OTHER_SECRET) as own,
    ):
        keys[0]["webhook_url"] = own.url
        async with gateway_factory(**hooks(default, auth="required", api_keys=keys)) as gw:
            await twilio_call(gw, "3", path=f"/t/{API_KEY}/v1/twilio")
            await own.wait_for(lambda r: bool(r.payloads("summary")))
    assert [e["event"]["text"] for e in own.payloads("event")] == ["3"]
    assert default.attempts == [] and own.bad_signatures == 0


@pytest.mark.ws
async def test_a_call_data_flow_refuses_still_gets_its_summary() -> None:
    simulator = DataflowSimulator(SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT, fault=Fault("reject_start")))
    await simulator.start()
    try:
        async with webhook_receiver(SECRET) as receiver, gateway_factory_for(simulator)(**hooks(receiver)) as gw:
            async with ws_connect(gw.ws_url("/v1/twilio")) as ws:
                await ws.send(telephony.twilio_connected())
                await ws.send(telephony.twilio_start())
                seen = await read_all(ws, timeout=10)
            await receiver.wait_for(lambda r: bool(r.payloads("summary")))
    finally:
        await simulator.stop(None)
    assert seen.messages == [] and seen.close_code == 1011  # no text for Twilio: the close code says it
    summary = receiver.payloads("summary")[0]
    assert summary["call"]["callSid"] == telephony.CALL_SID and summary["call"]["sessionId"]
    assert summary["transcript"] == [] and summary["ended"]["error"] == "upstream_rejected", summary
    assert receiver.payloads("event") == []


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("https://hooks.example.test/x", None),  # a URL needs a secret
        ("https://hooks.example.test/x", "not-a-whsec-secret"),
        ("https://hooks.example.test/x", "whsec_%%%not-base64"),
        ("ftp://hooks.example.test/x", SECRET),
    ],
)
def test_a_bad_webhook_configuration_stops_the_gateway_without_echoing_it(url: str, secret: str | None) -> None:
    settings = offline_settings(webhook_url=url, webhook_secret=SecretStr(secret) if secret else None)
    with pytest.raises(SettingsError) as failed:
        WebhookTargets.from_settings(settings)
    assert secret is None or secret not in str(failed.value)
    assert "GATEWAY_WEBHOOK" in str(failed.value)


@pytest.mark.ws
@pytest.mark.parametrize("drained", ["live", "starting"])
async def test_a_drain_is_told_in_the_summary_of_a_call_it_ends(gateway_factory: GatewayFactory, drained: str) -> None:
    """A Twilio socket carries nothing back, so the drain's notice (an `error` message on a native socket)
    reaches the operator in the call's summary, next to how the drain ended the call: for a call live when
    the drain began, and for one whose `start` came after (accepted before: served for the budget left)."""
    async with webhook_receiver(SECRET) as receiver, gateway_factory(**hooks(receiver)) as gw:
        async with ws_connect(gw.ws_url("/v1/twilio")) as ws:
            await ws.send(telephony.twilio_connected())
            if drained == "starting":
                drain = gw.gateway.drain(0.5)
            await ws.send(telephony.twilio_start())
            for frame in telephony.twilio_media("7"):
                await ws.send(frame)
            if drained == "live":
                await receiver.wait_for(lambda r: bool(r.payloads("event")))  # the call is live
                drain = gw.gateway.drain(0.5)
            await drain  # the call does not finish within the budget
            seen = await read_all(ws, timeout=10)
        await receiver.wait_for(lambda r: bool(r.payloads("summary")))
    summary = receiver.payloads("summary")[0]
    assert seen.close_code == 1001, seen
    assert [n["code"] for n in summary["notices"]] == ["draining"], summary
    left = float(re.search(r"finish within ([0-9.]+) s", summary["notices"][0]["message"])[1])  # type: ignore[index]
    assert 0 < left <= 0.5 and summary["noticesDropped"] == 0, summary
    assert summary["ended"]["reason"] == "going_away", summary
    if drained == "live":
        assert summary["transcript"] == [{"channel": 0, "text": "7"}], summary


def test_a_summary_lists_at_most_8_notices_and_counts_the_rest() -> None:
    """README: "At most 8 are listed; `noticesDropped` counts the rest" (10 notices: 8 listed, 2 counted)."""

    class Call:
        name = "twilio"

        def call_identity(self) -> dict[str, str]:
            return {}

    class Deliveries:
        def __init__(self) -> None:
            self.bodies: list[dict[str, Any]] = []

        def submit(self, _target: object, body: dict[str, Any]) -> str:
            self.bodies.append(body)
            return str(len(self.bodies))

    deliveries_ = Deliveries()
    target = WebhookTarget("http://127.0.0.1:9/hook", WebhookSigner(b"k" * 32))
    results = WebhookResults(Call(), deliveries_, target, 1024)  # type: ignore[arg-type]
    for n in range(10):
        results.observe(Notice(BadRequest(f"notice {n}")))
    results.observe(Closed("finalized", 1000, 20.0, None))
    [summary] = [body for body in deliveries_.bodies if body["type"] == "summary"]
    assert [notice["message"] for notice in summary["notices"]] == [f"notice {n}" for n in range(8)]
    assert summary["noticesDropped"] == 2
