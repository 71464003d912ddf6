"""How long a finalizing session waits (gateway.relay.finalize_wait), figure by figure: the timeout, plus
the audio Data Flow may not have reached at real time (none for a live call), at most BACKLOG_TIMEOUTS
timeouts; each message of Data Flow starts the wait again. Over real sockets:
tests/upstream/test_stream_ending.py."""

from __future__ import annotations

import pytest

from gateway.dataflow.messages import DataflowEvent
from gateway.relay.finalize_wait import BACKLOG_TIMEOUTS, WHOLE_WAIT_TIMEOUTS, FinalizeWait
from gateway.relay.items import Flow

TIMEOUT_S = 30.0


def sent(ms: float, buffered_ms: float = 0.0) -> Flow:
    return Flow(audio_ms=ms + buffered_ms, sent_ms=ms, buffered_ms=buffered_ms, paused=False)


def event(end_ms: int, start_ms: int = 0) -> DataflowEvent:
    return DataflowEvent("SR Milestone", 0, start_ms, end_ms, None, [], {}, {})


def test_a_live_call_sent_at_real_time_waits_the_timeout() -> None:
    wait = FinalizeWait(TIMEOUT_S)
    wait.begin(sent(600_000), streamed_s=600.2, now=1000.0)  # an hour-long call's last 10 minutes, say
    assert wait.deadline == 1000.0 + TIMEOUT_S


@pytest.mark.parametrize(
    ("sent_ms", "buffered_ms", "streamed_s", "heard_ms", "backlog_s"),
    [
        (120_000, 0, 20.0, 0, 100.0),  # an upload at 6x: 100 s Data Flow may still be working through
        (100_000, 20_000, 20.0, 0, 100.0),  # audio still on its way to gRPC counts too
        (120_000, 0, 20.0, 110_000, 10.0),  # an event reported on up to 110 s: 10 s left at most
        (120_000, 0, 20.0, 125_000, 0.0),  # past what was sent (another channel's clock): none
        (3_600_000, 0, 60.0, 0, BACKLOG_TIMEOUTS * TIMEOUT_S),  # an hour sent in a minute: capped
    ],
)
def test_the_first_wait_covers_the_audio_data_flow_may_not_have_reached(
    sent_ms: float, buffered_ms: float, streamed_s: float, heard_ms: int, backlog_s: float
) -> None:
    wait = FinalizeWait(TIMEOUT_S)
    if heard_ms:
        wait.heard(event(heard_ms), finalizing=False, now=0.0)
    wait.begin(sent(sent_ms, buffered_ms), streamed_s, now=1000.0)
    assert wait.deadline == pytest.approx(1000.0 + TIMEOUT_S + backlog_s)


def test_each_message_starts_the_wait_again_and_never_shortens_it() -> None:
    wait = FinalizeWait(TIMEOUT_S)
    wait.begin(sent(120_000), streamed_s=20.0, now=1000.0)  # 100 s of backlog: 1130
    wait.heard(event(-1, start_ms=21_000), finalizing=True, now=1010.0)
    assert wait.deadline == 1130.0  # the backlog's allowance still stands
    wait.heard(object(), finalizing=True, now=1120.0)  # anything from Data Flow, not only an event
    assert wait.deadline == 1150.0
    assert wait.heard_ms == 21_000  # a Speech Started's time is its start
    assert wait.silence(1150.0) == "Data Flow sent no final result, nor anything for 30.0 s"


def test_the_whole_wait_ends_however_much_data_flow_keeps_sending() -> None:
    """A Data Flow sending partials for ever and never its final result held the session until the
    stream's deadline: each message starts the wait again only up to WHOLE_WAIT_TIMEOUTS timeouts."""
    wait = FinalizeWait(TIMEOUT_S)
    wait.begin(sent(60_000), streamed_s=60.0, now=1000.0)
    latest = 1000.0 + WHOLE_WAIT_TIMEOUTS * TIMEOUT_S
    for now in range(1001, 2000, 10):  # a message every 10 s
        wait.heard(event(-1, start_ms=now), finalizing=True, now=float(now))
        assert wait.deadline == min(latest, now + TIMEOUT_S)
    assert wait.deadline == latest == 1330.0
    assert (
        wait.silence(latest)
        == "Data Flow sent no final result within 330.0 s of the end of input, though it kept sending"
    )


def test_a_backlog_longer_than_the_whole_wait_at_half_real_time_is_waited_for() -> None:
    """A window of 8 kHz mu-law is 524 s of audio (the diff review): an engine at real time working
    through it, sending a result each second, was cut at 330 s and the last results lost. The whole wait
    is then twice that backlog and a timeout."""
    wait = FinalizeWait(TIMEOUT_S)
    wait.begin(sent(600_000), streamed_s=76.0, now=1000.0)  # 524 s sent past what real time let it reach
    for second in range(1, 600):
        wait.heard(event(76_000 + second * 1000), finalizing=True, now=1000.0 + second)
        assert wait.deadline == max(1000.0 + TIMEOUT_S + BACKLOG_TIMEOUTS * TIMEOUT_S, 1000.0 + second + TIMEOUT_S)
    assert wait.deadline < 1000.0 + 2 * 524 + TIMEOUT_S  # still bounded
