"""An upload's feeding paced by its client's reading (NDJSON/SSE answers).

Uploads are not live: Data Flow answers as fast as the audio is fed, faster than a client that sends
its whole body before reading takes the answer. Unpaced, the session's queue to the client filled
and the session ended as ``client_too_slow`` with no answer at all. Paced, the feeder waits while
the client's unread messages are past half of their bounds: the body stops being read, so the
client feels its own slowness over TCP, and Data Flow is fed no faster than the answer is read.
``GATEWAY_CLIENT_SEND_TIMEOUT_S`` stays the limit for a client that reads nothing.
"""

from __future__ import annotations

import asyncio

from gateway.relay.items import SessionState
from gateway.relay.session import Session
from gateway.settings import Settings


def backlog(session: Session) -> tuple[int, int]:
    """Items and bytes queued for the client and not yet taken."""
    return len(session.outbox), session.outbox.bytes


class ReadPacer:
    def __init__(self, settings: Settings) -> None:
        self.items = settings.client_event_queue // 2  # the low-water marks: half of each bound
        self.bytes = settings.client_outbox_bytes // 2
        self._taken = asyncio.Event()

    def taken(self) -> None:
        """The answer's side took an item from the session."""
        self._taken.set()

    def behind(self, session: Session) -> bool:
        items, held = backlog(session)
        return items > self.items or held > self.bytes

    async def wait(self, session: Session) -> None:
        """Until the client has read below the low-water marks (or the session stops streaming)."""
        while session.state is SessionState.STREAMING and self.behind(session):
            self._taken.clear()
            await self._taken.wait()
            session.touch()  # the gateway holding the body back is not the client idling
