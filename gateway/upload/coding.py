"""An upload's content coding (``Content-Encoding``, RFC 9110 8.4): ``gzip`` and ``deflate`` bodies are
inflated as they stream, in bounded pieces; any other coding is refused before the body is read.

A body is inflated :data:`PIECE_BYTES` at a time, so a small compressed body that inflates to
gigabytes (deflate reaches ~1000:1) never stands in memory at once: each piece is counted against
the upload's size cap by its reader and goes on to the audio decoder before the next is made.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Final

from gateway.errors import BadRequest, ErrorCode, UnsupportedContentEncoding

PIECE_BYTES: Final = 64 * 1024
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS
_CODINGS: Final = {"gzip": _GZIP_WBITS, "x-gzip": _GZIP_WBITS, "deflate": zlib.MAX_WBITS}
_SHOWN_CHARS: Final = 64  # of a refused coding, quoted in the error


class Inflater:
    """Inflates one coded body; :meth:`feed` yields its pieces, :meth:`end` checks that it ended whole."""

    def __init__(self, wbits: int) -> None:
        self._wbits = wbits
        self._gzip = wbits == _GZIP_WBITS
        self._inflate: zlib._Decompress | None = None  # made from the first bytes (deflate: zlib or raw)
        self._head = b""  # deflate: the first bytes, until two tell zlib from raw
        self._member_ended = False  # gzip: zero bytes after a member are padding (as gzip(1) takes them); a
        # deflate body is one stream (RFC 9110 8.4.1.2): any byte after its end is an error, however it is chunked

    def feed(self, data: bytes) -> Iterator[bytes]:
        while True:
            if self._inflate is None:
                if self._member_ended:
                    data = data.lstrip(b"\0")
                if not data or (not self._gzip and len(self._head + data) < 2):
                    self._head += data
                    return
                data, self._head = self._head + data, b""
                self._inflate = zlib.decompressobj(self._wbits if self._gzip or _zlib_header(data) else -zlib.MAX_WBITS)
            elif self._inflate.eof:  # deflate: one stream, kept ended so that nothing after it, in any chunk, passes
                if data:
                    raise _corrupt("data after the end of the deflate stream")
                return
            try:
                piece = self._inflate.decompress(data, PIECE_BYTES)
            except zlib.error as exc:
                raise _corrupt(str(exc)) from None
            data = self._inflate.unconsumed_tail
            if piece:
                yield piece
            if self._inflate.eof:
                data = self._inflate.unused_data + data
                if self._gzip:  # another member may follow (RFC 1952 2.2); deflate's end is checked above
                    self._inflate, self._member_ended = None, True
            elif not data and len(piece) < PIECE_BYTES:
                return  # a full piece may leave more output pending: asked for again above

    def end(self) -> Iterator[bytes]:
        """The body is all in: what the inflater still holds; an error if its stream was cut short. An
        empty body stays empty (the upload refuses it as such)."""
        if self._inflate is None:
            if self._head:
                raise _corrupt("the compressed body ends before its stream does")
            return
        while not self._inflate.eof:
            try:
                piece = self._inflate.decompress(b"", PIECE_BYTES)
            except zlib.error as exc:
                raise _corrupt(str(exc)) from None
            if not piece:
                raise _corrupt("the compressed body ends before its stream does")
            yield piece


def inflater_for(content_encoding: str | None) -> Inflater | None:
    """The inflater a ``Content-Encoding`` asks for; None for an uncoded body; refused (415) otherwise."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in _CODINGS:
        return Inflater(_CODINGS[codings[0]])
    shown = ", ".join(codings)
    shown = shown if len(shown) <= _SHOWN_CHARS else shown[: _SHOWN_CHARS - 1] + "…"
    raise UnsupportedContentEncoding(
        f"unsupported Content-Encoding {shown!r}: send the body uncoded, or coded once with gzip or deflate",
        accepted="gzip, deflate",
    )


def _zlib_header(data: bytes) -> bool:
    """Whether a deflate body starts with the zlib header RFC 9110 asks for (else: raw deflate, as some
    clients send it)."""
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


def _corrupt(why: str) -> BadRequest:
    return BadRequest(f"the compressed body cannot be inflated: {why}", code=ErrorCode.INVALID_CONTENT_ENCODING)
