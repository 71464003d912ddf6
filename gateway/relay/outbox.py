"""A session's queue to its client: bounded in items and in bytes, in order, ending with exactly one
Closed. A client that lets either bound fill is not reading: the session ends (client_too_slow). What
all outboxes hold together is bounded too (:mod:`gateway.relay.outbox_budget`): when that is full, the
session with the largest backlog ends the same way."""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from gateway.dataflow.messages import DataflowEvent, UpstreamAudio
from gateway.errors import ClientTooSlow, GatewayError
from gateway.observability import GatewayMetrics
from gateway.relay.items import Closed, Notice, OutItem, Recovered
from gateway.relay.outbox_budget import OutboxBudget, memory_full

#: How an outbox ends its session (``Session.abort``): a reason and the error the client is told.
End = Callable[[str, GatewayError], None]

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
    def __init__(self, limit: int, metrics: GatewayMetrics, limit_bytes: int = 1 << 62,
                 budget: OutboxBudget | None = None, end: End | None = None) -> None:  # fmt: skip
        """``budget``: the process's, shared by every outbox; ``end``: a bound method (held weakly, so
        the outbox keeps no session alive) called when the client is too slow (``put`` is refused,
        or the budget is full and this backlog is the largest)."""
        self._limit = limit
        self._limit_bytes = limit_bytes
        self._metrics = metrics
        self._budget = budget
        self._end = weakref.WeakMethod(end) if end is not None else None
        self._items: deque[tuple[OutItem, float, int]] = deque()  # with the time queued and the bytes held
        self.bytes = 0
        self._ready = asyncio.Event()
        self._taken = asyncio.Event()  # the client took an item, or the backlog was let go
        self._drop_backlog = False
        self.closed: Closed | None = None

    def __len__(self) -> int:
        """Items queued for the client and not yet taken (``bytes`` is their size)."""
        return len(self._items)

    def put(self, item: OutItem) -> bool:
        """Queue ``item``; False when the client has let ``limit`` items or ``limit_bytes`` pile up (one
        item alone is always taken, however big: the bound is on what waits behind it), or when the
        budget is full and this backlog is the largest: then the session ends (``end``). Nothing is queued
        after the close."""
        if self.closed is not None:
            return False
        size = held_bytes(item)
        if len(self._items) >= self._limit or (self._items and self.bytes + size > self._limit_bytes):
            return self._too_slow(ClientTooSlow("the client is not reading its events"))
        if self._budget is not None and not self._budget.take(self, size):
            return self._too_slow(memory_full(self.bytes))
        if isinstance(item, DataflowEvent):
            self._metrics.event_relayed(item.name)
        elif isinstance(item, Recovered):
            self._metrics.upstream_recoveries.labels(reason=item.reason).inc()  # "failure" or "rotation"
        self._items.append((item, time.monotonic(), size))
        self.bytes += size
        self._ready.set()
        return True

    async def room_for(self, item: OutItem, wait_s: float) -> bool:
        """Wait while ``put(item)`` would find the outbox full: its caller, the session's reader of Data
        Flow, stops reading meanwhile, so HTTP/2 flow control slows Data Flow down rather than a client
        that reads being ended for Data Flow's burst. False once the session is closed; ended here (too
        slow) when the client took nothing for ``wait_s``."""
        size = held_bytes(item)
        while self._items and (len(self._items) >= self._limit or self.bytes + size > self._limit_bytes):
            if self.closed is not None:
                return False
            self._taken.clear()
            try:
                async with asyncio.timeout(wait_s):
                    await self._taken.wait()
            except TimeoutError:
                return self._too_slow(ClientTooSlow(f"the client read none of its events for {wait_s:g} s"))
        return self.closed is None

    def close(self, closed: Closed, *, drop_backlog: bool) -> None:
        """The last item; with ``drop_backlog`` it overtakes what is still queued (and is let go now)."""
        self.closed, self._drop_backlog = closed, drop_backlog
        if drop_backlog:
            self._let_go()
        self._ready.set()

    def evict(self, error: ClientTooSlow) -> None:
        """The budget is full and this backlog is the largest: the session ends (``end``) and what it
        held is let go now. Already closed (its last items waiting for the client), it is let go too and
        the close says why instead."""
        if self.closed is None:
            self._too_slow(error)  # the session's abort: its Closed overtakes the backlog, let go at once
        if self.closed is None or self._items:  # no session to end, or it had ended and its last items wait
            audio_ms = self.closed.audio_ms if self.closed is not None else 0.0
            self.close(Closed("client_too_slow", error.ws_close_code, audio_ms, error), drop_backlog=True)

    def abandon(self) -> None:
        """Nothing reads any more (the client's connection is over): let go of what it never took."""
        if self._items:
            self._let_go()

    def _let_go(self) -> None:
        held, self.bytes = self.bytes, 0
        self._items.clear()
        self._taken.set()
        if self._budget is not None:
            self._budget.give(self, held)

    def _too_slow(self, error: ClientTooSlow) -> bool:
        end = self._end() if self._end is not None else None
        if end is not None:
            end("client_too_slow", error)
        return False

    async def items(self) -> AsyncIterator[OutItem]:
        while True:
            if self.closed is not None and (self._drop_backlog or not self._items):
                yield self.closed
                return
            if self._items:
                item, queued_at, size = self._items.popleft()
                self.bytes -= size
                self._taken.set()
                if self._budget is not None:
                    self._budget.give(self, size)
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
