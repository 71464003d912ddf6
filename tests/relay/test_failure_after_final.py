"""A Data Flow stream that fails after the client finalized and Data Flow's FinalResult arrived has ended
the session normally: nothing is recovered, the client gets each result once and a 1000 close, whether
Data Flow could be reached again or not. A failure before the FinalResult is still recovered.

Over real sockets: a hostile Data Flow (tests/support/hostile_upstream.py) behind the real gateway, a
native WebSocket client in front of it."""

from __future__ import annotations

import logging

import grpc
import pytest

from gateway.upstream.contract import ContentType
from tests.support.harness import Transcript
from tests.support.hostile_upstream import Behaviour, HostileUpstream, Peer, native_session
from tests.support.settings import SIM_TOKEN

pytestmark = pytest.mark.ws

AFTER_RESULT = "after its final result"


async def results(peer: Peer, *, final: bool = True) -> None:
    """Answer Start, take the audio up to Finalize, then a milestone, FinalizeResponse and (or not) FinalResult."""
    await peer.answer_start()
    await peer.read_until_finalize()
    await peer.send_event("SR Milestone", Text="hello")
    await peer.send_json(ContentType.RESPONSE, {"MessageName": "FinalizeResponse", "operation-result": "success"})
    if final:
        await peer.send_event("FinalResult", Node="SR")


async def fine(peer: Peer) -> None:
    await results(peer)


async def unreachable(peer: Peer) -> None:
    await peer.context.abort(grpc.StatusCode.UNAVAILABLE, "connection refused")


def first_then(first: Behaviour, later: Behaviour) -> Behaviour:
    """``first`` plays the session's first stream, ``later`` every stream a recovery opens."""
    streams = 0

    async def behaviour(peer: Peer) -> None:
        nonlocal streams
        streams += 1
        await (first if streams == 1 else later)(peer)

    return behaviour


async def fails_after_final_result(peer: Peer) -> None:
    await results(peer)
    await peer.context.abort(grpc.StatusCode.UNAVAILABLE, "node restarting")


async def fails_before_final_result(peer: Peer) -> None:
    await results(peer, final=False)
    await peer.context.abort(grpc.StatusCode.UNAVAILABLE, "node restarting")


def counts(transcript: Transcript) -> tuple[int, int, int, int, list[str], int | None]:
    """FinalizeResponses, FinalResults, milestones, upstream_recovered notices, error codes, close code."""
    return (
        len([m for m in transcript.of_type("response") if m["name"] == "FinalizeResponse"]),
        len(transcript.events("FinalResult")),
        len(transcript.milestones()),
        len(transcript.of_type("upstream_recovered")),
        transcript.errors(),
        transcript.close_code,
    )


def after_result_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if AFTER_RESULT in r.getMessage()]


@pytest.mark.parametrize("later", [fine, unreachable], ids=["reachable", "unreachable"])
async def test_a_failure_after_the_final_result_is_the_normal_end(
    later: Behaviour, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: recovered. Reachable: a second stream, the client got 2 FinalizeResponses, 2 FinalResults and an
    # upstream_recovered notice. Unreachable: 6 streams over about 4 s, then a 1011 upstream_unavailable
    # close for a client that already had every result.
    caplog.set_level(logging.DEBUG)
    async with HostileUpstream(first_then(fails_after_final_result, later)) as upstream:
        first, transcript, took_s = await native_session(upstream)
    assert first["type"] == "started"
    assert counts(transcript) == (1, 1, 1, 0, [], 1000), transcript.messages
    assert transcript.of_type("closed")[-1]["reason"] in ("finalized", "completed")
    assert len(upstream.peers) == 1 and took_s < 2.0
    [line] = after_result_lines(caplog)
    assert line.levelno == logging.INFO
    assert line.getMessage() == f"an upstream stream ended with an error (upstream_unavailable) {AFTER_RESULT}"
    assert caplog.records and not [r for r in caplog.records if SIM_TOKEN in r.getMessage()]


async def test_a_failure_after_finalize_but_before_the_final_result_is_still_recovered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with HostileUpstream(first_then(fails_before_final_result, fine)) as upstream:
        _, transcript, _ = await native_session(upstream)
    _, final_results, milestones, recovered, errors, close_code = counts(transcript)
    assert (final_results, recovered, errors, close_code) == (1, 1, [], 1000), transcript.messages
    assert milestones >= 1 and len(upstream.peers) == 2
    assert after_result_lines(caplog) == []


async def test_a_failure_before_the_final_result_still_ends_in_an_error_when_data_flow_stays_away() -> None:
    async with HostileUpstream(first_then(fails_before_final_result, unreachable)) as upstream:
        _, transcript, _ = await native_session(upstream, upstream_recovery_window_s=2.0)
    assert transcript.errors()[-1:] == ["upstream_unavailable"] and transcript.close_code == 1011
    assert len(upstream.peers) > 1


@pytest.mark.parametrize(
    ("behaviour", "close_code"), [(fails_after_final_result, 1000), (fails_before_final_result, 1011)],
    ids=["after", "before"],
)  # fmt: skip
async def test_with_recovery_off_only_a_failure_before_the_final_result_is_an_error(
    behaviour: Behaviour, close_code: int
) -> None:
    """Recovery off (GATEWAY_UPSTREAM_REPLAY_MS=0): a failure after the final result ended 1011
    upstream_unavailable for a client that had every result."""
    async with HostileUpstream(behaviour) as upstream:
        _, transcript, _ = await native_session(upstream, upstream_replay_ms=0)
    assert transcript.close_code == close_code, transcript.messages
    assert transcript.errors() == ([] if close_code == 1000 else ["upstream_unavailable"])
    assert len(transcript.events("FinalResult")) == (1 if close_code == 1000 else 0)
    assert len(upstream.peers) == 1
