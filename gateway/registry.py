"""Counts live sessions per process and per API key; the gateway enforces its own caps because
uvicorn's --limit-concurrency does not count WebSockets."""

from __future__ import annotations

import weakref
from collections import Counter
from typing import TYPE_CHECKING

from gateway.errors import CapacityExceeded, GatewayError, GoingAway, RateLimited
from gateway.observability import GatewayMetrics

if TYPE_CHECKING:
    from gateway.session import Session


class Lease:
    """One reserved session slot; release() is idempotent."""

    def __init__(self, registry: SessionRegistry, dialect: str, key: str | None) -> None:
        self._registry = registry
        self.metrics = registry.metrics
        self.dialect = dialect
        self.key = key
        self.session: Session | None = None
        self._released = False

    def attach(self, session: Session) -> None:
        self.session = session
        self._registry.sessions.add(session)

    def detach(self) -> None:
        """The adapter is done with the session (its goodbye is delivered)."""
        if self.session is not None:
            self._registry.sessions.discard(self.session)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._registry._release(self)


class SessionRegistry:
    def __init__(self, max_sessions: int, metrics: GatewayMetrics | None = None) -> None:
        self.max_sessions = max_sessions
        self.metrics = metrics or GatewayMetrics()
        self.active = 0
        self.by_dialect: Counter[str] = Counter()
        self.by_key: Counter[str] = Counter()
        # Sessions stay here until their adapter has finished with them (socket closed), so a drain
        # can wait for goodbyes to be delivered; weak, so an adapter that forgets cannot leak them.
        self.sessions: weakref.WeakSet[Session] = weakref.WeakSet()
        self.draining = False
        self.metrics.watch(self)

    def check_capacity(self) -> None:
        """Raise (and count) the refusal a new session would get now, without taking a slot."""
        self._admit(None, None)

    def reserve(self, dialect: str, key: str | None = None, key_limit: int | None = None) -> Lease:
        """Take a slot or raise: GoingAway while draining, RateLimited over a key's cap,
        CapacityExceeded when the process is full."""
        self._admit(key, key_limit)
        self.active += 1
        self.by_dialect[dialect] += 1
        if key is not None:
            self.by_key[key] += 1
        return Lease(self, dialect, key)

    def _admit(self, key: str | None, key_limit: int | None) -> None:
        try:
            if self.draining:
                raise GoingAway("this gateway replica is shutting down; reconnect to be served by another")
            if key is not None and key_limit is not None and self.by_key[key] >= key_limit:
                raise RateLimited(f"this API key already has its maximum of {key_limit} concurrent sessions")
            if self.active >= self.max_sessions:
                raise CapacityExceeded(f"the gateway is at its capacity of {self.max_sessions} sessions; retry later")
        except GatewayError as exc:
            self.deny(exc.error_code)
            raise

    def deny(self, reason: str) -> None:
        self.metrics.denials.labels(reason=reason).inc()

    @property
    def full(self) -> bool:
        return self.active >= self.max_sessions

    def _release(self, lease: Lease) -> None:
        self.active -= 1
        self.by_dialect[lease.dialect] -= 1
        if lease.key is not None:
            self.by_key[lease.key] -= 1
