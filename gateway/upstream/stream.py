"""One upstream Stream RPC per session: :class:`DataflowStream`.

It writes the exact current JSON dialect, injects the server-held token and tenant,
and keeps audio in order with control messages through a single writer task draining its
SendQueue (send_queue.py: how audio is merged into messages, and held under load).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from pydantic import SecretStr

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import DataflowResponse, StartRequest, UpstreamItem, build_request, build_start, to_json
from gateway.errors import (
    ErrorCode,
    GatewayError,
    InvalidState,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.upstream.contract import ContentType
from gateway.upstream.early import EarlyItems
from gateway.upstream.errors import error_from_status, pings_refused, quoted_session_id, start_refused
from gateway.upstream.host import StreamHost
from gateway.upstream.items import item_from_message
from gateway.upstream.send_queue import SendQueue
from gateway.upstream.start_race import START_RACE_WAIT_S, ends_unread, status_lost_to_a_write_race, write_unless_ended

log = logging.getLogger(__name__)
_EOF = grpc.aio.EOF  # type: ignore[attr-defined]  # (missing from the grpc stubs)


class DataflowStream:
    """One upstream Stream RPC: start, audio, control messages, and the items Data Flow sends."""

    def __init__(self, client: StreamHost, audio: AudioFormat, *, deadline_s: float) -> None:
        s = client.settings
        self._client = client
        self._contract = client.contract
        self._deadline_s = deadline_s
        self._response_timeout_s = s.upstream_response_timeout_s
        self._max_control_bytes = s.max_control_message_bytes
        self._call: grpc.aio.StreamStreamCall[bytes, bytes] | None = None
        self._token: SecretStr | None = None
        self._keepalive_s = client.keepalive_s  # in force when the call opened (older connections retire on a raise)
        self._early = EarlyItems(s.client_outbox_bytes, s.client_event_queue)  # what came before StartResponse
        self._read_bytes = 0  # the size of the message _read_item last read
        self._queue = SendQueue(audio, s, client.audio_write_interval_s)
        self._writer: asyncio.Task[None] | None = None
        self._answered = self._writer_ended = False  # answered: Data Flow accepted the Start
        self._failure: GatewayError | None = None
        self._input_closed = self._counted = False
        self.session_id: str | None = None
        self.audio_bytes_sent = 0
        self.pauses = 0  # times a send waited for room

    # --- opening -------------------------------------------------------------------------------------

    async def start(self, request: StartRequest) -> DataflowResponse:
        """Send Start and wait for StartResponse; raises a typed UpstreamError on any failure."""
        settings = self._client.settings
        self._token = await self._client.tokens.get()
        start = build_start(request, token=self._token.get_secret_value(), tenant=settings.upstream_tenant)
        try:
            async with asyncio.timeout(settings.upstream_start_timeout_s):
                response = await self._open(self._contract.encode_request(ContentType.REQUEST, text=to_json(start)))
        except TimeoutError:
            self.cancel()
            raise UpstreamTimeout(
                f"Data Flow did not answer Start within {settings.upstream_start_timeout_s:g} s"
            ) from None
        except grpc.aio.AioRpcError as exc:
            self.cancel()
            raise self._from_status(exc.code(), exc.details()) from None
        except BaseException:
            self.cancel()
            raise
        if not response.ok:
            self.cancel()
            raise self._noted(start_refused(response.error or "start failed", start))
        self._answered = True  # a refusal from now on is of the live stream, not of the token
        self.session_id = quoted_session_id(response.session_id)
        response = dataclasses.replace(response, session_id=self.session_id)
        self._writer = asyncio.create_task(self._write_loop(), name="dataflow-writer")
        self._writer.add_done_callback(self._writer_done)  # a cancelled writer's traceback holds this stream
        return response

    async def _open(self, start: bytes) -> DataflowResponse:
        """Open the RPC, send Start and wait for its answer. grpc.aio loses the server's status when the
        Start's write races it (a server that answers without reading): a second RPC then waits for the
        server's answer before it writes, so the status a session ends with is the server's."""
        for raced in (False, True):
            self._keepalive_s = self._client.keepalive_s
            self._call = self._client.open_call(self._deadline_s)
            self._counted = True
            if raced and await ends_unread(self._call, START_RACE_WAIT_S):
                break
            try:
                if not await write_unless_ended(self._call, start):
                    break  # the RPC ended (cancelled: the client left) while the write waited
            except asyncio.InvalidStateError:  # the RPC ended before the write began
                break
            except grpc.aio.AioRpcError as exc:
                if raced or not status_lost_to_a_write_race(exc.code(), exc.details()):
                    raise
                log.debug("the Start's write raced the end of its RPC; waiting for the answer of another")
                self.cancel()
            else:
                return await self._await_start_response()
        raise await self._ended_error()  # its status says why

    def _writer_done(self, _: asyncio.Task[None]) -> None:
        self._writer, self._writer_ended = None, True

    async def _await_start_response(self) -> DataflowResponse:
        while True:
            item = await self._read_item()
            if item is None:
                raise UpstreamUnavailable("Data Flow closed the stream before answering Start")
            if isinstance(item, DataflowResponse) and item.name in ("StartResponse", ""):  # unnamed: Start's answer
                return dataclasses.replace(item, name="StartResponse")
            self._early.add(item, self._read_bytes)

    # --- sending -------------------------------------------------------------------------------------

    @property
    def buffered_bytes(self) -> int:
        return self._queue.pending_audio

    @property
    def backpressured(self) -> bool:
        return not self._queue.has_space.is_set()

    def ready(self) -> bool:
        writable = self._failure is None and self._writer is not None and not self._input_closed
        return writable and self._queue.has_space.is_set()

    def put_audio(self, data: bytes) -> None:
        self._queue.put_audio(data)

    async def send_audio(self, data: bytes) -> None:
        self._check_writable()
        self._queue.put_audio(data)
        await self._backpressure("audio")

    async def _backpressure(self, what: str) -> None:
        """Wait while audio or control messages over their budgets wait for Data Flow (bounded)."""
        if not self._queue.has_space.is_set():
            self.pauses += 1
            try:
                async with asyncio.timeout(self._response_timeout_s):
                    await self._queue.has_space.wait()
            except TimeoutError:
                waited = self._response_timeout_s
                raise UpstreamTimeout(f"Data Flow stopped accepting {what} for {waited:g} s") from None
            self._check_writable()

    async def update(self, settings: dict[str, Any]) -> None:
        self._enqueue(ContentType.REQUEST, build_request("Update", Settings=settings), limited=True)
        await self._backpressure("control messages")

    async def send_event(self, event: dict[str, Any]) -> None:
        body = event if "Event" in event else {"Event": event}
        self._enqueue(ContentType.EVENT, body, limited=True)
        await self._backpressure("control messages")

    def unsent_events(self) -> list[tuple[dict[str, Any], int]]:
        return [(json.loads(text), after) for text, after in self._queue.unsent(ContentType.EVENT)]

    async def finalize(self) -> None:
        self._enqueue(ContentType.REQUEST, build_request("Finalize"))
        self._input_closed = self._queue.closed = True

    async def stop(self) -> None:
        self._enqueue(ContentType.REQUEST, build_request("Stop"))
        self._input_closed = self._queue.closed = True

    def _enqueue(self, kind: ContentType, message: dict[str, Any], *, limited: bool = False) -> None:
        text = to_json(message, limit=self._max_control_bytes if limited else None)
        if self._failure is not None and kind is ContentType.EVENT:
            self._queue.put_text(kind, text)  # never to be written: kept with the unsent, for the next stream
        self._check_writable()
        self._queue.put_text(kind, text)

    def _check_writable(self) -> None:
        if self._failure is not None:
            raise self._failure.detached()
        if self._writer is None and not self._writer_ended:
            raise UpstreamProtocolError("the upstream stream is not started")
        if self._input_closed:
            raise InvalidState("the session is finalizing; nothing more can be sent", code=ErrorCode.SESSION_FINALIZING)

    async def _write_loop(self) -> None:
        assert self._call is not None
        try:
            while (outgoing := await self._queue.next()) is not None:
                kind, payload = outgoing
                if isinstance(payload, bytes):
                    await self._call.write(self._contract.encode_request(kind, binary=payload))
                    self._queue.written(len(payload))
                    self.audio_bytes_sent += len(payload)
                else:
                    await self._call.write(self._contract.encode_request(kind, text=payload))
                    self._queue.written_text(payload)
            await self._call.done_writing()  # after Finalize/Stop: a server may end the RPC only on this
        except grpc.aio.AioRpcError as exc:
            self._fail(self._from_status(exc.code(), exc.details()))
        except asyncio.InvalidStateError:  # the RPC ended while audio was queued: why it ended, as the reader says
            self._fail(await self._ended_error())
        except UpstreamProtocolError as exc:  # the contract could not encode a message: a typed end, no traceback
            self._fail(exc)

    def _fail(self, error: GatewayError) -> GatewayError:
        """Keep the stream's first failure (without the frames of its raising: they hold this stream); ``error``."""
        if self._failure is None:
            self._failure = error.detached()
        self._queue.has_space.set()  # wake a sender blocked on backpressure so it sees the failure
        return error

    # --- receiving -------------------------------------------------------------------------------------

    async def items(self) -> AsyncIterator[UpstreamItem]:
        """Everything Data Flow sends, in order, until the stream ends; raises a typed error on failure."""
        while self._early:
            yield self._early.popleft()
        while True:
            try:
                item = await self._read_item()
            except grpc.aio.AioRpcError as exc:  # the error is in no local: this frame is in its traceback
                raise self._fail(self._from_status(exc.code(), exc.details())) from None
            if item is None:
                return
            yield item

    async def _read_item(self) -> UpstreamItem | None:
        assert self._call is not None
        while True:
            data = await self._call.read()
            if data is _EOF:
                return None
            assert isinstance(data, bytes)
            item = item_from_message(self._contract, data, self._redacted)
            if item is not None:
                self._read_bytes = len(data)
                return item

    # --- ending ----------------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Tear the stream down now (idempotent); Data Flow sees the RPC cancelled."""
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
        if self._call is not None and not self._call.done():
            self._call.cancel()
        self._queue.has_space.set()  # a sender waiting for space: nothing drains the queue any more
        self._early.clear()  # nothing will read them now
        if self._counted:
            self._counted = False
            self._client.call_ended()

    async def aclose(self) -> None:
        self.cancel()
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    async def _ended_error(self) -> UpstreamError:
        assert self._call is not None
        details = await self._call.details()
        return self._from_status(await self._call.code(), details)

    def _from_status(self, code: grpc.StatusCode, details: str | None) -> UpstreamError:
        if pings_refused(code, details):
            self._client.pings_refused(self._keepalive_s)
        return self._noted(error_from_status(code, self._redacted(details or "")))

    def _redacted(self, text: str) -> str:
        """``text`` without the gateway's own token: a Data Flow that echoes it (in a rejection, an event
        field) must not hand it to a client, whatever relays the text."""
        token = self._token.get_secret_value() if self._token is not None else ""
        return text.replace(token, "[redacted]") if token and token in text else text

    def _noted(self, error: UpstreamError) -> UpstreamError:
        """``error``, after dropping a token Data Flow refused at Start (the next stream fetches a new one). A
        live stream ended as unauthenticated says nothing of the token the next Start will carry."""
        if isinstance(error, UpstreamAuthFailed) and self._token is not None and not self._answered:
            self._client.tokens.invalidate(self._token)
        return error
