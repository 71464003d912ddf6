"""A key's start rate on its own clock (gateway.relay.start_rates): the burst, each turn after it, the
refusal past START_WAIT_S that takes no turn, and keys without a rate."""

from __future__ import annotations

import pytest

from gateway.errors import ErrorCode, RateLimited
from gateway.relay.start_rates import START_WAIT_S, StartRates


def test_a_burst_goes_at_once_then_each_start_waits_its_turn() -> None:
    rates = StartRates({"acme": (4.0, 3)})  # 4 a second after 3 at once
    assert [rates.turn_in("acme", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert [rates.turn_in("acme", 100.0) for _ in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert rates.turn_in("acme", 102.0) == pytest.approx(0.0)  # its turns paid to 101: in hand again
    assert rates.turn_in("acme", 110.0) == 0.0  # idle: the burst is back, no more than it
    assert [rates.turn_in("acme", 110.0) for _ in range(3)] == pytest.approx([0.0, 0.0, 0.25])


def test_a_turn_past_the_longest_wait_is_refused_and_not_taken() -> None:
    rates = StartRates({"acme": (1.0, 1)})
    waits = [rates.turn_in("acme", 50.0) for _ in range(3)]
    assert waits == pytest.approx([0.0, 1.0, 2.0]) and waits[-1] <= START_WAIT_S
    for _ in range(3):  # refused each time: a refused start takes no turn
        with pytest.raises(RateLimited) as refused:
            rates.turn_in("acme", 50.0)
        assert refused.value.error_code is ErrorCode.RATE_LIMITED
        assert refused.value.retry_after == 1  # its turn 3 s off, 1 s past the longest wait
        assert "1 a second" in refused.value.message
    assert rates.turn_in("acme", 51.0) == pytest.approx(2.0)  # the next turn is the one refused before


def test_keys_without_a_rate_and_callers_without_a_key_never_wait() -> None:
    rates = StartRates({"acme": (1.0, 1), "off": (0.0, 5)})
    for _ in range(100):
        assert rates.turn_in("other", 0.0) == rates.turn_in(None, 0.0) == rates.turn_in("off", 0.0) == 0.0
