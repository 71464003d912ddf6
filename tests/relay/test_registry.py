"""gateway.relay.registry: slots per process and per key, leases released once, drain, denial metrics."""

from __future__ import annotations

import pytest

from gateway.errors import CapacityExceeded, ErrorCode, GatewayError, GoingAway, RateLimited
from gateway.relay.registry import SessionRegistry


def denials(registry: SessionRegistry, reason: str) -> float | None:
    return registry.metrics.registry.get_sample_value("dataflow_gateway_denials_total", {"reason": reason})


def active(registry: SessionRegistry, dialect: str) -> float | None:
    return registry.metrics.registry.get_sample_value("dataflow_gateway_sessions_active", {"dialect": dialect})


class Live:
    """A Drainable that records what a drain told it."""

    def __init__(self) -> None:
        self.notices: list[GatewayError] = []
        self.gone = False

    def notify(self, error: GatewayError) -> None:
        self.notices.append(error)

    def go_away(self) -> None:
        self.gone = True


def test_reserve_and_release_count_per_dialect_and_key() -> None:
    registry = SessionRegistry(10)
    a = registry.reserve("native", key="alice", key_limit=5)
    b = registry.reserve("native")
    c = registry.reserve("audiocodes", key="alice", key_limit=5)
    assert registry.active == 3
    assert (registry.by_dialect["native"], registry.by_dialect["audiocodes"]) == (2, 1)
    assert registry.by_key["alice"] == 2
    assert (a.dialect, a.key, b.key, c.key) == ("native", "alice", None, "alice")
    assert active(registry, "native") == 2
    a.release()
    assert (registry.active, registry.by_dialect["native"], registry.by_key["alice"]) == (2, 1, 1)
    assert a.released
    b.release()
    c.release()
    assert registry.active == 0
    assert +registry.by_dialect == {} and +registry.by_key == {}
    assert active(registry, "native") == 0


def test_release_is_idempotent() -> None:
    registry = SessionRegistry(10)
    lease = registry.reserve("native", key="alice")
    other = registry.reserve("native", key="alice")
    lease.release()
    lease.release()
    assert (registry.active, registry.by_dialect["native"], registry.by_key["alice"]) == (1, 1, 1)
    other.release()
    assert (registry.active, registry.by_dialect["native"], registry.by_key["alice"]) == (0, 0, 0)


def test_capacity() -> None:
    registry = SessionRegistry(2)
    first = registry.reserve("native")
    registry.reserve("dataflow_ws")
    assert registry.full
    with pytest.raises(CapacityExceeded) as raised:
        registry.reserve("native")
    assert raised.value.error_code is ErrorCode.CAPACITY_EXCEEDED and raised.value.retryable
    assert raised.value.ws_close_code == 1013
    assert registry.active == 2 and registry.by_dialect["native"] == 1
    assert denials(registry, "capacity_exceeded") == 1
    with pytest.raises(CapacityExceeded):
        registry.check_capacity()  # the same refusal, without taking a slot
    assert denials(registry, "capacity_exceeded") == 2
    first.release()
    registry.check_capacity()
    assert registry.reserve("native").dialect == "native"


def test_a_tentative_reserve_counts_no_denial() -> None:
    registry = SessionRegistry(1)
    registry.reserve("native")
    with pytest.raises(CapacityExceeded):
        registry.reserve("native", count_denial=False)
    with pytest.raises(RateLimited):
        registry.reserve("native", key="k", key_limit=0, count_denial=False)
    assert denials(registry, "capacity_exceeded") is None
    assert denials(registry, "rate_limited") is None


def test_key_cap() -> None:
    registry = SessionRegistry(10)
    registry.reserve("native", key="alice", key_limit=2)
    registry.reserve("native", key="alice", key_limit=2)
    with pytest.raises(RateLimited) as raised:
        registry.reserve("native", key="alice", key_limit=2)
    assert raised.value.error_code is ErrorCode.RATE_LIMITED
    assert raised.value.http_status == 429 and raised.value.retry_after_s == 60
    assert "maximum of 2 concurrent sessions" in raised.value.message
    assert denials(registry, "rate_limited") == 1  # counted once, not by check_key and again by reserve
    assert registry.active == 2 and registry.by_key["alice"] == 2
    registry.reserve("native", key="bob", key_limit=2)  # another key has its own cap
    registry.reserve("native", key="alice")  # no limit given: not capped
    assert registry.by_key["alice"] == 3


def test_bind_key_counts_a_slot_against_its_key_once() -> None:
    registry = SessionRegistry(10)
    registry.reserve("native", key="alice", key_limit=2)
    lease = registry.reserve("native")
    lease.bind_key("alice", 2)
    assert (lease.key, registry.by_key["alice"]) == ("alice", 2)
    lease.bind_key("bob", 2)  # already bound: no change
    assert (lease.key, registry.by_key["alice"], registry.by_key["bob"]) == ("alice", 2, 0)
    lease.release()
    assert registry.by_key["alice"] == 1


def test_bind_key_over_the_cap_is_refused_and_counted() -> None:
    registry = SessionRegistry(10)
    registry.reserve("native", key="alice", key_limit=1)
    lease = registry.reserve("native")
    with pytest.raises(RateLimited):
        lease.bind_key("alice", 1)
    assert lease.key is None
    assert registry.by_key["alice"] == 1
    assert denials(registry, "rate_limited") == 1
    lease.release()
    assert registry.by_key["alice"] == 1 and registry.active == 1


def test_bind_key_after_release_does_nothing() -> None:
    registry = SessionRegistry(10)
    lease = registry.reserve("native")
    lease.release()
    lease.bind_key("alice", 1)
    assert lease.key is None and registry.by_key["alice"] == 0


def test_draining_refuses_everything_with_going_away() -> None:
    registry = SessionRegistry(10)
    registry.reserve("native")
    registry.draining = True
    with pytest.raises(GoingAway) as raised:
        registry.reserve("native", key="alice", key_limit=5)
    assert raised.value.ws_close_code == 1001 and raised.value.retryable
    with pytest.raises(GoingAway):
        registry.check_capacity()
    assert denials(registry, "going_away") == 2
    assert registry.active == 1
    sample = registry.metrics.registry.get_sample_value
    assert sample("dataflow_gateway_draining") == 1.0


def test_drainables_are_the_leases_that_carry_one() -> None:
    registry = SessionRegistry(10)
    with_session, without = registry.reserve("native"), registry.reserve("native")
    live = Live()
    with_session.drainable = live
    assert registry.drainables() == [live]
    for drainable in registry.drainables():
        drainable.go_away()
    assert live.gone
    with_session.release()
    assert registry.drainables() == []
    without.release()


def test_deny_counts_by_reason() -> None:
    registry = SessionRegistry(1)
    registry.deny("unauthorized")
    registry.deny("unauthorized")
    assert denials(registry, "unauthorized") == 2
    assert denials(registry, "forbidden") is None
