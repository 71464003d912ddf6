"""Upload container sniffing and the push parsers (WAV, AU, headerless), fed in arbitrary chunks.

Declared errors: ``AudioFormatError`` (415). A parser that took the header must produce a valid
format, never more payload than the body had, and the same payload however the body is cut.
"""

from __future__ import annotations

import struct

from gateway.audio.containers import SNIFF_BYTES, PushParser, RawHint, parser_for, sniff
from gateway.audio.format import AudioFormat
from gateway.errors import AudioFormatError
from tests.fuzz.common import split_points

_HINTS = [None, RawHint(AudioFormat("pcm16", 16000, 1)), RawHint(AudioFormat("pcm16", 8000, 2), big_endian=True),
          RawHint(AudioFormat("f32", 48000, 1), big_endian=True)]  # fmt: skip


def _parse(kind: str | None, hint: RawHint | None, chunks: list[bytes]) -> tuple[PushParser, bytes] | None:
    parser = parser_for(kind, hint)
    if parser is None:
        return None
    out = b""
    try:
        for chunk in chunks:
            if parser.needs_decoder:
                break
            out += parser.feed(chunk)
    except AudioFormatError:
        return None
    return parser, out


def one_input(data: bytes) -> None:
    body, chunks = split_points(data)
    kind = sniff(body[:SNIFF_BYTES])
    strict = sniff(body[:SNIFF_BYTES], weak=False)
    assert strict is None or strict == kind
    hint = _HINTS[data[0] % len(_HINTS)] if data else None
    parsed = _parse(kind, hint if kind is None else None, chunks)
    if parsed is None:
        return
    parser, out = parsed
    if parser.format is not None:
        parser.format.validate()
        assert len(out) <= len(body)
        whole = _parse(kind, hint if kind is None else None, [body])
        assert whole is not None and whole[1] == out and whole[0].format == parser.format  # chunking is invisible


def wav(fmt_tag: int = 1, channels: int = 1, rate: int = 8000, bits: int = 16, payload: bytes = bytes(8)) -> bytes:
    block = channels * bits // 8
    body = b"WAVEfmt " + struct.pack("<IHHIIHH", 16, fmt_tag, channels, rate, rate * block, block, bits)
    body += b"JUNK" + struct.pack("<I", 3) + b"xyz\x00" + b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def seeds() -> list[bytes]:
    au = b".snd" + struct.pack(">IIIII", 28, 8, 3, 8000, 1) + b"info" + bytes(8)
    return [b"\x03" + wav(), b"\x11" + wav(3, 2, 48000, 32), b"\x05" + wav(7, 1, 8000, 8), b"\x07" + au,
            b"\x01" + bytes(64), b"\x09fLaC" + bytes(40), b"\x02" + wav(2, 1, 8000, 4)]  # fmt: skip
