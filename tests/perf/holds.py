"""The low-load hold sweep (issue 18 item 2): what merging frames into fewer gRPC messages saves, and
what it costs in latency, at a load where nothing merges by itself.

``python -m tests.perf.holds --sessions 50 --seconds 8 --rounds 2 --holds 0 40 60 80`` runs one
simulator and, per round and per hold, a fresh gateway with ``GATEWAY_UPSTREAM_WRITE_INTERVAL_MS``
set to it (rounds interleave the holds, so drift in the machine hits them all alike). With two or
more cores the gateway is pinned alone on the first core, this process (the load) and the simulator
on the others. Prints one JSON document: per hold and round, gateway CPU ms per session-second,
event relay latency and audio-in latency (the simulator's arrival stamps), and the CPU ratio to hold
0 from the same round.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.runtime import run_fast
from tests.perf.load import paced_audio_s, stream_sessions
from tests.perf.procs import Proc, cpu_seconds, start_gateway, start_simulator
from tests.perf.report import summary_ms


def plan() -> tuple[set[int], set[int]] | None:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    os.sched_setaffinity(0, set(cores[1:]))
    return {cores[0]}, set(cores[1:])


async def measure(
    workdir: Path, simulator: Proc, hold_ms: int, sessions: int, seconds: float, pin: set[int] | None
) -> dict[str, Any]:
    gateway = start_gateway(workdir, simulator, GATEWAY_UPSTREAM_WRITE_INTERVAL_MS=str(hold_ms))
    if pin is not None:
        os.sched_setaffinity(gateway.pid, pin)
    try:
        await stream_sessions(f"ws://127.0.0.1:{gateway.port}/v1/stream", 5, 2.0)  # warm-up, not measured
        marks: dict[bool, float] = {}

        def on_tick(first: bool) -> None:
            marks[first] = cpu_seconds(gateway.pid)

        stats = await stream_sessions(f"ws://127.0.0.1:{gateway.port}/v1/stream", sessions, seconds, on_tick=on_tick)
        cpu_ms = (marks[False] - marks[True]) * 1000 / paced_audio_s(sessions, seconds)
        return {
            "hold_ms": hold_ms,
            "gateway_cpu_ms_per_session_s": round(cpu_ms, 3),
            "event_latency_ms": summary_ms([v for st in stats for v in st.event_latency_us]),
            "audio_in_latency_ms": summary_ms([v for st in stats for v in st.arrival_us]),
            "frames_lost": sum(st.frames_sent - len(st.arrival_us) for st in stats),
            "unclean_closes": sum(st.close_code != 1000 or bool(st.errors) for st in stats),
        }
    finally:
        gateway.stop()


async def sweep(args: argparse.Namespace) -> dict[str, Any]:
    cores = plan()
    rounds: list[list[dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        simulator = start_simulator(Path(tmp))
        try:
            for _ in range(args.rounds):
                runs = [
                    await measure(Path(tmp), simulator, hold, args.sessions, args.seconds, cores and cores[0])
                    for hold in args.holds
                ]
                base = runs[0]["gateway_cpu_ms_per_session_s"]
                for run in runs:
                    run["cpu_vs_first_hold"] = round(run["gateway_cpu_ms_per_session_s"] / base, 3) if base else None
                rounds.append(runs)
        finally:
            simulator.stop()
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sessions": args.sessions,
        "seconds": args.seconds,
        "pinned": cores is not None and {"gateway": sorted(cores[0]), "load_and_simulator": sorted(cores[1])},
        "rounds": rounds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--holds", type=int, nargs="+", default=[0, 40, 60, 80], help="least holds in ms; the first is the baseline"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = run_fast(sweep(args))
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
