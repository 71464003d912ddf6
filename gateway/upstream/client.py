"""The upstream client: one grpc.aio channel per process, one DataflowStream per session.

A DataflowStream writes the exact current JSON dialect, injects the server-held token and tenant,
and keeps audio in order with control messages through a single writer task. A grpc.aio write
costs about 50 µs of CPU (and as much again in the receiving server) whatever its size, so audio
that queues up while a write is in flight is merged into one message (bounded by
``upstream_coalesce_ms``), and under load each stream spaces its audio writes so that the process
as a whole stays near ``upstream_write_rate`` writes per second: a few streams forward every
client frame at once; a thousand hold up to ``upstream_max_write_interval_ms`` of audio each, and
a held message goes as soon as it is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from pydantic import SecretStr

from gateway.audio import AudioFormat, rechunk
from gateway.dataflow_json import (
    DataflowEvent,
    DataflowResponse,
    StartRequest,
    build_request,
    build_start,
    loads_object,
    parse_event,
    parse_response,
)
from gateway.errors import (
    GatewayError,
    InvalidMessage,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.settings import Settings
from gateway.upstream.contract import ContentType, WireContract
from gateway.upstream.errors import error_from_status
from gateway.upstream.token import TokenProvider

log = logging.getLogger(__name__)
_EOF = grpc.aio.EOF  # type: ignore[attr-defined]  # (missing from the grpc stubs)
#: Shorter holds are not worth a timer: the loop's clock resolution is 1 ms, so a sub-millisecond
#: sleep costs a whole tick per write (an upload of an hour's audio would wait seconds for nothing).
_LEAST_HOLD_S = 0.001
#: Load-based holds grow in steps of Data Flow's recommended chunk (and the usual client frame).
_MERGE_STEP_S = 0.02
_STEPS_PER_S = 50


@dataclass(frozen=True, slots=True)
class UpstreamAudio:
    """Audio sent back by Data Flow (e.g. TTS), 16-bit PCM without header."""

    data: bytes


UpstreamItem = DataflowEvent | DataflowResponse | UpstreamAudio


class UpstreamClient:
    """Owns the process-wide channel to Data Flow and opens streams on it."""

    def __init__(self, settings: Settings, tokens: TokenProvider, target: str | None = None) -> None:
        self.settings = settings
        self.tokens = tokens
        self.target = target or settings.upstream_target
        self.contract = WireContract(settings.upstream_proto_module, settings.upstream_method_path)
        self.active_streams = 0
        self._channel: grpc.aio.Channel | None = None
        self._least_interval_s = settings.upstream_write_interval_ms / 1000
        self._most_interval_s = max(self._least_interval_s, settings.upstream_max_write_interval_ms / 1000)
        self._write_rate = settings.upstream_write_rate

    def audio_write_interval_s(self) -> float:
        """How long one stream may hold audio to merge it, at the current load (one call per write).

        Each stream's share of the process's write rate, in whole 20 ms steps and at least two of
        them: a hold near a client's frame period delays frames while merging few (25 ms against
        20 ms frames merges one write in five; exactly 20 ms lets jitter ratchet every frame up to
        a frame late), while a hold of k frames merges k frames into every write it delays.
        """
        if self._write_rate <= 0:
            return self._least_interval_s
        steps = self.active_streams * _STEPS_PER_S // self._write_rate  # integers: exact at every boundary
        if steps < 2:
            steps = 0
        return min(self._most_interval_s, max(self._least_interval_s, steps * _MERGE_STEP_S))

    def _options(self) -> list[tuple[str, Any]]:
        s = self.settings
        return [
            ("grpc.keepalive_time_ms", int(s.upstream_keepalive_interval_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(s.upstream_keepalive_timeout_s * 1000)),
            # gRPC core (1.6x-1.8x) times a keepalive ping out with the ping timeout, not the keepalive
            # timeout (default 60 s): without this a half-open upstream goes unnoticed for a minute.
            ("grpc.http2.ping_timeout_ms", int(s.upstream_keepalive_timeout_s * 1000)),
            # gRPC's default reconnect back-off grows to 120 s: after an outage new sessions would
            # keep failing for up to two minutes after Data Flow is back.
            ("grpc.max_reconnect_backoff_ms", int(s.upstream_reconnect_backoff_max_s * 1000)),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.max_send_message_length", s.upstream_max_message_bytes),
            ("grpc.max_receive_message_length", s.upstream_max_message_bytes),
        ]

    @property
    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            if self.settings.upstream_is_plaintext() or self.settings.simulator_mode:
                self._channel = grpc.aio.insecure_channel(self.target, options=self._options())
            else:
                ca = self.settings.upstream_ca_file
                roots = ca.read_bytes() if ca else None
                creds = grpc.ssl_channel_credentials(root_certificates=roots)
                self._channel = grpc.aio.secure_channel(self.target, creds, options=self._options())
        return self._channel

    def ready(self) -> bool:
        """The channel is connected or able to connect on demand (not in a failure back-off)."""
        state = self.channel.get_state(try_to_connect=True)
        return state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.IDLE)

    def stream(self, audio: AudioFormat, *, deadline_s: float) -> DataflowStream:
        return DataflowStream(self, audio, deadline_s=deadline_s)

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None


class DataflowStream:
    """One upstream Stream RPC: start, audio, control messages, and the items Data Flow sends."""

    def __init__(self, client: UpstreamClient, audio: AudioFormat, *, deadline_s: float) -> None:
        s = client.settings
        self._client = client
        self._contract = client.contract
        self._deadline_s = deadline_s
        self._response_timeout_s = s.upstream_response_timeout_s
        self._audio = audio
        self._frame_bytes = audio.frame_bytes
        self._coalesce_bytes = max(audio.frame_bytes, audio.ms_to_bytes(s.upstream_coalesce_ms))
        self._buffer_limit = max(self._coalesce_bytes, audio.ms_to_bytes(s.upstream_buffer_ms))
        self._call: grpc.aio.StreamStreamCall[bytes, bytes] | None = None
        self._token: SecretStr | None = None
        self._early: deque[UpstreamItem] = deque()
        # What goes upstream, in order, each with the time it was queued.
        self._outbox: deque[tuple[ContentType, bytearray | str, float]] = deque()
        self._pending_audio = 0
        self._has_work = asyncio.Event()
        self._holding_for = 0  # while the writer holds partial audio: the byte count that ends the hold
        self._hold_over = asyncio.Event()
        self._has_space = asyncio.Event()
        self._has_space.set()
        self._writer: asyncio.Task[None] | None = None
        self._failure: GatewayError | None = None
        self._input_closed = False
        self._counted = False
        self.session_id: str | None = None
        self.audio_bytes_sent = 0

    # --- opening -------------------------------------------------------------------------------------

    async def start(self, request: StartRequest) -> DataflowResponse:
        """Send Start and wait for StartResponse; raises a typed UpstreamError on any failure."""
        settings = self._client.settings
        self._token = await self._client.tokens.get()
        start = build_start(request, token=self._token.get_secret_value(), tenant=settings.upstream_tenant)
        # Messages are serialised by the contract, so the channel moves raw bytes both ways.
        method = self._client.channel.stream_stream(self._contract.method_path, None, None)
        self._call = method(None, timeout=self._deadline_s)
        self._client.active_streams += 1
        self._counted = True
        try:
            async with asyncio.timeout(settings.upstream_start_timeout_s):
                await self._call.write(self._contract.encode_request(ContentType.REQUEST, text=json.dumps(start)))
                response = await self._await_start_response()
        except TimeoutError:
            self.cancel()
            raise UpstreamTimeout(
                f"Data Flow did not answer Start within {settings.upstream_start_timeout_s:g} s"
            ) from None
        except grpc.aio.AioRpcError as exc:
            self.cancel()
            raise self._from_status(exc) from None
        except BaseException:
            self.cancel()
            raise
        if not response.ok:
            self.cancel()
            text = response.error or "start failed"
            if _looks_like_auth_failure(text):
                self._client.tokens.invalidate(self._token)
                raise UpstreamAuthFailed(f"Data Flow refused the gateway's credential: {text}")
            raise UpstreamRejected(f"Data Flow rejected the session: {text}", dataflow_message=text)
        self.session_id = response.session_id
        self._writer = asyncio.create_task(self._write_loop(), name="dataflow-writer")
        return response

    async def _await_start_response(self) -> DataflowResponse:
        while True:
            item = await self._read_item()
            if item is None:
                raise UpstreamUnavailable("Data Flow closed the stream before answering Start")
            if isinstance(item, DataflowResponse) and item.name == "StartResponse":
                return item
            self._early.append(item)

    # --- sending -------------------------------------------------------------------------------------

    @property
    def buffered_bytes(self) -> int:
        """Audio accepted from the client but not yet written upstream."""
        return self._pending_audio

    @property
    def backpressured(self) -> bool:
        return not self._has_space.is_set()

    async def send_audio(self, data: bytes) -> None:
        """Queue whole-sample audio; waits (bounded) while the upstream buffer is full."""
        self._check_writable()
        if len(data) % self._frame_bytes:
            raise ValueError("audio must be whole sample frames")
        now = time.monotonic()
        for piece in (
            rechunk(data, self._frame_bytes, self._coalesce_bytes) if len(data) > self._coalesce_bytes else [data]
        ):
            tail = self._outbox[-1] if self._outbox else None
            if (
                tail is not None
                and isinstance(tail[1], bytearray)
                and len(tail[1]) + len(piece) <= self._coalesce_bytes
            ):
                tail[1].extend(piece)
            else:
                self._outbox.append((ContentType.AUDIO, bytearray(piece), now))
        self._pending_audio += len(data)
        self._has_work.set()
        if self._holding_for and (len(self._outbox) > 1 or len(self._outbox[0][1]) >= self._holding_for):
            self._hold_over.set()  # the held message is full: send it now, not at the hold's deadline
        if self._pending_audio >= self._buffer_limit:
            self._has_space.clear()
            try:
                async with asyncio.timeout(self._response_timeout_s):
                    await self._has_space.wait()
            except TimeoutError:
                raise UpstreamTimeout(f"Data Flow stopped accepting audio for {self._response_timeout_s:g} s") from None
            self._check_writable()

    async def update(self, settings: dict[str, Any]) -> None:
        self._enqueue(ContentType.REQUEST, build_request("Update", Settings=settings))

    async def send_event(self, event: dict[str, Any]) -> None:
        body = event if "Event" in event else {"Event": event}
        self._enqueue(ContentType.EVENT, body)

    async def finalize(self) -> None:
        self._enqueue(ContentType.REQUEST, build_request("Finalize"))
        self._input_closed = True

    async def stop(self) -> None:
        self._enqueue(ContentType.REQUEST, build_request("Stop"))
        self._input_closed = True

    def _enqueue(self, kind: ContentType, message: dict[str, Any]) -> None:
        self._check_writable()
        self._outbox.append((kind, json.dumps(message), time.monotonic()))
        self._has_work.set()
        self._hold_over.set()  # a control message (say, Finalize) does not wait behind held audio

    def _check_writable(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._writer is None:
            raise UpstreamProtocolError("the upstream stream is not started")
        if self._input_closed:
            raise InvalidMessage("the session is finalizing; nothing more can be sent")

    async def _hold(self) -> None:
        """Under load, let the audio at the head gather into one message (each write costs the same
        whatever its size): until it holds ``hold`` of audio, something is queued behind it, or its
        first bytes have waited ``hold``. A full message goes at once, so k merged 20 ms frames wait
        (k-1)*10 ms on average, not the k*10 ms of a fixed write interval."""
        head, queued_at = self._outbox[0][1], self._outbox[0][2]
        if not isinstance(head, bytearray) or len(self._outbox) > 1:
            return
        hold = self._client.audio_write_interval_s()
        target = min(self._coalesce_bytes, self._audio.ms_to_bytes(hold * 1000))
        remaining = queued_at + hold - time.monotonic()
        if len(head) >= target or remaining <= _LEAST_HOLD_S:
            return
        self._holding_for = target
        self._hold_over.clear()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._hold_over.wait()
        finally:
            self._holding_for = 0

    async def _write_loop(self) -> None:
        assert self._call is not None
        try:
            while True:
                while not self._outbox:
                    self._has_work.clear()
                    await self._has_work.wait()
                await self._hold()
                kind, payload, _ = self._outbox.popleft()
                if isinstance(payload, bytearray):
                    await self._call.write(self._contract.encode_request(kind, binary=bytes(payload)))
                    self._pending_audio -= len(payload)
                    self.audio_bytes_sent += len(payload)
                    if self._pending_audio < self._buffer_limit:
                        self._has_space.set()
                else:
                    await self._call.write(self._contract.encode_request(kind, text=payload))
        except grpc.aio.AioRpcError as exc:
            self._fail(self._from_status(exc))
        except asyncio.InvalidStateError:
            # The RPC ended while audio was queued: report why it ended, as the reader will.
            self._fail(await self._ended_error())

    def _fail(self, error: GatewayError) -> None:
        if self._failure is None:
            self._failure = error
        self._has_space.set()  # wake a sender blocked on backpressure so it sees the failure

    # --- receiving -------------------------------------------------------------------------------------

    async def items(self) -> AsyncIterator[UpstreamItem]:
        """Everything Data Flow sends, in order, until the stream ends; raises a typed error on failure."""
        while self._early:
            yield self._early.popleft()
        while True:
            try:
                item = await self._read_item()
            except grpc.aio.AioRpcError as exc:
                error = self._from_status(exc)
                self._fail(error)
                raise error from None
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
            frame = self._contract.decode_response(data)
            if frame.content_type is ContentType.AUDIO:
                return UpstreamAudio(frame.binary)
            try:
                obj = loads_object(frame.text)
            except InvalidMessage:
                log.warning("skipped an upstream %s message that is not a JSON object", frame.content_type.value)
                continue
            if frame.content_type is ContentType.RESPONSE:
                return parse_response(obj)
            if frame.content_type is ContentType.EVENT:
                return parse_event(obj)
            log.debug("ignored an upstream %s message", frame.content_type.value)

    # --- ending ----------------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Tear the stream down now (idempotent); Data Flow sees the RPC cancelled."""
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
        if self._call is not None and not self._call.done():
            self._call.cancel()
        if self._counted:
            self._counted = False
            self._client.active_streams -= 1

    async def aclose(self) -> None:
        self.cancel()
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    async def _ended_error(self) -> UpstreamError:
        assert self._call is not None
        code = await self._call.code()
        if code is grpc.StatusCode.OK:
            return UpstreamUnavailable("Data Flow closed the stream")
        return self._typed(code, await self._call.details())

    def _from_status(self, exc: grpc.aio.AioRpcError) -> UpstreamError:
        return self._typed(exc.code(), exc.details())

    def _typed(self, code: grpc.StatusCode, details: str | None) -> UpstreamError:
        error = error_from_status(code, details)
        if isinstance(error, UpstreamAuthFailed) and self._token is not None:
            self._client.tokens.invalidate(self._token)
        return error


def _looks_like_auth_failure(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in ("token", "unauthor", "unauthent", "expired", "credential"))
