"""Counts live connections per process and per API key, and finds them again for a drain.

The gateway enforces its own caps because uvicorn's --limit-concurrency does not count WebSockets.
A slot is a :class:`Lease`, held by whoever serves the connection (the WebSocket driver, an upload)
from admission until its socket is closed, and released once, by that holder. The registry knows
nothing of sessions: a lease may carry a :class:`Drainable` that a drain tells to finish.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from gateway.errors import CapacityExceeded, GatewayError, GoingAway, RateLimited
from gateway.observability import GatewayMetrics

#: Waiting places (:meth:`SessionRegistry.wait`) one client address may hold whatever the pool's size:
#: a few browsers behind one NAT or proxy opening pages at the same moment.
MIN_WAITING_PER_ADDRESS = 4


def shutting_down() -> GoingAway:
    """The refusal of a new session while draining (and of an upload a drain ends before its session)."""
    return GoingAway("this gateway replica is shutting down; reconnect to be served by another")


class Drainable(Protocol):
    """What a drain needs from a live connection."""

    def notify(self, error: GatewayError) -> None:
        """Tell the client (the session goes on)."""

    def go_away(self) -> None:
        """End now with ``going_away`` (results so far are delivered, then close 1001)."""


class Lease:
    """One reserved slot; :meth:`release` is idempotent."""

    def __init__(
        self, registry: SessionRegistry, dialect: str, key: str | None, *, waiting: bool = False,
        address: str | None = None,
    ) -> None:  # fmt: skip
        self._registry = registry
        self.dialect = dialect
        self.key: str | None = None
        self.drainable: Drainable | None = None
        self.told: Drainable | None = None  # the drainable a drain told to go away (counted once per lease)
        self.released = False
        self.waiting = waiting  # for its caller's credential: no slot yet (see SessionRegistry.wait)
        self.address = address  # of a waiting lease: its place counts against this client address
        if key is not None:
            self._count_key(key)

    def bind_key(self, key: str | None, limit: int | None) -> None:
        """The caller is known (a browser's in-band token): a waiting lease takes its slot now, and the
        slot counts against ``key`` too (None: an anonymous caller). Raises the refusal."""
        if self.released:
            return
        if self.waiting:
            self._registry.admit_waiting(self, key, limit)
        elif key is not None and self.key is None:
            self._registry.check_key(key, limit)
            self._count_key(key)

    def _count_key(self, key: str) -> None:
        self.key = key
        self._registry.by_key[key] += 1

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.drainable = self.told = None  # the connection holds its lease: no cycle left for the collector
        self._registry._release(self)


class SessionRegistry:
    def __init__(self, max_sessions: int, metrics: GatewayMetrics | None = None) -> None:
        self.max_sessions = max_sessions
        self.metrics = metrics or GatewayMetrics()
        self.by_dialect: Counter[str] = Counter()
        self.by_key: Counter[str] = Counter()
        self.leases: set[Lease] = set()
        self.waiting: set[Lease] = set()  # connections whose credential has not come yet: no slot
        self._waiting_by_address: dict[str, int] = {}  # their client addresses (only while they wait)
        self.deferred: set[Lease] = set()  # accepted while full, refused at their start if still full: no slot
        self.draining = False
        self.sent_away: Counter[str] = Counter()  # by dialect, every connection a drain has told to go away
        self.metrics.watch(self)

    @property
    def active(self) -> int:
        return len(self.leases)

    @property
    def occupied(self) -> int:
        """Connections a drain waits for: those holding a slot and those waiting, without one, for the
        credential or the start they were accepted to send (a drain serves them for what is left of its budget)."""
        return len(self.leases) + len(self.waiting) + len(self.deferred)

    @property
    def full(self) -> bool:
        return self.active >= self.max_sessions

    def check_capacity(self) -> None:
        """Raise (and count) the refusal a new connection would get now, without taking a slot."""
        self._admit(None, None)

    def check_open(self) -> None:
        """Raise (and count) GoingAway while draining; capacity is not checked."""
        if self.draining:
            self._admit(None, None)

    def reserve(
        self, dialect: str, key: str | None = None, key_limit: int | None = None, *, count_denial: bool = True
    ) -> Lease:
        """Take a slot or raise: GoingAway while draining, RateLimited over a key's cap,
        CapacityExceeded when the process is full. ``count_denial=False``: a tentative try, whose
        refusal is counted only when it is final."""
        self._admit(key, key_limit, count_denial)
        lease = Lease(self, dialect, key)
        self.leases.add(lease)
        self.by_dialect[dialect] += 1
        return lease

    @property
    def waiting_addresses(self) -> int:
        """Client addresses that have connections waiting now (the bookkeeping's size)."""
        return len(self._waiting_by_address)

    @property
    def waiting_per_address(self) -> int:
        """Waiting places one client address may hold: a quarter of the pool, at least a few."""
        return max(MIN_WAITING_PER_ADDRESS, self.max_sessions // 4)

    def wait(self, dialect: str, *, address: str = "unknown", count_denial: bool = True) -> Lease:
        """A place for a connection whose credential comes after the handshake (a browser's start
        message), refused as :meth:`reserve` would be. It holds no slot, so callers without a credential
        cannot fill the replica or turn readiness off; such places have a cap of ``max_sessions`` of
        their own (and each ends at the start timeout), and one client ``address`` may hold at most
        :attr:`waiting_per_address` of them (a browser waits milliseconds for its start message)."""
        self._admit(None, None, count_denial)
        return self._waiting_place(dialect, address, count_denial)

    def defer(self, dialect: str, drainable: Drainable, *, address: str = "unknown") -> Lease:
        """A waiting place for a connection accepted while the replica is full, whose dialect refuses it at
        its start (``Dialect.refuse_full_at_once`` false: /project-runner): it holds no slot, and a drain
        reaches it (without one uvicorn's shutdown closed it 1012). At most ``max_sessions`` at once (the driver
        refuses one past them at once); apart from the browsers' places (it has its credential; a platform's
        calls share one address)."""
        error: GatewayError | None = shutting_down() if self.draining else None
        if error is None and len(self.deferred) >= self.max_sessions:
            error = CapacityExceeded(f"{self.max_sessions} connections already wait for a free slot; retry later")
        if error is not None:  # the driver refuses it at once: a denial, counted here
            self.deny(error.error_code)
            raise error
        lease = Lease(self, dialect, None, waiting=True, address=address)
        lease.drainable = drainable
        self.deferred.add(lease)
        return lease

    def _waiting_place(self, dialect: str, address: str, count_denial: bool) -> Lease:
        error = None
        if len(self.waiting) >= self.max_sessions:
            error = CapacityExceeded(f"{self.max_sessions} connections already wait for their credential; retry later")
        elif (held := self._waiting_by_address.get(address, 0)) >= self.waiting_per_address:
            error = CapacityExceeded(f"{held} connections from this address already wait for their credential; "
                                     "send it with the handshake or retry later")  # fmt: skip
        if error is not None:
            if count_denial:
                self.deny(error.error_code)
            raise error
        lease = Lease(self, dialect, None, waiting=True, address=address)
        self.waiting.add(lease)
        self._waiting_by_address[address] = self._waiting_by_address.get(address, 0) + 1
        return lease

    def _stop_waiting(self, lease: Lease) -> None:
        """``lease`` leaves the waiting places (its address's entry goes with its last one)."""
        self.deferred.discard(lease)
        if lease not in self.waiting:
            return
        self.waiting.discard(lease)
        address = lease.address if lease.address is not None else "unknown"
        if (left := self._waiting_by_address.get(address, 0) - 1) > 0:
            self._waiting_by_address[address] = left
        else:
            self._waiting_by_address.pop(address, None)

    def admit_waiting(self, lease: Lease, key: str | None, key_limit: int | None) -> None:
        """A waiting lease's caller is known: it takes a slot (capacity, the key's cap) or raises. A drain
        does not refuse it: accepted before the drain, it is served for what is left of the budget, as a
        connection that held its slot from the handshake is (it had been refused going_away)."""
        self._admit(key, key_limit, accepted=True)
        self._stop_waiting(lease)
        lease.waiting = False
        self.leases.add(lease)
        self.by_dialect[lease.dialect] += 1
        if key is not None:
            lease._count_key(key)

    def check_key(self, key: str, limit: int | None, *, count_denial: bool = True) -> None:
        if limit is not None and self.by_key[key] >= limit:
            error = RateLimited(f"this API key already has its maximum of {limit} concurrent sessions")
            if count_denial:
                self.deny(error.error_code)
            raise error

    def _admit(
        self, key: str | None, key_limit: int | None, count_denial: bool = True, *, accepted: bool = False
    ) -> None:
        try:
            if self.draining and not accepted:
                raise shutting_down()
            if key is not None:
                self.check_key(key, key_limit, count_denial=False)
            if self.full:
                raise CapacityExceeded(f"the gateway is at its capacity of {self.max_sessions} sessions; retry later")
        except GatewayError as exc:
            if count_denial:
                self.deny(exc.error_code)
            raise

    def deny(self, reason: str) -> None:
        self.metrics.denials.labels(reason=reason).inc()

    def drainables(self) -> list[Drainable]:
        leases = (*self.leases, *self.waiting, *self.deferred)
        return [lease.drainable for lease in leases if lease.drainable is not None]

    def send_away(self) -> Counter[str]:
        """Every connection with a drain hook not yet told is told to go away now: how many were, by
        dialect (also added to :attr:`sent_away`, what the drain's last line reports)."""
        told: Counter[str] = Counter()
        for lease in (*self.leases, *self.waiting, *self.deferred):
            if (drainable := lease.drainable) is None or drainable is lease.told:
                continue
            if lease.told is None:  # not again for an upload's session that took over from its opening
                told[lease.dialect] += 1
            lease.told = drainable
            drainable.go_away()
        self.sent_away.update(told)
        return told

    def _release(self, lease: Lease) -> None:
        if lease.waiting:
            self._stop_waiting(lease)
            return
        self.leases.discard(lease)
        self.by_dialect[lease.dialect] -= 1
        if lease.key is not None:
            self.by_key[lease.key] -= 1
