"""Reading Data Flow's JSON cheaply without reading it less tolerantly (issue 18 item 3)."""

from __future__ import annotations

import json

import pytest

from gateway.dataflow.lenient import MAX_JSON_DEPTH, get, loads_object
from gateway.dataflow.messages import parse_event
from gateway.errors import InvalidMessage


def test_exact_key_found_first_and_variants_still_match() -> None:
    assert get({"StartMsec": 5}, "StartMsec", "start-msec") == 5
    assert get({"start_msec": 7}, "StartMsec", "start-msec") == 7
    assert get({"START-MSEC": 9}, "StartMsec") == 9
    assert get({"other": 1}, "StartMsec", default=-1) == -1
    # The first name wins over a later one, spelled exactly or not.
    assert get({"start-ms": 1, "startmsec": 2}, "StartMsec", "start-ms") == 2


def test_legacy_event_spelling_parses_as_before() -> None:
    event = parse_event({"event": {"name": "sr partial", "channel": "1", "start-msec": "10", "data": {"text": "hi"}}})
    assert (event.name, event.channel, event.start_ms, event.text) == ("SR Partial", 1, 10, "hi")


@pytest.mark.parametrize("as_bytes", [False, True])
def test_depth_limit_still_enforced_when_brackets_could_reach_it(as_bytes: bool) -> None:
    deep = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH  # 101 levels with the object around it
    text = '{"a": ' + deep + "}"
    with pytest.raises(InvalidMessage, match="deeper than"):
        loads_object(text.encode() if as_bytes else text)
    # Many brackets side by side are not deep: counted, then walked, then accepted.
    wide = json.dumps({"a": [[] for _ in range(3 * MAX_JSON_DEPTH)]})
    assert len(loads_object(wide.encode() if as_bytes else wide)["a"]) == 3 * MAX_JSON_DEPTH
