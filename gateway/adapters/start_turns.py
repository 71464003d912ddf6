"""Waiting for a session start's turn under its connection's start rate and its key's (``unpaced``,
``relay.start_rates``), as the WebSocket driver does.

While it waits, the start is still the connection's: its client may leave, a drain may come, the
driver's watchdog may end the connection. Any of them ends the wait at once, and the start goes no
further (no Data Flow stream: a start whose client had left still opened one once its turn came). The
driver reads ahead meanwhile, as while a session starts, so a client that leaves is noticed whatever
the WebSocket mode; what it sends is held, in order, for the session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gateway.adapters.waiting import CommandWait

#: How often a waiting start looks whether it is still wanted.
STEP_S = 0.05
#: What the driver reads ahead of a waiting start (then the client is slowed by TCP, as before).
READ_AHEAD_BYTES = 64 * 1024


async def wait_turn(wait_s: float, waiting: CommandWait, stopped: Callable[[], bool]) -> bool:
    """Wait ``wait_s`` for the start's turn; False as soon as the client is gone or ``stopped()`` says the
    connection no longer starts sessions (a drain, a timeout, a goodbye)."""
    deadline = time.monotonic() + wait_s
    while not stopped():
        if (left := deadline - time.monotonic()) <= 0:
            return True
        if waiting.gone(READ_AHEAD_BYTES):
            return False
        await asyncio.sleep(min(left, STEP_S))
    return False
