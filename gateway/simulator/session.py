"""One simulated Data Flow session: Start validation, recognition, control messages, faults."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Protocol

import grpc
import numpy as np

from gateway.audio.convert import decode
from gateway.audio.format import AudioFormat
from gateway.dataflow.lenient import as_dict, get, loads_object
from gateway.dataflow.messages import FINAL_RESULT, MILESTONE, StartRequest, message_name, parse_start
from gateway.errors import GatewayError
from gateway.simulator.bench import ArrivalLatency
from gateway.simulator.faults import Fault
from gateway.simulator.recognizer import Recognizer, RecognizerEvent
from gateway.simulator.records import SessionRecord, SimulatorConfig
from gateway.upstream.contract import ContentType, WireContract

_DEFAULT_AUDIO = AudioFormat("pcm16", 16000, 1)
_TTS_TONE_HZ = 440.0


class SimulatorHost(Protocol):
    """What a simulated session needs from its server (:class:`gateway.simulator.server.DataflowSimulator`)."""

    config: SimulatorConfig
    contract: WireContract

    def session_fault(self, settings: dict[str, Any]) -> Fault | None: ...

    def crash_and_restart(self, down_s: float = 0.0) -> None: ...


class _Finished(Exception):
    """The session reached its end (FinalResult sent, or start rejected)."""


class SimulatedSession:
    def __init__(
        self, sim: SimulatorHost, record: SessionRecord, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> None:
        self.sim = sim
        self.record = record
        self.context = context
        self.legacy = sim.config.dialect == "legacy"
        self.audio = _DEFAULT_AUDIO
        self.settings: dict[str, Any] = {}
        self.recognizer: Recognizer | None = None
        self.transcripts: dict[int, list[str]] = {}
        self.input_closed = False
        self.arrivals: ArrivalLatency | None = None

    async def run(self, requests: AsyncIterator[bytes]) -> None:
        stream = requests.__aiter__()
        first = await anext(stream, None)
        if first is None:
            return
        fault = await self._start(first)
        if fault is None:
            return
        try:
            if fault.kind in ("abort", "stall", "drop"):
                try:
                    async with asyncio.timeout(fault.after_ms / 1000):
                        await self._serve(stream)
                except TimeoutError:
                    await self._misbehave(fault)
            else:
                await self._serve(stream)
        except _Finished:
            if self.sim.config.ends_on_half_close:
                async for _ in stream:  # what else comes is not read: the RPC ends with the requests
                    pass
                self.record.half_closed = True

    async def _start(self, data: bytes) -> Fault | None:
        """Validate Start and answer it; returns the session's fault (or a no-op), None if rejected."""
        frame = self.sim.contract.decode_request(data)
        try:
            obj = loads_object(frame.text)
            if frame.content_type is not ContentType.REQUEST or message_name(obj) != "start":
                await self._reject("the first message must be a Start request")
                return None
            request, token, tenant = parse_start(obj, default_audio=_DEFAULT_AUDIO)
        except GatewayError as exc:
            await self._reject(exc.message)
            return None
        self.record.tokens_seen.append(token)
        self.record.project = request.project
        problem = self._validate(request, token, tenant)
        if problem:
            await self._reject(problem)
            return None
        self.record.token_ok = True
        fault = self.sim.session_fault(request.settings) or Fault("slow_start", 0)
        if fault.kind == "reject_start":
            echo = f" (token {token})" if self.sim.config.echo_token else ""
            await self._reject(f"simulated start failure{echo}")
            return None
        if fault.kind == "slow_start":
            await asyncio.sleep(fault.after_ms / 1000)
        self.audio = request.audio
        self.settings = dict(request.settings)
        self.recognizer = Recognizer(request.audio.sample_rate, request.audio.channels)
        if self.sim.config.bench_stamps:
            self.arrivals = ArrivalLatency(self.sim.config.bench_frame_bytes)
        self.record.session_id = str(uuid.uuid4())
        await self._respond("StartResponse", session_id=self.record.session_id)
        return fault

    def _validate(self, request: StartRequest, token: str, tenant: str) -> str | None:
        config = self.sim.config
        if token != config.token:
            return "invalid token" if token else "missing token"
        if config.tenant and tenant != config.tenant:
            return "unknown tenant"
        if not request.project:
            return "ProjectName is required"
        if config.projects and request.project not in config.projects:
            return f"project {request.project!r} not found"
        if request.audio.sample_rate not in (8000, 16000):
            return f"unsupported sample rate {request.audio.sample_rate}"
        if request.audio.encoding == "f32":
            return "unsupported encoding"
        return None

    async def _reject(self, text: str) -> None:
        self.record.end("rejected")
        await self._respond("StartResponse", error=text)
        return None

    async def _serve(self, stream: AsyncIterator[bytes]) -> None:
        async for data in stream:
            await self._on_message(data)
        # The request stream ended before Finalize/Stop: the client half-closed it without ending the session.
        self.record.half_closed = True
        self.record.end("cancelled")

    async def _misbehave(self, fault: Fault) -> None:
        if fault.kind == "abort":
            self.record.end("aborted")
            await self.context.abort(fault.status_code, "simulated failure")
        elif fault.kind == "stall":
            self.record.end("stalled")
            await asyncio.Event().wait()  # until the client gives up (cancel) or the deadline passes
        else:
            self.record.end("dropped")
            # A crash: every connection of the process goes away, then the server comes back.
            self.sim.crash_and_restart()
            await asyncio.Event().wait()

    # --- incoming messages -----------------------------------------------------------------------

    async def _on_message(self, data: bytes) -> None:
        frame = self.sim.contract.decode_request(data)
        if frame.content_type is ContentType.AUDIO:
            await self._on_audio(frame.binary)
            return
        try:
            obj = loads_object(frame.text)
        except GatewayError:
            await self._respond("ErrorResponse", error="message is not a JSON object")
            return
        if frame.content_type is ContentType.EVENT:
            await self._on_client_event(obj)
        elif frame.content_type is ContentType.REQUEST:
            await self._on_request(obj)

    async def _on_audio(self, chunk: bytes) -> None:
        record = self.record
        record.audio_messages += 1
        record.audio_bytes += len(chunk)
        record.largest_audio_message = max(record.largest_audio_message, len(chunk))
        if len(chunk) % self.audio.frame_bytes:
            record.end("error")
            await self.context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"audio chunk of {len(chunk)} bytes splits a sample (frame is {self.audio.frame_bytes} bytes)",
            )
        if self.input_closed or self.recognizer is None or not chunk:
            return
        if self.arrivals is not None:
            self.arrivals.observe(chunk)
        if self.audio.encoding == "pcm16":
            pcm = np.frombuffer(chunk, dtype="<i2").reshape(-1, self.audio.channels)  # as is: no float round trip
        else:
            samples = decode(chunk, self.audio)
            pcm = np.clip(np.rint(samples * 32768.0), -32768, 32767).astype(np.int16)
        await self._emit_all(self.recognizer.feed(pcm))

    async def _on_request(self, obj: dict[str, Any]) -> None:
        name = message_name(obj)
        self.record.requests.append(name)
        self.record.request_offsets.append(self.record.audio_bytes)
        if name == "update":
            self.settings.update(as_dict(get(obj, "Settings")))
            await self._respond("UpdateResponse")
        elif name in ("finalize", "stop"):
            self.input_closed = True
            if name == "finalize" and self.recognizer is not None:
                await self._emit_all(self.recognizer.flush())
            await self._respond("FinalizeResponse" if name == "finalize" else "StopResponse")
            await self._emit(self._final_result())
            self.record.end("finalized" if name == "finalize" else "stopped")
            raise _Finished
        elif name == "start":
            await self._respond("StartResponse", error="session already started")
        else:
            await self._respond(f"{name or 'Unknown'}Response", error="unknown message")

    async def _on_client_event(self, obj: dict[str, Any]) -> None:
        inner = as_dict(get(obj, "Event")) or obj
        if len(self.record.client_events) < 100:  # a record for tests, bounded (floods are tested too)
            self.record.client_events.append(inner)
        name = get(inner, "Name")
        name = name if isinstance(name, str) else "Custom"
        await self._emit(self._event(name, -2, -1, -1, None, as_dict(get(inner, "Data")), tags=["echo"]))
        if "tts" in name.lower():
            await self._speak()

    async def _speak(self) -> None:
        """Answer a TTS request with a short tone bracketed by TTS fragment events (16-bit PCM)."""
        rate = self.audio.sample_rate
        t = np.arange(rate // 5) / rate
        tone = (0.3 * 32767 * np.sin(2 * np.pi * _TTS_TONE_HZ * t)).astype("<i2").tobytes()
        await self._emit(self._event("Start of TTS Fragment", -2, -1, -1, None, {}))
        await self.context.write(self.sim.contract.encode_response(ContentType.AUDIO, binary=tone))
        await self._emit(self._event("End of TTS Fragment", -2, -1, -1, None, {}))

    # --- outgoing messages -------------------------------------------------------------------------

    async def _emit_all(self, events: list[RecognizerEvent]) -> None:
        for event in events:
            if event.name == MILESTONE and event.text:
                self.transcripts.setdefault(event.channel, []).append(event.text)
            data: dict[str, Any] = {"Text": event.text} if event.name in (MILESTONE, "SR Partial") else {}
            await self._emit(self._event(event.name, event.channel, event.start_ms, event.end_ms, event.group_id, data))

    def _final_result(self) -> dict[str, Any]:
        transcript = {str(ch): " ".join(words) for ch, words in sorted(self.transcripts.items())}
        position = self.recognizer.position_ms if self.recognizer is not None else 0
        data: dict[str, Any] = {"Node": "SR", "Transcript": transcript}
        if self.arrivals is not None:
            data["BenchArrivalUs"] = self.arrivals.latencies_us
        return self._event(FINAL_RESULT, -2, 0, position, None, data)

    def _event(
        self, name: str, channel: int, start: int, end: int, group: str | None, data: dict[str, Any],
        tags: list[str] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        if self.sim.config.bench_stamps:
            data = {**data, "SimEmitNs": time.monotonic_ns()}
        if self.sim.config.echo_token and self.record.tokens_seen:
            data = {**data, "Echo": f"seen token {self.record.tokens_seen[-1]}"}
        if not self.legacy:
            return {"Name": name, "Channel": channel, "StartMsec": start, "EndMsec": end,
                    "GroupId": group, "Tags": tags or [], "Data": data}  # fmt: skip
        legacy_data = {k.lower(): v for k, v in data.items()}
        if name == MILESTONE:
            legacy_data["text_attributes"] = "recognized, punctuated"
        # The legacy dialect: wrapped, lower-case/kebab keys, numbers as strings.
        return {"event": {"name": name, "channel": str(channel), "start-msec": str(start), "end-msec": str(end),
                          "group-id": group, "tags": tags or [], "data": legacy_data}}  # fmt: skip

    async def _emit(self, event: dict[str, Any]) -> None:
        text = json.dumps(event)
        await self.context.write(self.sim.contract.encode_response(ContentType.EVENT, text=text))

    async def _respond(self, name: str, *, error: str | None = None, session_id: str | None = None) -> None:
        if self.legacy:
            body: dict[str, Any] = {"message-name": _kebab(name), "operation-result": error or "success"}
            if session_id:
                body["session-id"] = session_id
        else:
            body = {"MessageName": name, "OperationResult": error or "Success"}
            if session_id:
                body["SessionId"] = session_id
        await self.context.write(self.sim.contract.encode_response(ContentType.RESPONSE, text=json.dumps(body)))


def _kebab(name: str) -> str:
    return "".join(f"-{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))
