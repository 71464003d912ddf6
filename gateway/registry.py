"""Counts live sessions per process and per API key; the gateway enforces its own caps because
uvicorn's --limit-concurrency does not count WebSockets."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from gateway.errors import CapacityExceeded, GoingAway, RateLimited

if TYPE_CHECKING:
    from gateway.session import Session


class Lease:
    """One reserved session slot; release() is idempotent."""

    def __init__(self, registry: SessionRegistry, dialect: str, key: str | None) -> None:
        self._registry = registry
        self.dialect = dialect
        self.key = key
        self.session: Session | None = None
        self._released = False

    def attach(self, session: Session) -> None:
        self.session = session
        self._registry.sessions.add(session)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._registry._release(self)


class SessionRegistry:
    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self.active = 0
        self.by_dialect: Counter[str] = Counter()
        self.by_key: Counter[str] = Counter()
        self.sessions: set[Session] = set()
        self.draining = False

    def reserve(self, dialect: str, key: str | None = None, key_limit: int | None = None) -> Lease:
        """Take a slot or raise: GoingAway while draining, RateLimited over a key's cap,
        CapacityExceeded when the process is full."""
        if self.draining:
            raise GoingAway("this gateway replica is shutting down; reconnect to be served by another")
        if key is not None and key_limit is not None and self.by_key[key] >= key_limit:
            raise RateLimited(f"this API key already has its maximum of {key_limit} concurrent sessions")
        if self.active >= self.max_sessions:
            raise CapacityExceeded(f"the gateway is at its capacity of {self.max_sessions} sessions; retry later")
        self.active += 1
        self.by_dialect[dialect] += 1
        if key is not None:
            self.by_key[key] += 1
        return Lease(self, dialect, key)

    @property
    def full(self) -> bool:
        return self.active >= self.max_sessions

    def _release(self, lease: Lease) -> None:
        self.active -= 1
        self.by_dialect[lease.dialect] -= 1
        if lease.key is not None:
            self.by_key[lease.key] -= 1
        if lease.session is not None:
            self.sessions.discard(lease.session)
