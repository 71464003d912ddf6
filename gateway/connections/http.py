"""uvicorn's HTTP protocol with what one connection, and the number of them, can make the process hold
bounded (gateway.server hands it to uvicorn)."""

from __future__ import annotations

import asyncio

import httptools

from gateway.connections import below_app, cap
from gateway.connections.address_share import AddressShares, proxied
from gateway.connections.bad_requests import (
    HEAD_TOO_LARGE,
    TRAILERS_TOO_LARGE,
    UNKNOWN_TRANSFER_CODING,
    UNSUPPORTED_UPGRADE,
    UPGRADE_WITH_A_BODY,
    UPGRADE_WITH_BODY,
    bad_request_body,
    bad_request_log,
    declares_body,
    late_head_body,
    parser_reason,
    unknown_transfer_coding,
)
from gateway.connections.early_answer import say_close_on_early_answers
from gateway.connections.linger import LingeringTransport
from gateway.connections.sliced import SlicedParseProtocol
from gateway.logs.bursts import BurstLog
from gateway.routes.http_conventions import HEADERS
from gateway.settings import Settings

_HEAD_END = b"\r\n\r\n"
#: What every answer carries (gateway.routes.http_conventions), on the answers made here below the app.
_CONVENTIONAL = b"".join(b"%s: %s\r\n" % (name.encode(), value.encode()) for name, value in HEADERS.items())


class _Stop(Exception):
    """Raised in a parser callback to stop the parser: what is left of the read is dropped."""


class BoundedHeadProtocol(SlicedParseProtocol):
    """uvicorn's HTTP protocol with each request head bounded in time and in bytes; uvicorn bounds
    neither. A client that sends its headers (or its WebSocket handshake) a byte at a time, or nothing,
    would hold a connection forever (slowloris): late heads get 408. A head of megabytes would be held
    whole before any authentication: past ``max_head_bytes`` the request gets 431 and the connection
    closes before the parser sees the excess. A chunked body's trailer section is bounded the same way
    (uvicorn added its fields to the running request's headers); its fields are dropped.

    A client that does not read what it is answered is bounded too: a response that cannot be written
    for ``write_stall_s`` ends the connection, and a closed connection lingers only while its client
    takes what was sent (gateway.connections.linger, ``linger_s``). Pipelined requests wait while one is
    answered (uvicorn read on after each answer: an unbounded queue); past ``max_pipelined`` waiting, the
    last one is answered with ``connection: close`` and the rest dropped, which a pipelining client
    retries (RFC 9112 9.3.2).

    A connection made while ``max_connections`` others are open, or past its address's share (.address_share),
    is refused: 503 once its head is in (within ``cap.REFUSAL_HEAD_S``), handshakes before the upgrade (.cap).

    The class attributes below are uvicorn's defaults for a bare class; :meth:`with_limits` makes the
    class one server uses, with the settings' values."""

    header_timeout_s = 10.0
    max_head_bytes = 16 * 1024
    write_stall_s = 30.0
    linger_s = 10.0
    max_pipelined = 16
    max_connections: int | None = None
    address_shares = AddressShares(None, [])  # with_limits makes one per server
    bad_requests: BurstLog = bad_request_log()  # with_limits makes one per server
    _stall_timer: asyncio.TimerHandle | None = None
    _over_cap = False  # made past max_connections or its address's share: refused once its head is in
    _past_share = False  # made past its address's share (and not past the cap)
    _share_key: str | None = None  # its address's key in address_shares while counted there
    _header_timer: asyncio.TimerHandle | None = None
    _in_head = True  # reading a request head (until its headers are complete)
    _head_bytes = 0  # bytes of the current head seen so far
    _head_tail = b""  # the last bytes seen, so an end of head split across reads is still found
    _chunk_awaits_data = False  # a chunk's size line was parsed, none of its data yet (the last chunk: none comes)
    _trailer_bytes = 0  # the trailer section in whole slices since: under-counted by at most a slice

    @classmethod
    def with_limits(cls, settings: Settings) -> type[BoundedHeadProtocol]:
        limits = {
            "header_timeout_s": settings.http_header_timeout_s,
            "max_head_bytes": settings.max_request_head_bytes,
            # The gateway's own budget for a client that does not read (streamed uploads) acts first.
            "write_stall_s": max(settings.http_write_stall_s, 2 * settings.client_send_timeout_s),
            "linger_s": settings.connection_linger_s,
            "max_pipelined": settings.http_max_pipelined_requests,
            "max_connections": (connections := cap.connection_cap(settings.max_connections, settings.max_sessions)),
            "address_shares": AddressShares.from_settings(settings, connections),
            "bad_requests": bad_request_log(),
        }
        return type(cls.__name__, (cls,), limits)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(LingeringTransport(transport, self.loop, self.linger_s))
        # Counted as it arrives (itself included): connections already open are never the ones refused.
        over = 0 if self.max_connections is None else len(self.connections) - self.max_connections
        past_share = self.address_shares.past(key := self.address_shares.take(transport.get_extra_info("peername")))
        self._share_key, self._past_share, self._over_cap = key, over <= 0 < past_share, max(over, past_share) > 0
        if max(over, past_share) > cap.WAITING_REFUSALS:  # a flood: not a descriptor more held for it
            self._refuse_over_cap()
            return
        self._arm()

    def parse_slice(self, data: bytes) -> None:
        if self._in_head:
            end = (self._head_tail + data).find(_HEAD_END)
            seen = len(data) if end < 0 else end + len(_HEAD_END) - len(self._head_tail)
            if self._head_bytes + seen > self.max_head_bytes:
                self._refuse(b"431 Request Header Fields Too Large", HEAD_TOO_LARGE,
                             told=below_app.head_too_large(self.max_head_bytes))  # fmt: skip
                return
            self._head_bytes += seen
            self._head_tail = (self._head_tail + data)[-3:]
        awaited_before = self._chunk_awaits_data
        self._feed(data)
        if awaited_before and self._chunk_awaits_data and not self._stopped:  # all of it after the last chunk
            self._trailer_bytes += len(data)
            if self._trailer_bytes > self.max_head_bytes:
                self._refuse_trailers()

    def on_chunk_header(self) -> None:
        self._chunk_awaits_data = True

    def on_chunk_complete(self) -> None:
        self._chunk_awaits_data, self._trailer_bytes = False, 0

    def on_body(self, body: bytes) -> None:
        self._chunk_awaits_data, self._trailer_bytes = False, 0
        super().on_body(body)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:
            super().on_header(name, value)
        # Otherwise a trailer field, after a chunked body: dropped (RFC 9110 6.5.1), as ASGI has no place for
        # it; uvicorn added it to the headers of the request under way.

    def _refuse_trailers(self) -> None:
        """A trailer section over ``max_head_bytes`` ends its request as a head that large does. The
        application hears that its client is gone; an answer it has begun cannot take a 431, so then the
        connection just ends."""
        cycle = self.cycle
        began = cycle.response_started
        if not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        if began:
            self.stop_parsing()
            self.transport.close()
        else:
            self._refuse(b"431 Request Header Fields Too Large", TRAILERS_TOO_LARGE,
                         told=below_app.trailers_too_large(self.max_head_bytes))  # fmt: skip

    def _feed(self, data: bytes) -> None:
        """uvicorn's ``data_received``, but a stopped parser (full pipeline, refusal) gets no 400."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self._stopped:
                reason = parser_reason(exc)
                self._refuse(b"400 Bad Request", bad_request_body(reason), told=below_app.bad_request(reason))
        except httptools.HttpParserUpgrade as upgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
                return
            # Another (h2c) and bodyless (a body is refused at the head): plain HTTP; what follows is the next request.
            self.bad_requests.warn("Unsupported upgrade request: served as plain HTTP", reason=UNSUPPORTED_UPGRADE)
            if (rest := data[upgrade.args[0] :] if upgrade.args else b"") and not self._stopped:
                self.parse_slice(rest)  # its head counted against the bound like any other

    def on_message_begin(self) -> None:
        if len(self.pipeline) >= self.max_pipelined:
            self.stop_parsing()
            self.cycle.keep_alive = False  # the last request read is answered, then the connection closes
            raise _Stop
        super().on_message_begin()
        if self._header_timer is None:  # the next request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_head, self._head_bytes, self._head_tail = False, 0, b""
        if self._share_key is not None and proxied(self.headers):  # a proxy not in GATEWAY_TRUSTED_PROXIES:
            self._release_share()  # its connections carry everyone's requests, not one client's
            self._over_cap, self._past_share = self._over_cap and not self._past_share, False
        if self._over_cap and (self.parser.should_upgrade() or self.url.split(b"?", 1)[0] not in _EXEMPT):
            self._refuse_over_cap()
            raise _Stop  # a WebSocket handshake too: the parser would go on to the upgrade
        if self.parser.should_upgrade() and not self._should_upgrade() and declares_body(self.headers):
            self._refuse(b"400 Bad Request", UPGRADE_WITH_BODY, told=below_app.bad_request(UPGRADE_WITH_A_BODY))
            raise _Stop  # httptools would skip the body of a request asking to upgrade: parsed as requests
        if unknown_transfer_coding(self.headers):
            self._refuse(b"501 Not Implemented", UNKNOWN_TRANSFER_CODING, told=below_app.unknown_transfer_coding())
            raise _Stop
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is before:  # a WebSocket upgrade: no HTTP answer to make
            return
        if self._over_cap:  # the liveness probe: answered, then the connection closes
            self.cycle.keep_alive = False
        say_close_on_early_answers(self.cycle)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # a kept-alive connection's next request starts with its head

    def on_response_complete(self) -> None:
        early = self.cycle.response_complete and self.cycle.more_body  # answered before its body was all in
        super().on_response_complete()
        if self.pipeline:  # requests already read wait their turn: read no more before they are answered
            self.flow.pause_reading()
        elif early and not self.transport.is_closing():  # nothing more is read; the answer is followed by the
            self.stop_parsing()  # end of the stream (gateway.connections.early_answer)
            if self.transport.can_write_eof():
                self.transport.write_eof()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self.write_stall_s, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._unstall()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._unstall()
        self._release_share()
        super().connection_lost(exc)

    def _unstall(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _release_share(self) -> None:
        self.address_shares.release(self._share_key)
        self._share_key = None

    def handle_websocket_upgrade(self) -> None:
        self._unstall()  # the WebSocket protocol bounds its own writes from here on
        self._release_share()  # a session is bounded by its key's and the waiting places' limits
        super().handle_websocket_upgrade()
        # The WebSocket protocol has the transport now. The parser's callbacks point back at this
        # object: a cycle that only a full collection would free, long after the socket is gone.
        del self.parser

    def _arm(self) -> None:
        timeout_s = min(self.header_timeout_s, cap.REFUSAL_HEAD_S) if self._over_cap else self.header_timeout_s
        self._header_timer = self.loop.call_later(timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._over_cap:
            self._refuse_over_cap()
        else:
            timeout_s = self.header_timeout_s
            self._refuse(b"408 Request Timeout", late_head_body(timeout_s), told=below_app.head_too_late(timeout_s))

    def _refuse_over_cap(self) -> None:
        limit = (self.address_shares.share if self._past_share else self.max_connections) or 0  # one is set
        self.stop_parsing()
        if not self.transport.is_closing():
            cap.count_refusal(self.app, limit, share=self._past_share, who=self._share_key or "")
        retry = b"retry-after: %d\r\n" % cap.retry_after_s()
        self._refuse(b"503 Service Unavailable", cap.refusal_body(limit, share=self._past_share), retry, at_once=True)

    def _refuse(
        self, status: bytes, body: bytes, extra: bytes = b"", *, at_once: bool = False,
        told: below_app.Refusal | None = None,
    ) -> None:  # fmt: skip
        """Answer ``status`` and close; ``told``: counted and logged (the cap's 503 is, in cap.count_refusal)."""
        self._disarm()
        self.stop_parsing()
        if not self.transport.is_closing():
            if told is not None:
                told.tell(self.app, self.bad_requests)
            kind = b"content-type: application/json\r\n" if body else b""
            head = b"HTTP/1.1 %s\r\n%s%s%scontent-length: %d\r\nconnection: close\r\n\r\n" % (
                status, kind, extra, _CONVENTIONAL, len(body))  # fmt: skip
            self.transport.write(head + body)
            if at_once and isinstance(self.transport, LingeringTransport):
                self.transport.close_at_once()
            else:
                self.transport.close()


_EXEMPT = frozenset(path.encode() for path in cap.EXEMPT_PATHS)
