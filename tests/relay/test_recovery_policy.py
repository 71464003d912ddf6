"""When a recovery tries again (gateway.relay.recovery_policy), on a fake clock: quickly at first,
then every ~2 s to the end of the window, the last attempt at the window's end rather than skipped."""

from __future__ import annotations

import itertools

import pytest

from gateway.relay import recovery_policy
from gateway.relay.recovery_policy import AttemptBudget, RecoveryPolicy, backoff_s


@pytest.mark.parametrize(("attempt", "nominal_s"), [(1, 0.25), (2, 0.5), (3, 1.0), (4, 2.0), (5, 2.0), (40, 2.0)])
def test_waits_double_from_a_quarter_second_to_two_seconds_within_a_fifth(attempt: int, nominal_s: float) -> None:
    waits = [backoff_s(attempt) for _ in range(200)]
    assert all(0.8 * nominal_s <= wait <= 1.2 * nominal_s for wait in waits), (min(waits), max(waits))
    assert max(waits) - min(waits) > 0.1 * nominal_s  # jittered: one outage's sessions do not come back at once
    assert backoff_s(0) == 0.0


def attempt_times(policy: RecoveryPolicy, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    clock = [100.0]
    monkeypatch.setattr(recovery_policy.time, "monotonic", lambda: clock[0])
    budget, times = AttemptBudget(policy), []
    budget.begin(fresh=False)
    while (wait_s := budget.next_wait()) is not None:
        clock[0] += wait_s + 0.01  # each attempt fails after 10 ms (a refused connection)
        times.append(round(clock[0] - 100.0, 2))
    return times


def test_the_default_attempts_cover_the_whole_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, 5 attempts at 0, 0.25, 0.5, 1 and 2 s spent ~3.7 s of the 10 s window: an outage of 4 s
    or more ended every call."""
    for _ in range(20):
        times = attempt_times(RecoveryPolicy(replay_ms=10_000, attempts=8, window_s=10.0), monkeypatch)
        assert len(times) == 8, times
        assert times[0] < 0.05 and times[-1] >= 8.5 and times[-1] <= 10.05, times
        assert all(later - earlier <= 2.45 for earlier, later in itertools.pairwise(times)), times


def test_a_short_window_ends_the_attempts_at_its_end(monkeypatch: pytest.MonkeyPatch) -> None:
    times = attempt_times(RecoveryPolicy(replay_ms=10_000, attempts=16, window_s=3.0), monkeypatch)
    assert 4 <= len(times) <= 6 and 2.9 <= times[-1] <= 3.05, times


def test_the_count_bounds_the_attempts_too(monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(attempt_times(RecoveryPolicy(replay_ms=10_000, attempts=2, window_s=60.0), monkeypatch)) == 2
