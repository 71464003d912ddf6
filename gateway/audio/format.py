"""Audio formats: what a stream of audio bytes is (encoding, sample rate, channels) and its names.

Pure code, no I/O and no numpy: every layer (adapters, session, upstream, uploads) names formats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal, get_args

from gateway.errors import AudioFormatError
from gateway.errors.quoting import quote

Encoding = Literal["pcm16", "f32", "mulaw", "alaw"]
ENCODINGS: Final[frozenset[str]] = frozenset(get_args(Encoding))
MIN_SAMPLE_RATE: Final = 8000
MAX_SAMPLE_RATE: Final = 48000

_WIDTHS: Final[dict[str, int]] = {"pcm16": 2, "f32": 4, "mulaw": 1, "alaw": 1}

DATAFLOW_ENCODINGS: dict[str, Encoding] = {"pcm": "pcm16", "ulaw": "mulaw", "alaw": "alaw"}
_TO_DATAFLOW: Final[dict[str, str]] = {ours: theirs for theirs, ours in DATAFLOW_ENCODINGS.items()}

_SPELLINGS: Final[dict[str, Encoding]] = {
    **dict.fromkeys(("pcm16", "pcm", "linear16", "s16le", "l16", "pcm_s16le"), "pcm16"),
    **dict.fromkeys(("f32", "float32", "f32le", "pcm_f32le"), "f32"),
    **dict.fromkeys(("mulaw", "ulaw", "u-law", "pcmu", "g711u", "pcm_mulaw"), "mulaw"),
    **dict.fromkeys(("alaw", "a-law", "pcma", "g711a", "pcm_alaw"), "alaw"),
}


@dataclass(frozen=True, slots=True)
class AudioFormat:
    encoding: Encoding
    sample_rate: int
    channels: int

    @property
    def sample_width(self) -> int:
        try:
            return _WIDTHS[self.encoding]
        except KeyError:
            raise AudioFormatError(f"unknown audio encoding {quote(self.encoding)}") from None

    @property
    def frame_bytes(self) -> int:
        return self.sample_width * self.channels

    @property
    def bytes_per_second(self) -> int:
        return self.frame_bytes * self.sample_rate

    def bytes_to_ms(self, n: int) -> float:
        return n * 1000.0 / self.bytes_per_second

    def ms_to_bytes(self, ms: float) -> int:
        # The epsilon keeps ms_to_bytes(bytes_to_ms(n)) == n despite float rounding.
        frames = math.floor(ms * self.sample_rate / 1000.0 + 1e-6)
        return max(frames, 0) * self.frame_bytes

    def validate(self) -> AudioFormat:
        if self.encoding not in ENCODINGS:
            raise AudioFormatError(f"unknown audio encoding {quote(self.encoding)}")
        rate_ok = type(self.sample_rate) is int and MIN_SAMPLE_RATE <= self.sample_rate <= MAX_SAMPLE_RATE
        if not rate_ok:
            raise AudioFormatError(
                f"sample rate must be {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz, got {quote(self.sample_rate)}"
            )
        if type(self.channels) is not int or self.channels not in (1, 2):
            raise AudioFormatError(f"channels must be 1 or 2, got {quote(self.channels)}")
        return self


def to_dataflow_encoding(encoding: Encoding) -> str:
    try:
        return _TO_DATAFLOW[encoding]
    except KeyError:
        raise AudioFormatError(f"Data Flow does not accept {quote(encoding)} audio") from None


def parse_encoding(name: str) -> Encoding:
    """A client's name for an encoding; tolerates case, MIME-style ``audio/x-`` prefixes, codec aliases."""
    key = name.strip().lower().removeprefix("audio/").removeprefix("x-")
    try:
        return _SPELLINGS[key]
    except KeyError:
        raise AudioFormatError(f"unknown audio encoding {quote(name)}") from None


def upstream_format_for(client: AudioFormat, encoding: Encoding, sample_rate: int) -> AudioFormat:
    """What Data Flow receives for ``client`` audio: the configured encoding and rate, same channels.

    Telephone-band audio is never upsampled: it would double the bytes and add nothing.
    """
    rate = 8000 if client.sample_rate <= 8000 else sample_rate
    return AudioFormat(encoding, rate, client.channels)
