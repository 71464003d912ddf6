"""What one message from Data Flow carries for the session: an event, a response, audio, or nothing."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from gateway.dataflow.lenient import loads_object
from gateway.dataflow.messages import UpstreamAudio, UpstreamItem, parse_event, parse_response
from gateway.errors import InvalidMessage
from gateway.upstream.contract import ContentType, WireContract

log = logging.getLogger(__name__)

#: JSON's "\ud800" parses to a lone surrogate, which UTF-8 cannot carry: strict parsers (orjson, serde_json,
#: jq) refused the frame or line that carried it on. Shown as U+FFFD, as invalid UTF-8 bytes are.
_SURROGATE = re.compile("[\ud800-\udfff]")


def item_from_message(contract: WireContract, data: bytes, redacted: Callable[[str], str]) -> UpstreamItem | None:
    """The item in one response message; None for one the session skips (text that is no JSON object, a
    content type the gateway does not relay or know, audio without bytes). ``redacted`` takes the
    gateway's own secrets out of the text before anything parses or quotes it, and out of every string
    the text decodes to."""
    frame = contract.decode_response(data)
    if frame.content_type is ContentType.AUDIO:
        # An empty one (a heartbeat with nothing set: AUDIO is 0) would be a 0-byte frame to the client.
        return UpstreamAudio(frame.binary) if frame.binary else None
    if frame.content_type is None:  # a keep-alive, an UNSPECIFIED, a newer server's kind
        contract.odd_messages.unknown(frame.number, len(data))  # one line per burst
        return None
    try:
        text = redacted(frame.text)
        obj = loads_object(text, non_finite_as_null=True)
    except InvalidMessage:
        contract.odd_messages.skipped(frame.content_type.value)  # one line per burst
        return None
    if "\\" in text:
        # An escape can spell the token so the raw text does not hold it (``\u002B`` for ``+``, ``\/``
        # for ``/``): the decoded strings are redacted too. Without a backslash every decoded string
        # (key or value) is, character for character, a piece of the raw text, so the token in one of
        # them was in the text and is redacted already: no walk on the hot path.
        # Only an escape spells a surrogate too: the same walk shows each as U+FFFD.
        obj = redacted_strings(obj, lambda value: _SURROGATE.sub("\ufffd", redacted(value)))
    if frame.content_type is ContentType.RESPONSE:
        return parse_response(obj)
    if frame.content_type is ContentType.EVENT:
        return parse_event(obj, len(data))  # its bytes (len(text) counted an emoji as one: 4x the outbox)
    log.debug("ignored an upstream %s message", frame.content_type.value)
    return None


def redacted_strings(value: Any, redacted: Callable[[str], str]) -> Any:
    """``value`` (decoded JSON) with ``redacted`` applied to each string in it, keys included: about 5 µs
    for an event of 20 strings (its parse takes as long). json.loads makes exact dicts, lists and strs;
    recursion is bounded, as loads_object refuses nesting deeper than MAX_JSON_DEPTH."""
    kind = type(value)
    if kind is str:
        return redacted(value)
    if kind is dict:
        return {redacted(k): redacted_strings(v, redacted) if type(v) in _WALKED else v for k, v in value.items()}
    if kind is list:
        return [redacted_strings(v, redacted) if type(v) in _WALKED else v for v in value]
    return value


_WALKED = frozenset((str, dict, list))  # numbers, booleans and null hold no text
