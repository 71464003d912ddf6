"""/v1/audiocodes end to end: a scripted VoiceAI Connect client through the real gateway to the real
simulator, plus the pure pieces (start mapping, WAV header skipping)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.adapters.audiocodes import WavHeaderSkipper, parse_start, render
from gateway.auth import key_digest
from gateway.dataflow.messages import parse_event
from gateway.errors import AudioFormatError
from gateway.simulator.faults import Fault
from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from tests.support import signals
from tests.support.audiocodes_client import recognize, send_frames, start, until
from tests.support.harness import (
    RunningGateway,
    read_all,
    running_gateway,
    vanish_and_expect_upstream_cancelled,
    ws_connect,
)
from tests.support.settings import SECRETS, SIM_TENANT, SIM_TOKEN, settings_for

API_KEY = "dfg_voiceai-connect-key"
SECRETS.add(API_KEY)  # never in a server log line


@pytest.mark.ws
async def test_two_sequential_recognitions_on_one_socket(gw: RunningGateway, simulator: DataflowSimulator) -> None:
    async with ws_connect(gw.ws_url("/v1/audiocodes")) as ws:
        first = await recognize(ws, "123", 16000, "raw")
        second = await recognize(ws, "4#", 8000, "wav")  # a WAV header leads the audio: it must be skipped
        await ws.close()
    assert first == [
        {"type": "hypothesis", "alternatives": [{"text": "1"}]},
        {"type": "hypothesis", "alternatives": [{"text": "12"}]},
        {"type": "hypothesis", "alternatives": [{"text": "123"}]},
        {"type": "recognition", "alternatives": [{"text": "123", "confidence": 1.0}]},
        {"type": "end", "reason": "stop requested"},
    ]
    assert second == [
        {"type": "hypothesis", "alternatives": [{"text": "4"}]},
        {"type": "hypothesis", "alternatives": [{"text": "4#"}]},
        {"type": "recognition", "alternatives": [{"text": "4#", "confidence": 1.0}]},
        {"type": "end", "reason": "stop requested"},
    ]
    records = list(simulator.records)[-2:]
    assert [r.tokens_seen for r in records] == [[SIM_TOKEN], [SIM_TOKEN]]
    assert [r.outcome for r in records] == ["finalized", "finalized"]
    assert [r.requests for r in records] == [["finalize"], ["finalize"]]
    assert gw.gateway.registry.active == 0


@pytest.mark.ws
async def test_stop_flushes_an_utterance_still_open(gw: RunningGateway) -> None:
    # Speech that never ends in silence: only the Finalize behind ``stop`` can produce the recognition.
    audio = signals.to_pcm16(signals.silence(300, 16000).tolist() + signals.dtmf("78", 16000).tolist())
    async with ws_connect(gw.ws_url("/v1/audiocodes")) as ws:
        await ws.send(start())
        await send_frames(ws, audio, 16000)  # sent before ``started``: held, not lost
        await ws.send(json.dumps({"type": "stop"}))
        messages = await until(ws, "end")
    assert messages[0] == {"type": "started"}
    assert messages[-2:] == [
        {"type": "recognition", "alternatives": [{"text": "78", "confidence": 1.0}]},
        {"type": "end", "reason": "stop requested"},
    ]


@pytest.mark.ws
async def test_abrupt_close_mid_recognition_cancels_upstream(gw: RunningGateway, simulator: DataflowSimulator) -> None:
    ws = await ws_connect(gw.ws_url("/v1/audiocodes"))
    await ws.send(start())
    await send_frames(ws, signals.to_pcm16(signals.dtmf("55", 16000)), 16000)
    await until(ws, "hypothesis")
    record = simulator.records[-1]
    await vanish_and_expect_upstream_cancelled(ws, record, gw)


@pytest.mark.ws
async def test_stop_without_recognition_answers_end(gw: RunningGateway) -> None:
    async with ws_connect(gw.ws_url("/v1/audiocodes")) as ws:
        await ws.send(bytes(640))  # stray audio between recognitions is dropped
        await ws.send(json.dumps({"type": "stop"}))
        assert await until(ws, "end") == [{"type": "end", "reason": "no recognition running"}]


@pytest.mark.ws
@pytest.mark.parametrize(
    ("frames", "reason", "close_code"),
    [
        ([start(encoding="MULAW")], "unsupported_audio_format: encoding 'MULAW' is not supported; use LINEAR16", 1003),
        ([start(sampleRateHz=96000)], "unsupported_audio_format: sample rate must be 8000..48000 Hz, got 96000", 1003),
        (
            [start(sampleRateHz="8 kHz")],  # read as 16000 it garbled the call
            "unsupported_audio_format: sampleRateHz must be a whole number of at most 32 characters, got '8 kHz'",
            1003,
        ),
        (["{oops"], "invalid_message: message is not valid JSON", 1007),
        ([start(), start()], "already_started: a recognition is already running", 1008),
    ],
)
async def test_client_mistakes_answer_error_and_close(
    gw: RunningGateway, frames: list[str], reason: str, close_code: int
) -> None:
    async with ws_connect(gw.ws_url("/v1/audiocodes")) as ws:
        for frame in frames:
            await ws.send(frame)
        result = await read_all(ws)
    assert result.messages[-1] == {"type": "error", "reason": reason}
    assert result.close_code == close_code
    assert gw.gateway.registry.active == 0


@pytest.mark.ws
class TestUpstreamFailures:
    @pytest.fixture
    def sim_config(self) -> SimulatorConfig:
        return SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT, projects=frozenset({"demo"}))

    async def test_unknown_project_answers_error_and_closes(self, gw: RunningGateway) -> None:
        async with ws_connect(gw.ws_url("/v1/audiocodes?project=nope")) as ws:
            await ws.send(start())
            result = await read_all(ws)
        assert result.messages == [
            {"type": "error", "reason": "upstream_rejected: Data Flow rejected the session: project 'nope' not found"}
        ]
        assert result.close_code == 1011


@pytest.mark.ws
class TestUpstreamDropsMidRecognition:
    @pytest.fixture
    def sim_config(self) -> SimulatorConfig:
        return SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT, fault=Fault("abort", 300, "UNAVAILABLE"))

    async def test_error_then_close_1011(self, gw: RunningGateway) -> None:
        async with ws_connect(gw.ws_url("/v1/audiocodes")) as ws:
            await ws.send(start())
            sender = asyncio.create_task(send_frames(ws, bytes(640 * 100), 16000))
            result = await read_all(ws)
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        assert result.messages[0] == {"type": "started"}
        assert result.messages[-1]["type"] == "error"
        assert result.messages[-1]["reason"].startswith("upstream_unavailable: ")
        assert result.close_code == 1011


@pytest.mark.ws
async def test_api_key_and_its_projects_apply_to_every_recognition(simulator: DataflowSimulator) -> None:
    key = API_KEY
    keys = [{"name": "vaic", "sha256": key_digest(key), "projects": ["demo"]}]
    headers = {"Authorization": f"Bearer {key}"}
    async with running_gateway(settings_for(simulator, auth="required", api_keys=keys)) as gw:
        async with ws_connect(gw.ws_url("/v1/audiocodes"), additional_headers=headers) as ws:
            assert (await recognize(ws, "9", 16000, "raw"))[-2]["alternatives"][0]["text"] == "9"
        async with ws_connect(gw.ws_url("/v1/audiocodes?project=other"), additional_headers=headers) as ws:
            await ws.send(start())
            result = await read_all(ws)
    assert result.messages == [
        {"type": "error", "reason": "project_not_allowed: this credential may not run project 'other'"}
    ]
    assert result.close_code == 1008


# --- pure pieces ------------------------------------------------------------------------------------------


def test_start_maps_language_and_conversation_and_drops_context_hints() -> None:
    request, skipper = parse_start(json.loads(start(8000)), project="demo")
    assert (request.project, request.language) == ("demo", "en-US")
    assert request.call_properties == {"ExternalId": "8745555-8f1a-48ba-9ec9-46e90dc5aa18"}
    assert (request.audio.encoding, request.audio.sample_rate, request.audio.channels) == ("pcm16", 8000, 1)
    assert request.settings == {} and request.extra == {}  # sttContextId / sttSpeechContexts: no counterpart
    assert skipper is None
    with pytest.raises(AudioFormatError):
        parse_start({"type": "start", "format": "mp3"}, project="demo")


def test_wav_header_is_skipped_across_frames_and_raw_audio_passes() -> None:
    pcm = signals.to_pcm16(signals.dtmf("1", 8000))
    wav = signals.wav_bytes(signals.dtmf("1", 8000), 8000)
    # A LIST chunk (odd size, padded) before the data chunk, delivered one byte at a time.
    riff = wav[:12] + wav[12:36] + b"LIST" + (3).to_bytes(4, "little") + b"abc\0" + wav[36:]
    skipper = WavHeaderSkipper()
    assert b"".join(skipper.feed(riff[i : i + 1]) for i in range(len(riff))) == pcm
    raw = WavHeaderSkipper()
    assert raw.feed(pcm[:5]) + raw.feed(pcm[5:]) == pcm


def test_results_map_partials_milestones_and_confidence() -> None:
    def event(name: str, data: dict[str, Any]) -> dict[str, Any] | None:
        return render(parse_event({"Name": name, "Channel": 0, "Data": data}))

    assert event("SR Partial", {"Text": "12"}) == {"type": "hypothesis", "alternatives": [{"text": "12"}]}
    assert event("SR Milestone", {"Text": "12", "Confidence": 0.87}) == {
        "type": "recognition", "alternatives": [{"text": "12", "confidence": 0.87}]
    }  # fmt: skip
    # A legacy final: wrapped, lower-case, marked by text_attributes.
    legacy = render(
        parse_event({"event": {"name": "SR Result", "data": {"text": "9", "text_attributes": "recognized"}}})
    )
    assert legacy == {"type": "recognition", "alternatives": [{"text": "9", "confidence": 1.0}]}
    assert event("Speech Started", {}) is None
    assert event("FinalResult", {"Transcript": {"0": "12"}}) is None
