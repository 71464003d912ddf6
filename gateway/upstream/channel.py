"""The process's connection to Data Flow: one grpc.aio channel, the streams opened on it, the hold policy."""

from __future__ import annotations

from typing import Any

import grpc

from gateway.audio.format import AudioFormat
from gateway.settings import Settings
from gateway.upstream.contract import WireContract
from gateway.upstream.send_queue import HoldPolicy
from gateway.upstream.stream import DataflowStream
from gateway.upstream.token import TokenProvider


class UpstreamClient:
    """Owns the process-wide channel to Data Flow and opens streams on it."""

    def __init__(self, settings: Settings, tokens: TokenProvider, target: str | None = None) -> None:
        self.settings = settings
        self.tokens = tokens
        self.target = target or settings.upstream_target
        self.contract = WireContract(settings.upstream_proto_module, settings.upstream_method_path)
        self.active_streams = 0
        self._channel: grpc.aio.Channel | None = None
        self._hold_policy = HoldPolicy(settings)

    def audio_write_interval_s(self) -> float:
        """How long one stream may hold audio to merge it, at the current load (one call per write)."""
        return self._hold_policy.hold_s(self.active_streams)

    def _options(self) -> list[tuple[str, Any]]:
        s = self.settings
        return [
            ("grpc.keepalive_time_ms", int(s.upstream_keepalive_interval_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(s.upstream_keepalive_timeout_s * 1000)),
            # gRPC core (1.6x-1.8x) times a keepalive ping out with the ping timeout, not the keepalive
            # timeout (default 60 s): without this a half-open upstream goes unnoticed for a minute.
            ("grpc.http2.ping_timeout_ms", int(s.upstream_keepalive_timeout_s * 1000)),
            # gRPC's default reconnect back-off grows to 120 s: after an outage new sessions would
            # keep failing for up to two minutes after Data Flow is back.
            ("grpc.max_reconnect_backoff_ms", int(s.upstream_reconnect_backoff_max_s * 1000)),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.max_send_message_length", s.upstream_max_message_bytes),
            ("grpc.max_receive_message_length", s.upstream_max_message_bytes),
        ]

    @property
    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            if self.settings.upstream_is_plaintext() or self.settings.simulator_mode:
                self._channel = grpc.aio.insecure_channel(self.target, options=self._options())
            else:
                ca = self.settings.upstream_ca_file
                roots = ca.read_bytes() if ca else None
                creds = grpc.ssl_channel_credentials(root_certificates=roots)
                self._channel = grpc.aio.secure_channel(self.target, creds, options=self._options())
        return self._channel

    def ready(self) -> bool:
        """The channel is connected or able to connect on demand (not in a failure back-off)."""
        state = self.channel.get_state(try_to_connect=True)
        usable = (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.IDLE, grpc.ChannelConnectivity.CONNECTING)
        return state in usable  # a first connect is not an outage: TRANSIENT_FAILURE stays until READY

    def open_call(self, deadline_s: float) -> grpc.aio.StreamStreamCall[bytes, bytes]:
        # Messages are serialised by the contract, so the channel moves raw bytes both ways.
        method = self.channel.stream_stream(self.contract.method_path, None, None)
        call = method(None, timeout=deadline_s)
        self.active_streams += 1
        return call

    def call_ended(self) -> None:
        self.active_streams -= 1

    def stream(self, audio: AudioFormat, *, deadline_s: float) -> DataflowStream:
        return DataflowStream(self, audio, deadline_s=deadline_s)

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None
