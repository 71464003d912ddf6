"""From an upload's byte stream to PCM the Session takes: sniff, then a push parser or a decoder.

The container is recognised from the first bytes, whatever the Content-Type says. A headerless body
needs a declared format (:func:`raw_hint`: query parameters, ``audio/L16;rate=…``, ``audio/basic``
or the Parameters' ``Audio`` block); without one it is a 415.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from gateway.audio.containers import DEMUXERS, SNIFF_BYTES, PushParser, RawHint, parser_for, sniff
from gateway.audio.decoders import DecodedSource
from gateway.audio.format import AudioFormat, Encoding, parse_encoding
from gateway.dataflow.messages import as_int, get, parse_audio
from gateway.errors import AudioFormatError, BadRequest, ErrorCode

_G711: frozenset[str] = frozenset({"mulaw", "alaw"})


class AudioSource(Protocol):
    """Audio of one upload as little-endian PCM/G.711 bytes in ``format``."""

    format: AudioFormat

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class ParsedSource:
    """WAV, AU or headerless audio: parsed in the event loop as the body arrives (no thread)."""

    def __init__(self, parser: PushParser, first: bytes, rest: AsyncIterator[bytes]) -> None:
        assert parser.format is not None
        self.format = parser.format
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

    async def aclose(self) -> None:
        aclose = getattr(self._rest, "aclose", None)
        if aclose is not None:
            await aclose()


async def open_audio(stream: AsyncIterator[bytes], hint: RawHint | None) -> AudioSource:
    """Read just enough of ``stream`` to know its format; the returned source carries on from there."""
    head = b""
    async for chunk in stream:
        head += chunk
        if len(head) >= SNIFF_BYTES:
            break
    if not head:
        raise BadRequest("the upload contains no audio (empty body)", code=ErrorCode.EMPTY_BODY)
    kind = sniff(head, weak=hint is None)
    parser = parser_for(kind, hint)
    if parser is not None:
        first = parser.feed(head)
        while not parser.ready:
            chunk = await anext(stream, b"")
            if not chunk:
                raise AudioFormatError(f"the {kind} header is truncated")
            first += parser.feed(chunk)
        if not parser.needs_decoder:
            return ParsedSource(parser, first, stream)
        head = parser.head
    if kind is None:
        raise AudioFormatError(
            "unrecognised audio format: send WAV, AU, FLAC, Ogg (Opus/Vorbis), MP3, WebM or AIFF, or declare a "
            "headerless format with ?encoding=pcm16|mulaw|alaw|f32&sampleRate=…&channels=…"
        )
    return await DecodedSource(DEMUXERS[kind], head, stream).open()


def raw_hint(
    *,
    encoding: str | None,
    sample_rate: int | None,
    channels: int | None,
    content_type: tuple[str, dict[str, str]],
    parameters: dict[str, Any] | None,
) -> RawHint | None:
    """The declared format of a headerless body: query parameters, then Content-Type, then Parameters.Audio."""
    declared: Encoding | None = None
    rate, count, big_endian = sample_rate, channels, False
    ctype, options = content_type
    if encoding:
        declared = parse_encoding(encoding)
    elif ctype in ("audio/basic", "audio/l16", "audio/pcmu", "audio/pcma", "audio/x-mulaw", "audio/x-alaw"):
        # RFC 2046: audio/basic is 8 kHz mono mu-law; RFC 3551: L16 is big-endian with rate/channels.
        declared = "mulaw" if ctype == "audio/basic" else parse_encoding(ctype)
        big_endian = ctype == "audio/l16"
        rate = rate or _positive(options.get("rate"), "rate")
        count = count or _positive(options.get("channels"), "channels")
    if declared is None and parameters is not None:
        audio = get(parameters, "Audio")
        if isinstance(audio, dict) and get(audio, "Encoding") is not None:
            fallback = AudioFormat("pcm16", 16000, 1)
            declared = parse_audio(audio, default=fallback).encoding
            rate = rate or as_int(get(audio, "SampleRate", "sample-rate"), 0) or None
            count = count or as_int(get(audio, "ChannelCount", "channel-count"), 0) or None
    if declared is None:
        return None
    if rate is None:
        if declared not in _G711:
            raise BadRequest(
                f"sampleRate is required for headerless {declared} audio", code=ErrorCode.INVALID_PARAMETERS
            )
        rate = 8000
    try:
        fmt = AudioFormat(declared, rate, count or 1).validate()
    except AudioFormatError as exc:
        raise BadRequest(exc.message, code=ErrorCode.INVALID_PARAMETERS) from None
    return RawHint(fmt, big_endian=big_endian)


def _positive(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    digits = value.strip()
    if not (digits.isascii() and digits.isdigit()):  # isdigit() alone takes "²", which int() refuses
        raise BadRequest(f"Content-Type parameter {name}={value!r} is not a number", code=ErrorCode.INVALID_PARAMETERS)
    return int(digits)
