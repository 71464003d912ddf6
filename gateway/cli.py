"""The ``dataflow-gateway`` command: ``serve`` (default) and ``simulator``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from gateway.simulator.faults import parse_fault
from gateway.simulator.server import DataflowSimulator, SimulatorConfig


def _simulator_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("simulator", help="run the Data Flow simulator (a real gRPC server)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50051)
    p.add_argument("--token", default="simulator-token", help="the only token Start may carry")
    p.add_argument("--tenant", default="", help="require this tenant in Start")
    p.add_argument("--project", action="append", default=[], help="allowed project (repeatable; default any)")
    p.add_argument("--dialect", choices=["current", "legacy"], default="current")
    p.add_argument("--fault", default=None, help="server-wide fault, e.g. abort:500:INTERNAL, stall:1000")
    p.add_argument("--method-path", default="/dataflow/Stream")
    p.add_argument("--proto-module", default="gateway.upstream._proto.dataflow_pb2")
    p.add_argument("--bench-stamps", action="store_true", help="stamp events with a monotonic emit time")


async def _run_simulator(ns: argparse.Namespace) -> None:
    config = SimulatorConfig(
        token=ns.token,
        tenant=ns.tenant,
        projects=frozenset(ns.project),
        dialect=ns.dialect,
        fault=parse_fault(ns.fault) if ns.fault else None,
        method_path=ns.method_path,
        proto_module=ns.proto_module,
        bench_stamps=ns.bench_stamps,
    )
    simulator = DataflowSimulator(config)
    port = await simulator.start(ns.host, ns.port)
    logging.getLogger("gateway.simulator").info("Data Flow simulator listening on %s:%d", ns.host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await simulator.stop(grace=1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dataflow-gateway", description="REST/WebSocket gateway for Data Flow")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the gateway (default)")
    _simulator_parser(sub)
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if ns.command == "simulator":
        asyncio.run(_run_simulator(ns))
        return 0
    from gateway.server import serve  # imported late: the simulator needs no web stack

    return serve()


if __name__ == "__main__":
    sys.exit(main())
