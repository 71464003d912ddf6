"""Uploads with more than two channels, over real sockets to a gateway in this process: every count
up to ``ffmpeg_policy.MAX_CHANNELS`` is mixed to mono and recognised by the simulator.

FFmpeg mixes only counts it has a default layout for (1..8, 10, 12, 14, 16, 24); a WAV of 9, 11 or 32
channels was a 415 ("Invalid argument", 32: "at most 24") before gateway/audio/mixdown.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import numpy as np
import pytest

from gateway.audio import ffmpeg_policy
from tests.support import hostile_audio, signals
from tests.support.harness import RunningGateway
from tests.support.upload_client import URL, no_decoder_thread_left, pieces

RATE = 8000


@pytest.fixture
def gw_teardown() -> Callable[[], Awaitable[None]]:
    return no_decoder_thread_left


async def post(gw: RunningGateway, data: bytes) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
        return await http.post(URL, content=pieces(data, 16 * 1024))


def in_every_channel(samples: np.typing.NDArray[np.float32], channels: int) -> np.typing.NDArray[np.float32]:
    return np.repeat(samples.reshape(-1, 1), channels, axis=1)


@pytest.mark.parametrize(
    ("channels", "encoding"), [(9, "pcm16"), (11, "pcm16"), (32, "pcm16"), (9, "mulaw"), (13, "alaw"), (9, "u8")]
)
async def test_channel_counts_ffmpeg_has_no_layout_for_are_recognised(
    gw: RunningGateway, channels: int, encoding: str
) -> None:
    samples = signals.utterances(["159", "#0*"], RATE)
    response = await post(gw, signals.wav_bytes(in_every_channel(samples, channels), RATE, encoding))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["transcript"] == {"0": "159 #0*"}  # one mono channel: the same digits in all averaged
    assert body["audioMs"] == pytest.approx(len(samples) * 1000 / RATE, abs=1)


async def test_the_mix_is_the_mean_of_all_channels(gw: RunningGateway) -> None:
    """A digit in one of nine channels comes through at 1/9 of its level: "1" at 0.5 (-12 dBFS) lands at
    -31 dBFS, above the simulator's -35 dBFS threshold; "2" at 0.15 lands at -42 dBFS, below it (a
    sum would keep both, channel 0 alone neither)."""
    loud = signals.utterances(["1"], RATE, amplitude=0.5)
    quiet = signals.utterances(["2"], RATE, amplitude=0.15)
    audio = np.zeros((len(loud) + len(quiet), 9), np.float32)
    audio[: len(loud), 4] = loud
    audio[len(loud) :, 7] = quiet
    response = await post(gw, signals.wav_bytes(audio, RATE))
    assert response.status_code == 200, response.text
    assert response.json()["transcript"] == {"0": "1"}


async def test_a_count_above_the_maximum_is_refused_naming_it(gw: RunningGateway) -> None:
    over = ffmpeg_policy.MAX_CHANNELS + 1
    assert over == 65  # 64: seventh-order ambisonics
    response = await post(gw, hostile_audio.wav_claiming(RATE, over, frames=1000))
    assert response.status_code == 415, response.text
    message = response.json()["error"]["message"]
    assert "65 channels" in message and "at most 64" in message


def test_a_decoded_frame_is_bounded() -> None:
    # 64 channels x 65536 samples of float (16 MiB): a 64-channel WAV at 768 kHz, the largest taken
    ffmpeg_policy.check_frame(64, 65536)
    with pytest.raises(ffmpeg_policy.Refused, match="64 channels x 65537 samples"):
        ffmpeg_policy.check_frame(64, 65537)
