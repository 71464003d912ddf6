"""WAV/AU headers cost work linear in their size and little per byte received, and skipped chunks are
counted off, not held: a header of many small chunks, dribbled in, must not re-parse what came before.

Work is counted as lines run in the parsers (tests/audio/work.py), memory with tracemalloc: both are
deterministic, so the bounds hold on any machine."""

from __future__ import annotations

import struct

import pytest

from gateway.audio.containers import HEADER_LIMIT, AuParser, PushParser, WavParser
from gateway.audio.format import AudioFormat
from gateway.errors import AudioFormatError
from tests.audio.work import lines_run
from tests.support.work import peak_while

FMT = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
JUNK = b"JUNK\0\0\0\0"  # an empty chunk: the cheapest way to make a header long
PAYLOAD = bytes(range(256)) * 4
LIMIT_MESSAGE = f"no audio data within the first {HEADER_LIMIT} bytes of the header"


def junk_wav(payload_start: int, *, junk_first: bool = False) -> bytes:
    """A WAV header ending in a data chunk's header at ``payload_start``: RIFF/WAVE, fmt and JUNK chunks."""
    total = payload_start - 12 - len(FMT) - 8  # even: RIFF chunks are
    junk = JUNK * (total // 8 - 1) + b"JUNK" + struct.pack("<I", total % 8) + bytes(total % 8)
    head = b"RIFF\0\0\0\0WAVE" + (junk + FMT if junk_first else FMT + junk)
    return head + b"data" + struct.pack("<I", len(PAYLOAD))


def feed_pieces(parser: PushParser, data: bytes, piece: int) -> bytes:
    return b"".join(parser.feed(data[i : i + piece]) for i in range(0, len(data), piece))


def header_lines(payload_start: int, piece: int) -> int:
    """Lines run for a WAV whose header is ``payload_start`` bytes of JUNK, fed ``piece`` bytes at a time."""
    parser = WavParser()
    with lines_run() as lines:
        out = feed_pieces(parser, junk_wav(payload_start) + PAYLOAD, piece)
    assert out == PAYLOAD and parser.format == AudioFormat("pcm16", 8000, 1)
    return lines.run


def test_wav_header_work_grows_linearly_with_its_size() -> None:
    small, large = header_lines(4096, 64), header_lines(4 * 4096, 64)
    assert large < 5 * small, (small, large)  # linear: 4x; re-parsing the held header on every feed: 16x


@pytest.mark.parametrize("junk_first", [False, True], ids=["junk_after_fmt", "junk_before_fmt"])
def test_a_chunk_dribbled_in_late_in_a_long_header_costs_little(junk_first: bool) -> None:
    parser = WavParser()
    parser.feed(junk_wav(900 * 1024, junk_first=junk_first)[:-8])  # all but the data chunk
    with lines_run() as lines:
        for _ in range(10):
            assert parser.feed(JUNK) == b""  # the audit's attack: one more chunk every 10 ms
    assert lines.run < 10 * 100, lines.run  # a few dozen lines per chunk; was the whole header's 115000 chunks
    assert parser.feed(b"data" + struct.pack("<I", len(PAYLOAD)) + PAYLOAD) == PAYLOAD


def test_au_annotation_dribbled_in_costs_little() -> None:
    offset = 900 * 1024
    parser = AuParser()
    parser.feed(b".snd" + struct.pack(">IIIII", offset, len(PAYLOAD), 3, 8000, 1) + bytes(offset - 200))
    with lines_run() as lines:
        for _ in range(10):
            assert parser.feed(JUNK) == b""
    assert lines.run < 10 * 100, lines.run
    swapped = b"".join(PAYLOAD[i : i + 2][::-1] for i in range(0, len(PAYLOAD), 2))  # big-endian PCM16
    assert parser.feed(bytes(96) + PAYLOAD) == swapped and parser.format == AudioFormat("pcm16", 8000, 1)


def held_while_feeding(parser: PushParser, data: bytes, piece: int) -> tuple[bytes, int]:
    """(output, the most memory taken meanwhile beyond one piece: what the parser held or copied)."""
    out, peak = peak_while(lambda: feed_pieces(parser, data, piece))
    return out, peak - piece


@pytest.mark.parametrize("junk_first", [False, True], ids=["junk_after_fmt", "junk_before_fmt"])
def test_skipped_wav_chunks_are_not_held(junk_first: bool) -> None:
    out, held = held_while_feeding(WavParser(), junk_wav(900 * 1024, junk_first=junk_first) + PAYLOAD, 4096)
    assert out == PAYLOAD
    assert held < 64 * 1024, held  # was the whole header, and a copy of it on every feed


def test_au_annotation_is_not_held_for_a_format_parsed_here() -> None:
    offset = 900 * 1024
    au = b".snd" + struct.pack(">IIIII", offset, 4, 1, 8000, 1) + bytes(offset - 24) + b"\x01\x02\x03\x04"
    parser = AuParser()
    out, held = held_while_feeding(parser, au, 4096)
    assert out == b"\x01\x02\x03\x04" and parser.format == AudioFormat("mulaw", 8000, 1)
    assert held < 64 * 1024, held


def test_the_header_limit_counts_skipped_bytes() -> None:
    parser = WavParser()  # the payload starts exactly at the limit: accepted
    assert feed_pieces(parser, junk_wav(HEADER_LIMIT), 4096) + parser.feed(PAYLOAD) == PAYLOAD
    with pytest.raises(AudioFormatError, match=LIMIT_MESSAGE):  # two bytes later: the documented error
        feed_pieces(WavParser(), junk_wav(HEADER_LIMIT + 2) + PAYLOAD, 4096)


def test_the_header_limit_is_on_the_header_not_on_one_feed() -> None:
    audio = bytes(HEADER_LIMIT + 2)
    head = junk_wav(4096)[:-4] + struct.pack("<I", len(audio))
    assert WavParser().feed(head + audio) == audio


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"RIFF\0\0\0\0WAVE" + JUNK * 4 + b"data\4\0\0\0abcd", "data chunk before its fmt chunk"),
        (b"RIFF\0\0\0\0WAVE" + JUNK + b"fmt \x04\0\0\0abcd" + b"data", "fmt chunk is too short"),
        (b"RIFF\0\0\0\0WAVE" + b"JUNK\xf0\xff\xff\xff" + bytes(HEADER_LIMIT), LIMIT_MESSAGE),  # a huge chunk
        (b"RIFF\0\0\0\0WAVE" + b"fmt \xf0\xff\xff\xff" + bytes(HEADER_LIMIT), LIMIT_MESSAGE),  # a huge fmt
        (b".snd" + struct.pack(">IIIII", HEADER_LIMIT + 1, 0, 1, 8000, 1) + bytes(HEADER_LIMIT), LIMIT_MESSAGE),
        (b".snd" + struct.pack(">IIIII", 23, 0, 1, 8000, 1), "AU header is inconsistent"),
    ],
    ids=["data_first", "short_fmt", "huge_chunk", "huge_fmt", "huge_au_offset", "au_offset"],
)
@pytest.mark.parametrize("piece", [1, 7, 4096, 1 << 21])
def test_bad_headers_get_the_same_errors_however_they_are_cut(data: bytes, message: str, piece: int) -> None:
    parser = AuParser() if data[:4] == b".snd" else WavParser()
    with pytest.raises(AudioFormatError, match=message):
        feed_pieces(parser, data, max(piece, len(data) // 1000))  # byte by byte only where it is short


@pytest.mark.parametrize("piece", [1, 5, 64, 1000])
@pytest.mark.parametrize("junk", [b"", JUNK * 3 + b"LIST\3\0\0\0abc\0"], ids=["fmt_first", "junk_first"])
def test_a_wav_for_the_decoder_is_handed_over_without_the_chunks_skipped(junk: bytes, piece: int) -> None:
    fmt = b"fmt " + struct.pack("<IHHIIHH", 20, 0x11, 1, 8000, 4055, 256, 4) + b"\2\0\xf9\1"  # IMA ADPCM
    body = b"RIFF\0\0\0\0WAVE" + junk + fmt + b"data\0\0\0\0" + bytes(16)
    parser = WavParser()
    fed = 0
    while not parser.ready:
        assert parser.feed(body[fed : fed + piece]) == b""
        fed += piece
    assert parser.needs_decoder and parser.format is None
    fmt_end = 12 + len(junk) + len(fmt)  # the decoder needs the RIFF header, fmt and all that followed
    assert parser.head == b"RIFF\0\0\0\0WAVE" + fmt + body[fmt_end:fed]
