"""A gateway process with few file descriptors (RLIMIT_NOFILE 128) and a client that opens idle
connections until they are no longer taken: the process must not spin (EMFILE on every accept would),
its live session must stream on, and service must resume once descriptors are free again.

- no connection cap (GATEWAY_MAX_CONNECTIONS=0): the process reaches its descriptor limit; what it can
  no longer accept is closed unanswered (libuv accepts it on a spare descriptor and closes it);
- the default cap (derived from the limit, gateway.connections.cap): it answers 503 capacity_exceeded
  before it runs out, and its descriptors stay below the limit.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gateway.connections.cap import WAITING_REFUSALS, connection_cap
from gateway.settings import Settings
from gateway.simulator.server import DataflowSimulator
from tests.support.flood import READYZ, IdleConnections, LiveSession, ask, ws_handshake
from tests.support.gateway_process import GatewayProcess, gateway_process, upstream_env
from tests.support.probes import figure, wait_for

pytestmark = pytest.mark.ws

NOFILE = 128
MOST_CONNECTIONS = 3 * NOFILE  # the flood stops here if nothing is refused: the test fails, bounded
MAX_CPU_SHARE = 0.20  # of one core, over CPU_WINDOW_S
CPU_WINDOW_S = 3.0
LOADED_S = 10.0  # a condition that holds at once on an idle machine is waited for this long on a loaded one


async def cpu_share(gp: GatewayProcess, window_s: float) -> float:
    began, cpu = time.monotonic(), gp.cpu_seconds()
    await asyncio.sleep(window_s)
    return (gp.cpu_seconds() - cpu) / (time.monotonic() - began)


async def flood_until_refused(gp: GatewayProcess, idle: IdleConnections) -> int:
    """Idle connections, ten at a time, until the gateway closes some; the most descriptors it held."""
    most = 0
    while idle.poll() == 0:
        assert len(idle.open) < MOST_CONNECTIONS, f"{len(idle.open)} connections and none refused"
        await idle.add(10)
        await asyncio.sleep(0.05)
        most = max(most, gp.open_fds())
    return most


@pytest.mark.parametrize("capped", [False, True], ids=["no-cap", "default-cap"])
async def test_out_of_descriptors_the_gateway_idles_and_recovers(
    simulator: DataflowSimulator, tmp_path: Path, capped: bool
) -> None:
    env = upstream_env(simulator) | {"GATEWAY_HTTP_HEADER_TIMEOUT_S": "120"}  # the idle ones stay until let go
    env["GATEWAY_MAX_CONNECTIONS_PER_ADDRESS"] = "0"  # the flood comes from one address; the cap is under test
    if not capped:
        env["GATEWAY_MAX_CONNECTIONS"] = "0"
    cap = connection_cap(None, Settings().max_sessions, soft_limit=NOFILE)
    assert cap == NOFILE - 64
    async with asyncio.timeout(120), gateway_process(tmp_path, env, nofile=NOFILE) as gp:
        session = await LiveSession.open(gp.ws_url())
        assert await session.say("12") == "12"
        idle = IdleConnections(gp.port)
        # What it holds with one session (its own: Popen passes on only 0-2): the figures below start here.
        before = gp.open_fds()
        try:
            most = await flood_until_refused(gp, idle)
            await idle.add(20)  # and more, while it is at its limit
            share = await cpu_share(gp, CPU_WINDOW_S)
            most = max(most, gp.open_fds())
            if capped:  # those waiting for their head are answered REFUSAL_HEAD_S after their accept, however late
                await wait_for(lambda: idle.poll() >= 0 and len(idle.open) <= cap - 1, LOADED_S)
            refused = idle.poll()
            assert share < MAX_CPU_SHARE, f"{share:.0%} of a core at the descriptor limit"
            assert await session.say("34") == "34"  # the live session streams on
            if capped:
                assert most <= before + cap - 1 + WAITING_REFUSALS, (before, most)  # the cap, the waiting: no more
                # Never ran out: what the cap keeps back (64 of 128) covers what the gateway holds besides.
                assert most < NOFILE, f"{most} descriptors ({before} held before the flood)"
                assert len(idle.open) == cap - 1  # the session holds one
                assert all(b'"code":"capacity_exceeded"' in answer for answer in idle.closed), idle.closed[:3]
                answer = await ask(gp.port, READYZ)
                assert answer.status == 503 and answer.envelope()["code"] == "capacity_exceeded"
            else:
                assert most >= NOFILE - 1, most  # it did run out
                assert all(answer == b"" for answer in idle.closed), idle.closed[:3]  # closed unanswered
                with pytest.raises((ConnectionError, asyncio.IncompleteReadError, TimeoutError)):
                    await ask(gp.port, READYZ, timeout=2)
        finally:
            held = len(idle.open)
            idle.close()
        freed = await wait_for(lambda: gp.open_fds() < NOFILE // 2, 10)
        assert (await ask(gp.port, READYZ)).status == 200
        assert (await ws_handshake(gp.port)).status == 101
        second = await LiveSession.open(gp.ws_url())
        assert await second.say("56") == "56"
        assert await second.finish() == 1000
        assert await session.say("78") == "78"
        assert await session.finish() == 1000
    figure(f"descriptor_limit_{'default_cap' if capped else 'no_cap'}", f"RLIMIT_NOFILE {NOFILE}, "
           f"{'default cap' if capped else 'no cap'}: {held} idle connections held, {refused} refused "
           f"({'503' if capped else 'closed unanswered'}), at most {most} descriptors; {share:.1%} of a core "
           f"over {CPU_WINDOW_S:g} s at the limit; live session streamed on; service back "
           f"{freed:.1f} s after the connections closed")  # fmt: skip
