"""``POST /v1/recognize``: one uploaded file through one Session, as fast as Data Flow takes it.

:meth:`Upload.open` reserves a slot, reads the head of the body (multipart Parameters, the container
header), and starts Data Flow, so every early failure still gets its own HTTP status. :meth:`Upload.outputs`
then runs two sides: a feeder that decodes the rest of the body into ``Session.feed_audio`` (which waits
while Data Flow is slow: flow control reaches the client through TCP) and finalizes, and the session's
output rendered as upload messages. The last message is ``result`` or ``error`` (after a limit or a Data
Flow failure, with the results before it); a client that goes away aborts the session and the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.types import Receive, Scope

from gateway.adapters import messages
from gateway.auth import key_of
from gateway.dataflow.messages import PARTIAL, DataflowEvent, StartRequest
from gateway.errors import (
    AudioTooCostly,
    AudioTooLong,
    BadRequest,
    BudgetSpent,
    ClientGone,
    ErrorCode,
    GatewayError,
    GoingAway,
    LimitReached,
    UpstreamError,
)
from gateway.relay.items import Closed, Flow, Notice, OutItem, Recovered, SessionState, Started
from gateway.relay.registry import Lease
from gateway.relay.session import Session
from gateway.relay.transcript import Transcript
from gateway.signatures.single_use import NO_HOLD
from gateway.upload.body import MultipartAudio, RequestBody
from gateway.upload.coding import inflater_for
from gateway.upload.opening import Opening, start_bound
from gateway.upload.pacing import ReadPacer
from gateway.upload.parameters import header_parameters, header_text, media_type, start_request
from gateway.upload.source import AudioSource, declared_audio, open_audio

if TYPE_CHECKING:
    from gateway.service import Gateway

log = logging.getLogger(__name__)

#: Errors whose answer carries the results before them: limits, and Data Flow failing after its start.
_KEEPS_RESULTS = (LimitReached, AudioTooLong, AudioTooCostly, BudgetSpent, UpstreamError)
FEED_MS = 500  # audio handed to the session per call, so one big body chunk never floods the upstream buffer


@dataclass(frozen=True, slots=True)
class UploadOptions:
    """What the client asked for in the query string and headers (the body may add Parameters)."""

    project: str | None = None
    language: str | None = None
    raw: bool = False
    interim: bool = False
    encoding: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    project_header: str | None = None
    parameters_header: str | None = None
    content_type: str | None = None
    content_length: str | None = None
    content_encoding: str | None = None


class Upload:
    def __init__(
        self, gateway: Gateway, scope: Scope, headers: Mapping[str, str], receive: Receive, options: UploadOptions
    ) -> None:
        self.gateway = gateway
        self._scope, self._headers = scope, headers
        self.settings = gateway.settings
        self.options = options
        self.body = RequestBody(receive, self.settings.max_upload_bytes, inflater_for(options.content_encoding))
        self.session: Session | None = None
        self.source: AudioSource | None = None
        self.error: GatewayError | None = None  # set when the upload ended with an error message
        self.partial: dict[str, Any] | None = None  # the results before an error ended the upload
        self._cut_short: AudioTooCostly | None = None  # the decoder stopped: the audio before it is finalized
        self.disconnected = False
        self._started: Started | None = None
        self._lease: Lease | None = None
        self._opening = Opening()  # the slot's drain hook until the session has started
        self._transcript = Transcript(self.settings.max_transcript_bytes)
        self._warnings: list[dict[str, Any]] = []
        self._multipart: MultipartAudio | None = None
        self._pacer = ReadPacer(self.settings)

    # --- opening -------------------------------------------------------------------------------------

    async def open(self) -> Started:
        """Everything before the first audio goes upstream; raises GatewayError or ClientGone."""
        self.body.check_declared_length(self.options.content_length)
        gate = self.gateway.gate
        principal = gate.identify(self._scope, self._headers)  # credentials come in headers only
        self._lease = lease = gate.reserve("upload", principal)
        lease.drainable = self._opening  # drainable from now: a drain can end the wait for the opening
        try:
            async with self._opening.until_sent_away():
                request = await self._open_source()
            assert self.source is not None
            limits = gate.session_limits(principal, live=False)  # not live: as fast as Data Flow takes it
            hold = await gate.admit_after_turn(principal, request.project) if principal is not None else NO_HOLD
            self.session = self.gateway.new_session(limits, "upload", key_of(principal))
            with hold:  # a single-use token is spent once Data Flow accepted the session, else free again
                self._opening.attach(self.session)  # (a refusal here frees the token too)
                self._started = await self.session.start(request, self.source.format)
                hold.commit()
            lease.drainable = self.session  # started: a drain tells the session itself from now on
            self.gateway.tell_drain(self.session)  # a drain began before the session did
            self._warn(self.session)
            return self._started
        except BaseException:
            await self.aclose()
            raise

    async def _open_source(self) -> StartRequest:
        """Reads the body's head: GATEWAY_START_TIMEOUT_S bounds the wait for the audio's start, not the time an
        Audio part before its Parameters is held (bounded per read by GATEWAY_IDLE_TIMEOUT_S, and in size)."""
        opts, loop, start_s = self.options, asyncio.get_running_loop(), self.settings.start_timeout_s
        deadline = loop.time() + start_s
        header = opts.parameters_header
        header_params = header_parameters(header) if header is not None else None
        content_type = media_type(opts.content_type)
        stream = self.body.chunks()
        part_params: dict[str, Any] | None = None
        if content_type[0] == "multipart/form-data":
            boundary, spool = content_type[1].get("boundary", ""), self.gateway.upload_spool
            # With the Start in the header, nothing may come that changes it: the audio starts at its part.
            self._multipart = multipart = MultipartAudio(stream, boundary, spool, start_at_audio=header is not None)
            async with start_bound(deadline, start_s, "the multipart body's Audio part did not begin"):
                await multipart.begin()
            held_from = loop.time()
            await multipart.hold(self.settings.idle_timeout_s)
            deadline += loop.time() - held_from
            part_params, stream = multipart.parameters, multipart.audio()
            content_type = media_type(multipart.audio_content_type)
        parameters = {**(header_params or {}), **(part_params or {})} if header_params or part_params else None
        declared = declared_audio(
            encoding=opts.encoding, sample_rate=opts.sample_rate, channels=opts.channels,
            content_type=content_type, parameters=parameters,
        )  # fmt: skip
        request = start_request(parameters)
        named = header_text(opts.project_header, "ProjectName")  # the bytes sent, read as UTF-8
        request.project = opts.project or named or request.project or self.settings.default_project
        if not request.project:
            raise BadRequest("name a project (?project= or the ProjectName header)", code=ErrorCode.INVALID_PARAMETERS)
        request.language = opts.language or request.language
        async with start_bound(deadline, start_s, "the audio header did not arrive"):
            self.source = await open_audio(stream, declared, decode_cpu_share=self.settings.upload_decode_cpu_share)
        return request

    # --- running -------------------------------------------------------------------------------------

    async def outputs(self) -> AsyncGenerator[dict[str, Any], None]:
        """started, event, progress and warning messages as they happen; last ``result`` or ``error``."""
        assert self.session is not None
        session = self.session
        feeder = asyncio.create_task(self._feed(session), name=f"upload-{session.id}-feeder")
        try:
            async for item in session.outbound():
                self._pacer.taken()
                if isinstance(item, Closed):
                    final = self._final(session, item)
                    if final is not None:
                        yield final
                    return
                if (message := self._render(item)) is not None:
                    yield message
        finally:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
            await self.aclose()

    async def _feed(self, session: Session) -> None:
        assert self.source is not None
        step = max(self.source.format.frame_bytes, self.source.format.ms_to_bytes(FEED_MS))
        try:
            try:
                async for chunk in self.source.chunks():
                    for i in range(0, len(chunk), step):
                        await self._pacer.wait(session)
                        await session.feed_audio(chunk[i : i + step])
                        if session.state is not SessionState.STREAMING:
                            return  # closed or ending (upstream failure, limit): the outbound side reports it
            except AudioTooCostly as exc:
                self._cut_short = exc  # the rest of the body is not read: the answer ends the request
                await session.finalize()
                return
            self._warn(session)
            session.reply(self._progress(session.flow(), final=True))
            await session.finalize()
        except ClientGone:
            self.disconnected = True
            session.abort()
            return
        except GatewayError as exc:
            if session.state is SessionState.STREAMING:
                session.abort(exc.error_code, exc)
            return
        except Exception:
            log.exception("upload %s: reading the body failed", session.id)
            session.abort("internal_error", GatewayError("the upload could not be processed"))
            return
        with contextlib.suppress(Exception):
            await self.body.wait_disconnect()  # the body is complete: only a vanishing client is left to notice
        if session.closed is None:
            self.disconnected = True
            session.abort()

    def _warn(self, session: Session) -> None:
        """The source's warnings about the audio, in order with the events, and in the result."""
        assert self.source is not None
        for warning in self.source.warnings():
            self._warnings.append(warning.to_json())
            session.reply({"type": "warning", **warning.to_json()})

    def _render(self, item: OutItem) -> dict[str, Any] | None:
        if isinstance(item, DataflowEvent):
            if item.final and item.text and item.channel >= 0:
                self._transcript.add(item.channel, item.text)
            if item.name == PARTIAL and not self.options.interim:
                return None
            return messages.event(item, raw=self.options.raw)
        if isinstance(item, Flow):
            return self._progress(item)
        if isinstance(item, Started):
            return messages.started(item)
        if isinstance(item, Recovered):  # said, so audio older than the replay buffer is never lost silently
            text = f"Data Flow's stream was replaced ({item.reason}); {item.replayed_ms:g} ms of audio sent again"
            warning = {"code": ErrorCode.UPSTREAM_RECOVERED.value, "message": text, "retryable": False,
                       "gapMs": item.gap_ms, "replayedMs": item.replayed_ms, "lostMs": item.lost_ms}  # fmt: skip
            self._warnings.append(warning)
            return {"type": "warning", **warning}
        if isinstance(item, Notice):
            warning = item.error.to_json()
            self._warnings.append(warning)
            return {"type": "warning", **warning}
        if isinstance(item, dict):
            return item
        return None  # responses (FinalizeResponse) and audio from Data Flow are not part of an upload's answer

    def _progress(self, flow: Flow, *, final: bool = False) -> dict[str, Any]:
        message = {"type": "progress", "bytes": self.body.bytes_read, "audioMs": flow.audio_ms, "sentMs": flow.sent_ms}
        if final:
            message["uploadComplete"] = True
        return message

    def _final(self, session: Session, closed: Closed) -> dict[str, Any] | None:
        if closed.error is None and closed.reason == "client_disconnected":
            self.disconnected = True
            return None
        if closed.error is None and closed.reason not in ("finalized", "completed"):
            self.error = GoingAway(f"the session ended before its result ({closed.reason})")
        else:
            self.error = closed.error or self._cut_short
        if self.error is None:
            return {"type": "result", **self._result(session, closed)}
        if isinstance(self.error, _KEEPS_RESULTS):
            self.partial = self._result(session, closed)
            return {"type": "error", **self.error.to_json(), "result": self.partial}
        return {"type": "error", **self.error.to_json()}

    def _result(self, session: Session, closed: Closed) -> dict[str, Any]:
        assert self.source is not None
        return {
            "sessionId": session.id,
            "dataflowSessionId": self._started.dataflow_session_id if self._started else None,
            "audioMs": closed.audio_ms,
            "transcript": self._transcript.as_json(self.source.format.channels),
            **self._transcript.cut(),
            "warnings": self._warnings,
        }

    async def aclose(self) -> None:
        """Idempotent: the session aborted if still open, the decoder stopped, the slot released."""
        if self.session is not None:
            self.session.abort()
            await self.session.aclose()
        if self.source is not None:
            await self.source.aclose()
        if self._multipart is not None:
            self._multipart.close()  # audio spooled before the Parameters arrived
        if self._lease is not None:
            self._lease.release()
