"""The CPU an upload's decoder may spend, over real sockets to a gateway in this process.

A compressed upload's length in audio is bounded (``GATEWAY_MAX_SESSION_S``, the body size), but not
what each second of it costs to decode: 64 channels of WavPack at 768 kHz in Matroska cost 0.34 s of
CPU per second of audio (FLAC 96 kHz 5.1: 0.007, Opus stereo: 0.002), and a 1 GiB body of it holds
~23 minutes: ~8 minutes of a core for one request. ``GATEWAY_UPLOAD_DECODE_CPU_SHARE`` (0.05) ends
such an upload once its decoder has spent more than that per second of audio, counted as if 100 s
were decoded already; the audio before the limit is finalized and its results kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable

import httpx
import pytest

from gateway.audio.decoders import GRACE_AUDIO_S
from gateway.simulator.server import DataflowSimulator
from tests.support import audio_files, hostile_audio, signals
from tests.support.harness import RunningGateway
from tests.support.upload_client import URL, no_decoder_thread_left, pieces

COSTLY = dict(channels=64, rate=768_000)  # ~0.34 s of CPU per second of audio on this machine class
DEFAULT_SHARE = 0.05
SECONDS = 90  # of the costly file: long enough to cross the line on a core that decodes it twice as fast


@pytest.fixture
def gw_teardown() -> Callable[[], Awaitable[None]]:
    return no_decoder_thread_left


def cost(message: str) -> tuple[float, float]:
    """(CPU seconds, audio seconds) from the error's message."""
    found = re.search(r"took ([\d.]+) s of CPU for ([\d.]+) s of audio", message)
    assert found, message
    return float(found[1]), float(found[2])


async def post(gw: RunningGateway, data: bytes, accept: str = "application/json") -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=60) as http:
        return await http.post(URL, content=pieces(data, 64 * 1024), headers={"Accept": accept})


async def test_a_file_costing_more_cpu_than_its_audio_is_cut_with_what_came_before(
    gw: RunningGateway, simulator: DataflowSimulator
) -> None:
    """Defaults: 90 s of the costly file ends part-way (at about 17 s of audio, 6 s of CPU, where it costs
    0.34 s a second; at about 33 s where a faster core decodes it for 0.2 s: the line is 0.05 s a second
    counted from 100 s, so it is crossed at 5 / (cost - 0.05) s of audio, before 90 s at any cost over
    0.11 s a second); on the old code it was decoded to the end and answered 200."""
    assert gw.gateway.settings.upload_decode_cpu_share == DEFAULT_SHARE
    response = await post(gw, hostile_audio.mkv_wavpack_silence(seconds=SECONDS, **COSTLY))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"]["code"] == "audio_too_costly" and body["error"]["retryable"] is False
    cpu_s, audio_s = cost(body["error"]["message"])
    print(f"cut at {audio_s:.1f} s of audio after {cpu_s:.2f} s of CPU")
    assert 1 < audio_s < SECONDS  # cut part-way, not refused at once and not decoded whole
    assert cpu_s <= DEFAULT_SHARE * (audio_s + GRACE_AUDIO_S) + 0.5  # within one block's cost of the line
    assert "0.05 s per second of audio" in body["error"]["message"]
    assert body["audioMs"] == pytest.approx(audio_s * 1000, abs=100)  # all decoded went out (message: 0.1 s)
    assert body["transcript"] == {"0": ""} and "sessionId" in body  # the results before the limit are kept
    assert simulator.records[-1].audio_bytes < SECONDS * 48000 * 2 * 0.9


@pytest.mark.parametrize("gw", [{"upload_decode_cpu_share": 0.005}], indirect=True)
async def test_a_streamed_answer_ends_with_the_limit_and_the_result_so_far(gw: RunningGateway) -> None:
    """At a share of 0.005 (0.5 s of CPU before any audio) 10 s of the costly file stops after ~1.5 s."""
    response = await post(gw, hostile_audio.mkv_wavpack_silence(seconds=10, **COSTLY), "application/x-ndjson")
    assert response.status_code == 200  # the answer had started: the limit is its last line
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[0]["type"] == "started"
    last = lines[-1]
    assert last["type"] == "error" and last["code"] == "audio_too_costly", last
    cpu_s, audio_s = cost(last["message"])
    assert 0 < audio_s < 5 and cpu_s <= 0.005 * (audio_s + GRACE_AUDIO_S) + 0.5
    assert last["result"]["audioMs"] == pytest.approx(audio_s * 1000, abs=100)
    assert not any(line.get("uploadComplete") for line in lines)  # the rest of the file was not decoded


@pytest.mark.parametrize("gw", [{"upload_decode_cpu_share": 0.005}], indirect=True)
async def test_ordinary_compressed_audio_is_far_under_the_limit(gw: RunningGateway) -> None:
    """Opus stereo at 48 kHz costs ~0.002 s per second of audio: recognised whole at a tenth of the
    default share."""
    samples = signals.utterances(["159", "#0*"], 48000)
    opus = audio_files.encoded(samples, 48000, "ogg", "libopus")
    response = await post(gw, opus)
    assert response.status_code == 200, response.text
    assert response.json()["transcript"] == {"0": "159 #0*"}


@pytest.mark.parametrize("gw", [{"upload_decode_cpu_share": 0}], indirect=True)
async def test_a_share_of_zero_turns_the_limit_off(gw: RunningGateway) -> None:
    response = await post(gw, hostile_audio.mkv_wavpack_silence(seconds=4, **COSTLY))
    assert response.status_code == 200, response.text
    assert response.json()["audioMs"] == pytest.approx(4000, abs=50)
