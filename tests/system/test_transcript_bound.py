"""A session's transcript is held to its end (an upload's answer, a call's webhook summary) and had no
byte bound: a Data Flow sending many or large final results grew one upload by ~1x the text during the
session and ~5x at its answer (160 results of 256 KiB: 40 MiB held, 208 MiB at the peak), and a Twilio
call kept it even with no webhook to send it to. Now at most ``GATEWAY_MAX_TRANSCRIPT_BYTES`` (UTF-8, all
channels) is kept, from the start; the rest is left out and counted (``transcriptTruncated``,
``transcriptDroppedBytes``), and the events still carry every result. Real uvicorn on port 0, a real
gRPC Data Flow stand-in, real httpx, websockets and webhook receiver."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from gateway.adapters.call_results import WebhookResults
from gateway.dataflow.messages import MILESTONE, DataflowEvent
from gateway.relay.transcript import Transcript
from tests.support.harness import running_gateway
from tests.support.hostile_upstream import HostileUpstream, Peer
from tests.support.signals import wav_bytes
from tests.support.twilio_webhooks import SECRET, twilio_call
from tests.support.webhook_receiver import webhook_receiver

TEXT_BYTES = 300 * 1024
RESULTS = 6
CAP = 1024 * 1024  # three results and their spaces fit (921 602 bytes); a fourth would not


def word_text(n: int) -> str:
    return (f"w{n}" + "x" * 7)[:9].ljust(TEXT_BYTES, "y")


async def big_results(peer: Peer) -> None:
    """Answers Start, and after the audio ends sends RESULTS final results of TEXT_BYTES each."""
    await peer.answer_start()
    await peer.read_until_finalize()
    for n in range(RESULTS):
        await peer.send_event(MILESTONE, Text=word_text(n), Channel=0)
    await peer.send_event("FinalResult")


def assert_cut_after_three(summary: dict[str, Any], text: str) -> None:
    assert text == " ".join(word_text(n) for n in range(3)), (len(text), text[:40])
    assert summary["transcriptTruncated"] is True
    assert summary["transcriptDroppedBytes"] == (RESULTS - 3) * TEXT_BYTES


@pytest.mark.parametrize("accept", ["application/json", "application/x-ndjson"])
async def test_an_uploads_transcript_is_cut_at_the_bound_and_says_so(accept: str) -> None:
    async with HostileUpstream(big_results) as upstream:
        settings = upstream.settings(max_transcript_bytes=CAP, client_outbox_bytes=16 * 1024 * 1024)
        async with running_gateway(settings) as gw, httpx.AsyncClient(timeout=60) as http:
            wav = wav_bytes(np.zeros(1600, dtype=np.float32), 16000)
            answer = await http.post(f"{gw.http_url}/v1/recognize", content=wav, headers={"Accept": accept})
    assert answer.status_code == 200, answer.text[:300]
    if accept == "application/json":
        result = answer.json()
        events = [e for e in result["events"] if e["name"] == MILESTONE]
    else:
        lines = [httpx.Response(200, content=line).json() for line in answer.content.splitlines()]
        result = lines[-1]
        assert result["type"] == "result"
        events = [m for m in lines if m.get("type") == "event" and m["name"] == MILESTONE]
    assert_cut_after_three(result, result["transcript"]["0"])
    assert [e["text"] for e in events] == [word_text(n) for n in range(RESULTS)]  # every result, as events


@pytest.mark.ws
async def test_a_calls_summary_is_cut_at_the_bound_and_says_so() -> None:
    async with HostileUpstream(big_results) as upstream, webhook_receiver(SECRET) as receiver:
        hooks = {"webhook_url": receiver.url, "webhook_secret": SECRET, "webhook_backoff_s": 0.05}
        async with running_gateway(upstream.settings(max_transcript_bytes=CAP, **hooks)) as gw:
            await twilio_call(gw, "1")
            await receiver.wait_for(lambda r: bool(r.payloads("summary")))
    summary = receiver.payloads("summary")[0]
    assert [entry["channel"] for entry in summary["transcript"]] == [0]
    assert_cut_after_three(summary, summary["transcript"][0]["text"])
    assert len(receiver.payloads("event")) == RESULTS  # each final result went as its own webhook


def test_what_is_kept_is_one_piece_from_the_start_counted_in_utf8() -> None:
    transcript = Transcript(max_bytes=20)
    for channel, text in [(0, "çok"), (1, "iyi"), (0, "x" * 30), (1, "b")]:
        transcript.add(channel, text)  # "çok" is 4 bytes; the 30 do not fit, and "b" after them is left out
    assert transcript.by_channel(3) == {0: "çok", 1: "iyi", 2: ""}
    assert transcript.cut() == {"transcriptTruncated": True, "transcriptDroppedBytes": 31}
    assert Transcript(max_bytes=20).cut() == {}


class NoDeliveries:
    def submit(self, *_: object) -> str:
        raise AssertionError("nothing is sent without a webhook target")


def test_a_call_without_a_webhook_keeps_no_transcript() -> None:
    class Call:
        name = "twilio"

        def call_identity(self) -> dict[str, str]:
            return {}

    results = WebhookResults(Call(), NoDeliveries(), None, CAP)  # type: ignore[arg-type]
    for n in range(100):
        text = word_text(n)
        results.observe(DataflowEvent(MILESTONE, 0, 0, 10, None, [], {"Text": text}, {}, len(text)))
    assert results.transcript.by_channel() == {}


def test_text_that_fits_exactly_is_kept_whole() -> None:
    """A space is counted only between two texts of one channel: a result of exactly the bound, or two
    channels' texts adding up to it, were marked truncated."""
    one = Transcript(max_bytes=1024)
    one.add(0, "a" * 1024)
    assert (one.by_channel(), one.cut()) == ({0: "a" * 1024}, {})
    two = Transcript(max_bytes=1024)
    two.add(0, "a" * 511)
    two.add(1, "b" * 511)
    two.add(1, "c")  # a space and a letter more: 1024 bytes
    assert (two.by_channel(), two.cut()) == ({0: "a" * 511, 1: "b" * 511 + " c"}, {})
    two.add(1, "")  # an empty result joins nothing (a space for it was a trailing one)
    assert two.cut() == {}
    two.add(0, "d")
    assert two.cut() == {"transcriptTruncated": True, "transcriptDroppedBytes": 1}
