"""What the access log learns about a request while the app handles it (the session it started).

A context variable holds one mutable note per request, set by the access log around the app; code
deeper in the request (in the same task or one it created) writes to it. Imports nothing of the web
stack, so the relay may use it.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class AccessNote:
    session_id: str | None = None


current_note: ContextVar[AccessNote | None] = ContextVar("gateway_access_note", default=None)


def note_session(session_id: str) -> None:
    """Record the session a request started, for its access line (a no-op outside a request)."""
    note = current_note.get()
    if note is not None and note.session_id is None:
        note.session_id = session_id


#: Why the app left its HTTP response unfinished on purpose (a client too slow to read it), so the
#: server's "returned without completing response" line is told apart from a bug. Set in the request's task.
response_cut: ContextVar[str | None] = ContextVar("gateway_response_cut", default=None)
