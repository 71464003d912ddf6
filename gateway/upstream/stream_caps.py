"""Streams per connection, per upstream address: the configured most, lowered to what the peer allows.

The peer's own cap comes from its HTTP/2 SETTINGS (:mod:`gateway.upstream.peer_settings`), read when
the pool resolves its addresses: at startup, before the first session, and then every
:data:`REPROBE_S` per address (a failed probe is tried again at the next resolution). A cap is the
peer's word, not a guess: it is used as it is, for the address it came from, until a later probe says
otherwise. Probes run at most :data:`CONCURRENT_PROBES` at a time, each bounded by :data:`PROBE_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from gateway.upstream.peer_settings import ProbeFailed

log = logging.getLogger(__name__)

#: Reads one address's SETTINGS_MAX_CONCURRENT_STREAMS (None: no cap), or None for no probe at all.
Probe = Callable[[str], Awaitable[int | None]]
#: Decides whether an address can be probed (a socket of its own reaches it as gRPC's would).
Probeable = Callable[[str], bool]

REPROBE_S = 300.0
PROBE_TIMEOUT_S = 2.0
CONCURRENT_PROBES = 8


class StreamCaps:
    """The most streams a new connection to an address takes: ``configured``, or fewer if its peer says so."""

    def __init__(self, configured: int, probe: Probe | None = None, probeable: Probeable | None = None) -> None:
        self.configured = configured
        self._probe = probe
        self._probeable = probeable or (lambda _: True)
        self._caps: dict[str, int | None] = {}  # address -> the peer's cap (None: it set none)
        self._probed_at: dict[str, float] = {}  # address -> monotonic time of its last good probe
        self._failing: set[str] = set()  # addresses whose last probe failed (logged once until one works)

    def limit(self, address: str) -> int:
        cap = self._caps.get(address)
        return self.configured if cap is None else min(self.configured, cap)

    async def refresh(self, addresses: list[str]) -> bool:
        """Probe the addresses not probed lately; forget the others. True when a limit changed."""
        listed = set(addresses)
        for gone in set(self._caps) - listed:
            del self._caps[gone]
            self._probed_at.pop(gone, None)
        self._failing &= listed
        if self._probe is None:
            return False
        now = time.monotonic()
        due = [a for a in addresses if self._probeable(a) and now - self._probed_at.get(a, float("-inf")) >= REPROBE_S]
        if not due:
            return False
        slots = asyncio.Semaphore(CONCURRENT_PROBES)
        before = {a: self.limit(a) for a in due}
        await asyncio.gather(*(self._probe_one(a, slots) for a in due))
        return any(self.limit(a) != before[a] for a in due)

    async def _probe_one(self, address: str, slots: asyncio.Semaphore) -> None:
        assert self._probe is not None
        async with slots:
            try:
                cap = await self._probe(address)
            except ProbeFailed as exc:
                if address not in self._failing:
                    self._failing.add(address)
                    log.info("could not read upstream %s's streams per connection (%s); assuming %d until it can"
                             " be read", address, exc, self.limit(address))  # fmt: skip
                return
        self._failing.discard(address)
        self._probed_at[address] = time.monotonic()
        cap = None if cap is None else max(1, cap)  # 0 (no new streams now) would starve the connection
        old, self._caps[address] = self.limit(address), cap
        new = self.limit(address)
        if new < self.configured and new != old:
            log.warning(
                "upstream %s allows %d concurrent streams per connection (its HTTP/2 SETTINGS), fewer than"
                " GATEWAY_UPSTREAM_MAX_STREAMS_PER_CONNECTION=%d: connections to it take at most %d sessions",
                address, new, self.configured, new,
            )  # fmt: skip
        elif new != old:
            log.info("upstream %s's connections take %d sessions again (its HTTP/2 SETTINGS allow %s)",
                     address, new, "any number" if cap is None else cap)  # fmt: skip
