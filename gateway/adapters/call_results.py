"""A call's results sent to its webhook, for dialects whose socket carries none back (Twilio, Vonage, jambonz listen).

The WebSocket driver hands every session item to the connection's :class:`CallResults` before the
dialect renders it, and tells it when the socket is gone. :class:`WebhookResults` posts one signed
webhook per final event (the native ``event`` fields) and, when the session closes, a summary with the
transcript per channel (up to ``GATEWAY_MAX_TRANSCRIPT_BYTES``), the non-fatal notices a client on the
socket would have had, and how the call ended; each carries the call's identity (the platform's ids and
the gateway's session id). For a telephony call the socket closing is the hang-up: the session is
finalized, not cancelled, so Data Flow finishes and its last results are delivered.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any, ClassVar, Protocol

from gateway.adapters import messages
from gateway.adapters.dialect import held_audio
from gateway.dataflow.messages import DataflowEvent
from gateway.errors import GatewayError
from gateway.relay.items import Closed, Notice, OutItem, SessionState, Started
from gateway.relay.session import Session
from gateway.relay.transcript import Transcript
from gateway.webhooks.delivery import WebhookDeliverer
from gateway.webhooks.targets import WebhookTarget

log = logging.getLogger(__name__)

#: The longest value of a call's identity kept for the call's life and sent in its webhooks (Twilio's
#: sids are 34 characters, Vonage's uuids 36): the rest is cut.
MAX_IDENTITY_CHARS = 256
#: The most non-fatal notices a summary lists (a session has few: audio that ended inside a sample, a
#: drain); the rest are counted in ``noticesDropped``.
MAX_SUMMARY_NOTICES = 8
#: A lone UTF-16 surrogate: JSON's ``"\ud800"`` parses to one, and no UTF-8 encoder takes it.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def scalar_text(value: Any) -> str:
    """A JSON scalar as text; "" for null, a list or an object (str() would keep their repr, up to 4x)."""
    if isinstance(value, str):
        return value
    return str(value) if isinstance(value, int | float) else ""  # JSON caps an integer at 4300 digits


def identity_text(value: Any) -> str:
    """A value of the call's identity as kept: a JSON scalar's text, cut to MAX_IDENTITY_CHARS, a lone
    surrogate replaced (encoding the webhook would fail on it: the call's results would be lost)."""
    return _SURROGATE.sub("\ufffd", scalar_text(value)[:MAX_IDENTITY_CHARS])


class CallResults:
    """What the driver tells a connection's result sink; this one does nothing (results go on the socket)."""

    #: Does the client's hanging up end the call normally (finalize), rather than cancel it?
    finishes_call = False

    def observe(self, item: OutItem) -> None:
        """A session item, before the dialect renders it."""

    async def hang_up(self, session: Session) -> None:
        """The connection is over while ``session`` may still run."""


NO_RESULTS = CallResults()


class IdentifiedCall(Protocol):
    name: ClassVar[str]

    def call_identity(self) -> dict[str, str]: ...


class WebhookResults(CallResults):
    finishes_call = True

    def __init__(
        self, call: IdentifiedCall, deliverer: WebhookDeliverer, target: WebhookTarget | None, max_transcript_bytes: int
    ) -> None:
        self.call = call
        self.deliverer = deliverer
        self.target = target
        self.session_id = ""
        self.dataflow_session_id: str | None = None
        self.transcript = Transcript(max_transcript_bytes)  # GATEWAY_MAX_TRANSCRIPT_BYTES
        self.notices: list[dict[str, Any]] = []  # what a client on the socket would have been told
        self.notices_dropped = 0
        self.summarised = False

    def observe(self, item: OutItem) -> None:
        if self.target is None:
            return  # no webhook for this caller: nobody to tell, nothing to keep
        if isinstance(item, Started):
            self.session_id, self.dataflow_session_id = item.session_id, item.dataflow_session_id
        elif isinstance(item, DataflowEvent) and item.final and item.text:
            self.transcript.add(item.channel, item.text)
            self._post({"type": "event", "event": messages.event(item, raw=False)})
        elif isinstance(item, Notice):
            if len(self.notices) < MAX_SUMMARY_NOTICES:
                self.notices.append(item.error.to_json())
            else:
                self.notices_dropped += 1
        elif isinstance(item, Closed):
            self._summary(item)

    async def hang_up(self, session: Session) -> None:
        if session.state is SessionState.STREAMING:  # the caller hung up: finish, don't cancel
            if held := held_audio(self.call):  # audio the dialect held back (Twilio's tracks) goes in first
                with contextlib.suppress(GatewayError):
                    await session.feed_audio(held)
            with contextlib.suppress(GatewayError):
                await session.finalize()
        elif session.closed is not None and not self.summarised:  # it never started: say how it ended
            self.session_id = self.session_id or session.id
            self._summary(session.closed)

    def _summary(self, closed: Closed) -> None:
        if not self.summarised:
            self.summarised = True
            notices = {"notices": self.notices, "noticesDropped": self.notices_dropped}
            transcript = [{"channel": channel, "text": text} for channel, text in self.transcript.by_channel().items()]
            summary = {"transcript": transcript, **self.transcript.cut(), **notices, "ended": _ended(closed)}
            self._post({"type": "summary", **summary})

    def _post(self, body: dict[str, Any]) -> None:
        if self.target is None:
            return  # no webhook configured for this caller: nobody to tell
        ids = {"sessionId": self.session_id, "dataflowSessionId": self.dataflow_session_id}
        call = {**self.call.call_identity(), **ids}
        msg_id = self.deliverer.submit(self.target, {"dialect": self.call.name, "call": call, **body})
        log.debug("session %s: webhook %s queued (%s)", self.session_id, msg_id, body["type"])


def _ended(closed: Closed) -> dict[str, Any]:
    """How the call ended: the session's reason and close code, the error code if it failed."""
    error = closed.error.error_code if closed.error is not None else None
    return {"reason": closed.reason, "code": closed.code, "error": error, "audioMs": closed.audio_ms}
