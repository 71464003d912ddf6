"""Compressed uploads (FLAC, Ogg Opus/Vorbis, MP3, AAC, WebM, AIFF, ADPCM WAV ...) decoded with PyAV.

FFmpeg's demuxers pull their input, so the decoder runs in its own thread and reads from a bounded
byte queue that the event loop fills from the request body; decoded PCM comes back through a second
bounded queue. Both bounds are small, so memory stays flat whatever the file size, and a slow Data
Flow slows the decoder, which slows the body reader, which slows the client (TCP).

Formats whose index sits at the end of the file (MP4/M4A with ``moov`` last) cannot be decoded
from a stream: FFmpeg would have to seek back, and the upload fails with 415. What the file may make
FFmpeg do (one demuxer, audio decoders only, no path or URL, bounded rates, channels and packets) is
:mod:`gateway.audio.ffmpeg_policy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator

import av

from gateway.audio import ffmpeg_policy
from gateway.audio.format import AudioFormat
from gateway.audio.to_pcm16 import Pcm16Output
from gateway.audio.warnings import AudioWarning
from gateway.errors import AudioFormatError, AudioTooCostly, ErrorCode, GatewayError

log = logging.getLogger(__name__)

INPUT_LIMIT = 256 * 1024  # compressed bytes waiting for the decoder
OUTPUT_LIMIT = 256 * 1024  # decoded PCM waiting for the session
OUTPUT_CHUNK = 32 * 1024  # decoded PCM is handed over in pieces this big (fewer wake-ups)
THREAD_PREFIX = "upload-decoder"
#: The decoder's CPU allowance counts as if this much audio were decoded already, so opening the file
#: and its first packets are never refused (5 s of CPU at the default share of 0.05).
GRACE_AUDIO_S = 100.0
#: Undecodable packets skipped in a row once audio was decoded; one more and the upload fails (415).
MAX_BAD_PACKETS_IN_A_ROW = 64
_ids = itertools.count(1)


class _Cancelled(Exception):
    """Raised inside the decoder thread to unwind FFmpeg when the upload is abandoned."""


class DecodedSource:
    """PCM16 audio decoded from a compressed stream; ``format`` is known once :meth:`open` returned."""

    def __init__(self, demuxer: str, prefix: bytes, rest: AsyncIterator[bytes], *, cpu_share: float = 0.0) -> None:
        """``cpu_share``: CPU seconds the decoder thread may spend per second of audio (0: no limit)."""
        self.format = AudioFormat("pcm16", 16000, 1)  # replaced by the first decoded frame's format
        self._demuxer = demuxer
        self._prefix = prefix
        self._rest = rest
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Condition()
        self._input: deque[bytes] = deque()
        self._input_bytes = 0
        self._input_done = False
        self._output: deque[bytes] = deque()
        self._output_bytes = 0
        self._decoded_any = False
        self._unpacketed = 0  # bytes FFmpeg read since the stream's last packet (the decoder thread's)
        self._overrun: ffmpeg_policy.Refused | None = None
        self._cpu_share = cpu_share
        self._audio_s = 0.0  # decoded so far, in seconds of the file's own audio (the decoder thread's)
        self._skipped = self._bad_run = 0  # packets the decoder refused after audio: all, and in a row
        self._skip_told = False
        self._too_costly: AudioTooCostly | None = None
        self._finished = False  # the thread is done (decoded everything, failed or cancelled)
        self._cancelled = False
        self._error: Exception | None = None  # decoder failure
        self._body_error: BaseException | None = None  # the body could not be read (too large, client gone)
        self._space = asyncio.Event()
        self._ready = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name=f"{THREAD_PREFIX}-{next(_ids)}", daemon=True)
        self._pump: asyncio.Task[None] | None = None

    def warnings(self) -> list[AudioWarning]:
        """Packets skipped, told once the decoder is done (the count is final then)."""
        if not self._finished or not self._skipped or self._skip_told:
            return []
        self._skip_told = True
        message = (
            f"{self._skipped} packets of the {self._demuxer} audio could not be decoded and were skipped (a tag "
            "or damage inside the file); the audio around them was sent"
        )
        return [AudioWarning(ErrorCode.UNDECODABLE_AUDIO_SKIPPED, message, {"packetsSkipped": self._skipped})]

    async def open(self) -> DecodedSource:
        """Start decoding; returns once the first audio is decoded (the format is then known)."""
        self._thread.start()
        self._pump = asyncio.create_task(self._fill(), name=f"{self._thread.name}-input")
        try:
            while True:
                self._ready.clear()
                with self._lock:
                    if self._output or self._finished:
                        break
                await self._ready.wait()
            if not self._decoded_any:  # a failure after the first audio is reported by chunks(), mid-stream
                self._raise_failure()
                raise AudioFormatError(f"no audio could be decoded from this {self._demuxer} stream")
        except BaseException:
            await self.aclose()
            raise
        return self

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            self._ready.clear()
            with self._lock:
                data = self._output.popleft() if self._output else None
                if data is not None:
                    self._output_bytes -= len(data)
                    self._lock.notify_all()
                finished = self._finished
            if data is not None:
                yield data
            elif finished:
                self._raise_failure()
                if self._pump is not None:
                    await self._pump  # the rest of the body is drained before the upload counts as complete
                self._raise_failure()
                return
            else:
                await self._ready.wait()

    async def aclose(self) -> None:
        with self._lock:
            self._cancelled = True
            self._lock.notify_all()
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        for _ in range(200):  # the thread unwinds at its next read or write; bounded wait, no executor needed
            if not self._thread.is_alive():
                break
            await asyncio.sleep(0.005)

    def _raise_failure(self) -> None:
        if self._body_error is not None:
            raise self._body_error
        if isinstance(self._error, GatewayError):  # a limit: its own code, not a format error
            raise self._error
        if self._error is not None:
            hint = (
                " (MP4/M4A must have its moov index first: ffmpeg -movflags +faststart)"
                if self._demuxer == "mov"
                else ""
            )
            reason = ffmpeg_policy.describe(self._error)
            raise AudioFormatError(f"could not decode the {self._demuxer} audio: {reason}{hint}") from None

    # --- event loop side: body -> input queue -----------------------------------------------------------

    async def _fill(self) -> None:
        try:
            if self._prefix:
                await self._put_input(self._prefix)
            async for chunk in self._rest:
                await self._put_input(chunk)  # once the decoder is done, the rest is read and dropped
        except Exception as exc:  # UploadTooLarge, ClientGone: the consumer re-raises it
            self._body_error = exc
            with self._lock:
                self._cancelled = True
        finally:
            with self._lock:
                self._input_done = True
                self._lock.notify_all()
            self._ready.set()

    async def _put_input(self, chunk: bytes) -> None:
        while True:
            self._space.clear()
            with self._lock:
                if self._finished:
                    return
                if self._input_bytes < INPUT_LIMIT:
                    self._input.append(chunk)
                    self._input_bytes += len(chunk)
                    self._lock.notify_all()
                    return
            await self._space.wait()

    def _wake(self, event: asyncio.Event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(event.set)

    # --- decoder thread ----------------------------------------------------------------------------------

    def read(self, n: int) -> bytes:
        """File-like read for FFmpeg (decoder thread): blocks until input, b"" at the end of the body."""
        with self._lock:
            while not self._input and not self._input_done and not self._cancelled:
                self._lock.wait()
            if self._cancelled:
                raise _Cancelled
            if not self._input:
                return b""
            chunk = self._input.popleft()
            if len(chunk) > n:
                self._input.appendleft(chunk[n:])
                chunk = chunk[:n]
            self._input_bytes -= len(chunk)
        self._wake(self._space)
        self._unpacketed += len(chunk)
        if self._unpacketed > ffmpeg_policy.MAX_HELD_BYTES:  # FFmpeg holds what it reads until a packet is whole
            self._overrun = ffmpeg_policy.Refused(
                f"over {ffmpeg_policy.MAX_HELD_BYTES} bytes of the file hold no audio packet (one huge packet,"
                " picture or other stream)"
            )
            raise self._overrun
        return chunk

    def _put_output(self, data: bytes) -> None:
        with self._lock:
            while self._output_bytes >= OUTPUT_LIMIT and not self._cancelled:
                self._lock.wait()
            if self._cancelled:
                raise _Cancelled
            self._output.append(data)
            self._output_bytes += len(data)
            self._decoded_any = True
        self._wake(self._ready)

    def _run(self) -> None:
        try:
            self._decode()
        except _Cancelled:
            pass
        except Exception as exc:  # FFmpeg errors (InvalidDataError ...), no audio stream, bad parameters
            self._error = exc
            log.debug("decoding a %s upload failed: %s", self._demuxer, exc)
        finally:
            with self._lock:
                self._finished = True
                self._lock.notify_all()
            self._wake(self._ready)
            self._wake(self._space)

    def _decode(self) -> None:
        cpu_start = time.thread_time()
        options = ffmpeg_policy.open_options(self._demuxer)
        with av.open(self, "r", format=self._demuxer, container_options=options) as container:
            stream = ffmpeg_policy.audio_stream(container)
            output = Pcm16Output()
            pending = bytearray()
            for frame in self._frames(container, stream, cpu_start):
                ffmpeg_policy.check_frame(frame.layout.nb_channels, frame.samples)
                pending += output.convert(frame)
                self.format = output.format or self.format
                if len(pending) >= OUTPUT_CHUNK:
                    self._put_output(bytes(pending))
                    pending.clear()
            pending += output.flush()
            if pending:
                self._put_output(bytes(pending))
        if self._overrun is not None:  # a demuxer may take a failed read for the end of the file
            raise self._overrun
        if self._too_costly is not None:  # raised after the audio before it went out
            raise self._too_costly

    def _frames(
        self, container: av.container.InputContainer, stream: av.AudioStream, cpu_start: float
    ) -> Iterator[av.AudioFrame]:
        """``container.decode(stream)``, and a way out between packets once the upload is abandoned (a
        packet that decodes to nothing, or to audio the resampler keeps, neither reads nor writes a queue)
        or has cost more CPU than its audio allows (the mix and resampling of its frames included): then
        the frames end there, as if the file did, and :meth:`_decode` raises once what came before is out."""
        for packet in container.demux(stream):
            if self._cancelled:
                raise _Cancelled
            self._unpacketed = 0
            try:
                frames = packet.decode()
            except av.InvalidDataError:
                # Past audio, a bad packet is skipped as FFmpeg's own tool does: "cat a.mp3 b.mp3" puts an ID3
                # tag mid-stream, which failed the whole upload. A file that is only damage still fails.
                if self._audio_s == 0 or self._bad_run >= MAX_BAD_PACKETS_IN_A_ROW:
                    raise
                self._skipped, self._bad_run = self._skipped + 1, self._bad_run + 1
                continue
            self._bad_run = 0
            for frame in frames:
                self._audio_s += frame.samples / max(frame.sample_rate, 1)
                yield frame
            cpu_s = time.thread_time() - cpu_start
            if self._cpu_share and cpu_s > self._cpu_share * (self._audio_s + GRACE_AUDIO_S):
                self._too_costly = AudioTooCostly(
                    f"decoding took {cpu_s:.1f} s of CPU for {self._audio_s:.1f} s of audio, over the limit of"
                    f" {self._cpu_share:g} s per second of audio; the rest was not decoded"
                )
                return
