"""The contract between the WebSocket driver and a dialect (the commands between them: :mod:`commands`).

A dialect is pure: no I/O, no timers, no session. One instance serves one connection (it may keep
what the client declared, e.g. whether it wants interim results). The driver
(:mod:`gateway.adapters.ws`) hands it each client message as ``str`` (text frame) or ``bytes``
(binary frame) and acts on the :data:`Command` it gets back; it hands it each session item to
render into the dialect's frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol, runtime_checkable

from gateway.adapters.commands import ClientMessage, Command, Goodbye, SessionCommand
from gateway.adapters.socket import Frame
from gateway.errors import GatewayError
from gateway.relay.items import Closed, OutItem

__all__ = [
    "MAX_START_BYTES",
    "ClientClosesSocket",
    "ClientMessage",
    "Command",
    "Dialect",
    "HoldsAudio",
    "SessionCommand",
    "held_audio",
]

#: Largest start message (or anything before it) by default; routes pass GATEWAY_MAX_CONTROL_MESSAGE_BYTES.
#: A start's settings and call properties go to Data Flow and stay with the session (it is replayed on
#: recovery): 1 MiB of ``[{},{},…]`` held ~27 MB of objects for the session's life.
MAX_START_BYTES = 64 * 1024


class Dialect(Protocol):
    #: The dialect's name in metrics and logs (a fixed word, never client input).
    name: ClassVar[str]
    #: Several sessions one after another on one connection (AudioCodes), or one (the rest).
    sequential: ClassVar[bool]
    #: May the credential come in the start message (browsers), after the handshake?
    credentials_in_band: ClassVar[bool]
    #: Refuse at once when the replica is full; else the refusal waits for the start message, so it
    #: can be written in the client's own dialect (Data Flow's two JSON spellings).
    refuse_full_at_once: ClassVar[bool]
    #: Does the dialect render flow reports (:class:`Flow`)? Sessions of the others make none.
    reports_flow: ClassVar[bool]

    def subprotocol(self, offered: Sequence[str]) -> str | None:
        """The subprotocol to accept with, from those the client offered."""
        ...

    def waiting(self, message: ClientMessage) -> Command:
        """A client message while no session runs."""
        ...

    def streaming(self, message: ClientMessage) -> Command:
        """A client message while a session runs (``Begin`` is not allowed here; a sequential dialect's
        next start, sent while this session ends, is ``AfterSession``: read again once it has)."""
        ...

    def fast_audio(self, message: ClientMessage) -> bytes | None:
        """The fast path's :meth:`streaming`, for messages that are audio only: their audio (b"": handled,
        nothing to send), with the same effects on the dialect; None, with no effect at all, for
        anything else (the message then takes the normal path, :meth:`streaming`)."""
        ...

    def failed(self, command: SessionCommand, error: GatewayError) -> Command:
        """``command`` failed without ending the session: what the client is told (None: nothing)."""
        ...

    def render(self, item: OutItem) -> Sequence[Frame]:
        """A session item as frames (none: the dialect has no counterpart)."""
        ...

    def goodbye(self, closed: Closed) -> Goodbye: ...

    def refusal(self, error: GatewayError, *, start_failed: bool) -> Sequence[Frame]:
        """The frames that refuse a start (then the connection is closed with the error's code)."""
        ...


@runtime_checkable
class HoldsAudio(Protocol):
    """A dialect that may hold client audio back (Twilio's track that runs ahead of the other)."""

    def flush(self) -> bytes:
        """The audio held so far, all of it: the session's input ends (finalize, stop or hang-up)."""
        ...


@runtime_checkable
class ClientClosesSocket(Protocol):
    """A dialect whose client closes the socket itself after the server's goodbye (AudioHook), so the
    driver keeps reading for a bounded time instead of closing first."""

    def after_goodbye(self, message: ClientMessage) -> Sequence[Frame]:
        """What the client is told about a message it sends after the goodbye (none: nothing)."""
        ...


@runtime_checkable
class AnswersWhileStarting(Protocol):
    """A dialect whose client expects some answers while Data Flow is still starting (AudioHook's
    ``pong``: Genesys gives up on a ping unanswered for 5 s, and a start may take longer)."""

    def while_starting(self, message: ClientMessage) -> Sequence[Frame] | None:
        """The answer to ``message``, sent at once, the message done with; None: it waits, held, in order."""
        ...


def held_audio(dialect: object) -> bytes:
    """What ``dialect`` holds back, to feed before the input ends (the others hold nothing)."""
    return dialect.flush() if isinstance(dialect, HoldsAudio) else b""
