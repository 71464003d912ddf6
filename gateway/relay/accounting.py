"""What a session leaves behind in metrics and logs: counters once at its end, one log line at its
start and one at its end (never per frame)."""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from gateway.audio.format import AudioFormat
from gateway.errors import GatewayError, UpstreamError
from gateway.logs.context import note_session
from gateway.observability import GatewayMetrics
from gateway.relay.stream import UpstreamStream

log = logging.getLogger("gateway.relay.session")


class Session(Protocol):
    """What accounting reads of a :class:`gateway.relay.session.Session`."""

    id: str
    dialect: str
    key: str | None
    project: str
    opened_at: float

    @property
    def bytes_in(self) -> int: ...

    metrics: GatewayMetrics
    client_format: AudioFormat | None
    stream: UpstreamStream | None


def log_fields(session: Session) -> dict[str, Any]:
    note_session(session.id)  # called at the session's start, in its request: the access line names it
    stream = session.stream
    return {
        "session_id": session.id,
        "dataflow_session_id": stream.session_id if stream is not None else None,
        "dialect": session.dialect,
        "key": session.key,
        "project": session.project,
    }


def account_end(session: Session, outcome: str, error: GatewayError | None) -> None:
    fmt = session.client_format
    audio_s = session.bytes_in / fmt.bytes_per_second if fmt is not None else 0.0
    upstream = error if isinstance(error, UpstreamError) else None
    pauses = session.stream.pauses if session.stream is not None else 0  # times Data Flow's buffer held the client
    session.metrics.session_ended(session.dialect, outcome, session.bytes_in, audio_s, pauses, upstream)
    fields = log_fields(session)
    fields.update(
        outcome=outcome,
        duration_s=round(time.monotonic() - session.opened_at, 3),
        audio_s=round(audio_s, 3),
        error_code=error.error_code if error else None,
    )
    log.info("session ended", extra=fields)
