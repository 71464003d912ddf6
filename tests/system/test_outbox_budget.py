"""What the gateway holds for all its clients together is bounded (GATEWAY_CLIENT_OUTBOX_TOTAL_BYTES),
not only per session: clients that never read cannot together take the process's memory. When the
budget is full, the client with the largest backlog is ended (client_too_slow), its backlog let go;
a client that reads, connected all along, is not touched, and neither is a non-reader whose backlog
was never the largest (it gets every result once it reads)."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from websockets.asyncio.client import ClientConnection

from gateway.relay.session import Session
from gateway.simulator.server import DataflowSimulator
from tests.support.harness import RunningGateway, Transcript, gateway_factory_for, read_all, ws_connect
from tests.support.native_client import DTMF, start_message
from tests.support.non_readers import EVENT, live_sessions, small_window_socket

pytestmark = pytest.mark.ws  # opens WebSockets: runs with the fast path on and off

KiB, MiB = 1024, 1024 * 1024
BUDGET = 2 * MiB
FINALIZE = json.dumps({"type": "finalize"})


async def connect(
    gw: RunningGateway, clients: list[ClientConnection], *, reads: bool
) -> tuple[ClientConnection, Session]:
    """A native client that has started a session, and that session (found in the gateway: call it
    for one client at a time)."""
    known = live_sessions(gw)
    if reads:
        ws = await ws_connect(gw.ws_url())
    else:  # a small receive window: what it does not read backs up into the gateway soon
        ws = await ws_connect(gw.ws_url(), ping_interval=None, max_queue=1, sock=small_window_socket(gw.port))
    clients.append(ws)
    await ws.send(start_message())
    if not reads:
        ws.transport.pause_reading()  # from here on nothing is read: the echoes pile up in the gateway
    async with asyncio.timeout(5):
        while not (new := live_sessions(gw) - known):
            await asyncio.sleep(0.01)
    return ws, new.pop()


async def fill(ws: ClientConnection, session: Session, at_least: int) -> int:
    """Events that Data Flow echoes, one at a time, until ``session`` holds ``at_least`` bytes for its
    client (past the kernel's socket buffers) or is ended; then what was in flight arrives."""
    sent = 0
    async with asyncio.timeout(15):
        while session.outbox.bytes < at_least and session.closed is None:
            await ws.send(EVENT)
            sent += 1
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    return sent


class Sampler:
    """The bytes all sessions' outboxes hold, summed every few milliseconds: a witness of the budget
    that does not take the budget's own word for it."""

    def __init__(self, gw: RunningGateway) -> None:
        self.gw = gw
        self.most = 0
        self.sessions: set[Session] = set()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Sampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            self.sessions |= live_sessions(self.gw)
            self.most = max(self.most, sum(s.outbox.bytes for s in self.sessions))
            await asyncio.sleep(0.002)


async def reading_client(ws: ClientConnection, done: asyncio.Event) -> tuple[Transcript, int]:
    """Echoed events (read as they come) all the while, then a DTMF call to its end."""
    reader = asyncio.create_task(read_all(ws, timeout=60))
    sent = 0
    while not done.is_set():
        await ws.send(EVENT)
        sent += 1
        await asyncio.sleep(0.02)
    await ws.send(DTMF)
    await ws.send(FINALIZE)
    return await reader, sent


def ended_by_the_budget(transcript: Transcript) -> bool:
    last = transcript.of_type("error")[-1]
    return transcript.close_code == 1008 and last["code"] == "client_too_slow" and "largest backlog" in last["message"]


async def test_clients_that_never_read_are_held_to_the_process_budget_largest_first(
    simulator: DataflowSimulator,
) -> None:
    # The per-session bound (4 MiB) is above the budget, and the send timeout far away: only the budget acts.
    settings = {"client_outbox_total_bytes": BUDGET, "client_send_timeout_s": 30, "idle_timeout_s": 60}
    async with gateway_factory_for(simulator)(**settings) as gw:
        clients: list[ClientConnection] = []
        try:
            await clients_that_never_read(gw, clients)
        finally:  # on a failure too: no client left for the gateway's shutdown to wait for
            for ws in clients:
                ws.transport.abort()


async def clients_that_never_read(gw: RunningGateway, clients: list[ClientConnection]) -> None:
    done = asyncio.Event()
    async with Sampler(gw) as sampler:
        reader_ws, _ = await connect(gw, clients, reads=True)
        reading = asyncio.create_task(reading_client(reader_ws, done))
        # A holds the most, B less; C then grows: first A is ended (the largest, C's backlog smaller), then C
        # itself once it holds the most. B, a non-reader too, is never the largest and is left alone.
        a_ws, a = await connect(gw, clients, reads=False)
        a_sent = await fill(a_ws, a, MiB)
        b_ws, b = await connect(gw, clients, reads=False)
        b_sent = await fill(b_ws, b, 512 * KiB)
        assert a.closed is None and b.closed is None
        a_held, b_held = a.outbox.bytes, b.outbox.bytes
        assert a_held > b_held and a_held + b_held < BUDGET, (a_held, b_held)
        c_ws, c = await connect(gw, clients, reads=False)
        c_held_when_a_ended = -1
        c_sent = 0
        async with asyncio.timeout(15):
            while c.closed is None:
                await c_ws.send(EVENT)
                c_sent += 1
                await asyncio.sleep(0.01)
                if a.closed is not None and c_held_when_a_ended < 0:
                    c_held_when_a_ended = c.outbox.bytes
        done.set()
        reader, reader_sent = await reading
    print(
        f"held at most {sampler.most / MiB:.2f} MiB for all clients (budget {BUDGET / MiB:g} MiB); A held "
        f"{a_held / KiB:.0f} KiB and was ended while C held {c_held_when_a_ended / KiB:.0f} KiB; B held "
        f"{b_held / KiB:.0f} KiB; events sent A {a_sent}, B {b_sent}, C {c_sent}, reader {reader_sent}"
    )
    assert sampler.most <= BUDGET, f"the sessions held {sampler.most} bytes for their clients, over {BUDGET}"
    budget = gw.gateway.outbox_budget
    assert budget.peak <= BUDGET

    # Largest first: A while C held less, then C; B was never the largest and still runs.
    assert a.closed is not None and c.closed is not None and b.closed is None
    assert 0 <= c_held_when_a_ended < a_held
    for ended in (a, c):
        assert ended.closed is not None and ended.closed.reason == "client_too_slow" and ended.outbox.bytes == 0

    # The reading client, connected all along, got every echo and its whole call.
    assert reader.close_code == 1000, reader.messages[-3:]
    assert reader.errors() == []
    assert len(reader.events("Pad")) == reader_sent
    assert reader.milestones() == ["123", "456"]

    # The ended ones are told why when they read; B, spared, gets every result once it reads.
    for ws in (a_ws, c_ws):
        ws.transport.resume_reading()
        assert ended_by_the_budget(await read_all(ws))
    b_ws.transport.resume_reading()
    await b_ws.send(FINALIZE)
    spared = await read_all(b_ws)
    assert spared.close_code == 1000 and len(spared.events("Pad")) == b_sent

    async with asyncio.timeout(5):  # every session gone: nothing is left counted against the budget
        while gw.gateway.registry.active:
            await asyncio.sleep(0.02)
    assert budget.bytes == 0
    too_slow = gw.gateway.metrics.registry.get_sample_value(
        "dataflow_gateway_sessions_ended_total", {"dialect": "native", "outcome": "client_too_slow"}
    )
    assert too_slow == 2
