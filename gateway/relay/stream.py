"""The upstream stream as the session sees it: two small Protocols, no gRPC.

:class:`gateway.upstream.stream.DataflowStream` is the real implementation; unit tests drive the
Session with an in-memory fake (``tests/support/fake_upstream.py``), the way httpx tests its
clients through a mock transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import DataflowResponse, StartRequest, UpstreamItem


@dataclass(frozen=True, slots=True)
class Recovered:
    """The upstream stream was replaced under a live session (see :mod:`gateway.relay.recovery`)."""

    reason: str  # "failure" (Data Flow or the connection failed) or "rotation" (planned)
    gap_ms: float  # from noticing the failure to the new stream taking audio
    replayed_ms: float  # audio sent again, from the end of the last final result
    lost_ms: float  # audio between that point and the oldest audio kept (GATEWAY_UPSTREAM_REPLAY_MS)
    attempts: int


class UpstreamStream(Protocol):
    """One upstream session. Every method raises a typed ``UpstreamError`` when Data Flow fails."""

    @property
    def session_id(self) -> str | None: ...

    @property
    def audio_bytes_sent(self) -> int: ...

    @property
    def buffered_bytes(self) -> int:
        """Audio accepted but not yet written upstream."""
        ...

    @property
    def backpressured(self) -> bool: ...

    @property
    def pauses(self) -> int:
        """Times a send had to wait for room (the client was paused)."""
        ...

    async def start(self, request: StartRequest) -> DataflowResponse: ...

    async def send_audio(self, data: bytes) -> None:
        """Queue whole-sample audio in the upstream format; waits (bounded) while the buffer is full."""
        ...

    def ready(self) -> bool:
        """``send_audio`` would neither wait nor fail now (the fast path asks before :meth:`put_audio`)."""
        ...

    def put_audio(self, data: bytes) -> None:
        """``send_audio`` without the wait: only right after :meth:`ready` said True."""
        ...

    async def update(self, settings: dict[str, Any]) -> None: ...

    async def send_event(self, event: dict[str, Any]) -> None: ...

    def unsent_events(self) -> list[tuple[dict[str, Any], int]]:
        """Events this stream was handed and never wrote (it failed first), oldest first, each with the
        bytes of audio queued after it: a recovery sends them on the next stream, at their places."""
        ...

    async def finalize(self) -> None: ...

    async def stop(self) -> None: ...

    def items(self) -> AsyncIterator[UpstreamItem | Recovered]:
        """Everything Data Flow sends, in order, until the stream ends (a recovering stream adds a
        :class:`Recovered` where it replaced the stream under the session)."""
        ...

    def cancel(self) -> None:
        """Tear the stream down now (idempotent)."""
        ...


class StreamOpener(Protocol):
    """Opens upstream streams (:class:`gateway.upstream.channel.UpstreamClient`)."""

    def stream(self, audio: AudioFormat, *, deadline_s: float) -> UpstreamStream: ...
