"""Uploads: sniff the container from the first bytes, and parse WAV, AU and headerless audio as a stream.

Pure code, no I/O. The parsers are push parsers: ``feed(bytes)`` returns the audio payload that is
ready, little-endian and in one of the gateway's encodings, so nothing but the header is ever held
(and of a WAV header not the chunks skipped: they are counted off as they arrive).
A WAV or AU header naming a codec other than PCM16/float/G.711 (ADPCM, 24-bit, ...) sets
``needs_decoder`` and the upload goes to :mod:`gateway.audio.decoders` with that header and the rest.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

import numpy as np

from gateway.audio.declared_size import DeclaredSize
from gateway.audio.declared_size import SizeMismatch as SizeMismatch  # uploads import it from here
from gateway.audio.format import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, AudioFormat, Encoding
from gateway.errors import AudioFormatError

SNIFF_BYTES: Final = 12
HEADER_LIMIT: Final = 1024 * 1024  # WAV/AU header bytes (LIST, bext, JUNK ... chunks included) before the audio

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


class PushParser:
    """Takes the header as it arrives, then passes the payload through (byte-swapped if needed).

    A header is read piece by piece (the RIFF header, a chunk header, a ``fmt `` body ...): bytes are
    collected only until the piece they belong to is complete, and the parse resumes there on the next
    feed, so a header costs work linear in its size however it is cut. Skipped bytes are counted off,
    not held; :data:`HEADER_LIMIT` bounds every header byte taken, skipped ones included.
    """

    def __init__(self) -> None:
        self.format: AudioFormat | None = None
        self.needs_decoder = False
        self._held = bytearray()  # the header a decoder would be given (less any chunk skipped)
        self._taken = 0  # header bytes taken so far, skipped ones included
        self._need = 0  # bytes the current piece of the header still has to collect into _part
        self._part = bytearray()
        self._skip = 0  # bytes to count off before the next piece
        self._size: DeclaredSize | None = None  # None: the payload runs to the end of the body
        self._swap = 0  # sample width to byte-swap (big-endian payloads)
        self._tail = b""  # an incomplete sample held for the swap

    @property
    def ready(self) -> bool:
        return self.format is not None or self.needs_decoder

    @property
    def head(self) -> bytes:
        """What a decoder must be given instead of the bytes fed before the payload: all of them, less
        the WAV chunks skipped (metadata a decoder does not need)."""
        return bytes(self._held)

    def feed(self, data: bytes) -> bytes:
        if self.format is None:
            if self.needs_decoder:
                raise RuntimeError("this body goes to a decoder")
            room = HEADER_LIMIT - self._taken
            start = self._parse_head(data[:room])
            if start is None:
                self._taken += min(len(data), room)
                if len(data) > room:
                    raise AudioFormatError(f"no audio data within the first {HEADER_LIMIT} bytes of the header")
                return b""
            if self.needs_decoder:
                self._held += data[start:]
                return b""
            self._held = bytearray()
            data = data[start:]
        return self._payload(data)

    def _parse_head(self, data: bytes) -> int | None:
        """Take the next header bytes; where the payload (or the decoder's part) starts in ``data``, or
        None: all of it was header."""
        pos = 0
        while True:
            skipped = min(self._skip, len(data) - pos)
            self._skip -= skipped
            pos += skipped
            if not self._skip and not self._part:
                pos = self._skim(data, pos)
            take = min(self._need - len(self._part), len(data) - pos)
            self._part += data[pos : pos + take]
            pos += take
            if self._skip or len(self._part) < self._need:
                return None
            part, self._part = bytes(self._part), bytearray()
            self._piece(part)
            if self.ready:
                return pos

    def _piece(self, part: bytes) -> None:
        """Take one complete piece of the header; set what comes next (``_need``, ``_skip``) or the format."""
        raise NotImplementedError

    def _skim(self, data: bytes, pos: int) -> int:
        """Pass over the pieces from ``pos`` on that are skipped unread (``_skip`` keeps what is left of
        the last); where the next piece starts."""
        return pos

    def finish(self) -> bytes:
        """The end of the body: any payload still held back, and a partial sample held for the byte swap (the
        converter reports it: misaligned_audio; it was dropped unsaid)."""
        tail, self._tail = self._tail, b""
        return (self._payload(self._size.finish(), limit=False) if self._size is not None else b"") + tail

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

    def __init__(self) -> None:
        super().__init__()
        self._need = 12  # RIFF, its size, WAVE
        self._stage = "riff"  # what _part holds: "riff", "chunk" (a header), "fmt" (its body) or "pad"
        self._riff_size = 0
        self._fmt: AudioFormat | None = None
        self._fmt_size = 0

    def _piece(self, part: bytes) -> None:
        stage, self._stage, self._need = self._stage, "chunk", 8
        if stage == "riff":
            self._held += part
            self.needs_decoder = part[:4] == b"RIFX"  # big-endian RIFF: rare enough to leave to the decoder
            self._riff_size = struct.unpack_from("<I", part, 4)[0]
        elif stage == "chunk":
            self._chunk(part[:4], struct.unpack_from("<I", part, 4)[0], part)
        elif stage == "fmt":
            if len(part) >= 20 and part[:2] == b"\xfe\xff" and part[18:20] not in (b"\0\0", part[14:16]):
                # wValidBitsPerSample is informational: FFmpeg took it for the width (24-in-32 decoded as noise).
                part = part[:18] + part[14:16] + part[20:]
            self._held += part
            self._fmt = self._parse_fmt(part)
            self.needs_decoder = self._fmt is None
            self._stage, self._need = "pad", self._fmt_size & 1
        else:
            self._held += part  # a pad byte: a decoder reads the chunks after it in step

    def _skim(self, data: bytes, pos: int) -> int:
        # Chunks to skip read in place, a few lines each: a header made long of tiny chunks stays cheap.
        if self._stage != "chunk":
            return pos
        while pos + 8 <= len(data) and data[pos : pos + 4] not in (b"data", b"fmt "):
            size = int.from_bytes(data[pos + 4 : pos + 8], "little")
            pos += 8 + size + (size & 1)
        self._skip = max(pos - len(data), 0)
        return min(pos, len(data))

    def _chunk(self, chunk: bytes, size: int, header: bytes) -> None:
        if chunk == b"data":
            if self._fmt is None:
                raise AudioFormatError("WAV data chunk before its fmt chunk")
            self.format = self._fmt
            unknown = size == _UNKNOWN_SIZE or (size == 0 and self._riff_size in (0, _UNKNOWN_SIZE))
            if not unknown:  # streaming writers leave sizes open (0 or all ones): read to the end
                self._size = DeclaredSize(size, chunks_may_follow=True)
        elif chunk == b"fmt ":
            self._held += header
            self._stage, self._need, self._fmt_size = "fmt", size, size
        else:
            self._skip = size + (size & 1)  # counted off as it arrives, never held

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

    def __init__(self) -> None:
        super().__init__()
        self._need = 24
        self._fmt: AudioFormat | None = None
        self._declared = _UNKNOWN_SIZE
        self._header_read = False

    def _piece(self, part: bytes) -> None:
        self._held += part
        if self._header_read:  # the annotation is over: the audio starts
            self.format, self.needs_decoder = self._fmt, self._fmt is None
            if self.format is not None and self._declared != _UNKNOWN_SIZE:
                self._size = DeclaredSize(self._declared, chunks_may_follow=False)  # AU has nothing after its audio
            return
        self._header_read = True
        offset, self._declared, code, rate, channels = struct.unpack_from(">IIIII", part, 4)
        if offset < 24 or channels < 1 or rate < 1:
            raise AudioFormatError("AU header is inconsistent")
        encoding, width = _AU_CODECS.get(code, (None, 0))
        self._fmt = _native(encoding, rate, channels)
        if self._fmt is None:
            self._need = offset - 24  # a decoder is given the annotation too
        else:
            self._need, self._skip, self._swap = 0, offset - 24, width if width > 1 else 0


def parser_for(kind: str | None, hint: RawHint | None) -> PushParser | None:
    """A push parser for the sniffed container (or a declared headerless format); None: a decoder's job."""
    if kind == "wav":
        return WavParser()
    if kind == "au":
        return AuParser()
    if kind is None and hint is not None:
        return RawParser(hint)
    return None
