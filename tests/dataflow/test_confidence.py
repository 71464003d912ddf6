"""One reading of Data Flow's ``Confidence`` for every dialect that reports a score: AudioCodes, jambonz and
AudioHook each put the same 0-1 number in their final transcripts (AudioHook had read a percentage as 1.0)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.adapters import audiocodes
from gateway.adapters.audiohook_events import transcript_entity
from gateway.adapters.audiohook_media import Timeline
from gateway.adapters.jambonz import JambonzDialect
from gateway.dataflow.messages import parse_event

# Numbers as strings; junk means none; past 1 a percentage (0-100 engines), past 100 or below 0 none.
SCORES = [
    (0.87, 0.87), ("0.5", 0.5), ("n/a", 1.0), (True, 1.0), (None, 1.0), (87, 0.87), ("99", 0.99), (1, 1.0),
    (150, 1.0), (-2, 1.0), ("nan", 1.0), ("inf", 1.0), ([0.5], 1.0),
]  # fmt: skip


def final_with(score: Any) -> Any:
    return parse_event({"Name": "SR Milestone", "Channel": 0, "Data": {"Text": "12", "Confidence": score}})


def reported(score: Any) -> list[float]:
    item = final_with(score)
    audiocodes_reply = audiocodes.render(item)
    [jambonz_frame] = JambonzDialect().render(item)
    entity = transcript_entity(item, timeline=Timeline(), channels=1, language=None, session_id="s")
    assert audiocodes_reply is not None and isinstance(jambonz_frame, dict) and entity is not None
    return [
        audiocodes_reply["alternatives"][0]["confidence"],
        jambonz_frame["alternatives"][0]["confidence"],
        entity["data"]["alternatives"][0]["confidence"],
    ]


@pytest.mark.parametrize(("given", "expected"), SCORES)
def test_every_dialect_reports_the_same_score(given: Any, expected: float) -> None:
    assert reported(given) == [pytest.approx(expected)] * 3


def test_an_event_without_a_score_reports_one() -> None:
    item = parse_event({"Name": "SR Milestone", "Channel": 0, "Data": {"Text": "12"}})
    assert item.confidence == 1.0


@pytest.mark.parametrize("score", [0, 0.0, "0"])
def test_a_score_of_zero_is_a_score_not_none_given(score: Any) -> None:
    """0 is on the 0-1 scale: it is reported as 0.0, not read as "no score" (1.0)."""
    assert final_with(score).confidence == 0.0
    assert reported(score) == [0.0, 0.0, 0.0]
