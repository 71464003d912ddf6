"""Uploads whose channels or container the decoder once read wrong, over real sockets: every channel of a
multichannel recording is heard, 24-bit samples in 32-bit containers are decoded, audio past an
undercounted WAV size is never dropped unsaid, and a big-endian body ending inside a sample says so."""

from __future__ import annotations

import struct

import httpx
import numpy as np
import pytest

from tests.support import audio_files, signals
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


def without_id3(mp3: bytes) -> bytes:
    """An MP3 without its leading ID3v2 tag (its size: four 7-bit bytes)."""
    if mp3[:3] != b"ID3":
        return mp3
    size = (mp3[6] << 21) | (mp3[7] << 14) | (mp3[8] << 7) | mp3[9]
    return mp3[10 + size :]


@pytest.mark.parametrize(
    ("second_rate", "second_channels"), [(22050, 1), (16000, 2)], ids=["rate-changes", "channels-change"]
)
async def test_an_mp3_whose_format_changes_mid_file_is_heard_whole(
    gw: RunningGateway, second_rate: int, second_channels: int
) -> None:
    """Two MP3s joined (a recorder restarted, a playlist saved as one file): the second part's frames had
    another rate or channel count, FFmpeg's resampler refused them, and the upload ended 415 with the
    first part's last decoded audio (up to 32 KiB) never sent. The output keeps the first part's format."""
    first = audio_files.encoded(signals.utterances(["159"], 16000, amplitude=0.9), 16000, "mp3", "libmp3lame")
    second_speech = signals.utterances(["246"], second_rate, amplitude=0.9)
    if second_channels == 2:
        second_speech = np.stack([second_speech, second_speech], axis=1)
    second = without_id3(audio_files.encoded(second_speech, second_rate, "mp3", "libmp3lame"))
    response = await post(gw, first + second)
    assert response.status_code == 200, response.text
    assert response.json()["transcript"] == {"0": "159 246"}


async def test_two_mp3_files_joined_as_they_are_are_heard_whole(gw: RunningGateway) -> None:
    """``cat a.mp3 b.mp3``: the second file's ID3 tag sits mid-stream, FFmpeg's decoder refused the packets
    it made, and the whole upload failed 415 (after its first part had gone to Data Flow). They are skipped
    as FFmpeg's own tool skips them, and the client is told how many."""
    first, second = (
        audio_files.encoded(signals.utterances([digits], 16000, amplitude=0.9), 16000, "mp3", "libmp3lame")
        for digits in ("159", "246")
    )
    assert second[:3] == b"ID3"
    response = await post(gw, first + second)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["transcript"] == {"0": "159 246"}
    (warning,) = body["warnings"]
    assert warning["code"] == "undecodable_audio_skipped" and 1 <= warning["packetsSkipped"] <= 8, warning
