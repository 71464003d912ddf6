"""The contract between the WebSocket driver and a dialect, and the neutral commands between them.

A dialect is pure: no I/O, no timers, no session. One instance serves one connection (it may keep
what the client declared, e.g. whether it wants interim results). The driver
(:mod:`gateway.adapters.ws`) hands it each client message as ``str`` (text frame) or ``bytes``
(binary frame) and acts on the :data:`Command` it gets back; it hands it each session item to
render into the dialect's frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from gateway.adapters.socket import Frame
from gateway.dataflow.messages import StartRequest
from gateway.errors import GatewayError
from gateway.relay.items import Closed, OutItem

ClientMessage = str | bytes


@dataclass(frozen=True, slots=True)
class Begin:
    """Start a session. ``credential`` is an in-band credential (browsers that cannot use headers)."""

    request: StartRequest
    credential: str | None = None


@dataclass(frozen=True, slots=True)
class Audio:
    data: bytes


@dataclass(frozen=True, slots=True)
class Finalize:
    pass


@dataclass(frozen=True, slots=True)
class Stop:
    pass


@dataclass(frozen=True, slots=True)
class Update:
    settings: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SendEvent:
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer the client (in order with everything else); the session, if any, goes on."""

    frames: tuple[Frame, ...]


@dataclass(frozen=True, slots=True)
class Refuse:
    """The connection cannot go on: end the running session with ``error``, or refuse the start."""

    error: GatewayError


#: What a client message asks for. None: nothing (the message is ignored).
Command = Begin | Audio | Finalize | Stop | Update | SendEvent | Reply | Refuse | None
SessionCommand = Audio | Finalize | Stop | Update | SendEvent


@dataclass(frozen=True, slots=True)
class Goodbye:
    """The frames that end one session, and whether the connection ends with it."""

    frames: tuple[Frame, ...]
    close: bool = True


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

    def subprotocol(self, offered: Sequence[str]) -> str | None:
        """The subprotocol to accept with, from those the client offered."""
        ...

    def waiting(self, message: ClientMessage) -> Command:
        """A client message while no session runs."""
        ...

    def streaming(self, message: ClientMessage) -> Command:
        """A client message while a session runs (``Begin`` is not allowed here)."""
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
