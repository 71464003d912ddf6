"""Container sniffing and the streaming WAV/AU/raw parsers, fed in every possible split."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from gateway.audio.containers import HEADER_LIMIT, AuParser, PushParser, RawHint, RawParser, WavParser, sniff
from gateway.audio.format import AudioFormat
from gateway.errors import AudioFormatError
from tests.support import audio_files, signals

SAMPLES = signals.utterances(["1"], 8000)[:400]  # a short, non-silent stretch


def feed_split(parser: PushParser, data: bytes, cut: int) -> bytes:
    return parser.feed(data[:cut]) + parser.feed(data[cut:])


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"RIFF\0\0\0\0WAVEfmt ", "wav"), (b"RIFX\0\0\0\0WAVEfmt ", "wav"), (b"RF64\xff\xff\xff\xffWAVE", "rf64"),
        (b".snd\0\0\0\x18\0\0\0\0", "au"), (b"fLaC\0\0\0\x22\x10\0\x10\0", "flac"), (b"OggS\0\x02" + bytes(6), "ogg"),
        (b"ID3\x04\0\0\0\0\0\x23TS", "mp3"), (b"\xff\xfb\x90\x64" + bytes(8), "mp3"),
        (b"\xff\xf1\x50\x80" + bytes(8), "aac"),
        (b"\x1aE\xdf\xa3\x9fB\x86\x81\x01B\xf7\x81", "matroska"), (b"FORM\0\0\0\0AIFF", "aiff"),
        (b"#!AMR\n\x04c<\xc7\xf0c", "amr"), (b"caff\0\x01\0\0desc", "caf"), (b"\0\0\0\x1cftypisom", "mp4"),
        (b"\xff" * 12, None),  # mu-law silence must not pass for MPEG frame sync
        (b"\x00\x01" * 6, None), (b"", None),
    ],
)  # fmt: skip
def test_sniff(head: bytes, kind: str | None) -> None:
    assert sniff(head) == kind


def test_weak_sniffing_is_off_for_declared_raw_audio() -> None:
    assert sniff(b"\xff\xfb\x90\x64" + bytes(8), weak=False) is None
    assert sniff(b"fLaC" + bytes(8), weak=False) == "flac"  # strong signatures still count


def test_wav_payload_is_exact_at_every_split() -> None:
    data = audio_files.wav_with_chunks(SAMPLES, 8000)
    payload = signals.to_pcm16(SAMPLES)
    for cut in range(len(data) + 1):
        parser = WavParser()
        assert feed_split(parser, data, cut) == payload, cut  # the trailing LIST chunk is not audio
        assert parser.format == AudioFormat("pcm16", 8000, 1)


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
def test_wav_g711_and_stereo(encoding: str) -> None:
    both = signals.interleave(SAMPLES, -SAMPLES)
    parser = WavParser()
    out = parser.feed(signals.wav_bytes(both, 8000, encoding))
    assert parser.format == AudioFormat(encoding, 8000, 2)  # type: ignore[arg-type]
    assert out == signals.g711_encode(both, encoding)


def test_wav_with_unknown_sizes_runs_to_the_end() -> None:
    data = audio_files.wav_with_chunks(SAMPLES, 8000, streaming_sizes=True)
    parser = WavParser()
    assert parser.feed(data) + parser.feed(b"\x01\x02") == signals.to_pcm16(SAMPLES) + b"\x01\x02"


def test_wav_codecs_the_gateway_does_not_parse_go_to_the_decoder() -> None:
    fmt = struct.pack("<HHIIHH", 0x11, 1, 8000, 4055, 256, 4)  # IMA ADPCM
    data = b"RIFF\0\0\0\0WAVEfmt " + struct.pack("<I", len(fmt)) + fmt + b"data\0\0\0\0"
    parser = WavParser()
    assert parser.feed(data) == b""
    assert parser.needs_decoder and parser.format is None and parser.head == data


@pytest.mark.parametrize(
    "data",
    [
        b"RIFF\0\0\0\0WAVEdata\4\0\0\0abcd",  # data before fmt
        b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0" + struct.pack("<HHIIHH", 1, 1, 8000, 16000, 4, 16) + b"data",  # block align
        b"RIFF\0\0\0\0WAVE" + b"JUNK" + struct.pack("<I", HEADER_LIMIT) + bytes(HEADER_LIMIT),  # header too big
    ],
    ids=["data_first", "inconsistent", "huge_header"],
)
def test_bad_wav_headers(data: bytes) -> None:
    with pytest.raises(AudioFormatError):
        WavParser().feed(data)


def test_au_big_endian_pcm16_is_swapped_at_every_split() -> None:
    pcm = signals.to_int16(SAMPLES)
    data = b".snd" + struct.pack(">IIIII", 28, len(pcm) * 2, 3, 8000, 1) + b"note" + pcm.astype(">i2").tobytes()
    for cut in range(0, len(data) + 1, 7):
        parser = AuParser()
        assert feed_split(parser, data, cut) == pcm.astype("<i2").tobytes(), cut


def test_raw_l16_is_swapped_and_odd_splits_are_carried() -> None:
    pcm = signals.to_int16(SAMPLES)
    parser = RawParser(RawHint(AudioFormat("pcm16", 8000, 1), big_endian=True))
    big = pcm.astype(">i2").tobytes()
    out = b"".join(parser.feed(big[i : i + 3]) for i in range(0, len(big), 3))
    assert np.array_equal(np.frombuffer(out, "<i2"), pcm)
