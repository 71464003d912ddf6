"""The process's byte budget for what every session holds for its client (all their outboxes together).

Each outbox is bounded on its own (GATEWAY_CLIENT_OUTBOX_BYTES); this bounds their sum
(GATEWAY_CLIENT_OUTBOX_TOTAL_BYTES), so clients that never read cannot together take the process's
memory (and every call on it with it). When an item would take the total past the budget, the
outbox with the largest backlog is ended (client_too_slow) and its backlog let go at once; the item
is then taken if it fits. A client that reads holds little, so the clients that do not read are the
ones that pay. Finding the largest is a scan of the outboxes holding bytes: it is done only then.
"""

from __future__ import annotations

import logging
from typing import Protocol

from gateway.errors import ClientTooSlow

log = logging.getLogger(__name__)


class Backlog(Protocol):
    """What the budget needs of an outbox."""

    @property
    def bytes(self) -> int:
        """What it holds now (counted here too)."""

    def evict(self, error: ClientTooSlow) -> None:
        """End its session with ``error`` and let its whole backlog go (given back here) before returning."""


def memory_full(backlog_bytes: int) -> ClientTooSlow:
    return ClientTooSlow(
        "the gateway's memory for unread messages is full and this client had the largest backlog "
        f"({backlog_bytes} bytes not read)"
    )


class OutboxBudget:
    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.bytes = 0  # held by all outboxes together; never above limit_bytes
        self.peak = 0
        self._holding: set[Backlog] = set()  # the outboxes holding bytes now (those only: no leak)

    def take(self, backlog: Backlog, size: int) -> bool:
        """Count ``size`` more bytes for ``backlog``. Past the budget, larger backlogs than its own are
        ended, largest first, until it fits; False (nothing counted) when its own is the largest."""
        while self.bytes + size > self.limit_bytes:
            largest = max(self._holding, key=_held, default=None)
            if largest is None or largest.bytes <= backlog.bytes:
                return False
            log.warning(
                "unread messages of all clients fill GATEWAY_CLIENT_OUTBOX_TOTAL_BYTES (%d): ending the session "
                "with the largest backlog (%d bytes, client_too_slow)",
                self.limit_bytes,
                largest.bytes,
            )
            largest.evict(memory_full(largest.bytes))
            if largest in self._holding:  # it gave nothing back: refuse rather than go past the budget
                return False
        self.bytes += size
        self.peak = max(self.peak, self.bytes)
        self._holding.add(backlog)
        return True

    def give(self, backlog: Backlog, size: int) -> None:
        """``size`` bytes of ``backlog`` were taken by its client or let go (its ``bytes`` already says so)."""
        self.bytes -= size
        if not backlog.bytes:
            self._holding.discard(backlog)


def _held(backlog: Backlog) -> int:
    return backlog.bytes
