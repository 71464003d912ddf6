"""The process's way to Data Flow: a pool of connections (pool.py), the streams opened on it, the hold policy."""

from __future__ import annotations

import logging
import os
from typing import Any

import grpc

from gateway.audio.format import AudioFormat
from gateway.settings import Settings
from gateway.upstream import peer_settings
from gateway.upstream.addresses import Resolver, host_port, split_target
from gateway.upstream.contract import WireContract
from gateway.upstream.pool import ConnectionPool
from gateway.upstream.proxy_route import route_for
from gateway.upstream.send_queue import HoldPolicy
from gateway.upstream.stream import DataflowStream
from gateway.upstream.stream_caps import PROBE_TIMEOUT_S, StreamCaps
from gateway.upstream.token import TokenProvider

log = logging.getLogger(__name__)

#: The keepalive period is doubled (as gRPC core does within one channel) at most up to this: gRPC
#: servers take pings on a connection without calls as abuse when closer than 2 hours.
KEEPALIVE_CEILING_S = 7200.0


class UpstreamClient:
    """Owns the process-wide connections to Data Flow and opens streams on them."""

    def __init__(
        self, settings: Settings, tokens: TokenProvider, target: str | None = None, resolver: Resolver | None = None
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.target = target or settings.upstream_target
        self.contract = WireContract(settings.upstream_proto_module, settings.upstream_method_path)
        self.active_streams = 0
        self.keepalive_s = settings.upstream_keepalive_interval_s
        self._ping_without_calls = True  # keeps NAT and load balancer state of idle connections alive
        self._hold_policy = HoldPolicy(settings)
        name = split_target(self.target)
        self.proxy = route_for(name[0] if name else None, os.environ)
        self._tls = None if self._plaintext() else peer_settings.tls_context(settings.upstream_ca_file)
        caps = StreamCaps(settings.upstream_max_streams_per_connection, self._probe, self._probeable)
        self.pool = ConnectionPool(
            self.target, self._open_channel, max_streams=settings.upstream_max_streams_per_connection,
            resolve_interval_s=settings.upstream_resolve_interval_s,
            idle_close_s=settings.upstream_idle_connection_s, min_connections=settings.upstream_min_connections,
            max_age_s=settings.upstream_max_connection_age_s, resolver=resolver, caps=caps,
            resolve_name=not self.proxy.proxied,
        )  # fmt: skip

    def audio_write_interval_s(self) -> float:
        """How long one stream may hold audio to merge it, at the current load (one call per write)."""
        return self._hold_policy.hold_s(self.active_streams)

    def _options(self) -> list[tuple[str, Any]]:
        s = self.settings
        return [
            ("grpc.keepalive_time_ms", int(self.keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(s.upstream_keepalive_timeout_s * 1000)),
            # gRPC core (1.6x-1.8x) times a keepalive ping out with the ping timeout, not the keepalive
            # timeout (default 60 s): without this a half-open upstream goes unnoticed for a minute.
            ("grpc.http2.ping_timeout_ms", int(s.upstream_keepalive_timeout_s * 1000)),
            # gRPC's default reconnect back-off grows to 120 s: after an outage new sessions would
            # keep failing for up to two minutes after Data Flow is back.
            ("grpc.max_reconnect_backoff_ms", int(s.upstream_reconnect_backoff_max_s * 1000)),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.keepalive_permit_without_calls", int(self._ping_without_calls)),
            ("grpc.max_send_message_length", s.upstream_max_message_bytes),
            ("grpc.max_receive_message_length", s.upstream_max_message_bytes),
            # The proxy decision is taken on the name (proxy_route.py); gRPC would take it on the address.
            ("grpc.enable_http_proxy", int(self.proxy.proxied)),
        ]

    def pings_refused(self, keepalive_s: float) -> None:
        """A server's keepalive enforcement (gRPC servers: one ping per 5 minutes by default) ended a stream
        with GOAWAY too_many_pings. gRPC core would ping half as often on that channel, but the pool
        replaces the channel: the period doubles here, for every new connection, connections without calls
        are no longer pinged, and the open ones retire."""
        if keepalive_s < self.keepalive_s or self.keepalive_s >= KEEPALIVE_CEILING_S:
            return  # that stream's connection pinged at a period raised since (or nothing is left to raise)
        was, self.keepalive_s = self.keepalive_s, min(KEEPALIVE_CEILING_S, self.keepalive_s * 2)
        self._ping_without_calls = False  # such a server refuses those at any period under 2 hours
        log.warning(
            "Data Flow closed a connection for too many keepalive pings (gRPC GOAWAY too_many_pings) at one"
            " per %g s: new connections ping every %g s. Set GATEWAY_UPSTREAM_KEEPALIVE_INTERVAL_S to at least"
            " the server's minimum (gRPC servers default to 300 s)", was, self.keepalive_s,
        )  # fmt: skip
        self.pool.retire_all("keepalive")

    def _plaintext(self) -> bool:
        return self.settings.upstream_is_plaintext() or self.settings.simulator_mode

    def _probeable(self, address: str) -> bool:
        # Through an HTTP CONNECT proxy the probe would not reach the peer gRPC reaches; gRPC URIs it
        # resolves itself (dns:///, unix:) have no address to probe.
        return self.settings.upstream_probe_stream_cap and not self.proxy.proxied and host_port(address) is not None

    async def _probe(self, address: str) -> int | None:
        """The peer's HTTP/2 cap on streams per connection, reached as the channel reaches it; while
        connections without calls are pinged, also whether the peer refuses that."""
        host, port = host_port(address) or ("", 0)
        name = split_target(self.target)
        endpoint = peer_settings.PeerEndpoint(host, port, self._tls, name[0] if name else None)
        asked = self._ping_without_calls
        peer = await peer_settings.read_peer(endpoint, PROBE_TIMEOUT_S, ask_pings=asked)
        if asked and peer.refuses_idle_pings and self._ping_without_calls:
            self._ping_without_calls = False
            log.info(
                "upstream %s refuses keepalive pings on connections without calls (GOAWAY too_many_pings, gRPC"
                " servers' default): connections without calls are not pinged", address,
            )  # fmt: skip
            self.pool.retire_all("keepalive")  # any opened before (none at startup) keep pinging otherwise
        return peer.max_streams

    def _open_channel(self, target: str, extra: list[tuple[str, Any]]) -> grpc.aio.Channel:
        options = self._options() + extra
        if self._plaintext():
            return grpc.aio.insecure_channel(target, options=options)
        name = split_target(self.target)
        if name is not None and target != self.target:
            # The pool dials addresses: TLS must still check the certificate against the configured name,
            # and Data Flow (or its proxy) must still see that name as the authority.
            options += [("grpc.ssl_target_name_override", name[0]), ("grpc.default_authority", self.target)]
        ca = self.settings.upstream_ca_file
        creds = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes() if ca else None)
        return grpc.aio.secure_channel(target, creds, options=options)

    async def start(self) -> None:
        """Resolve the upstream name before the first session, so it is dialled by address from the start."""
        if line := self.proxy.describe(self.target):
            log.info("%s", line)
        await self.pool.resolve()

    def ready(self) -> bool:
        """A connection is connected or able to connect on demand (not in a failure back-off)."""
        return self.pool.ready()

    def open_call(self, deadline_s: float) -> grpc.aio.StreamStreamCall[bytes, bytes]:
        # Messages are serialised by the contract, so the channel moves raw bytes both ways.
        call = self.pool.open_call(self.contract.method_path, deadline_s)
        self.active_streams += 1
        return call

    def call_ended(self) -> None:
        self.active_streams -= 1

    def stream(self, audio: AudioFormat, *, deadline_s: float) -> DataflowStream:
        return DataflowStream(self, audio, deadline_s=deadline_s)

    async def aclose(self) -> None:
        await self.pool.aclose()
        self.contract.odd_messages.close()  # what its open windows counted, before the loop ends
