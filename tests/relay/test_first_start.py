"""Which failures of a session's first Start are tried again (gateway/relay/first_start.py), with
streams that fail as told: only Data Flow out of reach (gRPC UNAVAILABLE) is retried; every other
failure is the start's error at once; a tear-down is the session's own end, never counted as Data
Flow's failure (a client that started and left made Data Flow look unhealthy)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import grpc
import pytest

from gateway.dataflow.messages import DataflowResponse, StartRequest
from gateway.errors import UpstreamError, UpstreamRejected, UpstreamUnavailable
from gateway.relay.failures import StreamFailures
from gateway.relay.first_start import first_start
from gateway.relay.recovery_policy import AttemptBudget, RecoveryPolicy
from gateway.upstream.errors import error_from_status

ANSWER = DataflowResponse(name="StartResponse", ok=True, error=None, session_id="s1", raw={})


def failure(status: str | None, kind: type[UpstreamError] = UpstreamUnavailable) -> UpstreamError:
    error = kind("Data Flow stream failed")
    error.grpc_status, error.out_of_reach = status, status == "UNAVAILABLE"
    return error


class Told:
    """A stream whose Start fails with ``error`` (or is answered), or waits for ``release``."""

    def __init__(self, error: UpstreamError | None, release: asyncio.Event | None = None) -> None:
        self.error, self.release, self.cancelled = error, release, False

    async def start(self, request: StartRequest) -> DataflowResponse:
        if self.release is not None:
            await self.release.wait()
        if self.error is not None:
            raise self.error
        return ANSWER

    def cancel(self) -> None:
        self.cancelled = True


async def run(outcomes: list[UpstreamError | None], torn_down: asyncio.Event | None = None) -> tuple[Any, ...]:
    """first_start over streams that end as ``outcomes`` say: (its answer or error, what was counted as
    Data Flow's failures, how many streams were started)."""
    streams = [Told(outcome) for outcome in outcomes]
    started = [streams[0]]

    def open_next() -> Told:
        started.append(streams[len(started)])
        return started[-1]

    counted: list[UpstreamError] = []
    budget = AttemptBudget(RecoveryPolicy(replay_ms=10_000, attempts=4, window_s=5.0))
    try:
        result: Any = await first_start(
            streams[0], open_next, cast(StartRequest, None), budget,  # type: ignore[arg-type]
            StreamFailures(counted.append), torn_down or asyncio.Event(),
        )  # fmt: skip
    except UpstreamError as exc:
        result = exc
    assert all(stream.cancelled for stream in started if stream.error is not None)
    return result, counted, len(started)


async def test_data_flow_out_of_reach_is_tried_again_until_it_answers() -> None:
    result, counted, used = await run([failure("UNAVAILABLE"), failure("UNAVAILABLE"), None])
    assert result is ANSWER and used == 3
    assert [e.grpc_status for e in counted] == ["UNAVAILABLE", "UNAVAILABLE"]


@pytest.mark.parametrize(
    "error",
    [failure("RESOURCE_EXHAUSTED"), failure("INTERNAL"), failure(None), failure("INVALID_ARGUMENT", UpstreamRejected)],
    ids=["busy", "internal", "closed-before-answering", "rejected"],
)
async def test_a_start_that_reached_data_flow_is_not_tried_again(error: UpstreamError) -> None:
    result, counted, used = await run([error, None])
    assert isinstance(result, type(error)) and used == 1
    assert counted == []  # the session's error: counted where it ends the session, not twice


async def test_an_outage_then_another_failure_ends_the_start_with_both_counted() -> None:
    result, counted, _ = await run([failure("UNAVAILABLE"), failure("INTERNAL"), None])
    assert isinstance(result, UpstreamUnavailable) and result.grpc_status == "INTERNAL"
    assert [e.grpc_status for e in counted] == ["UNAVAILABLE", "INTERNAL"]


async def test_a_start_ended_by_a_tear_down_is_no_failure_of_data_flows() -> None:
    """The client left (or a drain) while its Start was written: the stream reports the cancelled RPC
    as UNAVAILABLE-class; nothing is counted or logged, and no other stream is opened."""
    torn_down = asyncio.Event()
    torn_down.set()
    result, counted, used = await run([failure("CANCELLED"), None], torn_down)
    assert isinstance(result, UpstreamUnavailable) and counted == [] and used == 1
    result, counted, used = await run([failure("UNAVAILABLE"), None], torn_down)
    assert isinstance(result, UpstreamUnavailable) and counted == [] and used == 1


@pytest.mark.parametrize(
    ("code", "details", "out_of_reach"),
    [
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: Connection refused", True),
        (grpc.StatusCode.UNAVAILABLE, "Socket closed", True),
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.5:443: "
         "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: CERTIFICATE_VERIFY_FAILED", False),
        (grpc.StatusCode.INTERNAL, "stream reset", False),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "node busy", False),
    ],
    ids=["refused", "closed", "untrusted-certificate", "internal", "busy"],
)  # fmt: skip
def test_out_of_reach_is_unavailable_without_a_failed_tls_handshake(
    code: grpc.StatusCode, details: str, out_of_reach: bool
) -> None:
    """A gateway that does not trust the proxy's certificate retried every start for the whole window
    (10 s) before saying so: the same certificate meets every new connection."""
    assert error_from_status(code, details).out_of_reach is out_of_reach
