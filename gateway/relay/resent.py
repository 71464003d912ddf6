"""The settings a recovering stream gives a new upstream stream again (:mod:`gateway.relay.recovery`):
every ``update`` Data Flow took so far, merged into one Update, and bounded so that Update always fits
``GATEWAY_MAX_CONTROL_MESSAGE_BYTES`` (a replay that did not fit would end the session it should save).
"""

from __future__ import annotations

from typing import Any

from gateway.dataflow.messages import build_request, to_json, utf8_size
from gateway.errors import MessageTooBig


class ResentSettings:
    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.current: dict[str, Any] = {}  # what a new stream is sent, as one Update

    def merged(self, update: dict[str, Any]) -> dict[str, Any]:
        """The settings so far with ``update`` over them; raises :class:`MessageTooBig` (and keeps nothing)
        when they would not fit one Update. ``update`` alone is never larger than the merge."""
        merged = {**self.current, **update}
        size = utf8_size(to_json(build_request("Update", Settings=merged)))
        if size > self.limit_bytes:
            raise MessageTooBig(
                f"a control message of {size} bytes (this update with the earlier ones, as a recovery re-sends "
                f"them) is over the limit of {self.limit_bytes}; not sent"
            )
        return merged

    def keep(self, merged: dict[str, Any]) -> None:
        self.current = merged
