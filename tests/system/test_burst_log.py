"""The burst log (gateway/logs/bursts.py) shared by the webhook drops and odd Data Flow messages: the first
of a burst at once, the rest in one line per window, with and without an event loop, and what is still
counted when the owner closes. The upstream client closes its own at shutdown."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from gateway.logs.bursts import BurstLog
from gateway.simulator.server import DataflowSimulator
from gateway.upstream.channel import UpstreamClient
from gateway.upstream.token import StaticTokenProvider
from tests.support.settings import settings_for

MORE = "%(count)d more in %(seconds).1f s (%(amount)d bytes; %(reasons)s)"


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "test.bursts"]


async def test_a_burst_is_one_line_at_once_and_one_per_window(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="test.bursts")
    bursts = BurstLog(logging.getLogger("test.bursts"), MORE, window_s=0.2)
    bursts.warn("first %s", "one", reason="down", amount=1)
    for reason in ("down", "full", "down"):
        bursts.warn("never shown", reason=reason, amount=10)
    assert lines(caplog) == ["first one"]
    await asyncio.sleep(0.35)
    [_, told] = lines(caplog)
    assert told.startswith("3 more in 0.") and told.endswith("(30 bytes; down: 2, full: 1)"), told
    await asyncio.sleep(0.3)  # the window opened by that line ends with nothing counted
    bursts.warn("after the burst")  # logged at once
    assert lines(caplog)[-1] == "after the burst"
    bursts.close()
    assert len(lines(caplog)) == 3  # nothing counted: nothing told


def test_without_a_loop_the_next_occurrence_tells_the_window(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="test.bursts")
    bursts = BurstLog(logging.getLogger("test.bursts"), MORE, window_s=0.1)
    bursts.warn("first")
    bursts.warn("counted", amount=5)
    time.sleep(0.15)
    bursts.warn("second burst")
    assert lines(caplog)[0] == "first"
    assert lines(caplog)[1].startswith("1 more in ") and "(5 bytes; : 1)" in lines(caplog)[1]
    assert lines(caplog)[2] == "second burst"


async def test_close_tells_what_is_counted_and_the_next_is_logged_at_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="test.bursts")
    bursts = BurstLog(logging.getLogger("test.bursts"), MORE, window_s=60)
    bursts.warn("first")
    bursts.warn("counted", reason="x")
    bursts.close()
    bursts.warn("after close")
    assert [line.split(" in ")[0] for line in lines(caplog)] == ["first", "1 more", "after close"]


async def test_the_upstream_client_tells_its_open_repair_counts_when_it_closes(
    simulator: DataflowSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Repairs counted in a window still open at shutdown were never logged."""
    caplog.set_level(logging.WARNING, logger="gateway.upstream")
    settings = settings_for(simulator)
    assert settings.upstream_token is not None
    client = UpstreamClient(settings, StaticTokenProvider(settings.upstream_token))
    for _ in range(4):
        client.contract.odd_messages.repaired("Event", 120, 2)
    await client.aclose()
    said = [r.getMessage() for r in caplog.records if "invalid UTF-8" in r.getMessage()]
    assert len(said) == 2, said
    assert said[1].startswith("3 more upstream messages had invalid UTF-8") and "(6 bytes" in said[1], said
