"""A Data Flow simulator: a real grpc.aio server speaking the contract in ``dataflow.md``.

It serves the Stream RPC through a generic handler at a configurable method path, validates Start
(token, tenant, project, audio), runs the deterministic recogniser on the audio, answers
Update/Finalize/Stop, echoes custom events, and can misbehave on purpose (fault modes) so the
gateway's error paths are tested against a real peer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from typing import Any

import grpc

from gateway.simulator.faults import Fault, fault_from_settings
from gateway.simulator.records import SessionRecord, SimulatorConfig
from gateway.simulator.session import SimulatedSession
from gateway.upstream.contract import WireContract

# The records are re-exported: tests and tools name everything simulator-related from here.
__all__ = ["DataflowSimulator", "SessionRecord", "SimulatorConfig"]

log = logging.getLogger(__name__)


_SERVER_OPTIONS = [
    # Let clients keep the connection alive with pings (the gateway's keepalive), and keep the
    # receive window small so a stalled session pushes back on the gateway quickly.
    ("grpc.http2.min_ping_interval_without_data_ms", 1000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 65536),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


class DataflowSimulator:
    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.contract = WireContract(self.config.proto_module, self.config.method_path)
        self.records: deque[SessionRecord] = deque(maxlen=10000)
        self.faults_fired: set[str] = set()  # Settings whose ``once`` fault has struck
        self.active = 0
        self._server: grpc.aio.Server | None = None
        self._host = "127.0.0.1"
        self.port = 0
        self._restarting: asyncio.Task[None] | None = None

    @property
    def target(self) -> str:
        return f"{self._host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._host = host
        options = dict(_SERVER_OPTIONS) | dict(self.config.server_options())  # the config's win
        server = grpc.aio.server(options=list(options.items()))
        handler = grpc.stream_stream_rpc_method_handler(self._handle)
        path = self.config.method_path

        class _Generic(grpc.GenericRpcHandler):  # type: ignore[type-arg]
            def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:  # type: ignore[type-arg]
                return handler if details.method == path else None

        server.add_generic_rpc_handlers((_Generic(),))
        bound = server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise OSError(f"simulator could not bind {host}:{port}")
        await server.start()
        self._server, self.port = server, bound
        return bound

    async def stop(self, grace: float | None = None) -> None:
        if self._restarting is not None and self._restarting is not asyncio.current_task():
            await asyncio.gather(self._restarting, return_exceptions=True)
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def restart(self, down_s: float = 0.0) -> None:
        """Drop every connection (as a crash would) and come back on the same port."""
        port = self.port
        await self.stop(None)
        await asyncio.sleep(down_s)
        await self.start(self._host, port)

    def crash_and_restart(self, down_s: float = 0.0) -> None:
        """Drop every connection from inside a handler (the restart runs as its own task)."""
        if self._restarting is None or self._restarting.done():
            self._restarting = asyncio.get_running_loop().create_task(self.restart(down_s))

    async def _handle(self, requests: Any, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        record = SessionRecord(peer=context.peer())
        self.records.append(record)
        self.active += 1
        session = SimulatedSession(self, record, context)
        try:
            await session.run(requests)
        except asyncio.CancelledError:
            record.end("cancelled")
            raise
        except grpc.aio.AbortError:
            raise  # a status it chose to end with (an abort fault, a refusal): no failure of its own
        except Exception:
            log.exception("simulator session failed")
            record.end("error")
            raise
        finally:
            self.active -= 1
            if context.cancelled():
                record.end("cancelled")
            record.end("ended")

    def session_fault(self, settings: dict[str, Any]) -> Fault | None:
        fault = fault_from_settings(settings) or self.config.fault
        if fault is not None and fault.once:
            key = json.dumps(settings, sort_keys=True, default=str)
            if key in self.faults_fired:
                return None
            self.faults_fired.add(key)
        return fault
