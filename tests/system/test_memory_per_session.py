"""Memory comes back after every session, in every client API and however it ends, and nothing a client
chooses (a key, a project, an event name, a call id, an origin) becomes a key that stays.

Short sessions (tests/support/short_sessions.py: each dialect and the uploads ending normally, plus
clients that vanish mid-start or mid-stream, refused starts, Data Flow failing or recovering mid-stream,
made-up credentials, bad origins, oversized messages, uploads cut off mid-body) run against one gateway
after a warm-up that ran every path. Then every long-lived container is back at its idle size, the
Python heap has not grown per session, and nothing a session left waits for the cycle collector.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import gc
import logging
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from gateway.service import Gateway
from gateway.simulator.server import DataflowSimulator
from tests.support import short_sessions
from tests.support.harness import RunningGateway, running_gateway
from tests.support.heap import collector_off, gateway_objects_in_cycles
from tests.support.probes import figure, logs_formatted_not_kept, wait_for
from tests.support.settings import SECRETS, settings_for
from tests.support.webhook_receiver import WebhookReceiver, webhook_receiver

pytestmark = pytest.mark.ws  # opens WebSockets: runs with the fast path on and off

ROUNDS = 6  # per measured phase; each round runs every path once (6 x 19 = 114 sessions)
CONCURRENCY = 8
#: Heap growth per session from the first measured phase to the second. What a phase leaves that is not
#: per session (caches filled once, timers not yet due, the failed-credential window of the last minute)
#: is in both and mostly cancels: measured +20 to +110. One object of ~200 bytes kept per session of
#: every path, or one of 3.6 KB per session of any one path (a finished session is ~15 KB), fails it.
MAX_BYTES_PER_SESSION = 200
#: Only what the gateway allocated (a frame of gateway/ on the stack), not the simulator or the test's own
#: equipment (its clients, its log sink, pytest's records) that run in this process too.
FRAMES = 12
THE_GATEWAYS = [
    tracemalloc.Filter(True, "*/gateway/*", all_frames=True),
    *(tracemalloc.Filter(False, pattern, all_frames=True) for pattern in ("*/gateway/simulator/*", "*/tests/*")),
]
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"memory-per-session-webhook-32by").decode()
SECRETS.add(WEBHOOK_SECRET)


def containers(gateway: Gateway) -> dict[str, int]:
    """The size of every container that lives as long as the process (what a leak would grow)."""
    registry, gate, upstream, budget = gateway.registry, gateway.gate, gateway.upstream, gateway.outbox_budget
    inside: Any = gate  # these tables have no public size; a leak test may look inside
    samples = sum(len(family.samples) for family in gateway.metrics.registry.collect()
                  if not family.name.startswith(("process", "python")))  # fmt: skip
    return {
        "leases": len(registry.leases),
        "by_dialect": len(registry.by_dialect),
        "by_key": len(registry.by_key),
        "throttled_addresses": len(inside.throttle._failures),
        "audio_budgets": len(inside.budgets._spent) + len(inside.budgets._totals),
        "used_tokens": len(inside.auth._used_tokens),
        "audiohook_nonces": len(gate.audiohook.nonces),
        "outbox_bytes": budget.bytes,
        "outboxes_holding": len(budget._holding),
        "webhooks_pending": gateway.webhooks.pending,
        "upstream_streams": upstream.active_streams,
        "upstream_connections": len(upstream.pool.connections),
        "metric_series": samples,
        "tasks": len(asyncio.all_tasks()),
    }


@contextlib.contextmanager
def quiet(name: str) -> Iterator[None]:
    """The test's own clients' INFO lines: pytest keeps every record it captures (growth not the gateway's)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.asynccontextmanager
async def short_session_gateway(simulator: DataflowSimulator) -> AsyncIterator[tuple[RunningGateway, WebhookReceiver]]:
    async with webhook_receiver(WEBHOOK_SECRET) as receiver:
        settings = settings_for(
            simulator, auth="required", api_keys=short_sessions.KEYS, allowed_origins=[short_sessions.ORIGIN],
            token_signing_key="memory-test-signing-key-0123456789abcdef", auth_failures_per_minute=0,
            max_ws_message_bytes=short_sessions.MAX_MESSAGE_BYTES, webhook_url=receiver.url,
            webhook_secret=WEBHOOK_SECRET, ack_interval_ms=250,
        )  # fmt: skip
        async with running_gateway(settings) as gw:
            with logs_formatted_not_kept(), quiet("httpx"):
                yield gw, receiver


async def run(gw: RunningGateway, names: list[str]) -> collections.Counter[str]:
    """Every path in ``names``, ``CONCURRENCY`` at a time; outcomes that were not the path's are named."""
    todo = list(reversed(names))
    outcomes: collections.Counter[str] = collections.Counter()

    async def worker() -> None:
        while todo:
            name = todo.pop()
            path, expected = short_sessions.PATHS[name]
            try:
                got = await asyncio.wait_for(path(gw), 20)
            except Exception as exc:
                got = f"{type(exc).__name__}: {exc}"
            outcomes[name if got == expected else f"{name} -> {got}"] += 1

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return outcomes


def rounds(count: int) -> list[str]:
    return [name for _ in range(count) for name in short_sessions.PATHS]


async def settled(gw: RunningGateway, simulator: DataflowSimulator, receiver: WebhookReceiver) -> dict[str, int]:
    """Every session, stream, connection and webhook over; the test's own records cleared; then measured."""
    gateway = gw.gateway
    await wait_for(lambda: not gateway.registry.leases and not gateway.upstream.active_streams, 10)
    await wait_for(lambda: not gw.server.server_state.connections and simulator.active == 0, 10)
    await wait_for(lambda: not gateway.webhooks.pending, 10)
    await asyncio.sleep(0.3)  # the last tasks (closing sockets, channel upkeep) finish
    simulator.records.clear()
    receiver.accepted.clear()
    receiver.attempts.clear()
    return containers(gateway)


async def test_every_session_gives_its_memory_back(simulator: DataflowSimulator) -> None:
    # asyncio's debug mode (conftest) keeps a stack on every timer: a cancelled one stays in the loop's
    # heap until it is due, so each session's would count as growth for seconds.
    asyncio.get_running_loop().set_debug(False)
    sessions = ROUNDS * len(short_sessions.PATHS)
    expected = collections.Counter({name: ROUNDS for name in short_sessions.PATHS})
    async with short_session_gateway(simulator) as (gw, receiver):
        warm = await run(gw, rounds(2))
        assert warm == collections.Counter({name: 2 for name in short_sessions.PATHS}), warm
        idle = await settled(gw, simulator, receiver)
        tracemalloc.start(FRAMES)
        try:
            heap: list[tracemalloc.Snapshot] = []
            for _ in range(2):
                assert await run(gw, rounds(ROUNDS)) == expected
                after = await settled(gw, simulator, receiver)
                assert after == idle, (idle, after)
                gc.collect()
                heap.append(tracemalloc.take_snapshot().filter_traces(THE_GATEWAYS))
        finally:
            tracemalloc.stop()
    grown = heap[1].compare_to(heap[0], "lineno")
    growth = sum(stat.size_diff for stat in grown)
    figure("memory_per_session", f"{len(short_sessions.PATHS)} paths, {sessions} sessions per phase: heap "
           f"{growth:+d} bytes from phase 1 to 2 ({growth / sessions:+.1f} per session); idle {idle}")  # fmt: skip
    assert growth / sessions < MAX_BYTES_PER_SESSION, "\n".join(str(stat) for stat in grown[:12])


async def test_no_session_leaves_anything_for_the_cycle_collector(simulator: DataflowSimulator) -> None:
    async with short_session_gateway(simulator) as (gw, receiver):
        assert await run(gw, rounds(1)) == collections.Counter(list(short_sessions.PATHS))
        await settled(gw, simulator, receiver)
        left: dict[str, dict[str, int]] = {}
        for name in short_sessions.PATHS:
            with collector_off():
                assert await run(gw, [name, name]) == collections.Counter({name: 2})
                await settled(gw, simulator, receiver)
                if garbage := gateway_objects_in_cycles():
                    left[name] = garbage
    assert left == {}
