"""A session's queue to its client: bounded, in order, ending with exactly one Closed."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator

from gateway.dataflow.messages import KNOWN_EVENT_NAMES, DataflowEvent
from gateway.observability import GatewayMetrics
from gateway.relay.items import Closed, OutItem


class Outbox:
    def __init__(self, limit: int, metrics: GatewayMetrics) -> None:
        self._limit = limit
        self._metrics = metrics
        self._items: deque[tuple[OutItem, float]] = deque()  # with the time each was queued
        self._ready = asyncio.Event()
        self._drop_backlog = False
        self.closed: Closed | None = None

    def put(self, item: OutItem) -> bool:
        """Queue ``item``; False when the client has let ``limit`` items pile up."""
        if len(self._items) >= self._limit:
            return False
        if isinstance(item, DataflowEvent):
            self._metrics.events.labels(name=item.name if item.name in KNOWN_EVENT_NAMES else "other").inc()
        self._items.append((item, time.monotonic()))
        self._ready.set()
        return True

    def close(self, closed: Closed, *, drop_backlog: bool) -> None:
        """The last item; with ``drop_backlog`` it overtakes what is still queued."""
        self.closed, self._drop_backlog = closed, drop_backlog
        self._ready.set()

    async def items(self) -> AsyncIterator[OutItem]:
        while True:
            if self.closed is not None and (self._drop_backlog or not self._items):
                yield self.closed
                return
            if self._items:
                item, queued_at = self._items.popleft()
                if isinstance(item, DataflowEvent):
                    self._metrics.event_latency.observe(time.monotonic() - queued_at)
                yield item
                continue
            self._ready.clear()
            await self._ready.wait()

    async def wait_closed(self) -> Closed:
        while self.closed is None:
            self._ready.clear()
            await self._ready.wait()
        return self.closed
