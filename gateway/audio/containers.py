"""Uploads: sniff the container from the first bytes, and parse WAV, AU and headerless audio as a stream.

Pure code, no I/O. The parsers are push parsers: ``feed(bytes)`` returns the audio payload that is
ready, little-endian and in one of the gateway's encodings, so nothing but the header is ever held.
A WAV or AU header naming a codec other than PCM16/float/G.711 (ADPCM, 24-bit, ...) sets
``needs_decoder`` and the upload goes to :mod:`gateway.decoders` with the bytes seen so far.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

import numpy as np

from gateway.audio.format import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, AudioFormat, Encoding
from gateway.errors import AudioFormatError

SNIFF_BYTES: Final = 12
HEADER_LIMIT: Final = 1024 * 1024  # WAV/AU headers (with LIST, bext, JUNK ... chunks) held at most

# What ffmpeg calls the demuxer for each sniffed container (WAV/AU only when the codec needs it).
DEMUXERS: Final[dict[str, str]] = {
    "wav": "wav", "rf64": "wav", "au": "au", "flac": "flac", "ogg": "ogg", "mp3": "mp3", "aac": "aac",
    "matroska": "matroska", "aiff": "aiff", "amr": "amr", "caf": "caf", "mp4": "mov",
}  # fmt: skip

_WAV_CODECS: Final[dict[tuple[int, int], Encoding]] = {
    (1, 16): "pcm16",
    (3, 32): "f32",
    (6, 8): "alaw",
    (7, 8): "mulaw",
}
_WAV_EXTENSIBLE: Final = 0xFFFE
_AU_CODECS: Final[dict[int, tuple[Encoding, int]]] = {1: ("mulaw", 1), 3: ("pcm16", 2), 6: ("f32", 4), 27: ("alaw", 1)}
_UNKNOWN_SIZE: Final = 0xFFFFFFFF


def sniff(head: bytes, *, weak: bool = True) -> str | None:
    """The container of a body from its first :data:`SNIFF_BYTES` bytes, or None (headerless or unknown).

    ``weak`` also tries MPEG frame sync (MP3/AAC without tags), which raw audio could imitate; it is
    off when the client declared a headerless encoding.
    """
    magic = head[:4]
    if magic in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
        return "wav"
    if magic in (b"RF64", b"BW64"):
        return "rf64"
    if magic == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    strong = {b".snd": "au", b"fLaC": "flac", b"OggS": "ogg", b"\x1aE\xdf\xa3": "matroska", b"caff": "caf"}
    if magic in strong:
        return strong[magic]
    if head[:3] == b"ID3":
        return "mp3"
    if head[:5] == b"#!AMR":
        return "amr"
    if head[4:8] == b"ftyp":
        return "mp4"
    if weak and len(head) >= 4 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        layer, bitrate, rate = (head[1] >> 1) & 3, head[2] >> 4, (head[2] >> 2) & 3
        if layer == 0 and head[1] & 0xF6 == 0xF0:
            return "aac"  # ADTS
        if layer != 0 and bitrate not in (0, 15) and rate != 3:
            return "mp3"
    return None


@dataclass(frozen=True, slots=True)
class RawHint:
    """How a headerless body is encoded (query parameters, Content-Type or the Parameters' Audio)."""

    format: AudioFormat
    big_endian: bool = False  # audio/L16 is network byte order (RFC 3551)


@dataclass(frozen=True, slots=True)
class SizeMismatch:
    """A container header whose audio size disagrees with the audio the body holds (all of it was sent)."""

    container: str
    declared_bytes: int
    actual_bytes: int


class _DeclaredSize:
    """The audio a header declares against what the body holds. Past the declared size, a RIFF chunk
    (``LIST``, ``id3 `` …) is metadata and ignored; anything else is audio the header undercounted (a
    writer that never patched its sizes), and goes on being read — never dropped silently."""

    def __init__(self, declared: int, *, chunks_may_follow: bool) -> None:
        self.declared = declared
        self._remaining = declared
        self._chunks_may_follow = chunks_may_follow
        self._after = b""  # the first bytes past the declared size, until they show what follows
        self._beyond: str | None = None  # "chunk" (ignored) or "audio" (read on)
        self.actual = 0

    def take(self, data: bytes) -> bytes:
        if self._beyond == "audio":
            self.actual += len(data)
            return data
        if self._beyond == "chunk":
            return b""
        keep = data[: self._remaining]
        self._remaining -= len(keep)
        self.actual += len(keep)
        if self._remaining or len(keep) == len(data):
            return keep
        self._after += data[len(keep) :]
        if len(self._after) >= 8 and _chunk_name(self._after[:4]):
            return keep + self._decide(self._after[:4])
        if len(self._after) < (self.declared & 1) + 8:
            return keep
        return keep + self._decide(*self._names())

    def _names(self) -> tuple[bytes, bytes]:
        """What would be the next chunk's id, without and with the pad byte RIFF puts after an odd size
        (some writers leave it out)."""
        pad = self.declared & 1
        return self._after[:4], self._after[pad : pad + 4]

    def _decide(self, *names: bytes) -> bytes:
        if self._chunks_may_follow and any(_chunk_name(name) for name in names):
            self._beyond, self._after = "chunk", b""
            return b""
        self._beyond = "audio"
        rest, self._after = self._after, b""
        self.actual += len(rest)
        return rest

    def finish(self) -> bytes:
        """At the end of the body: what is left undecided is audio unless it is a lone pad byte."""
        if self._beyond is None and len(self._after) > (self.declared & 1):
            return self._decide(*self._names())
        return b""

    @property
    def mismatch(self) -> bool:
        return self.actual != self.declared


def _chunk_name(name: bytes) -> bool:
    """Four bytes that read as a RIFF chunk id (``LIST``, ``id3 ``, ``cue `` …), not as audio."""
    return len(name) == 4 and name.isascii() and name[:1].isalpha() and all(c == 0x20 or chr(c).isalnum() for c in name)


class PushParser:
    """Holds the header until the payload starts, then passes the payload through (byte-swapped if needed)."""

    def __init__(self) -> None:
        self.format: AudioFormat | None = None
        self.needs_decoder = False
        self._head = bytearray()
        self._size: _DeclaredSize | None = None  # None: the payload runs to the end of the body
        self._swap = 0  # sample width to byte-swap (big-endian payloads)
        self._tail = b""  # an incomplete sample held for the swap

    @property
    def ready(self) -> bool:
        return self.format is not None or self.needs_decoder

    @property
    def head(self) -> bytes:
        """Every byte fed before the payload started (what a decoder must be given instead)."""
        return bytes(self._head)

    def feed(self, data: bytes) -> bytes:
        if self.format is None:
            if self.needs_decoder:
                raise RuntimeError("this body goes to a decoder")
            self._head += data
            if len(self._head) > HEADER_LIMIT:
                raise AudioFormatError(f"no audio data within the first {HEADER_LIMIT} bytes of the header")
            start = self._parse_head(bytes(self._head))
            if start is None or self.needs_decoder:
                return b""
            data, self._head = bytes(self._head[start:]), bytearray()
        return self._payload(data)

    def _parse_head(self, head: bytes) -> int | None:
        """Set ``format`` (or ``needs_decoder``) and return where the payload starts; None: need more bytes."""
        raise NotImplementedError

    def finish(self) -> bytes:
        """The end of the body: any payload still held back."""
        return self._payload(self._size.finish(), limit=False) if self._size is not None else b""

    def size_mismatch(self, container: str) -> SizeMismatch | None:
        size = self._size
        return SizeMismatch(container, size.declared, size.actual) if size is not None and size.mismatch else None

    def _payload(self, data: bytes, *, limit: bool = True) -> bytes:
        if limit and self._size is not None:
            data = self._size.take(data)
        if not self._swap or not data:
            return data
        data = self._tail + data
        cut = len(data) - len(data) % self._swap
        self._tail = data[cut:]
        dtype = ">i2" if self._swap == 2 else ">f4"
        swapped: bytes = np.frombuffer(data[:cut], dtype).byteswap().tobytes()
        return swapped


class RawParser(PushParser):
    def __init__(self, hint: RawHint) -> None:
        super().__init__()
        self.format = hint.format
        self._swap = hint.format.sample_width if hint.big_endian and hint.format.sample_width > 1 else 0


def _native(encoding: Encoding | None, rate: int, channels: int) -> AudioFormat | None:
    """The format if the gateway converts it itself, None if a decoder must (other rates, >2 channels)."""
    if encoding is None or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE or channels not in (1, 2):
        return None
    return AudioFormat(encoding, rate, channels)


class WavParser(PushParser):
    """RIFF/WAVE: ``fmt `` then ``data``; other chunks before ``data`` are skipped, after it ignored."""

    def _parse_head(self, head: bytes) -> int | None:
        if len(head) < 12:
            return None
        if head[:4] == b"RIFX":  # big-endian RIFF: rare enough to leave to the decoder
            self.needs_decoder = True
            return 0
        riff_size = struct.unpack_from("<I", head, 4)[0]
        pos, fmt = 12, None
        while pos + 8 <= len(head):
            chunk, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
            body = pos + 8
            if chunk == b"data":
                if fmt is None:
                    raise AudioFormatError("WAV data chunk before its fmt chunk")
                self.format = fmt
                unknown = size == _UNKNOWN_SIZE or (size == 0 and riff_size in (0, _UNKNOWN_SIZE))
                if not unknown:  # streaming writers leave sizes open (0 or all ones): read to the end
                    self._size = _DeclaredSize(size, chunks_may_follow=True)
                return body
            if chunk == b"fmt ":
                if body + size > len(head):
                    return None
                fmt = self._parse_fmt(head[body : body + size])
                if fmt is None:
                    self.needs_decoder = True
                    return 0
            pos = body + size + (size & 1)
        return None

    def _parse_fmt(self, fmt: bytes) -> AudioFormat | None:
        if len(fmt) < 16:
            raise AudioFormatError("WAV fmt chunk is too short")
        tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", fmt)
        if tag == _WAV_EXTENSIBLE and len(fmt) >= 26:
            tag = struct.unpack_from("<H", fmt, 24)[0]  # first two bytes of the sub-format GUID
        encoding = _WAV_CODECS.get((tag, bits))
        if channels < 1 or rate < 1 or (encoding is not None and block_align != channels * bits // 8):
            raise AudioFormatError("WAV fmt chunk is inconsistent")
        return _native(encoding, rate, channels)


class AuParser(PushParser):
    """Sun/NeXT AU (``.snd``): big-endian header; 16-bit and float payloads are big-endian too."""

    def _parse_head(self, head: bytes) -> int | None:
        if len(head) < 24:
            return None
        offset, size, code, rate, channels = struct.unpack_from(">IIIII", head, 4)
        if offset < 24 or channels < 1 or rate < 1:
            raise AudioFormatError("AU header is inconsistent")
        if len(head) < offset:
            return None
        encoding, width = _AU_CODECS.get(code, (None, 0))
        fmt = _native(encoding, rate, channels)
        if fmt is None:
            self.needs_decoder = True
            return 0
        self.format = fmt
        if size != _UNKNOWN_SIZE:
            self._size = _DeclaredSize(size, chunks_may_follow=False)  # AU has nothing after its audio
        self._swap = width if width > 1 else 0
        return int(offset)


def parser_for(kind: str | None, hint: RawHint | None) -> PushParser | None:
    """A push parser for the sniffed container (or a declared headerless format); None: a decoder's job."""
    if kind == "wav":
        return WavParser()
    if kind == "au":
        return AuParser()
    if kind is None and hint is not None:
        return RawParser(hint)
    return None
