"""The WebSocket fast path's sink for one connection (see :mod:`gateway.ws_protocol`).

uvicorn's protocol offers it each client message while nothing waits in the ASGI queue. It takes the
message at once — in the protocol's callback, no task switch — only when all of this holds: the
driver has handled every earlier message and waits for the next one; a session is streaming; the
dialect says the message is audio and nothing else; and feeding it would neither wait (pacing, Data
Flow's buffer) nor meet a limit. Anything else it refuses with no effect at all, and the message
takes the normal path, in order, where waiting, errors and control messages are handled as always.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from gateway.adapters.dialect import ClientMessage, Dialect
from gateway.adapters.reader import ClientReader
from gateway.observability import GatewayMetrics
from gateway.relay.session import Session
from gateway.ws_protocol import FAST_RECEIVE

#: Bytes a dialect may feed beyond the message's own length (a sample the AudioHook aligner held back,
#: Twilio's outbound track mixed in): ``ready_for`` gets an upper bound, never less than is fed.
_SLACK_BYTES = 4096


class FastAudioHost(Protocol):
    """What the sink reads of its connection (:class:`gateway.adapters.ws.Connection`)."""

    dialect: Dialect
    reader: ClientReader
    session: Session | None


class FastAudio:
    def __init__(self, host: FastAudioHost) -> None:
        self._host = host
        self.taken = 0

    def __call__(self, message: ClientMessage) -> bool:
        host = self._host
        session = host.session
        if session is None or not host.reader.idle:
            return False
        bound = (2 * len(message) if isinstance(message, str) else len(message)) + _SLACK_BYTES
        if not session.ready_for(bound):
            return False
        data = host.dialect.fast_audio(message)
        if data is None:
            return False
        session.take_audio(data, message)
        self.taken += 1
        return True


def register(scope: Mapping[str, Any], host: FastAudioHost, metrics: GatewayMetrics) -> Callable[[], None]:
    """Offer ``host``'s connection the fast path when the server has one. Returns what to call at the
    connection's end: it withdraws the offer and counts the messages by the path they took."""
    sink = FastAudio(host)
    offer = (scope.get("extensions") or {}).get(FAST_RECEIVE)
    if offer is not None:
        offer(sink)

    def done() -> None:
        if offer is not None:
            offer(None)
        if sink.taken:
            metrics.ws_messages.labels(path="fast").inc(sink.taken)
        if host.reader.queued:
            metrics.ws_messages.labels(path="queued").inc(host.reader.queued)

    return done
