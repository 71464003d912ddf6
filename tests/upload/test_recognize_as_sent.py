"""Uploads as real clients send them: a Data Flow HTTP batch multipart whose Parameters name the
encoding (the WAV header is the truth), parts in either order (an Audio part that comes first is
spooled until the Parameters arrive), and WAV/AU headers whose sizes disagree with the body (read as
the body is, with a ``header_size_mismatch`` warning — never a silent drop)."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.simulator.server import DataflowSimulator
from gateway.upload.body import SPOOL_MEMORY_BYTES
from tests.support import signals
from tests.support.audio_files import au_mulaw
from tests.support.harness import GatewayFactory
from tests.support.upload_client import URL, multipart, pieces

GROUPS = ["159", "#0*"]


@pytest.fixture
async def client(gateway_factory: GatewayFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_factory() as gw, httpx.AsyncClient(base_url=gw.http_url, timeout=60) as http:
        yield http


async def upload(client: httpx.AsyncClient, body: bytes, ctype: str) -> dict[str, object]:
    response = await client.post(URL, content=pieces(body, 64 * 1024), headers={"content-type": ctype})
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


def codes(result: dict[str, object]) -> list[str]:
    warnings = result["warnings"]
    assert isinstance(warnings, list)
    return [w["code"] for w in warnings]


@pytest.mark.parametrize("parameters_first", [True, False], ids=["parameters_first", "audio_first"])
async def test_dataflow_style_multipart_naming_the_encoding(
    client: httpx.AsyncClient, simulator: DataflowSimulator, parameters_first: bool
) -> None:
    """Parameters as a Data Flow client writes them (the Start JSON's Audio block, no sample rate) and
    an 8 kHz WAV: the header supplies the rate, the transcript comes back, nothing is refused."""
    wav = signals.wav_bytes(signals.utterances(GROUPS, 8000), 8000)
    params = {"ProjectName": "batch", "Audio": {"Encoding": "pcm"}, "Settings": {"ChannelTags": ["caller"]}}
    parts = [
        ("Parameters", None, "application/json", json.dumps(params).encode()),
        ("Audio", "a.wav", "audio/wav", wav),
    ]
    body, ctype = multipart(parts if parameters_first else parts[::-1])
    result = await upload(client, body, ctype)
    assert result["transcript"] == {"0": "159 #0*"}
    assert codes(result) == []  # the declaration agrees with the header
    assert simulator.records[-1].project == "batch"  # the Parameters applied, whichever came first


async def test_a_declaration_that_disagrees_with_the_header_is_a_warning(client: httpx.AsyncClient) -> None:
    wav = signals.wav_bytes(signals.utterances(GROUPS, 8000), 8000)
    params = json.dumps({"Audio": {"Encoding": "ulaw", "SampleRate": 16000}}).encode()
    body, ctype = multipart([("Parameters", None, "application/json", params), ("Audio", "a.wav", "audio/wav", wav)])
    result = await upload(client, body, ctype)
    assert result["transcript"] == {"0": "159 #0*"}  # the WAV header was used
    assert codes(result) == ["declared_format_mismatch"]
    warnings = result["warnings"]
    assert isinstance(warnings, list)
    assert "encoding ulaw, 16000 Hz" in warnings[0]["message"] and "pcm16 8000 Hz" in warnings[0]["message"]


async def test_an_audio_part_first_is_spooled_past_memory_and_still_whole(
    client: httpx.AsyncClient, simulator: DataflowSimulator
) -> None:
    samples = signals.utterances(GROUPS, 16000, tail_ms=40_000)  # ~44 s at 16 kHz: 1.4 MB, over the memory part
    wav = signals.wav_bytes(samples, 16000)
    assert len(wav) > SPOOL_MEMORY_BYTES
    params = json.dumps({"ProjectName": "spooled"}).encode()
    body, ctype = multipart([("Audio", "a.wav", "audio/wav", wav), ("Parameters", None, "application/json", params)])
    result = await upload(client, body, ctype)
    assert result["transcript"] == {"0": "159 #0*"}
    assert result["audioMs"] == pytest.approx(len(samples) / 16, abs=1)  # every byte of the spooled part
    assert simulator.records[-1].project == "spooled"


def with_data_size(wav: bytes, size: int) -> bytes:
    at = wav.index(b"data") + 4
    return wav[:at] + struct.pack("<I", size) + wav[at + 4 :]


@pytest.mark.parametrize("declared", ["zero", "half", "all_ones"])
async def test_wav_data_size_that_disagrees_with_the_body(client: httpx.AsyncClient, declared: str) -> None:
    samples = signals.utterances(GROUPS, 8000)
    wav = signals.wav_bytes(samples, 8000)
    actual = len(samples) * 2
    size = {"zero": 0, "half": actual // 2, "all_ones": 0xFFFFFFFF}[declared]
    result = await upload(client, with_data_size(wav, size), "audio/wav")
    assert result["transcript"] == {"0": "159 #0*"}  # the whole body was read
    assert result["audioMs"] == pytest.approx(len(samples) / 8, abs=1)
    if declared == "all_ones":
        assert codes(result) == []  # "unknown", as streaming writers say: nothing disagrees
        return
    warnings = result["warnings"]
    assert isinstance(warnings, list)
    assert [(w["code"], w["declaredBytes"], w["actualBytes"]) for w in warnings] == [
        ("header_size_mismatch", size, actual)
    ]


async def test_wav_with_a_trailing_chunk_after_its_data_is_not_a_mismatch(client: httpx.AsyncClient) -> None:
    samples = signals.utterances(GROUPS, 8000)
    info = b"INFOISFT" + struct.pack("<I", 6) + b"tests\x00"
    wav = signals.wav_bytes(samples, 8000) + b"LIST" + struct.pack("<I", len(info)) + info
    result = await upload(client, wav, "audio/wav")
    assert result["transcript"] == {"0": "159 #0*"}
    assert result["audioMs"] == pytest.approx(len(samples) / 8, abs=1)  # the LIST chunk is not audio
    assert codes(result) == []


async def test_a_truncated_wav_says_how_much_was_missing(client: httpx.AsyncClient) -> None:
    samples = signals.utterances(GROUPS, 8000)
    wav = signals.wav_bytes(samples, 8000)
    cut = wav[: len(wav) - 1600]  # the last 100 ms never arrived
    result = await upload(client, cut, "audio/wav")
    warnings = result["warnings"]
    assert isinstance(warnings, list)
    assert [(w["code"], w["declaredBytes"], w["actualBytes"]) for w in warnings] == [
        ("header_size_mismatch", len(samples) * 2, len(samples) * 2 - 1600)
    ]


async def test_au_size_smaller_than_the_body_reads_everything(client: httpx.AsyncClient) -> None:
    samples = signals.utterances(GROUPS, 8000)
    au = bytearray(au_mulaw(samples, 8000))
    struct.pack_into(">I", au, 8, 100)  # the header says 100 bytes of audio
    result = await upload(client, bytes(au), "audio/basic")
    assert result["transcript"] == {"0": "159 #0*"}
    warnings = result["warnings"]
    assert isinstance(warnings, list)
    assert [(w["code"], w["declaredBytes"], w["actualBytes"]) for w in warnings] == [
        ("header_size_mismatch", 100, len(samples))
    ]


async def test_audio_held_before_its_parameters_is_bounded_for_all_uploads_together(
    gateway_factory: GatewayFactory,
) -> None:
    """Each upload's spooled Audio part was bounded by GATEWAY_MAX_UPLOAD_BYTES alone (1 GiB): a few
    clients sending Audio first and Parameters never filled /tmp (a 64 MiB emptyDir, or a tmpfs in RAM).
    With GATEWAY_UPLOAD_SPOOL_BYTES at 3 MiB, one upload holding 2.2 MiB leaves no room for a second
    (413, saying to send Parameters first), an upload with Parameters first is not affected, the held one
    finishes whole once its Parameters come, and the room comes back."""
    samples = signals.utterances(GROUPS, 16000, tail_ms=70_000)
    wav = signals.wav_bytes(samples, 16000)
    assert 2 * 1024**2 < len(wav) < 3 * 1024**2
    params = json.dumps({"ProjectName": "spooled"}).encode()
    body, ctype = multipart([("Audio", "a.wav", "audio/wav", wav), ("Parameters", None, "application/json", params)])
    cut = body.index(b'name="Parameters"')
    cut = body.rindex(b"--dfgw-b0undary", 0, cut)
    release = asyncio.Event()

    async def held_body() -> AsyncIterator[bytes]:
        async for piece in pieces(body[:cut], 64 * 1024):
            yield piece
        await release.wait()
        yield body[cut:]

    async with gateway_factory(upload_spool_bytes=3 * 1024**2) as gw:
        spool = gw.gateway.upload_spool
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=60) as http:
            held = asyncio.create_task(http.post(URL, content=held_body(), headers={"content-type": ctype}))
            async with asyncio.timeout(10):
                while spool.bytes < 2 * 1024**2:
                    await asyncio.sleep(0.02)
            refused = await http.post(URL, content=pieces(body, 64 * 1024), headers={"content-type": ctype})
            assert refused.status_code == 413, refused.text
            error = refused.json()["error"]
            assert error["code"] == "upload_too_large" and "send the Parameters part first" in error["message"]
            first, _ = multipart(
                [("Parameters", None, "application/json", params), ("Audio", "a.wav", "audio/wav", wav)]
            )
            assert (await upload(http, first, ctype))["transcript"] == {"0": "159 #0*"}
            release.set()
            answer = await held
            assert answer.status_code == 200, answer.text
            assert answer.json()["transcript"] == {"0": "159 #0*"}
            assert answer.json()["audioMs"] == pytest.approx(len(samples) / 16, abs=1)
            assert spool.bytes == 0
            assert (await upload(http, body, ctype))["transcript"] == {"0": "159 #0*"}  # the room came back
            assert spool.bytes == 0
