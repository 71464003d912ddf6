"""From an upload's byte stream to PCM the Session takes: sniff, then a push parser or a decoder.

The container is recognised from the first bytes, whatever the Content-Type says, and its header is
the truth for its audio. A headerless body needs a declared format (:func:`declared_audio`: query
parameters, ``audio/L16;rate=…``, ``audio/basic`` or the Parameters' ``Audio`` block); without one
it is a 415. A WAV or AU header whose sizes disagree with the body is read as the body is, with a
warning.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.audio.containers import DEMUXERS, SNIFF_BYTES, PushParser, RawHint, SizeMismatch, parser_for, sniff
from gateway.audio.decoders import DecodedSource
from gateway.audio.format import AudioFormat, parse_encoding
from gateway.audio.warnings import AudioWarning
from gateway.dataflow.lenient import declared_int, get
from gateway.errors import AudioFormatError, BadRequest, ErrorCode

_G711: frozenset[str] = frozenset({"mulaw", "alaw"})


class AudioSource(Protocol):
    """Audio of one upload as little-endian PCM/G.711 bytes in ``format``."""

    format: AudioFormat

    def chunks(self) -> AsyncIterator[bytes]: ...

    def warnings(self) -> list[AudioWarning]:
        """What the client should be told about its audio and was not yet (each said once)."""
        ...

    async def aclose(self) -> None: ...


class ParsedSource:
    """WAV, AU or headerless audio: parsed in the event loop as the body arrives (no thread)."""

    def __init__(self, parser: PushParser, kind: str | None, first: bytes, rest: AsyncIterator[bytes]) -> None:
        assert parser.format is not None
        self.format = parser.format
        self.kind = (kind or "raw").upper()
        self._warnings: list[AudioWarning] = []
        self._parser = parser
        self._first = first
        self._rest = rest

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._first:
            yield self._first
            self._first = b""
        async for body in self._rest:  # read to the end even past a WAV data chunk: the body must be consumed
            if data := self._parser.feed(body):
                yield data
        if tail := self._parser.finish():
            yield tail
        if (size := self._parser.size_mismatch(self.kind)) is not None:
            self._warnings.append(_size_warning(size))

    def warn(self, warning: AudioWarning | None) -> None:
        if warning is not None:
            self._warnings.append(warning)

    def warnings(self) -> list[AudioWarning]:
        told, self._warnings = self._warnings, []
        return told

    async def aclose(self) -> None:
        aclose = getattr(self._rest, "aclose", None)
        if aclose is not None:
            await aclose()


def _size_warning(size: SizeMismatch) -> AudioWarning:
    message = (
        f"the {size.container} header declares {size.declared_bytes} bytes of audio but the body holds "
        f"{size.actual_bytes}; all {size.actual_bytes} were read"
    )
    details = {"declaredBytes": size.declared_bytes, "actualBytes": size.actual_bytes}
    return AudioWarning(ErrorCode.HEADER_SIZE_MISMATCH, message, details)


async def open_audio(
    stream: AsyncIterator[bytes], declared: DeclaredAudio | None, *, decode_cpu_share: float = 0.0
) -> AudioSource:
    """Read just enough of ``stream`` to know its format; the returned source carries on from there.
    ``decode_cpu_share`` bounds FFmpeg's decoding of it (CPU seconds per second of audio, 0: none)."""
    head = b""
    async for chunk in stream:
        head += chunk
        if len(head) >= SNIFF_BYTES:
            break
    if not head:
        raise BadRequest("the upload contains no audio (empty body)", code=ErrorCode.EMPTY_BODY)
    kind = sniff(head, weak=declared is None)
    hint = declared.hint() if kind is None and declared is not None else None  # a container's header wins
    parser = parser_for(kind, hint)
    if parser is not None:
        first = parser.feed(head)
        while not parser.ready:
            chunk = await anext(stream, b"")
            if not chunk:
                raise AudioFormatError(f"the {kind} header is truncated")
            first += parser.feed(chunk)
        if not parser.needs_decoder:
            source = ParsedSource(parser, kind, first, stream)
            if kind is not None and declared is not None:
                source.warn(declared.disagreement(source.kind, source.format))
            return source
        head = parser.head
    if kind is None:
        raise AudioFormatError(
            "unrecognised audio format: send WAV, AU, FLAC, Ogg (Opus/Vorbis), MP3, WebM or AIFF, or declare a "
            "headerless format with ?encoding=pcm16|mulaw|alaw|f32&sampleRate=…&channels=…"
        )
    return await DecodedSource(DEMUXERS[kind], head, stream, cpu_share=decode_cpu_share).open()


@dataclass(frozen=True, slots=True)
class DeclaredAudio:
    """What the client said its audio is (query, Content-Type or the Parameters' ``Audio`` block).

    It is the format of a headerless body. A container's own header is the truth for its audio: a
    declaration that disagrees with it is a warning, and an incomplete one (no sample rate, an
    encoding the gateway does not take raw) matters only when the body turns out to be headerless.
    """

    origin: str
    encoding: str
    sample_rate: int | None = None
    channels: int | None = None
    big_endian: bool = False  # audio/L16 is network byte order (RFC 3551)

    def hint(self) -> RawHint:
        """The format of a headerless body; 422 when the declaration says too little (415: unknown encoding)."""
        encoding = parse_encoding(self.encoding)  # an unknown one is a 415
        rate = self.sample_rate
        if rate is None:
            if encoding not in _G711:
                raise BadRequest(
                    f"sampleRate is required for headerless {encoding} audio", code=ErrorCode.INVALID_PARAMETERS
                )
            rate = 8000
        try:
            fmt = AudioFormat(encoding, rate, self.channels or 1).validate()
        except AudioFormatError as exc:
            raise BadRequest(exc.message, code=ErrorCode.INVALID_PARAMETERS) from None
        return RawHint(fmt, big_endian=self.big_endian)

    def disagreement(self, container: str, actual: AudioFormat) -> AudioWarning | None:
        """A warning when what was declared is not what the container's header says (None: it agrees)."""
        try:
            same_encoding = parse_encoding(self.encoding) == actual.encoding
        except AudioFormatError:
            same_encoding = False
        said = [] if same_encoding else [f"encoding {self.encoding}"]
        if self.sample_rate is not None and self.sample_rate != actual.sample_rate:
            said.append(f"{self.sample_rate} Hz")
        if self.channels is not None and self.channels != actual.channels:
            said.append(f"{self.channels} channel(s)")
        if not said:
            return None
        message = (
            f"{self.origin} declares {', '.join(said)}, but the {container} header says {actual.encoding} "
            f"{actual.sample_rate} Hz {actual.channels} channel(s); the header was used"
        )
        return AudioWarning(ErrorCode.DECLARED_FORMAT_MISMATCH, message)


def declared_audio(
    *,
    encoding: str | None,
    sample_rate: int | None,
    channels: int | None,
    content_type: tuple[str, dict[str, str]],
    parameters: dict[str, Any] | None,
) -> DeclaredAudio | None:
    """What the client declared about its audio: query parameters, then Content-Type, then Parameters.Audio."""
    ctype, options = content_type
    if encoding:
        return DeclaredAudio("the query", encoding, sample_rate, channels)
    if ctype in ("audio/basic", "audio/l16", "audio/pcmu", "audio/pcma", "audio/x-mulaw", "audio/x-alaw"):
        # RFC 2046: audio/basic is 8 kHz mono mu-law; RFC 3551: L16 is big-endian with rate/channels.
        declared = "mulaw" if ctype == "audio/basic" else ctype
        rate = sample_rate or _positive(options.get("rate"), "rate")
        count = channels or _positive(options.get("channels"), "channels")
        return DeclaredAudio("Content-Type", declared, rate, count, big_endian=ctype == "audio/l16")
    audio = get(parameters, "Audio") if parameters is not None else None
    if isinstance(audio, dict) and isinstance(declared := get(audio, "Encoding"), str):
        said_rate, said_channels = get(audio, "SampleRate", "sample-rate"), get(audio, "ChannelCount", "channel-count")
        try:  # a declaration that is no number is refused, like ?sampleRate=abc, never read as none
            rate = sample_rate or declared_int(said_rate, 0, name="Parameters.Audio.SampleRate") or None
            count = channels or declared_int(said_channels, 0, name="Parameters.Audio.ChannelCount") or None
        except AudioFormatError as exc:
            raise BadRequest(exc.message, code=ErrorCode.INVALID_PARAMETERS) from None
        return DeclaredAudio("Parameters.Audio", declared, rate, count)
    return None


def _positive(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    digits = value.strip()
    if not (digits.isascii() and digits.isdigit()):  # isdigit() alone takes "²", which int() refuses
        raise BadRequest(f"Content-Type parameter {name}={value!r} is not a number", code=ErrorCode.INVALID_PARAMETERS)
    return int(digits)
