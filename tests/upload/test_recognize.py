"""POST /v1/recognize: formats, Data Flow's multipart, options. Real uvicorn on port 0, the simulator
over gRPC, httpx as the client; every assertion is on what the simulator decoded (DTMF digits)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.simulator.server import DataflowSimulator
from tests.support import audio_files, signals
from tests.support.harness import GatewayFactory, RunningGateway
from tests.support.settings import SIM_TOKEN
from tests.support.upload_client import URL, multipart, no_decoder_thread_left, pieces

DIGITS = ["159", "#0*"]


@pytest.fixture
async def client(gateway_factory: GatewayFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_factory() as gw, httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
        yield http
    await no_decoder_thread_left()


def milestones(body: dict[str, Any], channel: int = 0) -> list[str]:
    return [e["text"] for e in body["events"] if e["name"] == "SR Milestone" and e["channel"] == channel]


async def recognised(client: httpx.AsyncClient, content: Any, query: str = "", **headers: str) -> dict[str, Any]:
    response = await client.post(URL + query, content=content, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(
    ("encoding", "rate"), [("pcm16", 8000), ("pcm16", 16000), ("mulaw", 8000), ("alaw", 8000), ("pcm16", 44100)]
)
async def test_wav_uploads_are_recognised(
    client: httpx.AsyncClient, simulator: DataflowSimulator, encoding: str, rate: int
) -> None:
    samples = signals.utterances(DIGITS, rate)
    body = await recognised(client, signals.wav_bytes(samples, rate, encoding), **{"content-type": "audio/wav"})
    assert body["transcript"] == {"0": "159 #0*"}
    assert milestones(body) == DIGITS
    assert body["audioMs"] == pytest.approx(len(samples) * 1000 / rate, abs=0.1)
    names = [e["name"] for e in body["events"]]
    assert names.count("Speech Started") == 2 and names[-1] == "FinalResult"
    assert "SR Partial" not in names  # interim results are off by default for uploads
    assert "raw" not in body["events"][0]
    record = simulator.records[-1]
    assert body["dataflowSessionId"] == record.session_id and body["sessionId"]
    assert record.requests == ["finalize"] and record.outcome == "finalized"
    assert record.tokens_seen == [SIM_TOKEN]


async def test_stereo_wav_gives_text_per_channel(client: httpx.AsyncClient) -> None:
    both = signals.interleave(signals.utterances(["11"], 8000), signals.utterances(["2", "3"], 8000))
    params = json.dumps({"Settings": {"ChannelTags": ["customer", "agent"]}})
    body = await recognised(client, signals.wav_bytes(both, 8000, "mulaw"), **{"X-Dataflow-Parameters": params})
    assert body["transcript"] == {"0": "11", "1": "2 3"}
    assert milestones(body, 1) == ["2", "3"]


@pytest.mark.parametrize(
    ("container", "codec", "codec_rate"),
    [
        ("flac", "flac", None),
        ("ogg", "libopus", 48000),
        ("webm", "libopus", 48000),
        ("mp3", "libmp3lame", None),
        ("adts", "aac", None),
        ("aiff", "pcm_s16be", None),
        ("wav", "adpcm_ima_wav", None),  # a WAV codec the gateway does not parse itself: decoded by PyAV
        ("au", "pcm_s24be", None),
    ],
)
async def test_compressed_and_other_formats_are_decoded(
    client: httpx.AsyncClient, container: str, codec: str, codec_rate: int | None
) -> None:
    samples = signals.utterances(DIGITS, 16000)
    data = audio_files.encoded(samples, 16000, container, codec, codec_rate)
    # A misleading Content-Type must not matter: the container is sniffed from the bytes.
    body = await recognised(client, pieces(data, 4000), **{"content-type": "audio/wav"})
    assert body["transcript"] == {"0": "159 #0*"}
    assert body["audioMs"] == pytest.approx(len(samples) / 16, abs=120)  # codecs pad by up to a frame


async def test_mp4_needs_its_index_first(client: httpx.AsyncClient) -> None:
    samples = signals.utterances(["1"] * 100, 16000)  # long enough that the index is beyond FFmpeg's buffer
    faststart = audio_files.encoded(samples, 16000, "mp4", "aac", movflags="+faststart")
    assert (await recognised(client, faststart))["transcript"] == {"0": " ".join(["1"] * 100)}
    index_last = audio_files.encoded(samples, 16000, "mp4", "aac")
    response = await client.post(URL, content=index_last)
    assert response.status_code == 415 and "faststart" in response.json()["error"]["message"]


async def test_stereo_flac(client: httpx.AsyncClient) -> None:
    both = signals.interleave(signals.utterances(["4"], 16000), signals.utterances(["56"], 16000))
    body = await recognised(client, audio_files.encoded(both, 16000, "flac", "flac"))
    assert body["transcript"] == {"0": "4", "1": "56"}


@pytest.mark.parametrize("variant", ["chunks", "streaming_sizes", "extensible", "au"])
async def test_wav_and_au_variants(client: httpx.AsyncClient, variant: str) -> None:
    samples = signals.utterances(["37"], 8000)
    data = {
        "chunks": lambda: audio_files.wav_with_chunks(samples, 8000),
        "streaming_sizes": lambda: audio_files.wav_with_chunks(samples, 8000, streaming_sizes=True),
        "extensible": lambda: audio_files.wav_extensible(samples, 8000),
        "au": lambda: audio_files.au_mulaw(samples, 8000),
    }[variant]()
    body = await recognised(client, pieces(data, 37))  # headers split across tiny body chunks
    assert body["transcript"] == {"0": "37"}
    assert body["audioMs"] == pytest.approx(len(samples) / 8, abs=0.1)  # a trailing LIST chunk is not audio
    assert [e["name"] for e in body["events"]].count("Speech Started") == 1


@pytest.mark.parametrize("declared", ["basic", "l16", "pcmu", "query_alaw", "query_f32", "parameters_audio"])
async def test_headerless_audio_with_a_declared_format(client: httpx.AsyncClient, declared: str) -> None:
    samples = signals.utterances(DIGITS, 16000 if declared in ("l16", "query_f32") else 8000)
    raw: dict[str, tuple[bytes, str, dict[str, str]]] = {
        "basic": (signals.g711_encode(samples, "mulaw"), "", {"content-type": "audio/basic"}),
        # RFC 3551: L16 is big-endian; a byte-order mistake would leave no digit intact.
        "l16": (signals.to_int16(samples).astype(">i2").tobytes(), "", {"content-type": "audio/L16; rate=16000"}),
        "pcmu": (signals.g711_encode(samples, "mulaw"), "", {"content-type": "audio/PCMU"}),
        "query_alaw": (signals.g711_encode(samples, "alaw"), "?encoding=a-law&sampleRate=8000", {}),
        "query_f32": (signals.to_f32(samples), "?encoding=float32&sampleRate=16000&channels=1", {}),
        "parameters_audio": (
            signals.to_pcm16(samples), "",
            {"X-Dataflow-Parameters": json.dumps({"Audio": {"Encoding": "pcm", "SampleRate": 8000}})},
        ),
    }  # fmt: skip
    data, query, headers = raw[declared]
    body = await recognised(client, data, query, **headers)
    assert body["transcript"] == {"0": "159 #0*"}


async def test_interim_and_raw_on_request(client: httpx.AsyncClient) -> None:
    data = signals.wav_bytes(signals.utterances(["428"], 16000), 16000)
    body = await recognised(client, data, "?interim=true&raw=true")
    partials = [e["text"] for e in body["events"] if e["name"] == "SR Partial"]
    assert partials == ["4", "42", "428"]
    assert all(e["raw"]["Name"] == e["name"] for e in body["events"])


async def test_project_and_language_precedence(client: httpx.AsyncClient, simulator: DataflowSimulator) -> None:
    data = signals.wav_bytes(signals.utterances(["1"], 8000), 8000)
    await recognised(client, data, ProjectName="from-header")
    assert simulator.records[-1].project == "from-header"
    params = json.dumps({"ProjectName": "from-parameters", "Language": "tr-TR"})
    await recognised(client, data, **{"X-Dataflow-Parameters": params})
    assert simulator.records[-1].project == "from-parameters"
    await recognised(client, data, "?project=from-query&language=en-US", ProjectName="from-header")
    assert simulator.records[-1].project == "from-query"


async def test_dataflow_http_batch_multipart(client: httpx.AsyncClient, simulator: DataflowSimulator) -> None:
    """A Data Flow HTTP batch client changes only the URL: same headers, same parts, its token ignored."""
    both = signals.interleave(signals.utterances(["12"], 8000), signals.utterances(["34"], 8000))
    parameters = {"Token": "clients-own-dataflow-token", "Tenant": "x", "Language": "en-US",
                  "Settings": {"ChannelTags": ["customer", "agent"]}}  # fmt: skip
    response = await client.post(
        URL,
        files={
            "Parameters": (None, json.dumps(parameters), "application/json"),
            "Audio": ("call.wav", signals.wav_bytes(both, 8000, "alaw"), "audio/wav"),
        },
        headers={"ProjectName": "batch-project", "Tenant": "x"},  # the Authorization header is dropped
    )
    assert response.status_code == 200, response.text
    assert response.json()["transcript"] == {"0": "12", "1": "34"}
    record = simulator.records[-1]
    assert record.project == "batch-project"
    assert record.tokens_seen == [SIM_TOKEN]  # the client's Data Flow token never went upstream


async def test_multipart_streamed_in_small_pieces(client: httpx.AsyncClient) -> None:
    wav = signals.wav_bytes(signals.utterances(DIGITS, 16000), 16000)
    extra = ("Notes", None, "text/plain", b"ignored part")
    body, ctype = multipart(
        [extra, ("Parameters", None, "application/json", b"{}"), ("Audio", "a.wav", "audio/wav", wav)]
    )
    result = await recognised(client, pieces(body, 333), **{"content-type": ctype})
    assert result["transcript"] == {"0": "159 #0*"}


async def test_stereo_raw_upload(gateway_factory: GatewayFactory) -> None:
    both = signals.interleave(signals.utterances(["9"], 16000), signals.utterances(["87"], 16000))
    data = signals.to_pcm16(both)
    async with gateway_factory(upstream_sample_rate_hz=8000) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        body = await recognised(http, data, "?encoding=pcm16&sampleRate=16000&channels=2")
    assert body["transcript"] == {"0": "9", "1": "87"}
    assert body["audioMs"] == pytest.approx(len(both) / 16, abs=0.1)


async def test_silence_only(client: httpx.AsyncClient) -> None:
    body = await recognised(client, signals.wav_bytes(signals.silence(2000, 8000), 8000))
    assert body["transcript"] == {"0": ""}
    assert [e["name"] for e in body["events"]] == ["FinalResult"]


async def test_gateway_is_idle_after_uploads(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory() as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        data = signals.wav_bytes(signals.utterances(["5"], 8000), 8000)
        for _ in range(3):
            await recognised(http, data)
        assert_idle(gw)


def assert_idle(gw: RunningGateway) -> None:
    assert gw.gateway.registry.active == 0
    assert gw.gateway.upstream.active_streams == 0
