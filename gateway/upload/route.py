"""``POST /v1/recognize``: upload a recorded file, get Data Flow's events and transcript back.

The body is raw audio (WAV, AU, FLAC, Ogg, MP3, WebM, AIFF, or headerless with a declared format) or
Data Flow's own HTTP batch multipart (``Parameters`` + ``Audio``). ``Accept: application/json``
answers once, after Data Flow's FinalResult; ``application/x-ndjson`` and ``text/event-stream``
stream the messages as they happen. The pipeline itself is :mod:`gateway.upload.pipeline`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.errors import ClientGone, ClientTooSlow, GatewayError
from gateway.errors.http import error_response
from gateway.logs.context import response_cut
from gateway.relay.client_json import client_json
from gateway.service import service_of
from gateway.upload.answer import EventLog
from gateway.upload.openapi import ERROR_RESPONSES, REQUEST_BODY, STREAM_EXAMPLE, RecognizeResult
from gateway.upload.pipeline import Upload, UploadOptions

log = logging.getLogger(__name__)

Mode = Literal["json", "ndjson", "sse"]
_STREAM_TYPES: dict[str, Mode] = {
    "application/x-ndjson": "ndjson", "application/ndjson": "ndjson", "text/event-stream": "sse",
    "application/json": "json", "*/*": "json", "application/*": "json",
}  # fmt: skip


router = APIRouter(tags=["uploads"])  # a 422 is rendered app-wide (gateway.routes.error_handlers)

ProjectParam = Annotated[
    str | None, Query(description="Data Flow project (else header ProjectName, else the default).", examples=["demo"])
]
LanguageParam = Annotated[str | None, Query(description="Recognition language, e.g. en-US.", examples=["en-US"])]
RawParam = Annotated[bool, Query(description="Add Data Flow's own event JSON to each event as `raw`.")]
InterimParam = Annotated[bool, Query(description="Include `SR Partial` (interim) events.")]
EncodingParam = Annotated[
    str | None, Query(description="Headerless body only: pcm16 (little-endian), mulaw, alaw, f32.", examples=["mulaw"])
]
SampleRateParam = Annotated[
    int | None, Query(alias="sampleRate", ge=8000, le=48000, description="Headerless body only: samples per second.")
]
ChannelsParam = Annotated[int | None, Query(ge=1, le=2, description="Headerless body only: 1 or 2 (interleaved).")]
ProjectHeader = Annotated[str | None, Header(alias="ProjectName", description="Data Flow's project header.")]
ParametersHeader = Annotated[
    str | None,
    Header(
        alias="X-Dataflow-Parameters",
        description="Start-style JSON, as the multipart Parameters part, e.g. "
        '{"Language":"en-US","Settings":{"ChannelTags":["customer","agent"]}}.',
    ),
]
AcceptHeader = Annotated[
    str | None, Header(description="application/json (default), application/x-ndjson or text/event-stream.")
]


def negotiate(accept: str | None) -> Mode:
    """The first media type of ``Accept`` the endpoint knows (q-values are not weighed)."""
    for part in (accept or "").split(","):
        mode = _STREAM_TYPES.get(part.split(";")[0].strip().lower())
        if mode is not None:
            return mode
    return "json"


class MessageStream(StreamingResponse):
    """NDJSON or SSE. Unlike Starlette's StreamingResponse it never calls ``receive`` itself: the
    upload is still reading the request body from it, and notices a vanishing client there."""

    def __init__(self, upload: Upload, mode: Mode) -> None:
        media = "text/event-stream" if mode == "sse" else "application/x-ndjson"
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering of live events
        self.upload = upload
        self.lines = self._lines(upload, mode)
        super().__init__(self.lines, media_type=media, headers=headers)

    @staticmethod
    async def _lines(upload: Upload, mode: Mode) -> AsyncGenerator[bytes, None]:
        async with contextlib.aclosing(upload.outputs()) as messages:
            async for message in messages:
                text = client_json(message)
                yield (f"event: {message['type']}\ndata: {text}\n\n" if mode == "sse" else text + "\n").encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        budget = self.upload.settings.client_send_timeout_s
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for line in self.lines:
                try:
                    async with asyncio.timeout(budget):
                        await send({"type": "http.response.body", "body": line, "more_body": True})
                except TimeoutError:
                    if self.upload.session is not None:
                        self.upload.session.abort("client_too_slow", ClientTooSlow("the client stopped reading"))
                    await self._last_line(send)
                    return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await self.lines.aclose()

    async def _last_line(self, send: Send) -> None:
        """After the client_too_slow abort: its ``error`` line (the backlog was dropped, so it comes
        next) and the response's end, if the client takes them within a second; else the server
        closes the connection with the response unfinished."""
        with contextlib.suppress(TimeoutError, StopAsyncIteration):
            async with asyncio.timeout(min(1.0, self.upload.settings.client_send_timeout_s)):
                line = await anext(self.lines)
                await send({"type": "http.response.body", "body": line, "more_body": False})
                return
        response_cut.set("client_too_slow (it read nothing for GATEWAY_CLIENT_SEND_TIMEOUT_S)")


@router.post(
    "/v1/recognize",
    summary="Recognise an uploaded recording (streamed to Data Flow)",
    response_model=None,
    responses={
        200: {
            "model": RecognizeResult,
            "description": "The transcript and every event. With `Accept: application/x-ndjson` or "
            "`text/event-stream`: one message per line/event as it happens (`started`, `event`, `progress`, "
            "`warning`), the last one `result` or `error`.",
            "content": STREAM_EXAMPLE,
        },
        **ERROR_RESPONSES,
    },
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def recognize(
    request: Request,
    project: ProjectParam = None,
    language: LanguageParam = None,
    raw: RawParam = False,
    interim: InterimParam = False,
    encoding: EncodingParam = None,
    sample_rate: SampleRateParam = None,
    channels: ChannelsParam = None,
    project_name: ProjectHeader = None,
    parameters: ParametersHeader = None,
    accept: AcceptHeader = None,
) -> Response:
    options = UploadOptions(
        project=project or None, language=language or None, raw=raw, interim=interim, encoding=encoding or None,
        sample_rate=sample_rate, channels=channels, project_header=project_name or None,
        parameters_header=parameters, content_type=request.headers.get("content-type"),
        content_length=request.headers.get("content-length"),
        content_encoding=", ".join(request.headers.getlist("content-encoding")) or None,
    )  # fmt: skip
    try:
        upload = Upload(service_of(request), request.scope, request.headers, request.receive, options)
        await upload.open()
    except GatewayError as exc:
        return error_response(exc)
    except ClientGone:
        return Response(status_code=499)  # nobody is listening; the status only reaches the access log
    mode = negotiate(accept)
    if mode != "json":
        return MessageStream(upload, mode)
    events = EventLog(upload.settings.client_outbox_bytes)
    result: dict[str, Any] = {}
    async with contextlib.aclosing(upload.outputs()) as messages:
        async for message in messages:
            if message["type"] == "event":
                events.add(message)
            elif message["type"] == "result":
                result = message
    if upload.error is not None:
        if upload.partial is None:
            return error_response(upload.error)
        answer = error_response(upload.error)  # the limit's status, envelope and Retry-After, plus the results
        retry = {"Retry-After": answer.headers["retry-after"]} if "retry-after" in answer.headers else None
        return events.answer({"error": upload.error.to_json(), **upload.partial}, answer.status_code, retry)
    if upload.disconnected or not result:
        return Response(status_code=499)
    del result["type"]
    return events.answer(result)
