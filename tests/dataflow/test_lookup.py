"""Reading Data Flow's JSON cheaply without reading it less tolerantly (issue 18 item 3)."""

from __future__ import annotations

import json

import pytest

from gateway.dataflow import lenient
from gateway.dataflow.lenient import MAX_JSON_DEPTH, get, loads_object
from gateway.dataflow.messages import parse_event, parse_response
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


def test_spellings_dataflow_md_lists_are_read() -> None:
    """Variants older servers write (dataflow.md): each would otherwise lose a field a client reads."""
    legacy = {
        "event": {"name": "SR Result", "start-ms": "20", "end-ms": "480", "data": {"text_attributes": "Recognized"}}
    }
    event = parse_event(legacy)
    assert (event.start_ms, event.end_ms, event.final) == (20, 480, True)  # a final though not an SR Milestone
    assert not parse_event({"event": {"name": "SR Result", "data": {"text_attributes": "partial"}}}).final
    answered = parse_response({"message-name": "start-response", "operation-result": " Success\r\n"})
    assert (answered.name, answered.ok, answered.error) == ("StartResponse", True, None)
    refused = parse_response({"MessageName": "StartResponse", "OperationResult": "Successful? no"})
    assert (refused.ok, refused.error) == (False, "Successful? no")


@pytest.mark.parametrize("as_bytes", [False, True])
def test_depth_limit_still_enforced_when_brackets_could_reach_it(as_bytes: bool) -> None:
    deep = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH  # 101 levels with the object around it
    text = '{"a": ' + deep + "}"
    with pytest.raises(InvalidMessage, match="deeper than"):
        loads_object(text.encode() if as_bytes else text)
    # Many brackets side by side are not deep: counted, then walked, then accepted.
    wide = json.dumps({"a": [[] for _ in range(3 * MAX_JSON_DEPTH)]})
    assert len(loads_object(wide.encode() if as_bytes else wide)["a"]) == 3 * MAX_JSON_DEPTH


def test_a_wide_message_is_measured_on_its_text_not_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    """1 MiB of ``[{},{},…]`` is 350 000 containers: walking them held the event loop ~185 ms for one
    message (any client could send one a second per connection); its text is measured instead."""

    def walked(value: object, limit: int = MAX_JSON_DEPTH) -> bool:
        raise AssertionError("walked a wide message")

    monkeypatch.setattr(lenient, "too_deep", walked)
    wide = '{"type": "ping", "id": [' + ",".join(["{}"] * 350_000) + "]}"
    assert len(loads_object(wide)["id"]) == 350_000
    deep_inside = '{"a": [' + ",".join(["{}"] * 5000) + "," + "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH + "]}"
    with pytest.raises(InvalidMessage, match="deeper than"):
        loads_object(deep_inside)
    assert lenient.nesting_depth('{"a": "[[[[", "b": [{"c": "\\\\]"}]}') == 3  # brackets in strings do not count
    # A lone surrogate in the text (undecodable bytes from Data Flow, escaped) is measured, not raised on.
    with_surrogate = '{"a": "\udc80", "b": [' + ",".join(["{}"] * 3000) + "]}"
    assert len(loads_object(with_surrogate)["b"]) == 3000
