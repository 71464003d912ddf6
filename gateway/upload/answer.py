"""The ``application/json`` answer of an upload, built once Data Flow is done.

Its events wait until the end, so they are held as their encoded JSON (what they cost in the
answer, not the several times more a dict costs) and only up to ``GATEWAY_CLIENT_OUTBOX_BYTES``:
the bound on what the gateway holds for one client. Later events are counted in ``eventsDropped``,
never lost silently; the transcript is built apart from them, bounded on its own
(``GATEWAY_MAX_TRANSCRIPT_BYTES``, ``transcriptTruncated``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi.responses import Response


def _encode(value: Any) -> bytes:
    # As JSONResponse renders it, so the answer reads the same as before; a lone surrogate (JSON's "\ud800"
    # in an event's data) has no UTF-8 and becomes "?" instead of failing the whole answer.
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode(errors="replace")


class EventLog:
    """The events of one upload in order, while their JSON fits in ``limit`` bytes; then a count."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.bytes = 0
        self.dropped = 0
        self._parts: list[bytes] = []

    def add(self, event: dict[str, Any]) -> None:
        if self.dropped:  # a prefix in order: once one is left out, every later one is
            self.dropped += 1
            return
        text = _encode(event)
        if self.bytes + len(text) + 1 > self.limit:
            self.dropped += 1
            return
        self._parts.append(text)
        self.bytes += len(text) + 1

    def answer(
        self, fields: Mapping[str, Any], status_code: int = 200, headers: Mapping[str, str] | None = None
    ) -> Response:
        """``fields`` plus ``eventsDropped`` and ``events`` as one JSON object."""
        head = _encode({**fields, "eventsDropped": self.dropped})
        body = b"".join((head[:-1], b',"events":[', b",".join(self._parts), b"]}"))
        self._parts.clear()
        return Response(body, status_code=status_code, headers=headers, media_type="application/json")
