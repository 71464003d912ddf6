"""The neutral commands a dialect turns client messages into, and the goodbye that ends a session.

Plain data, no behaviour: the driver (:mod:`gateway.adapters.ws`) acts on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.adapters.socket import Frame
from gateway.dataflow.messages import StartRequest
from gateway.errors import GatewayError

ClientMessage = str | bytes


@dataclass(frozen=True, slots=True)
class Begin:
    """Start a session. ``credential`` is an in-band credential (browsers that cannot use headers);
    ``reply`` goes out once the caller is admitted, before Data Flow answers (AudioHook's ``opened``)."""

    request: StartRequest
    credential: str | None = None
    reply: tuple[Frame, ...] = ()


@dataclass(frozen=True, slots=True)
class AfterSession:
    """Read ``message`` again once the running session has ended: a sequential dialect's next start, sent
    while the last session still flushes its results (AudioCodes: ``start`` right after ``stop``)."""

    message: ClientMessage


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
Command = Begin | Audio | Finalize | Stop | Update | SendEvent | AfterSession | Reply | Refuse | None
#: After these no more audio comes: the audio a dialect holds back (Twilio's track alignment) goes in first.
ENDS_INPUT = (Finalize, Stop, Refuse)
SessionCommand = Audio | Finalize | Stop | Update | SendEvent | AfterSession


@dataclass(frozen=True, slots=True)
class Goodbye:
    """The frames that end one session, and whether the connection ends with it."""

    frames: tuple[Frame, ...]
    close: bool = True
