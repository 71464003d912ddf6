"""/v1/jambonz end to end: jambonz's custom speech (STT) protocol through the real gateway to the real
simulator: start, binary LINEAR16, stop; transcription messages back, then the gateway closes."""

from __future__ import annotations

import contextlib
import json
from importlib import resources
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.adapters.jambonz import JambonzDialect
from gateway.auth import key_digest
from tests.support import telephony
from tests.support.harness import GatewayFactory, read_all, ws_connect
from tests.support.settings import SECRETS

API_KEY = "dfg_jambonz-vendor-key-never-logged"
SECRETS.add(API_KEY)
KEYS = [{"name": "jambonz", "sha256": key_digest(API_KEY)}]


def start(rate: int, interim: bool) -> str:
    return json.dumps({
        "type": "start", "language": "en-US", "format": "raw", "encoding": "LINEAR16", "sampleRateHz": rate,
        "interimResults": interim, "options": {},
    })  # fmt: skip


@pytest.mark.ws
@pytest.mark.parametrize(("rate", "interim"), [(8000, False), (16000, True)])
async def test_dtmf_comes_back_as_transcriptions_then_the_gateway_closes(
    gateway_factory: GatewayFactory, rate: int, interim: bool
) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with (
        gateway_factory(auth="required", api_keys=KEYS) as gw,
        ws_connect(gw.ws_url("/v1/jambonz"), additional_headers=auth) as ws,
    ):
        await ws.send(start(rate, interim))
        for frame in telephony.l16_frames("258", rate):
            await ws.send(frame)
        await ws.send(json.dumps({"type": "stop"}))
        seen = await read_all(ws, timeout=15)
    assert seen.audio == [] and {m["type"] for m in seen.messages} == {"transcription"}, seen.messages
    finals = [m for m in seen.messages if m["is_final"]]
    assert finals == [{
        "type": "transcription", "is_final": True, "alternatives": [{"transcript": "258", "confidence": 1.0}],
        "channel": 1, "language": "en-US",
    }]  # fmt: skip
    interims = [m["alternatives"][0]["transcript"] for m in seen.messages if not m["is_final"]]
    assert interims == (["2", "25", "258"] if interim else [])
    assert seen.close_code == 1000


@pytest.mark.ws
async def test_without_the_bearer_key_the_upgrade_is_refused(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(auth="required", api_keys=KEYS) as gw:
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(gw.ws_url("/v1/jambonz"), additional_headers={"Authorization": "Bearer nope"}):
                pass
    assert refused.value.response.status_code == 401


@pytest.mark.ws
@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"encoding": "MULAW"}, "unsupported_audio_format: jambonz audio must be format raw, encoding LINEAR16"),
        ({"format": "wav"}, "unsupported_audio_format: jambonz audio must be format raw, encoding LINEAR16"),
        ({"sampleRateHz": "16000x"},  # read as 8000 it garbled the call
         "unsupported_audio_format: sampleRateHz must be a whole number of at most 32 characters, got '16000x'"),
    ],
)  # fmt: skip
async def test_a_bad_start_gets_an_error_message_and_a_close_code(
    gateway_factory: GatewayFactory, change: dict[str, Any], error: str
) -> None:
    async with gateway_factory() as gw, ws_connect(gw.ws_url("/v1/jambonz")) as ws:
        bad: dict[str, Any] = json.loads(start(8000, False)) | change
        await ws.send(json.dumps(bad))
        with contextlib.suppress(ConnectionClosed):  # refused already, or: a start taken ends here
            await ws.send(json.dumps({"type": "stop"}))
        seen = await read_all(ws, timeout=5)
    assert seen.messages == [{"type": "error", "error": error}], f"start {change}: {seen.messages}"
    assert seen.close_code == 1003  # unsupported data


@pytest.mark.ws
async def test_audio_before_start_is_refused_not_dropped(gateway_factory: GatewayFactory) -> None:
    """jambonz sends start first; audio before it has no session to go to and was dropped unseen."""
    async with gateway_factory() as gw, ws_connect(gw.ws_url("/v1/jambonz")) as ws:
        await ws.send(telephony.l16_frames("1", 8000)[0])
        seen = await read_all(ws, timeout=5)
    assert seen.messages == [
        {"type": "error", "error": "not_started: audio before start: send start before anything else"}
    ]
    assert seen.close_code == 1008


@pytest.mark.ws
async def test_a_language_that_is_no_language_tag_is_refused(gateway_factory: GatewayFactory) -> None:
    """The language is held for the connection's life and sent back in every transcription: an 800 KB one
    came back as 2.4 MB per transcription (24 MB for nine digits with interim results)."""
    async with gateway_factory() as gw, ws_connect(gw.ws_url("/v1/jambonz")) as ws:
        bad: dict[str, Any] = json.loads(start(8000, True)) | {"language": "é" * 100_000}
        await ws.send(json.dumps(bad, ensure_ascii=False))
        for frame in telephony.l16_frames("1", 8000):
            await ws.send(frame)
        await ws.send(json.dumps({"type": "stop"}))
        seen = await read_all(ws, timeout=5)
    assert [m["type"] for m in seen.messages] == ["error"], [str(m)[:200] for m in seen.messages]
    assert seen.messages[0]["error"].startswith("invalid_start: language must be a language tag of at most 64 char")
    assert len(seen.messages[0]["error"]) < 200  # the client's text quoted cut short
    assert seen.close_code == 1008


def test_the_telephony_dialects_and_the_webhook_are_in_the_asyncapi_document() -> None:
    doc = yaml.safe_load(resources.files("gateway").joinpath("asyncapi.yaml").read_text("utf-8"))
    addresses = {c["address"] for c in doc["channels"].values()}
    assert {"/v1/twilio", "/v1/vonage", "/v1/jambonz"} <= addresses
    names = {m["$ref"].rsplit("/", 1)[-1] for m in doc["channels"]["jambonz"]["messages"].values()}
    assert names == {"JambonzStart", "JambonzStop", "JambonzAudio", "JambonzTranscription", "JambonzError"}
    webhook = doc["channels"]["resultWebhook"]["messages"]
    assert set(webhook) == {"event", "summary"}


@settings(max_examples=300, deadline=None)
@given(st.lists(telephony.arbitrary_messages(["start", "stop"], "type"), max_size=8), st.booleans())
def test_dialect_never_raises_on_client_input(messages: list[str | bytes], streaming: bool) -> None:
    dialect = JambonzDialect("demo")
    for message in messages:
        dialect.streaming(message) if streaming else dialect.waiting(message)
