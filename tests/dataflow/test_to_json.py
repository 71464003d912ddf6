"""What the gateway writes to Data Flow, and how its size is counted against
``GATEWAY_MAX_CONTROL_MESSAGE_BYTES``: compact JSON, other than ASCII as UTF-8. Python's default
escapes every such letter as ``\\uXXXX`` (6 bytes for a Turkish letter that UTF-8 holds in 2), so an
``update`` of Turkish text was refused at about a third of the documented size."""

from __future__ import annotations

import json

import pytest

from gateway.dataflow.messages import to_json, utf8_size
from gateway.errors import InvalidMessage, MessageTooBig


def test_text_other_than_ascii_is_written_as_utf8_and_counted_in_utf8_bytes() -> None:
    message = {"Event": {"Name": "Müşteri", "Data": {"Note": "ş" * 10}}}
    text = to_json(message)
    assert text == '{"Event":{"Name":"Müşteri","Data":{"Note":"şşşşşşşşşş"}}}'
    assert utf8_size(text) == len(text.encode()) == len(text) + 12  # ü and ş are 2 bytes each
    assert json.loads(text.encode()) == message


def test_the_limit_counts_utf8_bytes_exactly() -> None:
    message = {"Settings": {"Note": "ş" * 30_000}}
    size = len(to_json(message).encode())
    assert size == 60_024
    assert to_json(message, limit=size) == to_json(message)
    with pytest.raises(MessageTooBig, match=f"a control message of {size} bytes is over the limit of {size - 1}"):
        to_json(message, limit=size - 1)


def test_a_lone_surrogate_is_escaped_since_utf8_cannot_carry_it() -> None:
    message = {"Data": {"Text": "a\ud800ş"}}
    text = to_json(message, limit=100)
    assert text == '{"Data":{"Text":"a\\ud800\\u015f"}}'
    text.encode()  # goes on the wire as it is
    assert json.loads(text) == message


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_numbers_json_has_no_words_for_are_the_clients_error(number: float) -> None:
    with pytest.raises(InvalidMessage, match="NaN or Infinity"):
        to_json({"Settings": {"Threshold": number}})
