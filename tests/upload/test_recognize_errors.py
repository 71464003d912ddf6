"""POST /v1/recognize failures: each one a JSON error body with its own status, the upstream
cancelled and nothing left behind (slots, streams, decoder threads)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from gateway.auth import key_digest
from gateway.simulator.server import DataflowSimulator
from gateway.upload.answer import EventLog
from gateway.upload.parameters import PARAMETERS_LIMIT
from tests.support import audio_files, signals
from tests.support.harness import GatewayFactory, RunningGateway, gateway_factory_for
from tests.support.settings import SECRETS
from tests.support.upload_client import URL, multipart, no_decoder_thread_left, outcome, pieces

WAV = signals.wav_bytes(signals.utterances(["12"], 8000), 8000)


@pytest.fixture
def gw_teardown() -> Callable[[], Awaitable[None]]:
    """``gw`` leaves no decoder thread behind."""
    return no_decoder_thread_left


async def post(gw: RunningGateway, content: Any, query: str = "", **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
        return await http.post(URL + query, content=content, headers=headers)


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message", "retryable"}
    return error


async def idle(gw: RunningGateway) -> None:
    async with asyncio.timeout(2):
        while gw.gateway.registry.active or gw.gateway.upstream.active_streams:
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("container", ["wav", "flac"])
async def test_over_the_size_cap_while_streaming_is_413_and_cancels_upstream(
    gateway_factory: GatewayFactory, simulator: DataflowSimulator, container: str
) -> None:
    cap = 1024 * 1024  # well above what the decoder's input queue reads ahead, so Data Flow has started
    if container == "wav":
        data = signals.wav_bytes(signals.silence(140_000, 8000), 8000)  # 2.2 MB; no Content-Length (chunked)
    else:  # noise does not compress: ~2.2 MB of FLAC, decoded in the worker thread
        data = audio_files.encoded(signals.noise(140_000, 8000, level=0.3), 8000, "flac", "flac")
    assert len(data) > 2 * cap
    async with gateway_factory(max_upload_bytes=cap) as gw:
        error = error_of(await post(gw, pieces(data, 64 * 1024)), 413)
        assert error["code"] == "upload_too_large"
        assert await outcome(simulator) == "cancelled"  # Data Flow had started, then was cancelled
        record = simulator.records[-1]
        assert record.requests == []  # no Finalize: a partial upload is not recognised as if complete
        assert record.audio_bytes < 2 * cap  # (8 kHz PCM16 in, 16 kHz upstream)
        await idle(gw)


async def test_declared_content_length_over_the_cap_is_refused_before_reading(
    gateway_factory: GatewayFactory, simulator: DataflowSimulator
) -> None:
    async with gateway_factory(max_upload_bytes=4096) as gw:
        error = error_of(await post(gw, WAV), 413)
    assert error["code"] == "upload_too_large"
    assert not simulator.records  # never reached Data Flow


@pytest.mark.parametrize(
    "content",
    [
        b"this is not audio at all, just text" * 10,
        b"fLaC" + bytes(range(256)) * 20,  # a FLAC signature followed by garbage: undecodable
        b"OggS" + b"\x00" * 5000,
        b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x00\x00",  # WAV header cut short
    ],
    ids=["text", "bad_flac", "bad_ogg", "truncated_wav"],
)
async def test_unknown_or_undecodable_audio_is_415(gw: RunningGateway, content: bytes) -> None:
    error = error_of(await post(gw, content, **{"content-type": "audio/wav"}), 415)
    assert error["code"] == "unsupported_audio_format"
    await idle(gw)


@pytest.mark.parametrize(
    ("query", "headers", "content", "code"),
    [
        ("?sampleRate=5", {}, WAV, "invalid_parameters"),
        ("?channels=7", {}, WAV, "invalid_parameters"),
        ("?interim=maybe", {}, WAV, "invalid_parameters"),
        ("", {"X-Dataflow-Parameters": "{not json"}, WAV, "invalid_parameters"),
        ("", {"X-Dataflow-Parameters": "[1, 2]"}, WAV, "invalid_parameters"),
        ("?encoding=pcm16", {}, signals.to_pcm16(signals.silence(100, 8000)), "invalid_parameters"),
        ("", {"content-type": "audio/L16"}, signals.to_pcm16(signals.silence(100, 8000)), "invalid_parameters"),
        ("", {}, b"", "empty_body"),
    ],
    ids=["rate", "channels", "bool", "params_json", "params_array", "no_rate", "l16_no_rate", "empty"],
)
async def test_bad_parameters_are_422(
    gw: RunningGateway, query: str, headers: dict[str, str], content: bytes, code: str
) -> None:
    error = error_of(await post(gw, content, query, **headers), 422)
    assert error["code"] == code
    await idle(gw)


async def test_a_declared_number_that_is_no_number_is_422_not_ignored(gw: RunningGateway) -> None:
    """Ignored, headerless mu-law declared "16000x" was read as 8 kHz: every transcript garbled."""
    mulaw = signals.g711_encode(signals.silence(200, 16000), "mulaw")
    refused = [
        ({"SampleRate": "16000x"}, "SampleRate must be a whole number of at most 32 characters, got '16000x'"),
        ({"ChannelCount": [2]}, "ChannelCount must be a whole number, got [2]"),
    ]
    for audio, message in refused:
        parameters = json.dumps({"Audio": {"Encoding": "ulaw", **audio}})
        response = await post(gw, mulaw, **{"X-Dataflow-Parameters": parameters})
        expected = {"code": "invalid_parameters", "message": f"Parameters.Audio.{message}", "retryable": False}
        assert error_of(response, 422) == expected
    quoted = json.dumps({"Audio": {"Encoding": "ulaw", "SampleRate": " 16000 ", "ChannelCount": "1"}})
    assert (await post(gw, mulaw, **{"X-Dataflow-Parameters": quoted})).status_code == 200  # still read
    await idle(gw)


async def test_unknown_encoding_is_415(gw: RunningGateway) -> None:
    error = error_of(await post(gw, bytes(1000), "?encoding=opus&sampleRate=8000"), 415)
    assert error["code"] == "unsupported_audio_format"


@pytest.mark.parametrize(
    "parts",
    [
        [("Parameters", None, "application/json", b"{}")],
        [
            ("Parameters", None, "application/json", b"{}"),
            ("Parameters", None, "application/json", b"{}"),
            ("Audio", "a.wav", "audio/wav", WAV),
        ],
        [("Parameters", None, "application/json", b'"just a string"'), ("Audio", "a.wav", "audio/wav", WAV)],
    ],
    ids=["no_audio", "two_parameters_parts", "parameters_not_object"],
)
async def test_bad_multipart_is_422(gw: RunningGateway, parts: list[tuple[str, str | None, str, bytes]]) -> None:
    body, ctype = multipart(parts)
    error = error_of(await post(gw, body, **{"content-type": ctype}), 422)
    assert error["code"] in ("invalid_multipart", "invalid_parameters")
    await idle(gw)


async def test_a_parameters_part_just_over_64_kib_is_422_not_parsed(gw: RunningGateway) -> None:
    """The Parameters part is held and parsed whole, so it is bounded (PARAMETERS_LIMIT, 64 KiB): one byte
    over, valid JSON and a good Audio part behind it, is refused 422 invalid_parameters, nothing started."""
    padding = PARAMETERS_LIMIT + 1 - len(json.dumps({"Language": "en-US", "CallProperties": {"pad": ""}}))
    params = json.dumps({"Language": "en-US", "CallProperties": {"pad": "x" * padding}}).encode()
    assert len(params) == PARAMETERS_LIMIT + 1
    body, ctype = multipart([("Parameters", None, "application/json", params), ("Audio", "a.wav", "audio/wav", WAV)])
    response = await post(gw, body, **{"content-type": ctype})
    assert response.status_code == 422, (
        f"a {len(params)}-byte Parameters part: {response.status_code} {response.text[:200]}"
    )
    error = error_of(response, 422)
    assert error["code"] == "invalid_parameters"
    assert error["message"] == f"the Parameters part is over {PARAMETERS_LIMIT} bytes"
    assert not gw.gateway.upstream.active_streams
    await idle(gw)


async def test_a_second_audio_part_is_422(gw: RunningGateway) -> None:
    """One upload is one recording: an Audio part after the first is refused 422 invalid_multipart, not
    appended to the first one's audio."""
    parts = [
        ("Parameters", None, "application/json", b"{}"),
        ("Audio", "a.wav", "audio/wav", WAV),
        ("Audio", "b.wav", "audio/wav", WAV),
    ]
    body, ctype = multipart(parts)
    response = await post(gw, body, **{"content-type": ctype})
    assert response.status_code == 422, f"two Audio parts: {response.status_code} {response.text[:200]}"
    error = error_of(response, 422)
    assert (error["code"], error["message"]) == ("invalid_multipart", "the multipart body has more than one Audio part")
    await idle(gw)


async def test_malformed_multipart_is_422(gw: RunningGateway) -> None:
    error = error_of(await post(gw, b"--x\r\ngarbage", **{"content-type": "multipart/form-data; boundary=x"}), 422)
    assert error["code"] == "invalid_multipart"


def fault(spec: str) -> dict[str, str]:
    return {"X-Dataflow-Parameters": json.dumps({"Settings": {"SimulatorFault": spec}})}


async def test_start_rejected_by_dataflow_is_502_with_its_message(gw: RunningGateway) -> None:
    error = error_of(await post(gw, WAV, **fault("reject_start")), 502)
    assert error["code"] == "upstream_rejected"
    assert "simulated start failure" in error["message"]  # Data Flow's own text


@pytest.mark.parametrize(
    "gw", [{"upstream_replay_ms": 0}], indirect=True
)  # recovery off: the failure reaches the client
async def test_upstream_unavailable_is_503(gw: RunningGateway) -> None:
    long_wav = signals.wav_bytes(signals.silence(20_000, 8000), 8000)
    response = await post(gw, pieces(long_wav, 4096, pause_s=0.01), **fault("abort:100:UNAVAILABLE"))
    assert error_of(response, 503)["code"] == "upstream_unavailable"
    assert response.headers["retry-after"]
    await idle(gw)


async def test_dataflow_down_at_start_is_503(gw: RunningGateway, simulator: DataflowSimulator) -> None:
    await simulator.stop(None)
    error = error_of(await post(gw, WAV), 503)
    assert error["code"] == "upstream_unavailable" and error["retryable"] is True


async def test_upstream_deadline_is_504(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(upstream_start_timeout_s=0.3) as gw:
        error = error_of(await post(gw, WAV, **fault("slow_start:3000")), 504)
    assert error["code"] == "upstream_timeout"


async def test_capacity_is_503_with_retry_after(gateway_factory: GatewayFactory) -> None:
    release = asyncio.Event()

    async def held_open() -> AsyncIterator[bytes]:
        yield WAV[:4000]
        await release.wait()
        yield WAV[4000:]

    async with gateway_factory(max_sessions=1) as gw, httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
        first = asyncio.create_task(http.post(URL, content=held_open()))
        async with asyncio.timeout(5):
            while gw.gateway.registry.active == 0:
                await asyncio.sleep(0.01)
        refused = await http.post(URL, content=WAV)
        assert error_of(refused, 503)["code"] == "capacity_exceeded"
        assert refused.headers["retry-after"]
        release.set()
        assert (await first).json()["transcript"] == {"0": "12"}


async def test_decoder_failure_mid_stream_is_415(gw: RunningGateway, simulator: DataflowSimulator) -> None:
    error = error_of(await post(gw, audio_files.chained_ogg()), 415)
    assert error["code"] == "unsupported_audio_format"
    assert "ogg" in error["message"]
    assert await outcome(simulator) == "cancelled"  # Data Flow had started: the failure came mid-stream
    await idle(gw)


UPLOAD_KEY = "dfg_upload_5c0e7a1b9d2f4e6a8c3b1d0f7e9a2c4b"
SECRETS.add(UPLOAD_KEY)


async def test_uploads_pass_the_same_access_gate(simulator: DataflowSimulator) -> None:
    keys = [{"name": "uploader", "sha256": key_digest(UPLOAD_KEY), "projects": ["demo"]}]
    factory = gateway_factory_for(simulator)
    async with factory(auth="required", api_keys=keys) as gw:
        assert error_of(await post(gw, WAV), 401)["code"]
        assert error_of(await post(gw, WAV, **{"X-API-Key": "dfg_wrong"}), 401)["code"]
        forbidden = await post(gw, WAV, "?project=other", **{"X-API-Key": UPLOAD_KEY})
        assert error_of(forbidden, 403)["code"]
        accepted = await post(gw, WAV, **{"Authorization": f"Bearer {UPLOAD_KEY}"})
        assert accepted.status_code == 200 and accepted.json()["transcript"] == {"0": "12"}
        await idle(gw)
    assert [r.project for r in simulator.records] == ["demo"]  # refused uploads never reached Data Flow


def test_a_lone_surrogate_in_an_event_does_not_fail_the_answer() -> None:
    """Data Flow's JSON may carry "\\ud800" (no UTF-8 form): encoding the answer raised and lost it whole."""
    events = EventLog(4096)
    events.add({"type": "event", "data": {"note": "a\ud800b"}})
    answer = events.answer({"sessionId": "s1"})
    assert json.loads(answer.body)["events"][0]["data"]["note"] == "a?b"  # UTF-8's replacement when encoding
