"""gateway.relay.outbox_budget.OutboxBudget: what all outboxes hold together stays within the budget;
when full, the largest backlog is ended (its session told client_too_slow) and let go at once."""

from __future__ import annotations

import weakref

from gateway.dataflow.messages import UpstreamAudio
from gateway.errors import ClientTooSlow, GatewayError
from gateway.observability import GatewayMetrics
from gateway.relay.items import Closed
from gateway.relay.outbox import Outbox
from gateway.relay.outbox_budget import OutboxBudget

KB = 1000
CHUNK = UpstreamAudio(bytes(10 * KB))  # counted at its length


class Owner:
    """Stands for a session: its outbox ends it through ``abort`` (as Session.abort does)."""

    def __init__(self, budget: OutboxBudget, name: str) -> None:
        self.name = name
        self.ended: list[tuple[str, GatewayError | None]] = []
        self.outbox = Outbox(1000, GatewayMetrics(), 1 << 30, budget, self.abort)

    def abort(self, reason: str = "client_disconnected", error: GatewayError | None = None) -> None:
        self.ended.append((reason, error))
        self.outbox.close(Closed(reason, 1008, 0.0, error), drop_backlog=error is not None)

    def fill(self, chunks: int) -> list[bool]:
        return [self.outbox.put(CHUNK) for _ in range(chunks)]


def test_the_largest_backlog_is_ended_and_the_put_goes_on() -> None:
    budget = OutboxBudget(100 * KB)
    big, small, putter = Owner(budget, "big"), Owner(budget, "small"), Owner(budget, "putter")
    assert big.fill(5) + small.fill(3) + putter.fill(2) == [True] * 10
    assert budget.bytes == 100 * KB
    assert putter.outbox.put(CHUNK)  # over the budget: "big" (50 kB) goes, then it fits
    assert [reason for reason, _ in big.ended] == ["client_too_slow"]
    error = big.ended[0][1]
    assert isinstance(error, ClientTooSlow) and "largest backlog" in error.message and "50000 bytes" in error.message
    assert big.outbox.bytes == 0 and len(big.outbox) == 0  # let go at once, not when a reader gets to it
    assert small.ended == [] and putter.ended == []
    assert budget.bytes == 60 * KB == small.outbox.bytes + putter.outbox.bytes
    assert budget.peak == 100 * KB


def test_the_putter_with_the_largest_backlog_is_the_one_refused() -> None:
    budget = OutboxBudget(100 * KB)
    other, putter = Owner(budget, "other"), Owner(budget, "putter")
    assert other.fill(3) + putter.fill(7) == [True] * 10
    assert not putter.outbox.put(CHUNK)
    assert [reason for reason, _ in putter.ended] == ["client_too_slow"]
    assert other.ended == [] and other.outbox.bytes == 30 * KB
    assert budget.bytes == 30 * KB  # the refused put counted nothing; the putter's backlog was let go


def test_several_are_ended_largest_first_until_the_item_fits() -> None:
    budget = OutboxBudget(100 * KB)
    owners = [Owner(budget, f"o{n}") for n in range(4)]
    for owner, chunks in zip(owners, (4, 3, 2, 1), strict=True):
        owner.fill(chunks)
    putter = Owner(budget, "putter")
    assert putter.outbox.put(UpstreamAudio(bytes(65 * KB)))  # needs 65 kB: the 40 and 30 kB backlogs go
    assert [bool(o.ended) for o in owners] == [True, True, False, False]
    assert budget.bytes == 95 * KB


async def test_bytes_come_back_when_read_dropped_or_abandoned() -> None:
    budget = OutboxBudget(100 * KB)
    reader, dropped, abandoned = Owner(budget, "r"), Owner(budget, "d"), Owner(budget, "a")
    for owner in (reader, dropped, abandoned):
        owner.fill(3)
    items = reader.outbox.items()
    assert budget.bytes == 90 * KB
    await anext(items)
    await anext(items)
    assert budget.bytes == 70 * KB
    dropped.abort("client_too_slow", ClientTooSlow("slow"))  # drop_backlog
    assert budget.bytes == 40 * KB
    abandoned.outbox.close(Closed("completed", 1000, 0.0, None), drop_backlog=False)
    assert budget.bytes == 40 * KB  # its last items still wait for the client
    abandoned.outbox.abandon()  # the connection is over: nobody will take them
    assert budget.bytes == 10 * KB


def test_a_closed_outbox_whose_last_items_wait_is_let_go_and_its_close_says_why() -> None:
    budget = OutboxBudget(50 * KB)
    done, putter = Owner(budget, "done"), Owner(budget, "putter")
    done.fill(4)
    done.outbox.close(Closed("completed", 1000, 12.5, None), drop_backlog=False)
    putter.fill(1)
    assert putter.outbox.put(CHUNK)  # over: "done" holds the most (its session had already ended)
    closed = done.outbox.closed
    assert closed is not None and (closed.reason, closed.code, closed.audio_ms) == ("client_too_slow", 1008, 12.5)
    assert isinstance(closed.error, ClientTooSlow) and done.outbox.bytes == 0
    assert budget.bytes == 20 * KB


def test_an_outbox_keeps_no_session_alive() -> None:
    budget = OutboxBudget(100 * KB)
    owner = Owner(budget, "gone")
    outbox = owner.outbox
    outbox.put(CHUNK)
    gone = weakref.ref(owner)
    del owner
    assert gone() is None  # freed by reference counting at once: the outbox holds its end weakly, no cycle
    outbox.evict(ClientTooSlow("full"))  # the session is gone: the backlog is let go all the same
    assert outbox.closed is not None and outbox.closed.reason == "client_too_slow"
    assert budget.bytes == 0
