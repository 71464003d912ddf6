"""The streams per connection an upstream allows, in its own words: its HTTP/2 SETTINGS frame.

gRPC holds a stream over the peer's ``SETTINGS_MAX_CONCURRENT_STREAMS`` until a slot frees, neither
refusing nor failing it, and does not expose the value (measured with grpcio 1.85): behind a proxy
capped below ``GATEWAY_UPSTREAM_MAX_STREAMS_PER_CONNECTION`` a session's Start waited 10 s and failed
with "did not answer Start". Timing cannot tell a cap from a slow upstream (an attempt that guessed
from it learned caps of 1 and 5 on an uncapped, loaded upstream), so the pool asks the peer instead:
a probe connection over the same transport (TCP, TLS with the same roots and server name, ALPN
``h2``) sends the client preface, reads the server's first SETTINGS frame and closes with GOAWAY.
No stream is opened and nothing of the session or its credentials is sent.

The same connection can also ask whether the peer takes keepalive pings on a connection without calls:
gRPC servers (grpc-go, grpc-java, C-core) by default allow none, and answer the third or fourth with
GOAWAY ENHANCE_YOUR_CALM ``too_many_pings``; the gateway's idle connection, pinged every 20 s, was closed
each minute. :data:`IDLE_PINGS` pings, each after the last one's answer, tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

#: At most this much of the peer's answer is read before its SETTINGS must have come (it is the first
#: frame a server sends; a few frames of a few bytes each).
_MAX_READ_BYTES = 64 * 1024
#: Pings sent to ask the pings question: gRPC servers' policy (two strikes) ends the connection at the
#: third (grpc-java) or fourth (grpc-go, C-core); one more so the GOAWAY is read before a last answer.
IDLE_PINGS = 5


class ProbeFailed(Exception):
    """The peer's SETTINGS could not be read (the message says why, never a credential)."""


@dataclass(frozen=True)
class PeerEndpoint:
    """Where and how to reach one upstream address, as gRPC's channel does."""

    host: str  # an IP address or a name, without brackets
    port: int
    tls: ssl.SSLContext | None  # None: plaintext HTTP/2 (prior knowledge), as an insecure channel
    server_name: str | None = None  # certificate name and SNI (the configured name, not the address)


@dataclass(frozen=True)
class PeerPolicy:
    """What the peer said of itself on the probe connection."""

    max_streams: int | None  # SETTINGS_MAX_CONCURRENT_STREAMS; None: it sets no cap
    refuses_idle_pings: bool | None = None  # GOAWAY too_many_pings to pings without calls; None: not asked


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verifying TLS with the upstream's roots (the system's when none are set), offering only ``h2``."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.set_alpn_protocols(["h2"])
    return context


async def read_peer(endpoint: PeerEndpoint, timeout_s: float, *, ask_pings: bool = False) -> PeerPolicy:
    """The peer's ``SETTINGS_MAX_CONCURRENT_STREAMS`` and, with ``ask_pings``, whether it refuses
    keepalive pings on a connection without calls (this costs the peer a line in its log when it does).

    Raises :class:`ProbeFailed` when the peer cannot be reached, does not speak HTTP/2 or does not
    send its SETTINGS (and answer the pings) within ``timeout_s``.
    """
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(
                endpoint.host, endpoint.port, ssl=endpoint.tls,
                server_hostname=(endpoint.server_name or endpoint.host) if endpoint.tls else None,
            )  # fmt: skip
            if endpoint.tls is not None:
                alpn = writer.get_extra_info("ssl_object").selected_alpn_protocol()
                if alpn != "h2":
                    raise ProbeFailed(f"TLS agreed on {alpn or 'no protocol'}, not h2")
            connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            max_streams = await _read_settings(connection, reader, writer)
            refuses = await _ask_idle_pings(connection, reader, writer) if ask_pings else None
            if not ask_pings or refuses is False:  # otherwise the peer has ended the connection itself
                connection.close_connection()
                writer.write(connection.data_to_send())
            return PeerPolicy(max_streams, refuses)
    except TimeoutError:
        raise ProbeFailed(f"no SETTINGS within {timeout_s:g} s") from None
    except (OSError, ssl.SSLError, EOFError) as exc:
        raise ProbeFailed(f"{type(exc).__name__}: {exc}"[:200]) from None
    except h2.exceptions.ProtocolError as exc:
        raise ProbeFailed(f"not HTTP/2: {type(exc).__name__}") from None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await writer.wait_closed()


async def _read_settings(
    connection: h2.connection.H2Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> int | None:
    connection.initiate_connection()
    writer.write(connection.data_to_send())
    read = 0
    while read < _MAX_READ_BYTES:
        data = await reader.read(16 * 1024)
        if not data:
            raise EOFError("the peer closed the connection before its SETTINGS")
        read += len(data)
        for event in connection.receive_data(data):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                changed = event.changed_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
                writer.write(connection.data_to_send())  # the SETTINGS acknowledgement
                return None if changed is None else changed.new_value
            if isinstance(event, h2.events.ConnectionTerminated):
                raise EOFError(f"the peer sent GOAWAY ({event.error_code!s}) before its SETTINGS")
    raise ProbeFailed(f"no SETTINGS in the first {_MAX_READ_BYTES} bytes")


async def _ask_idle_pings(
    connection: h2.connection.H2Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> bool | None:
    """Ping as a keepalive on a connection without calls does, :data:`IDLE_PINGS` times, each after the
    last one's answer: True when the peer ends the connection for too many pings, False when it answers
    all, None when it ends the connection otherwise (that says nothing of its pings policy)."""
    read = 0
    for n in range(IDLE_PINGS):
        connection.ping(n.to_bytes(8, "big"))
        writer.write(connection.data_to_send())
        answered = False
        while not answered:
            data = await reader.read(16 * 1024)
            read += len(data)
            if not data or read > _MAX_READ_BYTES:
                return None
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ConnectionTerminated):
                    calm = event.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
                    return True if calm and b"too_many_pings" in (event.additional_data or b"") else None
                answered = answered or isinstance(event, h2.events.PingAckReceived)
            writer.write(connection.data_to_send())
    return False
