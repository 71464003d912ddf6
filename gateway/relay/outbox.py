"""A session's queue to its client: bounded in items and in bytes, in order, ending with exactly one
Closed. A client that lets either bound fill is not reading: the session ends (client_too_slow)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from gateway.dataflow.messages import DataflowEvent, UpstreamAudio
from gateway.observability import GatewayMetrics
from gateway.relay.items import Closed, Notice, OutItem, Recovered

#: The least a queued item is counted as, and what one without a known size (an ack, a response, an
#: event parsed from elsewhere) is counted as: a generous bound on those small JSON objects.
SMALL_ITEM_BYTES = 512


def held_bytes(item: OutItem) -> int:
    """Roughly what holding ``item`` for the client costs (its payload, not Python's overhead)."""
    if isinstance(item, UpstreamAudio):
        return len(item.data)
    if isinstance(item, DataflowEvent) and item.wire_bytes:
        return item.wire_bytes
    if isinstance(item, Notice):  # its message may quote the client
        return max(SMALL_ITEM_BYTES, len(item.error.message) + 128)
    if isinstance(item, dict):  # a dialect's reply may echo the client: measured, never assumed small
        return max(SMALL_ITEM_BYTES, _json_size(item))
    return SMALL_ITEM_BYTES


def _json_size(reply: dict[str, Any]) -> int:
    # Replies answer client messages (one each), so this costs in proportion to what the client sent;
    # events, the hot path, never come here.
    try:
        return len(json.dumps(reply, separators=(",", ":")))
    except (TypeError, ValueError, RecursionError):  # not JSON: sending it fails typed, elsewhere
        return SMALL_ITEM_BYTES


class Outbox:
    def __init__(self, limit: int, metrics: GatewayMetrics, limit_bytes: int = 1 << 62) -> None:
        self._limit = limit
        self._limit_bytes = limit_bytes
        self._metrics = metrics
        self._items: deque[tuple[OutItem, float, int]] = deque()  # with the time queued and the bytes held
        self.bytes = 0
        self._ready = asyncio.Event()
        self._drop_backlog = False
        self.closed: Closed | None = None

    def __len__(self) -> int:
        """Items queued for the client and not yet taken (``bytes`` is their size)."""
        return len(self._items)

    def put(self, item: OutItem) -> bool:
        """Queue ``item``; False when the client has let ``limit`` items or ``limit_bytes`` pile up (one
        item alone is always taken, however big: the bound is on what waits behind it)."""
        size = held_bytes(item)
        if len(self._items) >= self._limit or (self._items and self.bytes + size > self._limit_bytes):
            return False
        if isinstance(item, DataflowEvent):
            self._metrics.event_relayed(item.name)
        elif isinstance(item, Recovered):
            self._metrics.upstream_recoveries.labels(reason=item.reason).inc()  # "failure" or "rotation"
        self._items.append((item, time.monotonic(), size))
        self.bytes += size
        self._ready.set()
        return True

    def close(self, closed: Closed, *, drop_backlog: bool) -> None:
        """The last item; with ``drop_backlog`` it overtakes what is still queued (and is let go now)."""
        self.closed, self._drop_backlog = closed, drop_backlog
        if drop_backlog:
            self._items.clear()
            self.bytes = 0
        self._ready.set()

    async def items(self) -> AsyncIterator[OutItem]:
        while True:
            if self.closed is not None and (self._drop_backlog or not self._items):
                yield self.closed
                return
            if self._items:
                item, queued_at, size = self._items.popleft()
                self.bytes -= size
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
