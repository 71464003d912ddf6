"""What one message from Data Flow carries for the session: an event, a response, audio, or nothing."""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway.dataflow.lenient import loads_object
from gateway.dataflow.messages import UpstreamAudio, UpstreamItem, parse_event, parse_response
from gateway.errors import InvalidMessage
from gateway.upstream.contract import ContentType, WireContract

log = logging.getLogger(__name__)


def item_from_message(contract: WireContract, data: bytes, redacted: Callable[[str], str]) -> UpstreamItem | None:
    """The item in one response message; None for one the session skips (text that is no JSON object, a
    content type the gateway does not relay). ``redacted`` takes the gateway's own secrets out of the text
    before anything parses or quotes it."""
    frame = contract.decode_response(data)
    if frame.content_type is ContentType.AUDIO:
        return UpstreamAudio(frame.binary)
    try:
        text = redacted(frame.text)
        obj = loads_object(text)
    except InvalidMessage:
        contract.odd_messages.skipped(frame.content_type.value)  # one line per burst
        return None
    if frame.content_type is ContentType.RESPONSE:
        return parse_response(obj)
    if frame.content_type is ContentType.EVENT:
        return parse_event(obj, len(text))
    log.debug("ignored an upstream %s message", frame.content_type.value)
    return None
