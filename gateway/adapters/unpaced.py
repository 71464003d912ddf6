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

While a session starts, the messages a dialect answers at once (AudioHook's ping:
:func:`answers_while_starting`) are charged here too; the rest wait, held, for the session's pace.

Session starts have a pace of their own (``GATEWAY_SESSION_START_RATE`` a second after
:data:`START_BURST`): each is a Data Flow stream and log lines, and one AudioCodes socket looping
start and stop ran 389 recognitions a second. A start past it waits its turn
(:mod:`gateway.adapters.start_turns`); it is never refused for it. A bot's recognitions, one a turn, stay far below it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from gateway.adapters import commands
from gateway.adapters.dialect import AnswersWhileStarting, ClientMessage, Command
from gateway.connections.pace import Pace
from gateway.dataflow.lenient import longer_than

MESSAGE_S = 0.002
BYTES_PER_S = 1024 * 1024
BURST_S = 1.0
#: Sessions a connection may start at once before :meth:`OutOfSessionPacer.start_turn` paces them.
START_BURST = 10


class OutOfSessionPacer:
    def __init__(self, starts_per_s: float = 0.0) -> None:
        self._pace = Pace(BURST_S)
        self._start_s = 1 / starts_per_s if starts_per_s > 0 else 0.0
        self._starts = Pace(START_BURST * self._start_s)

    def start_turn(self) -> float:
        """A session start on this connection, its turn taken: seconds to wait for it (0: now, or no rate)."""
        return max(0.0, self._starts.charge(self._start_s, time.monotonic())) if self._start_s else 0.0

    async def charge(self, message: ClientMessage) -> None:
        """Count ``message``; wait while the connection is more than :data:`BURST_S` ahead."""
        if (ahead := self._pace.charge(MESSAGE_S + len(message) / BYTES_PER_S, time.monotonic())) > 0:
            await asyncio.sleep(ahead)


Answer = Callable[[ClientMessage], Awaitable[bool]]


def answers_while_starting(
    dialect: object, pacer: OutOfSessionPacer, reply: Callable[[commands.Reply], Awaitable[None]]
) -> Answer | None:
    """What answers a message at once while a session starts, for a dialect that has such answers
    (:class:`AnswersWhileStarting`); each one answered is paced like any message out of session."""
    if not isinstance(dialect, AnswersWhileStarting):
        return None
    answering = dialect

    async def answer(message: ClientMessage) -> bool:
        frames = answering.while_starting(message)
        if frames is None:
            return False
        await pacer.charge(message)
        await reply(commands.Reply(tuple(frames)))
        return True

    return answer


def paced_here(message: ClientMessage, command: Command, cap: int) -> bool:
    """Is a streaming session's ``message`` charged to its pace here? Yes when the gateway handles it alone
    (no command, a reply), or when it is text over ``cap`` (``GATEWAY_MAX_CONTROL_MESSAGE_BYTES``, UTF-8
    bytes as the cap counts them), which Data Flow never sees; what goes to Data Flow is paced there."""
    handled_here = command is None or isinstance(command, commands.Reply)
    return handled_here or (isinstance(message, str) and longer_than(message, cap))
