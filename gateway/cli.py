"""The ``dataflow-gateway`` command: ``serve`` (default), ``settings``, ``simulator``, ``drain`` and ``keygen``.

``drain`` is the Kubernetes preStop hook: it asks the gateway in the same container to drain
(``POST /internal/drain`` on loopback) and waits until its sessions are gone, so that the SIGTERM
that follows finds nothing left to close. It needs nothing but the Python stdlib and httpx.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from importlib import metadata
from typing import Any

import httpx

import gateway.upstream  # noqa: F401  (first: sets gRPC's log defaults before anything imports grpc)
from gateway import __version__
from gateway.auth import ApiKeySpec, key_digest, new_api_key
from gateway.config.libraries import library_problems
from gateway.logs.config import configure_logging
from gateway.runtime import run_fast, tune_gc
from gateway.settings import SettingsError, load_settings


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
    from gateway.simulator.faults import parse_fault
    from gateway.simulator.records import SimulatorConfig
    from gateway.simulator.server import DataflowSimulator

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


DRAIN_POLL_S = 0.25
DRAIN_EXIT_CODES = "exit status: 0 drained, 1 sessions were still open when the wait ended, 2 the drain was not started"


def _drain_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "drain",
        help="drain the gateway on this host and wait for its sessions to end (Kubernetes preStop hook)",
        description="POST /internal/drain to the local gateway (with GATEWAY_ADMIN_TOKEN as a bearer token if "
        "set), then poll /readyz until no session is left or the budget plus the margin has passed.",
        epilog=DRAIN_EXIT_CODES,
    )
    p.add_argument("--url", default=None, help="gateway base URL (default: http://127.0.0.1:$GATEWAY_PORT)")
    p.add_argument("--budget-s", type=float, default=None, help="drain budget (default: GATEWAY_DRAIN_BUDGET_S)")
    p.add_argument(
        "--margin-s", type=float, default=None,
        help="extra wait after the budget for goodbyes to be delivered (default: GATEWAY_CLIENT_SEND_TIMEOUT_S + 2)",
    )  # fmt: skip
    p.add_argument("--no-wait", action="store_true", help="start the drain and return at once")


def _sessions(body: Any) -> int:
    """What the drain still waits for: live sessions and connections accepted that have no slot yet."""
    counts = [body.get(name, 0) for name in ("sessions", "waiting")] if isinstance(body, dict) else []
    return sum(count for count in counts if isinstance(count, int))


def _drain(ns: argparse.Namespace) -> int:
    log = logging.getLogger("gateway.drain")
    try:
        settings = load_settings()
    except SettingsError as exc:
        log.error("drain: %s", exc)
        return 2
    base = ns.url or f"http://127.0.0.1:{settings.port}"
    budget = settings.drain_budget_s if ns.budget_s is None else ns.budget_s
    margin = settings.client_send_timeout_s + 2.0 if ns.margin_s is None else ns.margin_s
    deadline = time.monotonic() + budget + margin
    headers = {}
    if settings.admin_token is not None:
        headers["Authorization"] = f"Bearer {settings.admin_token.get_secret_value()}"
    params = {} if ns.budget_s is None else {"budget_s": budget}
    # A replica is asked directly: an egress proxy set for Data Flow or webhooks (http_proxy) must not carry it.
    with httpx.Client(base_url=base, timeout=5.0, trust_env=False) as http:
        try:
            response = http.post("/internal/drain", headers=headers, params=params)
            sessions = _sessions(response.json()) if response.status_code == 202 else -1
        except (httpx.HTTPError, ValueError) as exc:
            log.error("drain: no answer from the gateway at %s (%s)", base, type(exc).__name__)
            return 2
        if sessions < 0:
            log.error("drain: the gateway at %s refused to drain (HTTP %d)", base, response.status_code)
            return 2
        log.info("drain: started; %d live sessions get %g s", sessions, budget)
        if ns.no_wait:
            return 0
        while sessions > 0:
            if time.monotonic() >= deadline:
                log.warning("drain: %d sessions still open after %g s", sessions, budget + margin)
                return 1
            time.sleep(DRAIN_POLL_S)
            try:
                sessions = _sessions(http.get("/readyz").json())
            except httpx.TransportError:
                break  # the process has exited: nothing is left to wait for
            except (httpx.HTTPError, ValueError):
                continue
    log.info("drain: no live session left")
    return 0


def _positive(text: str) -> float:
    # ApiKeySpec refuses inf, nan and 0 with a traceback; argparse says it in one line (exit 2).
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError("not a finite number above 0")
    return value


def _count(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("not a whole number above 0")
    return int(text)


def _keygen_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keygen", help="create an API key and its GATEWAY_API_KEYS entry (only the hash is stored)")
    p.add_argument("--name", required=True, help="the key's name (logs, metrics, token subject)")
    p.add_argument("--project", action="append", default=None, help="allowed project (repeatable; default any)")
    p.add_argument("--max-sessions", type=_count, default=None, help="concurrent sessions per replica")
    p.add_argument("--audio-seconds-per-minute", type=_positive, default=None, help="audio budget per replica")
    p.add_argument("--session-start-rate", type=_positive, default=None, help="session starts a second per replica")


def _keygen(ns: argparse.Namespace) -> int:
    key = new_api_key()
    spec = ApiKeySpec(
        name=ns.name, sha256=key_digest(key), projects=ns.project, max_sessions=ns.max_sessions,
        audio_seconds_per_minute=ns.audio_seconds_per_minute, session_start_rate=ns.session_start_rate,
    )  # fmt: skip
    print(f"API key for {ns.name} (give it to the client; it is not stored anywhere): {key}")
    print("GATEWAY_API_KEYS entry:", json.dumps(spec.model_dump(exclude_none=True)))
    return 0


SERVE_EPILOG = (
    "Configuration comes from GATEWAY_* environment variables (and a .env file); an unknown GATEWAY_* "
    "variable or an invalid value stops startup with one line per variable. 'dataflow-gateway settings' "
    "prints the effective configuration (secrets masked); README's settings table describes each one."
)


def _settings_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "settings",
        help="print the effective configuration (secrets masked) and exit",
        description="Validate the GATEWAY_* environment and print every setting as GATEWAY_NAME=value "
        "('# default' marks values not set). Secrets, API key hashes and credentials in URLs are masked.",
    )
    p.add_argument("--json", action="store_true", help="one JSON object instead of NAME=value lines")


def _print_settings(ns: argparse.Namespace) -> int:
    from gateway.config.report import effective_settings, settings_lines
    from gateway.connections.address_share import share_in_force
    from gateway.connections.cap import cap_in_force
    from gateway.server import preflight  # imported late: the other commands need no web stack

    settings = load_settings()
    preflight(settings, serving=False)  # what serve would refuse, refused here too (exit 2, the same line)
    # What a setting amounts to in this process, computed as the server does (its open-file limit too).
    cap = cap_in_force(settings.max_connections, settings.max_sessions)
    share = share_in_force(settings.max_connections_per_address, cap.value)
    in_force: dict[str, dict[str, object]] = {
        "GATEWAY_MAX_CONNECTIONS": {"value": cap.value, "reason": cap.reason},
        "GATEWAY_MAX_CONNECTIONS_PER_ADDRESS": {"value": share},
    }
    if ns.json:
        print(json.dumps(effective_settings(settings) | {"in_force": in_force}, indent=2, ensure_ascii=False))
    else:
        shown = {name: "none" if told["value"] is None else str(told["value"]) for name, told in in_force.items()}
        notes = {name: f"in force: {value}" for name, value in shown.items()}
        notes["GATEWAY_MAX_CONNECTIONS"] += f" ({cap.reason})"
        print("\n".join(settings_lines(settings, notes)))
    return 0


def _version() -> str:
    try:
        return metadata.version("dataflow-gateway")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dataflow-gateway", description="REST/WebSocket gateway for Data Flow")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the gateway (default)", description=SERVE_EPILOG)
    _settings_parser(sub)
    _simulator_parser(sub)
    _drain_parser(sub)
    _keygen_parser(sub)
    ns = parser.parse_args(argv)
    # The other commands log like the gateway (serve reconfigures with its settings' level and secrets).
    log_format = os.environ.get("GATEWAY_LOG_FORMAT", "auto").lower()
    configure_logging("info", log_format if log_format in ("json", "text") else "auto")
    try:
        return _run(ns)
    except SettingsError as exc:
        for problem in exc.problems:  # one line per variable, no traceback: the operator fixes the value
            print(problem, file=sys.stderr)
        return 2


def _run(ns: argparse.Namespace) -> int:
    if ns.command == "simulator":
        tune_gc()
        run_fast(_run_simulator(ns))
        return 0
    if ns.command == "drain":
        return _drain(ns)
    if ns.command == "keygen":
        return _keygen(ns)
    if problems := library_problems():  # before the web stack is imported: one line, not a traceback
        raise SettingsError(*problems)
    if ns.command == "settings":
        return _print_settings(ns)
    from gateway.server import serve  # imported late: the simulator needs no web stack

    return serve()


if __name__ == "__main__":
    sys.exit(main())
