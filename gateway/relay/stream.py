"""The upstream stream as the session sees it: two small Protocols, no gRPC.

:class:`gateway.upstream.stream.DataflowStream` is the real implementation; unit tests drive the
Session with an in-memory fake (``tests/support/fake_upstream.py``), the way httpx tests its
clients through a mock transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import DataflowResponse, StartRequest, UpstreamItem


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

    async def update(self, settings: dict[str, Any]) -> None: ...

    async def send_event(self, event: dict[str, Any]) -> None: ...

    async def finalize(self) -> None: ...

    async def stop(self) -> None: ...

    def items(self) -> AsyncIterator[UpstreamItem]:
        """Everything Data Flow sends, in order, until the stream ends."""
        ...

    def cancel(self) -> None:
        """Tear the stream down now (idempotent)."""
        ...


class StreamOpener(Protocol):
    """Opens upstream streams (:class:`gateway.upstream.channel.UpstreamClient`)."""

    def stream(self, audio: AudioFormat, *, deadline_s: float) -> UpstreamStream: ...
