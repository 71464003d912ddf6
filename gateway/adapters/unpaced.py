"""What a client's messages cost while no session of its connection streams.

A streaming session paces its client (relay.intake: audio against ``GATEWAY_MAX_AUDIO_RATE_X``, and
messages the gateway handles alone by their cost). Before the start, between sessions, while a session
finalizes and after a goodbye nothing did: each message was handled, answered or dropped as fast as it
came. A client that sent binary frames before its start message had 9 GB read in 14 s, each frame
answered with an ``audio_before_start`` error (the start timeout ends it, but only after 10 s).

Here each such message costs :data:`MESSAGE_S` plus its length at :data:`BYTES_PER_S`, and a client
may be :data:`BURST_S` ahead; past that the driver waits before it reads on (the client is slowed by
TCP, nothing it sent is lost). Real clients stay far below it: telephony audio streamed between two
recognitions (AudioCodes) at 50 frames a second uses an eighth of it.
"""

from __future__ import annotations

import asyncio
import time

from gateway.adapters.dialect import ClientMessage
from gateway.connections.pace import Pace

MESSAGE_S = 0.002
BYTES_PER_S = 1024 * 1024
BURST_S = 1.0


class OutOfSessionPacer:
    def __init__(self) -> None:
        self._pace = Pace(BURST_S)

    async def charge(self, message: ClientMessage) -> None:
        """Count ``message``; wait while the connection is more than :data:`BURST_S` ahead."""
        if (ahead := self._pace.charge(MESSAGE_S + len(message) / BYTES_PER_S, time.monotonic())) > 0:
            await asyncio.sleep(ahead)
