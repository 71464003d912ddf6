"""What an upstream stream needs from the connection it rides on."""

from __future__ import annotations

from typing import Protocol

import grpc

from gateway.settings import Settings
from gateway.upstream.contract import WireContract
from gateway.upstream.token import TokenProvider


class StreamHost(Protocol):
    """What a stream needs from the connection it rides on (:class:`gateway.upstream.channel.UpstreamClient`)."""

    settings: Settings
    tokens: TokenProvider
    contract: WireContract
    keepalive_s: float  # the keepalive ping period of connections opened now

    def pings_refused(self, keepalive_s: float) -> None:
        """A stream opened when pings went every ``keepalive_s`` ended: the server refused them as too many."""
        ...

    def open_call(self, deadline_s: float) -> grpc.aio.StreamStreamCall[bytes, bytes]:
        """Open the RPC and count it as a live stream until :meth:`call_ended`."""
        ...

    def call_ended(self) -> None: ...

    def audio_write_interval_s(self) -> float: ...
