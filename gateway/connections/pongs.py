"""uvicorn's sans-I/O WebSocket protocol with its answers to control frames bounded in bytes.

uvicorn writes a pong for every ping as it arrives, whether or not the client reads: a client that
sends pings and reads nothing has the gateway buffer its pongs without limit (tens of MiB a second
on a fast link, kept until the connection ends). Here, while the transport's buffer is over its
high-water mark, a pong is held rather than written, and only the latest held one goes out once the
client reads again: RFC 6455 (5.5.3) allows answering only the most recent of several pings. Both
WebSocket modes use this protocol (the fast path is built on it, gateway.ws_protocol). It also lets the
application drop the connection (:data:`ABORT`) when a client takes not even the close frame, it
parses a read a slice at a time (:data:`PARSE_SLICE_BYTES`, :data:`MAX_QUEUED`), it paces the frames
no session pays for (:data:`FRAMES_PER_S`: fragments, pings, pongs) and what it reads after its close
(:data:`CLOSING_READ_BYTES_PER_S`), and it assembles a fragmented message in one buffer.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from websockets.frames import Frame

from gateway.connections.pace import Pace
from gateway.connections.ws_refusals import RefusingProtocol

#: The first byte of a server's (unmasked, unfragmented) pong frame.
_PONG = 0x8A
#: The scope extension: ``scope["extensions"][ABORT]()`` drops the connection at once, without a close
#: frame. uvicorn writes a close only once the transport takes writes again: to a client that reads
#: nothing it never goes out, and the connection (and its slot) would wait for the client for ever.
ABORT = "gateway.abort"
#: A read (up to 256 KiB) is parsed this much at a time, and no further while this many messages wait in
#: the ASGI queue. uvicorn parses a whole read at once: 37 000 one-byte frames took 274 ms of the event
#: loop in one callback, all queued ahead of a disconnect. The rest waits, reading paused, until the
#: application has taken the queue; a connection lost meanwhile drops it.
PARSE_SLICE_BYTES = 4 * 1024
MAX_QUEUED = 64
#: After its close frame uvicorn reads and drops what the client sends until the client's close reply or
#: its 10 s close timeout: GBs from a client that sends on at line rate. Reading cannot stop there: a
#: client busy sending reads nothing, the close included, until its sends are taken (its library stops
#: reading once its own queue of unread messages is full), so it would never take the close. Reads after
#: the close are paced to this rate, with a second of it as burst: 704 MiB in the 10 s close timeout at most.
CLOSING_READ_BYTES_PER_S = 64 * 1024 * 1024
#: A session paces the messages its client sends (gateway.relay.intake), but a message may come in any
#: number of frames, and pings and pongs are no messages: 1 MiB sent as one-byte fragments is a million
#: frames to parse (seconds of a core) for one message, and uvicorn kept each fragment as its own bytes
#: object until the last (~40 bytes held per byte sent). So every frame that is not a whole message (a
#: fragment, a ping, a pong) costs 1/FRAMES_PER_S, with a second of them as burst; past that the rest of
#: the read waits. Real clients send whole messages and a ping every few seconds; one that fragments a
#: 1 MiB message into 4 KiB frames uses 256 of them.
#: ``GATEWAY_WS_FRAMES_PER_S`` sets it (:meth:`BoundedControlProtocol.paced`); 0 turns the pace off.
FRAMES_PER_S = 1000
FRAME_BURST_S = 1.0


class BoundedControlProtocol(RefusingProtocol):
    frames_per_s = FRAMES_PER_S
    _pong_due: bytes | None = None
    _unparsed = b""  # what was read and not parsed yet
    _parsed_to = 0
    _parse_due = False
    _closing_reads: Pace | None = None  # what was read after the close
    _closing_hold: asyncio.TimerHandle | None = None  # reading paused for the pace after the close
    _frames: Pace | None = None  # frames that are not whole messages
    _frame_hold: asyncio.TimerHandle | None = None  # parsing paused for the frames' pace
    _assembly: bytearray | None = None  # a fragmented message so far (uvicorn kept a list of its frames)

    @classmethod
    def paced(cls, frames_per_s: int) -> type[BoundedControlProtocol]:
        """This protocol with :data:`FRAMES_PER_S` set to ``frames_per_s`` (0: frames are not paced)."""
        return type(cls.__name__, (cls,), {"frames_per_s": frames_per_s})

    def scope_extensions(self) -> dict[str, Any]:
        """What the protocol offers the application through the scope; taken back once the connection is
        lost (the scope would hold the protocol's methods: cycles that outlive the socket)."""
        return {ABORT: self._abort}

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        if not self.handshake_complete:  # refused at the handshake: no scope, no application
            extensions = cast(dict[str, Any] | None, self.scope.get("extensions"))
            if extensions is not None:
                extensions.update(self.scope_extensions())

    def _abort(self) -> None:
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.close_sent:
            self._pace_after_close(len(data))
        rest = self._unparsed[self._parsed_to :]
        self._unparsed, self._parsed_to = rest + data if rest else data, 0
        self._parse()

    def _parse(self) -> None:
        self._parse_due = False
        if self.close_sent and self.transport.is_closing():  # the rest of a read behind a failure: dropped
            self._unparsed, self._parsed_to = b"", 0
            return
        # After the close, messages are dropped, not queued: the client's close reply must be read.
        while (
            self._parsed_to < len(self._unparsed)
            and (self.queue.qsize() < MAX_QUEUED or self.close_sent)
            and self._frame_hold is None
        ):
            start, self._parsed_to = self._parsed_to, self._parsed_to + PARSE_SLICE_BYTES
            super().data_received(self._unparsed[start : self._parsed_to])
            if self.close_sent and self.transport.is_closing():  # (close_sent first: no call per slice)
                self._unparsed, self._parsed_to = b"", 0
                return
            if self._frames is not None and (ahead := self._frames.ahead_s(self.loop.time())) > 0:
                self._frame_hold = self.loop.call_later(ahead, self._frames_paid)
        if self._parsed_to < len(self._unparsed):
            if not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()
            return
        self._unparsed, self._parsed_to = b"", 0
        self._resume()

    def _resume(self) -> None:  # what uvicorn's receive() does, unless a pace holds
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            self._read_on()

    def _read_on(self) -> None:
        if not self.read_paused and self._closing_hold is None and self._frame_hold is None:
            self.transport.resume_reading()

    def _frames_paid(self) -> None:
        self._frame_hold = None
        self._parse()
        self._read_on()  # the queue may have been taken while the pace held

    def _count_frame(self) -> None:
        """A frame no session pays for (see :data:`FRAMES_PER_S`); what is left of the read waits past it."""
        if not self.frames_per_s:
            return
        if self._frames is None:
            self._frames = Pace(FRAME_BURST_S)
        self._frames.charge(1 / self.frames_per_s, self.loop.time())

    def _pace_after_close(self, size: int) -> None:
        if self._closing_reads is None:
            self._closing_reads = Pace(1.0)
        ahead = self._closing_reads.charge(size / CLOSING_READ_BYTES_PER_S, self.loop.time())
        if ahead > 0 and self._closing_hold is None:
            self.transport.pause_reading()
            self._closing_hold = self.loop.call_later(ahead, self._end_closing_hold)

    def _end_closing_hold(self) -> None:
        self._closing_hold = None
        self._read_on()

    def handle_text(self, event: Frame) -> None:
        self._started(event)
        super().handle_text(event)

    def handle_bytes(self, event: Frame) -> None:
        self._started(event)
        super().handle_bytes(event)

    def _started(self, event: Frame) -> None:
        self._assembly = None
        # Not whole messages, even after the close where no session paces them: a client busy sending
        # takes the close only once its sends are through (CLOSING_READ_BYTES_PER_S bounds those).
        if not event.fin:
            self._count_frame()

    def handle_cont(self, event: Frame) -> None:
        self._count_frame()
        if self._assembly is None:
            self._assembly = bytearray().join(self.frames)
        self._assembly += event.data
        if event.fin:
            self.frames, self._assembly = [bytes(self._assembly)], None
            self.send_receive_event_to_app()

    async def receive(self) -> Any:
        message = await self.queue.get()
        if not self._unparsed:
            self._resume()
        elif self.queue.empty() and not self._parse_due:
            # Parsed once this message is handled: a fast-path sink must not get the ones behind it first.
            self._parse_due = True
            self.loop.call_soon(self._parse)
        return message

    def connection_lost(self, exc: Exception | None) -> None:
        for hold in (self._closing_hold, self._frame_hold):
            if hold is not None:
                hold.cancel()
        self._closing_hold = self._frame_hold = None
        # Never to be handed over: the disconnect is queued next.
        self._unparsed, self._parsed_to, self._assembly = b"", 0, None
        scope = getattr(self, "scope", None)
        if scope is not None:
            extensions = scope.get("extensions", {})
            for name in self.scope_extensions():
                extensions.pop(name, None)
        super().connection_lost(exc)

    def shutdown(self) -> None:
        # Closed already and lingering (gateway.connections.linger): uvicorn would send a close frame on a
        # connection whose closing handshake is under way, which the WebSocket library refuses by raising.
        if self.transport.is_closing():
            self.stop_keepalive()
            return
        super().shutdown()

    def handle_ping(self) -> None:
        self._count_frame()
        output = self.conn.data_to_send()
        if self.writable.is_set() or not all(data[:1] == bytes([_PONG]) for data in output):
            self.transport.write(b"".join(output))
        elif output:
            self._pong_due = output[-1]  # the client reads nothing: only the latest pong is kept

    def handle_pong(self, event: Frame) -> None:
        self._count_frame()
        super().handle_pong(event)

    def resume_writing(self) -> None:
        super().resume_writing()
        pong, self._pong_due = self._pong_due, None
        if pong is not None and not self.transport.is_closing():
            self.transport.write(pong)
