"""/project-runner end to end: scripted Data Flow WebSocket clients (both dialects) through the real
gateway to the real simulator."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from gateway.adapters.dataflow_ws import scrub
from gateway.auth import key_digest
from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from tests.support import signals
from tests.support.harness import RunningGateway, Transcript, read_all, running_gateway, ws_connect
from tests.support.lb_stack import metric, metric_values
from tests.support.settings import SECRETS, SIM_TENANT, SIM_TOKEN, settings_for

CLIENT_TOKEN = "client-token-that-must-never-reach-dataflow"
CLIENT_TENANT = "client-tenant-ignored"
URL_KEY = "dfg_telephony-key-in-the-url"
FRAME_MS = 20
SECRETS.update({CLIENT_TOKEN, URL_KEY})  # never in a server log line either


def current_start(rate: int = 8000, **extra: Any) -> str:
    audio = {"Encoding": "pcm", "SampleRate": rate, "ChannelCount": 1}
    return json.dumps({"MessageName": "Start", "ProjectName": "demo", "Tenant": CLIENT_TENANT, "Token": CLIENT_TOKEN,
                       "Audio": audio, **extra})  # fmt: skip


def legacy_start(rate: int = 8000) -> str:
    # Lower-case/kebab keys, numbers as strings, no encoding (pcm), project in the URL path.
    audio = {"sample-rate": str(rate), "channel-count": "1"}
    return json.dumps({"message-name": "start", "token": CLIENT_TOKEN, "tenant": CLIENT_TENANT, "audio": audio})


def dtmf_pcm(digits: list[str], rate: int = 8000) -> bytes:
    return signals.to_pcm16(signals.utterances(digits, rate))


async def send_frames(ws: ClientConnection, data: bytes, rate: int = 8000) -> None:
    step = rate * FRAME_MS // 1000 * 2
    for offset in range(0, len(data), step):
        await ws.send(data[offset : offset + step])


async def next_json(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            frame = await ws.recv()
            if isinstance(frame, str):
                message: dict[str, Any] = json.loads(frame)
                return message


def event_body(message: dict[str, Any]) -> dict[str, Any]:
    inner = message.get("event", message.get("Event", message))
    return inner if isinstance(inner, dict) else {}


def names(result: Transcript) -> list[str]:
    """Message names in arrival order: responses by MessageName, events by Name (either dialect)."""
    out = []
    for m in result.messages:
        body = event_body(m)
        out.append(m.get("MessageName") or m.get("message-name") or body.get("Name") or body.get("name") or "?")
    return out


def milestones(result: Transcript) -> list[str]:
    texts = []
    for m in result.messages:
        body = event_body(m)
        if (body.get("Name") or body.get("name")) == "SR Milestone":
            data = body.get("Data") or body.get("data") or {}
            texts.append(data.get("Text") or data.get("text"))
    return texts


def assert_no_secret_in(result: Transcript) -> None:
    text = json.dumps(result.messages)
    assert SIM_TOKEN not in text
    assert CLIENT_TOKEN not in text


async def wait_ended(record: Any, since: float, within: float = 1.0) -> None:
    async with asyncio.timeout(within):
        while record.ended_at is None:
            await asyncio.sleep(0.01)
    assert record.outcome == "cancelled"
    assert record.ended_at - since < within


async def wait_idle(gw: RunningGateway) -> None:
    async with asyncio.timeout(2):
        while gw.gateway.registry.active or gw.gateway.upstream.active_streams:
            await asyncio.sleep(0.01)


# --- (a) a current-dialect client that waits for StartResponse and finalizes ------------------------


@pytest.mark.ws
async def test_current_client_waits_for_start_response_then_finalizes(
    gw: RunningGateway, simulator: DataflowSimulator
) -> None:
    async with ws_connect(gw.ws_url("/project-runner")) as ws:
        await ws.send(current_start())
        start_response = await next_json(ws)
        record = simulator.records[-1]
        assert start_response == {"MessageName": "StartResponse", "OperationResult": "Success",
                                  "SessionId": record.session_id}  # fmt: skip
        await send_frames(ws, dtmf_pcm(["123"]))
        await ws.send(json.dumps({"MessageName": "Finalize"}))
        result = await read_all(ws)
    assert names(result) == ["Speech Started", "SR Partial", "SR Partial", "SR Partial", "Speech Ended",
                             "SR Milestone", "FinalizeResponse", "FinalResult"]  # fmt: skip
    milestone = result.messages[5]
    assert set(milestone) == {"Name", "Channel", "StartMsec", "EndMsec", "GroupId", "Tags", "Data"}
    assert (milestone["Channel"], milestone["Data"]) == (0, {"Text": "123"})
    assert result.messages[6] == {"MessageName": "FinalizeResponse", "OperationResult": "Success"}
    assert event_body(result.messages[-1])["Data"]["Transcript"] == {"0": "123"}
    assert result.close_code == 1000
    assert record.tokens_seen == [SIM_TOKEN]
    assert (record.project, record.outcome, record.requests) == ("demo", "finalized", ["finalize"])
    assert_no_secret_in(result)


# --- (b) a legacy client: lower-case keys, project in the path, no Encoding, audio at once, no Finalize ---


async def legacy_client_until_milestone(gw: RunningGateway) -> tuple[ClientConnection, Transcript]:
    ws = await ws_connect(gw.ws_url("/project-runner/demo"))
    await ws.send(legacy_start())
    await send_frames(ws, dtmf_pcm(["123"]))  # without waiting for StartResponse
    result = Transcript()
    while "123" not in milestones(result):
        result.messages.append(await next_json(ws))
    return ws, result


@pytest.mark.ws
async def test_legacy_client_sends_audio_at_once_and_vanishes_without_finalize(
    gw: RunningGateway, simulator: DataflowSimulator
) -> None:
    ws, result = await legacy_client_until_milestone(gw)
    record = simulator.records[-1]
    closed_at = time.monotonic()
    ws.transport.abort()  # gone: no Finalize, no close frame
    await wait_ended(record, closed_at)
    # The simulator speaks the current dialect: Data Flow's answers pass through as Data Flow wrote them.
    assert result.messages[0] == {"MessageName": "StartResponse", "OperationResult": "Success",
                                  "SessionId": record.session_id}  # fmt: skip
    assert milestones(result) == ["123"]
    assert record.tokens_seen == [SIM_TOKEN]
    assert record.project == "demo"
    assert_no_secret_in(result)
    await wait_idle(gw)


@pytest.mark.ws
async def test_legacy_client_closing_politely_without_finalize_cancels_upstream(
    gw: RunningGateway, simulator: DataflowSimulator
) -> None:
    ws, _ = await legacy_client_until_milestone(gw)
    record = simulator.records[-1]
    closed_at = time.monotonic()
    await ws.close()
    await wait_ended(record, closed_at)
    await wait_idle(gw)


@pytest.mark.ws
class TestLegacyDataflow:
    """Against a Data Flow that answers in the legacy dialect, the client gets exactly that dialect."""

    @pytest.fixture
    def sim_config(self) -> SimulatorConfig:
        return SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT, dialect="legacy")

    async def test_legacy_answers_pass_through_unmodified(
        self, gw: RunningGateway, simulator: DataflowSimulator
    ) -> None:
        ws, result = await legacy_client_until_milestone(gw)
        await ws.close()
        record = simulator.records[-1]
        assert result.messages[0] == {"message-name": "start-response", "operation-result": "success",
                                      "session-id": record.session_id}  # fmt: skip
        milestone = next(m for m in result.messages if event_body(m).get("name") == "SR Milestone")
        assert set(milestone) == {"event"}  # still wrapped
        assert milestone["event"]["data"] == {"text": "123", "text_attributes": "recognized, punctuated"}
        assert milestone["event"]["channel"] == "0"  # numbers still strings
        assert record.tokens_seen == [SIM_TOKEN]


# --- audio before StartResponse, and leaving while Data Flow is still starting -------------------------


@pytest.mark.ws
@pytest.mark.parametrize("pre_start_audio_ms", [5000, 100])
async def test_audio_and_finalize_sent_before_start_response_are_held(
    simulator: DataflowSimulator, pre_start_audio_ms: int
) -> None:
    # 100 ms holds only a few frames: the rest waits in the socket, and still nothing is lost.
    settings = settings_for(simulator, pre_start_audio_ms=pre_start_audio_ms)
    async with running_gateway(settings) as gw, ws_connect(gw.ws_url("/project-runner")) as ws:
        await ws.send(current_start(Settings={"SimulatorFault": "slow_start:600"}))
        await send_frames(ws, dtmf_pcm(["159"]))
        await ws.send(json.dumps({"MessageName": "Finalize"}))
        everything_sent_at = time.monotonic()
        first = await next_json(ws)
        answered_at = time.monotonic()
        result = await read_all(ws)
    assert first["MessageName"] == "StartResponse"
    assert answered_at - everything_sent_at > 0.3  # all of it really was sent before Data Flow answered
    assert milestones(result) == ["159"]
    assert names(result)[-2:] == ["FinalizeResponse", "FinalResult"]
    assert result.close_code == 1000


@pytest.mark.ws
async def test_leaving_while_dataflow_starts_cancels_upstream(gw: RunningGateway, simulator: DataflowSimulator) -> None:
    ws = await ws_connect(gw.ws_url("/project-runner"))
    await ws.send(current_start(Settings={"SimulatorFault": "slow_start:5000"}))
    await ws.send(bytes(320))
    async with asyncio.timeout(2):
        while not simulator.records:
            await asyncio.sleep(0.01)
    record = simulator.records[-1]
    closed_at = time.monotonic()
    ws.transport.abort()
    await wait_ended(record, closed_at)
    assert record.tokens_seen == [SIM_TOKEN]
    await wait_idle(gw)


# --- failures, control messages ------------------------------------------------------------------------


@pytest.mark.ws
@pytest.mark.parametrize(
    ("path", "first", "expected", "close_code"),
    [
        ("/project-runner", current_start(Settings={"SimulatorFault": "reject_start"}),
         {"MessageName": "StartResponse", "OperationResult": "simulated start failure",
          "ErrorCode": "upstream_rejected"}, 1011),
        ("/project-runner/demo", json.dumps({"message-name": "start", "audio": {"encoding": "opus"}}),
         {"message-name": "start-response", "operation-result": "Audio.Encoding must be pcm, ulaw or alaw",
          "error-code": "unsupported_audio_format"}, 1003),
        ("/project-runner", json.dumps({"MessageName": "Finalize"}),
         {"MessageName": "StartResponse", "OperationResult": "the first message must be a Start request",
          "ErrorCode": "not_started"}, 1008),
    ],
)  # fmt: skip
async def test_failed_start_is_reported_as_a_start_response_then_closed(
    gw: RunningGateway, path: str, first: str, expected: dict[str, Any], close_code: int
) -> None:
    async with ws_connect(gw.ws_url(path)) as ws:
        await ws.send(first)
        result = await read_all(ws)
    assert result.messages == [expected]
    assert result.close_code == close_code
    assert gw.gateway.registry.active == 0


def refused_start(legacy: bool, text: str) -> dict[str, str]:
    if legacy:
        return {"message-name": "start-response", "operation-result": text, "error-code": "unsupported_audio_format"}
    return {"MessageName": "StartResponse", "OperationResult": text, "ErrorCode": "unsupported_audio_format"}


@pytest.mark.ws
@pytest.mark.parametrize(
    ("audio", "legacy", "expected"),
    [
        ({"SampleRate": "9999999999999999999999x"}, False,
         "Audio.SampleRate must be a whole number of at most 32 characters, got '9999999999999999999999x'"),
        ({"sample-rate": "abc"}, True, "Audio.SampleRate must be a whole number of at most 32 characters, got 'abc'"),
        ({"SampleRate": "9" * 5000}, False,  # quoted cut short; float() made inf of it, read as 16000
         f"Audio.SampleRate must be a whole number of at most 32 characters, got '{'9' * 64}'…"),
        ({"SampleRate": "9999999999999999999999"}, False,  # the client's digits, not float's 1e22
         "sample rate must be 8000..48000 Hz, got 9999999999999999999999"),
        ({"SampleRate": 8000.5}, False, "Audio.SampleRate must be a whole number, got 8000.5"),
        ({"channel-count": True}, True, "Audio.ChannelCount must be a whole number, got True"),
        ({"ChannelCount": "2 channels"}, False,
         "Audio.ChannelCount must be a whole number of at most 32 characters, got '2 channels'"),
    ],
)  # fmt: skip
async def test_a_declared_number_that_is_no_number_is_refused_not_read_as_the_default(
    gw: RunningGateway, simulator: DataflowSimulator, audio: dict[str, Any], legacy: bool, expected: str
) -> None:
    """Read as 16000 Hz / mono, a wrong declaration silently garbled every transcript of the call."""
    start = {"message-name": "start", "audio": audio} if legacy else {"MessageName": "Start", "Audio": audio}
    async with ws_connect(gw.ws_url("/project-runner/demo")) as ws:
        await ws.send(json.dumps(start))
        refused = await read_all(ws)
    assert refused.messages == [refused_start(legacy, expected)]
    assert refused.close_code == 1003
    assert not simulator.records  # never reached Data Flow
    # Numbers as strings, spaces around them included, are still read: 8 kHz DTMF comes back whole.
    audio = {"sample-rate": " 8000 ", "channel-count": "1 "}
    async with ws_connect(gw.ws_url("/project-runner/demo")) as ws:
        await ws.send(json.dumps({"message-name": "start", "audio": audio}))
        await send_frames(ws, dtmf_pcm(["123"]))
        await ws.send(json.dumps({"message-name": "finalize"}))
        result = await read_all(ws)
    assert milestones(result) == ["123"]
    assert result.close_code == 1000
    assert gw.gateway.registry.active == 0


@pytest.mark.ws
async def test_capacity_refusal_is_a_start_response(simulator: DataflowSimulator) -> None:
    async with running_gateway(settings_for(simulator, max_sessions=1)) as gw:
        async with ws_connect(gw.ws_url("/project-runner")) as first:
            await first.send(current_start())
            await next_json(first)
            async with ws_connect(gw.ws_url("/project-runner/demo")) as second:
                await second.send(legacy_start())
                refused = await read_all(second)
        assert refused.messages[0]["message-name"] == "start-response"
        assert refused.messages[0]["error-code"] == "capacity_exceeded"
        assert refused.close_code == 1013


@pytest.mark.ws
async def test_a_connection_accepted_while_full_is_drained_and_still_refused_at_its_start_if_full(
    simulator: DataflowSimulator,
) -> None:
    """Accepted while the replica was full, a /project-runner connection (whose refusal waits for its start)
    held nothing a drain could reach: the drain never told it, and uvicorn's shutdown closed it 1012."""
    async with running_gateway(settings_for(simulator, max_sessions=1)) as gw:
        async with ws_connect(gw.ws_url("/project-runner")) as first:
            await first.send(current_start())
            await next_json(first)
            async with ws_connect(gw.ws_url("/project-runner/demo")) as second:
                await second.send(legacy_start())  # still full: refused at its start, as before
                refused = await read_all(second)
            assert (refused.messages[0]["error-code"], refused.close_code) == ("capacity_exceeded", 1013)
            async with ws_connect(gw.ws_url("/project-runner/demo")) as waiting:
                await asyncio.sleep(0.2)
                registry = gw.gateway.registry
                assert len(registry.drainables()) == 2 and registry.active == 1
                assert (len(registry.deferred), len(registry.waiting)) == (1, 0)  # no browser's place taken
                async with httpx.AsyncClient(base_url=gw.http_url) as http:
                    assert (await http.get("/readyz")).json()["waiting"] == 1  # dataflow-gateway drain waits for it
                await gw.gateway.drain(0.3)
                gone = await read_all(waiting, timeout=5)
        assert (gone.close_code, gone.messages[-1]["ErrorCode"]) == (1001, "going_away"), gone.messages
        assert gw.gateway.registry.drainables() == []


@pytest.mark.ws
async def test_a_connection_past_the_places_for_connections_accepted_while_full_is_refused_at_once(
    simulator: DataflowSimulator,
) -> None:
    """Past ``GATEWAY_MAX_SESSIONS`` places for connections accepted while full, one held no place at all:
    no drain reached it (uvicorn's shutdown closed it 1012) until its start came to be refused."""
    async with running_gateway(settings_for(simulator, max_sessions=1)) as gw:
        async with ws_connect(gw.ws_url("/project-runner")) as first:
            await first.send(current_start())
            await next_json(first)
            async with ws_connect(gw.ws_url("/project-runner/demo")) as waiting:
                async with ws_connect(gw.ws_url("/project-runner/demo")) as past:
                    refused = await read_all(past, timeout=2)  # without sending anything
                assert refused.messages == [
                    {"MessageName": "StartResponse", "ErrorCode": "capacity_exceeded",
                     "OperationResult": "1 connections already wait for a free slot; retry later"}
                ]  # fmt: skip
                assert refused.close_code == 1013
                assert len(gw.gateway.registry.deferred) == 1
                assert await denials(gw) == (1, 0)  # each refusal counted once, as every other dialect's
                await gw.gateway.drain(0.3)
                gone = await read_all(waiting, timeout=5)
            assert (gone.close_code, gone.messages[-1]["ErrorCode"]) == (1001, "going_away")
        assert gw.gateway.registry.drainables() == []
        async with ws_connect(gw.ws_url("/project-runner/demo")) as late:  # while draining: told at once too
            told = await read_all(late, timeout=2)
        assert (told.close_code, told.messages[-1]["ErrorCode"]) == (1001, "going_away")
        assert await denials(gw) == (1, 1)  # the session the drain ended is no denial; the refused handshake is


async def denials(gw: RunningGateway) -> tuple[float, float]:
    """``dataflow_gateway_denials_total`` of capacity_exceeded and going_away."""
    async with httpx.AsyncClient() as http:
        values = metric_values((await http.get(f"{gw.http_url}/metrics")).text)
    name = "dataflow_gateway_denials_total"
    return metric(values, name, reason="capacity_exceeded"), metric(values, name, reason="going_away")


@pytest.mark.ws
async def test_update_event_unknown_and_stop(gw: RunningGateway, simulator: DataflowSimulator) -> None:
    async with ws_connect(gw.ws_url("/project-runner")) as ws:
        await ws.send(current_start())
        await next_json(ws)
        await ws.send(json.dumps({"MessageName": "Update", "Settings": {"Language": "en-GB"}}))
        assert await next_json(ws) == {"MessageName": "UpdateResponse", "OperationResult": "Success"}
        await ws.send(json.dumps({"Event": {"Name": "TTS Request", "Data": {"Text": "hi"}}}))
        echoed = await next_json(ws)
        assert (echoed["Name"], echoed["Data"], echoed["Tags"]) == ("TTS Request", {"Text": "hi"}, ["echo"])
        await ws.send(json.dumps({"MessageName": "Dance"}))
        await ws.send(json.dumps({"MessageName": "Dance" * 10_000}))  # quoted back cut short, not 50 KB
        await ws.send(json.dumps({"MessageName": "Update", "Settings": 3}))
        await ws.send(json.dumps({"MessageName": "Stop"}))
        result = await read_all(ws)
    assert [m for m in result.messages if "ErrorCode" in m] == [
        {"MessageName": "ErrorResponse", "OperationResult": "unknown message dance",
         "ErrorCode": "unknown_message_type"},
        {"MessageName": "ErrorResponse", "OperationResult": f"unknown message {'dance' * 12}danc…",
         "ErrorCode": "unknown_message_type"},
        {"MessageName": "UpdateResponse", "OperationResult": "Update needs a Settings object",
         "ErrorCode": "invalid_update"},
    ]  # fmt: skip
    assert names(result)[-2:] == ["StopResponse", "FinalResult"]
    assert "Start of TTS Fragment" in names(result)
    assert len(result.audio) == 1  # the simulated TTS fragment, as a binary frame
    assert result.close_code == 1000
    assert simulator.records[-1].requests == ["update", "stop"]
    assert simulator.records[-1].client_events == [{"Name": "TTS Request", "Data": {"Text": "hi"}}]


@pytest.mark.ws
async def test_upstream_failure_mid_session_is_reported_then_closed_1011(gw: RunningGateway) -> None:
    async with ws_connect(gw.ws_url("/project-runner")) as ws:
        await ws.send(current_start(Settings={"SimulatorFault": "abort:300:UNAVAILABLE"}))
        await next_json(ws)
        sender = asyncio.create_task(send_frames(ws, bytes(320 * 100)))
        result = await read_all(ws)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    assert result.messages[-1]["MessageName"] == "ErrorResponse"
    assert result.messages[-1]["ErrorCode"] == "upstream_unavailable"
    assert result.close_code == 1011


@pytest.mark.ws
async def test_credentials_come_with_the_url_never_in_start(simulator: DataflowSimulator) -> None:
    key = URL_KEY
    keys = [{"name": "pbx", "sha256": key_digest(key)}]
    async with running_gateway(settings_for(simulator, auth="required", api_keys=keys)) as gw:
        with pytest.raises(InvalidStatus) as denied:  # a Data Flow token in Start is no credential here
            async with ws_connect(gw.ws_url("/project-runner/demo")):
                pass
        assert denied.value.response.status_code == 401
        async with ws_connect(gw.ws_url(f"/t/{key}/project-runner/demo")) as ws:
            await ws.send(legacy_start())
            assert (await next_json(ws))["OperationResult"] == "Success"
    assert simulator.records[-1].tokens_seen == [SIM_TOKEN]


def test_scrub_removes_every_token_key_at_any_depth() -> None:
    raw = {"Token": "a", "Data": {"token": "b", "Items": [{"TOKEN": "c", "to-ken": "d", "Tokens": 1}]}, "Name": "x"}
    assert scrub(raw) == {"Data": {"Items": [{"Tokens": 1}]}, "Name": "x"}
