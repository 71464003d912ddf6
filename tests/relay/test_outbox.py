"""gateway.relay.outbox.Outbox: a session's bounded, ordered queue to its client, ending with one Closed."""

from __future__ import annotations

import asyncio

from gateway.dataflow.messages import UpstreamAudio, parse_event
from gateway.errors import BadRequest, ClientTooSlow, GatewayError
from gateway.observability import GatewayMetrics
from gateway.relay.items import Closed, Flow, Notice, OutItem
from gateway.relay.outbox import SMALL_ITEM_BYTES, Outbox, held_bytes
from tests.support.fake_upstream import event, milestone

CLOSED = Closed("finalized", 1000, 20.0, None)


async def collect(outbox: Outbox) -> list[OutItem]:
    async with asyncio.timeout(2):
        return [item async for item in outbox.items()]


async def test_items_come_out_in_order_then_one_closed() -> None:
    outbox = Outbox(10, GatewayMetrics())
    queued: list[OutItem] = [{"type": "pong"}, milestone("a"), Flow(20.0, 20.0, 0.0, False), milestone("b")]
    for item in queued:
        assert outbox.put(item)
    outbox.close(CLOSED, drop_backlog=False)
    items = await collect(outbox)
    assert items == [*queued, CLOSED]
    assert sum(isinstance(item, Closed) for item in items) == 1


async def test_put_refuses_at_the_limit_until_the_client_reads() -> None:
    outbox = Outbox(3, GatewayMetrics())
    assert [outbox.put({"n": n}) for n in range(4)] == [True, True, True, False]
    reader = outbox.items()
    assert await anext(reader) == {"n": 0}
    assert outbox.put({"n": 3})
    assert not outbox.put({"n": 4})
    outbox.close(CLOSED, drop_backlog=False)
    assert [item async for item in reader] == [{"n": 1}, {"n": 2}, {"n": 3}, CLOSED]


async def test_close_with_drop_backlog_overtakes_what_is_queued() -> None:
    outbox = Outbox(10, GatewayMetrics())
    outbox.put(milestone("never read"))
    outbox.put({"type": "pong"})
    closed = Closed("client_too_slow", 1008, 0.0, ClientTooSlow("slow"))
    outbox.close(closed, drop_backlog=True)
    assert await collect(outbox) == [closed]
    assert outbox.closed is closed


async def test_a_reader_waits_for_items_and_the_close() -> None:
    outbox = Outbox(10, GatewayMetrics())
    got: list[OutItem] = []

    async def read() -> None:
        async for item in outbox.items():
            got.append(item)

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.01)
    assert got == [] and not reader.done()
    outbox.put({"n": 1})
    await asyncio.sleep(0.01)
    assert got == [{"n": 1}]
    outbox.put({"n": 2})
    outbox.close(CLOSED, drop_backlog=False)
    async with asyncio.timeout(1):
        await reader
    assert got == [{"n": 1}, {"n": 2}, CLOSED]


async def test_wait_closed() -> None:
    outbox = Outbox(10, GatewayMetrics())
    waiting = asyncio.create_task(outbox.wait_closed())
    outbox.put({"n": 1})  # an item is not the end
    await asyncio.sleep(0.01)
    assert not waiting.done()
    assert outbox.closed is None
    outbox.close(CLOSED, drop_backlog=False)
    async with asyncio.timeout(1):
        assert await waiting is CLOSED
    assert await outbox.wait_closed() is CLOSED  # at once when already closed


async def test_wait_closed_and_a_reader_do_not_steal_each_others_wakeups() -> None:
    outbox = Outbox(10, GatewayMetrics())
    waiting = asyncio.create_task(outbox.wait_closed())
    reading = asyncio.create_task(collect(outbox))
    await asyncio.sleep(0.01)
    for n in range(3):
        outbox.put({"n": n})
        await asyncio.sleep(0)
    outbox.close(CLOSED, drop_backlog=False)
    async with asyncio.timeout(1):
        assert await waiting is CLOSED
        assert await reading == [{"n": 0}, {"n": 1}, {"n": 2}, CLOSED]


async def test_events_are_counted_when_queued_and_timed_when_read() -> None:
    metrics = GatewayMetrics()
    outbox = Outbox(2, metrics)
    outbox.put(milestone("a"))
    outbox.put(event("Vendor Specific"))
    assert not outbox.put(milestone("refused"))  # a refused event is not counted
    sample = metrics.registry.get_sample_value
    assert sample("dataflow_gateway_events_relayed_total", {"name": "SR Milestone"}) == 1
    assert sample("dataflow_gateway_events_relayed_total", {"name": "other"}) == 1  # a closed set of labels
    assert sample("dataflow_gateway_event_relay_latency_seconds_count") == 0
    outbox.close(CLOSED, drop_backlog=False)
    await collect(outbox)
    assert sample("dataflow_gateway_event_relay_latency_seconds_count") == 2


async def test_put_refuses_past_the_byte_bound_and_reading_gives_the_bytes_back() -> None:
    outbox = Outbox(1000, GatewayMetrics(), limit_bytes=100_000)
    chunk = UpstreamAudio(bytes(40_000))
    assert [outbox.put(chunk) for _ in range(3)] == [True, True, False]  # 80 kB held; 120 kB would be over
    assert outbox.bytes == 80_000
    reader = outbox.items()
    assert await anext(reader) is chunk
    assert outbox.bytes == 40_000
    assert outbox.put(chunk)
    outbox.close(CLOSED, drop_backlog=True)
    assert outbox.bytes == 0  # a dropped backlog is let go at once, not when the reader gets to it
    assert [item async for item in reader] == [CLOSED]


async def test_events_count_their_wire_size_and_one_big_item_is_always_taken() -> None:
    outbox = Outbox(1000, GatewayMetrics(), limit_bytes=64 * 1024)
    big = parse_event({"Name": "Custom", "Data": {"blob": "x" * 100_000}}, wire_bytes=100_050)
    assert held_bytes(big) == 100_050
    assert held_bytes({"type": "pong"}) == SMALL_ITEM_BYTES
    assert outbox.put(big)  # alone: taken, however big
    assert not outbox.put({"type": "pong"})  # nothing more may wait behind it


async def test_replies_and_notices_count_the_client_text_they_echo() -> None:
    """A reply or an error quoting a client's megabyte counts as that megabyte: a client that never reads
    is cut off at the byte bound, not after a thousand of them (a gigabyte held)."""
    big = "x" * 1_000_000
    assert held_bytes({"type": "pong", "id": big}) > 1_000_000
    assert held_bytes(Notice(BadRequest(f"unknown message type {big!r}"))) > 1_000_000
    assert held_bytes({"type": "pong", "id": 7}) == SMALL_ITEM_BYTES  # small ones as before
    assert held_bytes(Notice(BadRequest("short"))) == SMALL_ITEM_BYTES
    assert held_bytes({"not json": object()}) == SMALL_ITEM_BYTES  # measuring never raises
    for item in ({"type": "pong", "id": big}, Notice(BadRequest(big))):
        outbox = Outbox(1000, GatewayMetrics(), limit_bytes=4 * 1024 * 1024)
        assert [outbox.put(item) for _ in range(6)] == [True] * 4 + [False] * 2  # ~4 MB, then no more
        assert outbox.bytes > 4_000_000


async def test_room_for_waits_at_the_item_limit_and_ends_the_session_after_its_wait() -> None:
    """With ``limit`` 2 and 2 items queued a third would not fit: ``room_for`` waits for the client, and
    when it takes nothing for ``wait_s`` the session ends as too slow."""
    ended: list[tuple[str, GatewayError]] = []

    class Session:
        def end(self, reason: str, error: GatewayError) -> None:
            ended.append((reason, error))

    session = Session()
    outbox = Outbox(2, GatewayMetrics(), end=session.end)
    assert [outbox.put({"n": n}) for n in range(2)] == [True, True]
    assert len(outbox) == 2
    room = await outbox.room_for({"n": 2}, 0.05)
    assert (room, [(reason, type(error), error.message) for reason, error in ended]) == (
        False,
        [("client_too_slow", ClientTooSlow, "the client read none of its events for 0.05 s")],
    )
