"""Uploads whose channels or container the decoder once read wrong, over real sockets: every channel of a
multichannel recording is heard, 24-bit samples in 32-bit containers are decoded, audio past an
undercounted WAV size is never dropped unsaid, and a big-endian body ending inside a sample says so."""

from __future__ import annotations

import struct

import httpx
import numpy as np
import pytest

from tests.support import signals
from tests.support.harness import RunningGateway
from tests.support.upload_client import URL, pieces

RATE = 8000


async def post(gw: RunningGateway, data: bytes, **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
        return await http.post(URL, content=pieces(data, 16 * 1024), **kwargs)  # type: ignore[arg-type]


def wav(
    data: bytes,
    *,
    channels: int = 1,
    rate: int = RATE,
    bits: int = 16,
    valid_bits: int | None = None,
    mask: int | None = None,
    data_size: int | None = None,
) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1 if mask is None else 0xFFFE, channels, rate, rate * block, block, bits)
    if mask is not None:
        guid = struct.pack("<IHH", 1, 0, 0x10) + bytes.fromhex("800000aa00389b71")  # KSDATAFORMAT_SUBTYPE_PCM
        fmt += struct.pack("<HHI", 22, valid_bits or bits, mask) + guid
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data) if data_size is None else data_size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(("channels", "speaker"), [(3, 2), (6, 3), (8, 3), (4, 3)])
async def test_every_channel_of_a_positionless_multichannel_wav_is_heard(
    gw: RunningGateway, channels: int, speaker: int
) -> None:
    """A WAV names no channel positions: FFmpeg's guess (3 -> 2.1, 6 -> 5.1, 8 -> 7.1) dropped the channel it
    took for LFE from its mix (the digits in it were never heard) and weighted the others by place."""
    speech = signals.utterances(["159"], RATE, amplitude=0.9)
    audio = np.zeros((len(speech), channels), np.float32)
    audio[:, speaker] = speech
    response = await post(gw, signals.wav_bytes(audio, RATE))
    assert response.status_code == 200, response.text
    assert response.json()["transcript"] == {"0": "159"}


async def test_24_bit_samples_in_32_bit_containers_are_decoded(gw: RunningGateway) -> None:
    """WAVE_FORMAT_EXTENSIBLE, wBitsPerSample 32, wValidBitsPerSample 24 (left-justified): FFmpeg took the valid
    bits for the sample width and decoded noise (an empty transcript)."""
    x = signals.utterances(["123", "456"], 16000).astype(np.float64)
    i24 = np.clip(np.rint(x * 2**23), -(2**23), 2**23 - 1).astype("<i4")
    response = await post(gw, wav((i24 << 8).tobytes(), rate=16000, bits=32, valid_bits=24, mask=4))
    assert response.status_code == 200, response.text
    assert response.json()["transcript"] == {"0": "123 456"}


async def test_audio_past_an_undercounted_size_is_never_dropped_silently(gw: RunningGateway) -> None:
    """The audio right after the declared size reads like a chunk id ('Ra7z'): any four letters passed for one,
    and half the audio vanished with no warning."""
    audio = np.random.default_rng(11).integers(-20000, 20000, 16000).astype("<i2")
    audio[8000:8002] = np.frombuffer(b"Ra7z", "<i2")
    response = await post(gw, wav(audio.tobytes(), rate=16000, data_size=16000))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["audioMs"] == 1000.0 or any(w["code"] == "header_size_mismatch" for w in body["warnings"]), body


async def test_a_big_endian_body_ending_inside_a_sample_says_so(gw: RunningGateway) -> None:
    """The byte swap held the stray byte back and never passed it on: dropped with no warning."""
    x = np.random.default_rng(2).integers(-20000, 20000, 16000).astype(">i2")
    response = await post(gw, x.tobytes() + b"\x07", headers={"Content-Type": "audio/L16;rate=16000"})
    assert response.status_code == 200, response.text
    assert [w["code"] for w in response.json()["warnings"]] == ["misaligned_audio"]


@pytest.mark.parametrize(
    ("mask", "heard"),
    [(0x3, {"0": "159", "1": "246"}), (0xC, {"0": "159", "1": "246"}), (0x30, {"0": "159", "1": "246"}),
     (0x8, {"0": "159"}), (0x1, {"0": "159"})],
    ids=["FL|FR", "FC|LFE", "BL|BR", "LFE", "FL"],
)  # fmt: skip
async def test_one_or_two_channels_are_heard_whatever_positions_the_file_names(
    gw: RunningGateway, mask: int, heard: dict[str, str]
) -> None:
    """A WAVE_FORMAT_EXTENSIBLE channel mask names positions, and FFmpeg's resampler mixed by them into the
    gateway's mono or stereo: FC|LFE put the front centre in both channels and dropped LFE (the second party
    never heard), BL|BR had no mix at all (415), and a mono LFE file was silence. One or two channels are
    each a party, wherever the file says its microphone stood."""
    channels = len(heard)
    speech = [signals.utterances([digits], RATE, amplitude=0.9) for digits in heard.values()]
    audio = np.zeros((max(len(s) for s in speech), channels), np.float32)
    for channel, samples in enumerate(speech):
        audio[: len(samples), channel] = samples
    i24 = np.clip(np.rint(audio * 2**23), -(2**23), 2**23 - 1).astype("<i4")  # 24-bit: FFmpeg decodes it
    pcm = np.frombuffer(i24.tobytes(), np.uint8).reshape(-1, 4)[:, :3].tobytes()
    response = await post(gw, wav(pcm, channels=channels, bits=24, mask=mask))
    assert response.status_code == 200, response.text
    assert response.json()["transcript"] == heard
