"""The body of an upload, read as a stream straight from ASGI ``receive`` (never buffered whole).

:class:`RequestBody` counts bytes against the size cap while reading, inflates a gzip or deflate
body on the way (:mod:`gateway.upload.coding`), and is the only reader of ``receive`` for the whole
request, so it also notices a client that goes away after its body was sent. :class:`MultipartAudio`
finds Data Flow's ``Parameters`` and ``Audio`` parts in a ``multipart/form-data`` body with
python-multipart's incremental parser (the Start JSON itself: :mod:`gateway.upload.parameters`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from itertools import chain
from tempfile import SpooledTemporaryFile
from typing import Any, Final

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser
from starlette.types import Receive

from gateway.errors import BadRequest, ClientGone, ErrorCode, LimitReached, UploadTooLarge
from gateway.upload.coding import Inflater
from gateway.upload.parameters import PARAMETERS_LIMIT, media_type, parse_parameters
from gateway.upload.spool import SpoolBudget

SPOOL_MEMORY_BYTES: Final = 1024 * 1024  # an Audio part before Parameters: held in memory up to this, then on disk
SPOOL_READ_BYTES: Final = 64 * 1024


class RequestBody:
    """``max_bytes`` bounds the body as sent and, when it is coded (``inflater``), as inflated."""

    def __init__(self, receive: Receive, max_bytes: int, inflater: Inflater | None = None) -> None:
        self._receive = receive
        self.max_bytes = max_bytes
        self._inflater = inflater
        self.bytes_read = 0
        self.bytes_inflated = 0
        self.complete = False

    def check_declared_length(self, content_length: str | None) -> None:
        """Refuse before reading when Content-Length already says the body is over the cap."""
        if content_length and content_length.strip().isdigit() and int(content_length) > self.max_bytes:
            raise self._too_large()

    def _too_large(self, as_inflated: bool = False) -> UploadTooLarge:
        inflated = " once inflated" if as_inflated else ""
        return UploadTooLarge(f"the upload is larger{inflated} than the limit of {self.max_bytes} bytes")

    async def chunks(self) -> AsyncIterator[bytes]:
        while not self.complete:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone("the client closed the connection before the upload was done")
            body: bytes = message.get("body", b"")
            self.complete = not message.get("more_body", False)
            self.bytes_read += len(body)
            if self.bytes_read > self.max_bytes:
                raise self._too_large()
            if self._inflater is None:
                if body:
                    yield body
                continue
            for piece in chain(self._inflater.feed(body), self._inflater.end() if self.complete else ()):
                self.bytes_inflated += len(piece)
                if self.bytes_inflated > self.max_bytes:
                    raise self._too_large(as_inflated=True)
                yield piece

    async def wait_disconnect(self) -> None:
        """After the body: returns when the client goes away (or the response is complete)."""
        while (await self._receive())["type"] != "http.disconnect":
            pass


class MultipartAudio:
    """Data Flow's HTTP batch body: a ``Parameters`` part (Start JSON) and an ``Audio`` part (the file).

    :meth:`begin` reads until the Audio part begins. The audio may start there when the Parameters came
    before it, or when the request carries its Start in ``X-Dataflow-Parameters`` (``start_at_audio``:
    then no Parameters part may follow the Audio part). Otherwise (:attr:`holding`) a Parameters part may
    still come and change the Start, so :meth:`hold` spools the Audio part — in memory up to
    :data:`SPOOL_MEMORY_BYTES`, then in a temporary file, bounded by the body's own size cap, by what all
    uploads may hold together (``budget``, GATEWAY_UPLOAD_SPOOL_BYTES: past it 413 ``upload_too_large``)
    and by ``idle_s`` between two reads of the body — until the Parameters arrive or the body ends
    (an Audio part alone); it is deleted when the upload ends. :meth:`audio` then yields the audio bytes
    and reads the rest of the body. Other parts are ignored.
    """

    def __init__(
        self, body: AsyncIterator[bytes], boundary: str, budget: SpoolBudget, start_at_audio: bool = False
    ) -> None:
        self._body = body
        self._budget = budget
        self._start_at_audio = start_at_audio
        self._spooled = 0  # bytes of this upload counted in the budget
        self.parameters: dict[str, Any] | None = None
        self.audio_content_type: str | None = None
        self._events: deque[tuple[str, bytes]] = deque()
        self._headers: dict[str, str] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._part = ""  # "parameters", "audio", or "" for a part that is ignored
        self._params = bytearray()
        self._audio_seen = False
        self._started_at_audio = False  # the audio started with no Parameters part: none may follow
        self._spool: SpooledTemporaryFile[bytes] | None = None  # an Audio part that came before Parameters
        self._ended = False
        try:
            self._parser = MultipartParser(boundary.encode("latin-1"), self._callbacks())
        except (ValueError, MultipartParseError) as exc:
            raise BadRequest(f"invalid multipart boundary: {exc}", code=ErrorCode.INVALID_MULTIPART) from None

    def _callbacks(self) -> Any:
        def data(kind: str) -> Any:
            return lambda buf, start, end: self._events.append((kind, bytes(buf[start:end])))

        def mark(kind: str) -> Any:
            return lambda: self._events.append((kind, b""))

        return {
            "on_part_begin": mark("begin"), "on_header_field": data("field"), "on_header_value": data("value"),
            "on_header_end": mark("header_end"), "on_headers_finished": mark("headers"), "on_part_data": data("data"),
            "on_part_end": mark("part_end"), "on_end": mark("end"),
        }  # fmt: skip

    @property
    def holding(self) -> bool:
        """The Audio part came before any Parameters part and is held (:meth:`hold`)."""
        return self._spool is not None

    async def open(self, idle_s: float | None = None) -> None:
        """:meth:`begin`, then :meth:`hold`: read until the audio can start."""
        await self.begin()
        await self.hold(idle_s)

    async def begin(self) -> None:
        """Read until the Audio part begins (its headers are in); 422 when the body has none."""
        await self._read(None)

    async def hold(self, idle_s: float | None) -> None:
        """When :attr:`holding`: spool the Audio part until the Parameters come or the body ends; more than
        ``idle_s`` without a byte of the body is 408 ``idle_timeout``."""
        if self._spool is not None:
            await self._read(idle_s)

    async def _read(self, idle_s: float | None) -> None:
        holding = self._spool is not None
        try:
            while True:
                while self._events:
                    kind, data = self._events.popleft()
                    if (audio := self._handle(kind, data)) and self._spool is not None:
                        self._hold(audio)
                    if self._ready(kind) or (not holding and self._spool is not None):
                        return
                chunk = await self._next(idle_s)
                if not chunk:
                    break
                self._write(chunk)
            self._finish_parser()
        except BaseException:
            self.close()
            raise
        if self._spool is None:
            raise BadRequest("the multipart body has no Audio part", code=ErrorCode.INVALID_MULTIPART)

    async def _next(self, idle_s: float | None) -> bytes:
        """The body's next bytes (b"" at its end), within ``idle_s`` when it is set."""
        if idle_s is None:
            return await anext(self._body, b"")
        try:
            async with asyncio.timeout(idle_s):
                return await anext(self._body, b"")
        except TimeoutError:
            raise LimitReached(
                f"no byte of the body came for {idle_s:g} s while its Audio part was held for a Parameters part",
                code=ErrorCode.IDLE_TIMEOUT,
            ) from None

    def _hold(self, audio: bytes) -> None:
        assert self._spool is not None
        if not self._budget.take(len(audio)):
            raise UploadTooLarge(
                "the Audio part came before any Parameters part, so it is held until a Parameters part comes or"
                " the body ends, and the uploads holding audio now hold all they may"
                f" ({self._budget.limit_bytes} bytes together): send the Parameters part first, or, with no"
                " Parameters part, the X-Dataflow-Parameters header ({} for none): the audio then starts at once"
            )
        self._spooled += len(audio)
        self._spool.write(audio)

    def _ready(self, kind: str) -> bool:
        """May the audio start? At an Audio part after Parameters (or with the Start in the header), or
        once spooled audio has them."""
        if kind == "headers" and self._part == "audio":
            if self.parameters is not None or self._start_at_audio:
                self._started_at_audio = self.parameters is None
                return True
            self._spool = SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115 (closed in close())
        return kind == "part_end" and self._spool is not None and self.parameters is not None

    async def audio(self) -> AsyncIterator[bytes]:
        try:
            if self._spool is not None:
                self._spool.seek(0)
                while spooled := self._spool.read(SPOOL_READ_BYTES):
                    yield spooled
                self.close()
            while True:
                while self._events:
                    kind, data = self._events.popleft()
                    if chunk := self._handle(kind, data):
                        yield chunk
                body = await anext(self._body, b"")
                if not body:
                    break
                self._write(body)
            self._finish_parser()
        finally:
            self.close()

    def close(self) -> None:
        """Delete the spooled audio (idempotent)."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        self._budget.give(self._spooled)
        self._spooled = 0

    def _write(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise BadRequest(f"malformed multipart body: {exc}", code=ErrorCode.INVALID_MULTIPART) from None

    def _finish_parser(self) -> None:
        if self._ended and not self._events:
            return  # already at the closing boundary (an Audio part spooled to the end of the body)
        try:
            self._parser.finalize()
        except MultipartParseError as exc:
            raise BadRequest(f"malformed multipart body: {exc}", code=ErrorCode.INVALID_MULTIPART) from None
        if not self._ended:
            raise BadRequest("the multipart body ended before its closing boundary", code=ErrorCode.INVALID_MULTIPART)

    def _handle(self, kind: str, data: bytes) -> bytes | None:
        """Apply one parser event; returns Audio bytes to pass on."""
        if kind == "data":
            if self._part == "audio":
                return data
            if self._part == "parameters":
                self._params += data
                if len(self._params) > PARAMETERS_LIMIT:
                    raise BadRequest(
                        f"the Parameters part is over {PARAMETERS_LIMIT} bytes", code=ErrorCode.INVALID_PARAMETERS
                    )
        elif kind == "begin":
            self._headers, self._part = {}, ""
        elif kind == "field":
            self._field += data
        elif kind == "value":
            self._value += data
        elif kind == "header_end":
            self._headers[self._field.decode("latin-1").strip().lower()] = self._value.decode("latin-1").strip()
            self._field, self._value = bytearray(), bytearray()
        elif kind == "headers":
            self._start_part()
        elif kind == "part_end":
            if self._part == "parameters":
                self.parameters = parse_parameters(bytes(self._params), "the Parameters part")
            self._part = ""
        elif kind == "end":
            self._ended = True
        return None

    def _start_part(self) -> None:
        _, disposition = media_type(self._headers.get("content-disposition"))
        name = disposition.get("name", "").lower()
        if name == "audio":
            if self._audio_seen:
                raise BadRequest("the multipart body has more than one Audio part", code=ErrorCode.INVALID_MULTIPART)
            self._audio_seen = True
            self._part = "audio"
            self.audio_content_type = self._headers.get("content-type")
        elif name == "parameters":
            if self._started_at_audio:
                raise BadRequest(
                    "a Parameters part came after the Audio part, which had started with the X-Dataflow-Parameters"
                    " header's Start: send the Parameters part before the Audio part",
                    code=ErrorCode.INVALID_MULTIPART,
                )
            if self.parameters is not None or self._params:
                raise BadRequest(
                    "the multipart body has more than one Parameters part", code=ErrorCode.INVALID_MULTIPART
                )
            self._part, self._params = "parameters", bytearray()
