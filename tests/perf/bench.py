"""Benchmarks: relay cost, latency, capacity, upload throughput and memory.

Run ``python -m tests.perf.bench`` (full sweep, minutes) or ``--smoke`` (seconds, what CI runs).
The simulator and the gateway run as separate processes on loopback; this process is the load.
Writes a JSON result file (``--out``), prints a table, and draws a PNG chart when matplotlib is
installed. CPU figures come from each process's own accounting (/proc/<pid>/stat), and every
cost is also given as a ratio to baselines measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from gateway.runtime import run_fast
from gateway.simulator.recognizer import Recognizer
from tests.perf.audio import frames, pcm_stream, wav_header
from tests.perf.dialects import run_dialect
from tests.perf.load import FRAME_S, SessionStats, idle_sessions, paced_audio_s, stream_sessions
from tests.perf.procs import (
    ROOT,
    Proc,
    cpu_seconds,
    rss_bytes,
    start_bare_ws,
    start_gateway,
    start_simulator,
    thread_cpu_seconds,
    thread_role,
)
from tests.perf.report import TARGETS, capacity, chart, summary_ms, table, targets_met

INTERVAL_GAUGE = "dataflow_gateway_upstream_write_interval_seconds"


def expected_milestones(ticks: int) -> list[str]:
    pattern = frames(16000)
    recognizer = Recognizer(16000, 1)
    texts: list[str] = []
    for tick in range(ticks):
        pcm = np.frombuffer(pattern[tick % len(pattern)], dtype="<i2").reshape(-1, 1)
        texts += [e.text for e in recognizer.feed(pcm) if e.name == "SR Milestone"]
    return texts + [e.text for e in recognizer.flush() if e.name == "SR Milestone"]


class CpuWindow:
    """CPU seconds a process spends from the first paced frame until every session is closed."""

    def __init__(self, pid: int) -> None:
        self.pid, self.start, self.end = pid, 0.0, 0.0
        self.wall = (0.0, 0.0)
        self.threads: tuple[dict[int, tuple[str, float]], dict[int, tuple[str, float]]] = ({}, {})

    def __call__(self, first: bool) -> None:
        if first:
            self.start, self.wall = cpu_seconds(self.pid), (time.monotonic(), 0.0)
            self.threads = (thread_cpu_seconds(self.pid), {})
        else:
            self.end, self.wall = cpu_seconds(self.pid), (self.wall[0], time.monotonic())
            self.threads = (self.threads[0], thread_cpu_seconds(self.pid))

    def thread_shares(self) -> dict[str, float]:
        """Each thread role's share of the CPU its threads spent in the window: is the event loop the cost?"""
        began, ended = self.threads
        spent: dict[str, float] = {}
        for tid, (name, seconds) in ended.items():
            role = thread_role(self.pid, tid, name)
            spent[role] = spent.get(role, 0.0) + seconds - began.get(tid, (name, 0.0))[1]
        total = sum(spent.values())
        return {role: round(s / total, 3) for role, s in sorted(spent.items())} if total > 0 else {}

    def ms_per_session_s(self, audio_s: float) -> float:
        """CPU per second of audio sent in the window (not per wall second: a lagging load sends less)."""
        return round((self.end - self.start) * 1000 / audio_s, 4) if audio_s > 0 else 0.0

    def realtime_factor(self, audio_s: float, sessions: int) -> float:
        """Wall time of the window (first frame to last close) over the audio's duration: about 1 while the
        gateway keeps up; well above 1 when it fell behind and worked off a backlog after the audio ended."""
        return round((self.wall[1] - self.wall[0]) * sessions / audio_s, 3) if audio_s > 0 else 0.0


def direct_grpc(*args: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "tests.perf.direct_grpc", *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


async def write_interval_ms(gateway: Proc, stop: asyncio.Event) -> float:
    """The largest upstream write interval the gateway applied while ``stop`` was unset (its /metrics gauge)."""
    most = 0.0
    async with httpx.AsyncClient(timeout=5) as http:
        while not stop.is_set():
            text = (await http.get(f"http://127.0.0.1:{gateway.port}/metrics")).text
            for line in text.splitlines():
                if line.startswith(INTERVAL_GAUGE + " "):
                    most = max(most, float(line.split()[1]) * 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    return round(most, 3)


def direct_cpu_ms(simulator: Proc, n: int, seconds: float, interval_ms: float = 0.0) -> float:
    result = direct_grpc("stream", f"127.0.0.1:{simulator.port}", str(n), str(seconds), str(round(interval_ms)))
    return round(result["cpu_s"] * 1000 / result["audio_s"], 4)


async def gateway_relay(gateway: Proc, simulator: Proc, n: int, seconds: float, phases: int) -> dict[str, Any]:
    """n native /v1/stream sessions through ``gateway``: its CPU, latencies, and anything lost."""
    window = CpuWindow(gateway.pid)
    sim_window = CpuWindow(simulator.pid)

    def on_tick(first: bool) -> None:
        window(first)
        sim_window(first)

    stop = asyncio.Event()
    watcher = asyncio.create_task(write_interval_ms(gateway, stop))
    stats: list[SessionStats] = await stream_sessions(
        f"ws://127.0.0.1:{gateway.port}/v1/stream", n, seconds, on_tick=on_tick, phases=phases
    )
    stop.set()
    audio_s = paced_audio_s(n, seconds)
    expected = expected_milestones(stats[0].frames_sent) if stats else []
    return {
        "upstream_write_interval_ms": await watcher,
        "gateway_cpu_ms_per_session_s": window.ms_per_session_s(audio_s),
        "simulator_cpu_ms_per_session_s": sim_window.ms_per_session_s(audio_s),
        "gateway_realtime_factor": window.realtime_factor(audio_s, n),
        "gateway_cpu_share_by_thread": window.thread_shares(),
        "event_latency_ms": summary_ms([v for st in stats for v in st.event_latency_us]),
        "client_to_upstream_latency_ms": summary_ms([v for st in stats for v in st.arrival_us]),
        "frames_sent": sum(st.frames_sent for st in stats),
        "frames_lost": sum(st.frames_sent - len(st.arrival_us) for st in stats),
        "sessions_with_lost_events": sum(st.milestones != expected for st in stats),
        "unclean_closes": sum(st.close_code != 1000 or bool(st.errors) for st in stats),
    }


async def relay(gateway: Proc, bare: Proc, simulator: Proc, n: int, seconds: float, phases: int) -> dict[str, Any]:
    """The gateway's relay, then the bare stack it is built on under the same load: a WebSocket receiver
    with no ASGI and no upstream, and a grpc.aio client streaming straight to the simulator (per frame,
    and merged as the gateway merged)."""
    phases = max(1, min(phases, n))
    row = await gateway_relay(gateway, simulator, n, seconds, phases)
    bare_window = CpuWindow(bare.pid)
    await stream_sessions(
        f"ws://127.0.0.1:{bare.port}/", n, seconds, protocol=False, on_tick=bare_window, phases=phases
    )
    per_frame_ms = await asyncio.to_thread(direct_cpu_ms, simulator, n, seconds)
    merged_ms = per_frame_ms  # below one frame's length the interval merges nothing
    if row["upstream_write_interval_ms"] > FRAME_S * 1000:
        merged_ms = await asyncio.to_thread(direct_cpu_ms, simulator, n, seconds, row["upstream_write_interval_ms"])
    gateway_ms = row["gateway_cpu_ms_per_session_s"]
    bare_ms = bare_window.ms_per_session_s(paced_audio_s(n, seconds))
    floor_ms = bare_ms + merged_ms
    return {
        "sessions": n,
        "seconds": seconds,
        "phases": phases,
        **row,
        "bare_ws_cpu_ms_per_session_s": bare_ms,
        "direct_grpc_cpu_ms_per_session_s": per_frame_ms,
        "direct_grpc_merged_cpu_ms_per_session_s": merged_ms,
        "gateway_vs_bare_ws": round(gateway_ms / bare_ms, 2) if bare_ms else None,
        "gateway_vs_bare_plus_direct": round(gateway_ms / floor_ms, 2) if floor_ms else None,
    }


async def telephony(gateway: Proc, n: int, seconds: float) -> dict[str, Any]:
    """AudioCodes (16 kHz LINEAR16 binary frames) and Twilio (8 kHz base64 μ-law JSON) under the same pacing."""
    audiocodes = await run_dialect(gateway, "audiocodes", n, seconds, rate=16000)
    twilio = await run_dialect(gateway, "twilio", n, seconds)
    ac_ms, tw_ms = audiocodes["cpu_ms_per_session_s"], twilio["cpu_ms_per_session_s"]
    return {
        "sessions": n,
        "audiocodes_16k_cpu_ms_per_session_s": ac_ms,
        "twilio_8k_cpu_ms_per_session_s": tw_ms,
        "twilio_vs_audiocodes": round(tw_ms / ac_ms, 2) if ac_ms else None,
        "unclean_closes": audiocodes["unclean_closes"] + twilio["unclean_closes"],
    }


async def before_after(
    gateway: Proc, before: Proc, simulator: Proc, n: int, seconds: float, phases: int
) -> list[dict[str, Any]]:
    """The other checkout's gateway (``--compare-root``) and this one under the same loads, alternating,
    before then after, so a busy moment on the machine hits both. This one's native run is measured again
    here, beside the other's: reusing the size's first run compared a process that had just started
    (the first run of the whole bench, events p99 twice as high) with one warmed up by every run before."""
    then = await gateway_relay(before, simulator, n, seconds, max(1, min(phases, n)))
    after = await gateway_relay(gateway, simulator, n, seconds, max(1, min(phases, n)))
    ac_before = await run_dialect(before, "audiocodes", n, seconds, rate=16000)
    ac_after = await run_dialect(gateway, "audiocodes", n, seconds, rate=16000)

    def compare(scenario: str, was: dict[str, Any], now: dict[str, Any], key: str) -> dict[str, Any]:
        row = {"sessions": n, "scenario": scenario, "before_cpu_ms_per_session_s": was[key],
               "after_cpu_ms_per_session_s": now[key],
               "after_vs_before": round(now[key] / was[key], 2) if was[key] else None}  # fmt: skip
        if "event_latency_ms" in now:
            row["before_event_latency_ms"], row["after_event_latency_ms"] = (
                was["event_latency_ms"],
                now["event_latency_ms"],
            )
            row["before_lost"] = was["frames_lost"] + was["sessions_with_lost_events"] + was["unclean_closes"]
            row["after_lost"] = now["frames_lost"] + now["sessions_with_lost_events"] + now["unclean_closes"]
        else:
            row["before_lost"], row["after_lost"] = was["unclean_closes"], now["unclean_closes"]
        return row

    key = "gateway_cpu_ms_per_session_s"
    return [compare("native", then, after, key), compare("audiocodes", ac_before, ac_after, "cpu_ms_per_session_s")]


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, rss_bytes(pid), True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_bytes(self.pid))
            time.sleep(0.02)


async def upload(gateway: Proc, simulator: Proc, seconds: float) -> dict[str, Any]:
    async def body() -> Any:
        yield wav_header(8000, int(seconds * 8000) * 2)
        for piece in pcm_stream(8000, seconds):
            yield piece

    baseline = rss_bytes(gateway.pid)
    sampler = RssSampler(gateway.pid)
    sampler.start()
    began = time.monotonic()
    # NDJSON, read as it comes: a JSON answer holds every event until the end (memory that grows with
    # the events, by design), which would hide whether the audio path itself stays flat.
    milestones, last = 0, ""
    headers = {"Content-Type": "audio/wav", "Accept": "application/x-ndjson"}
    async with (
        httpx.AsyncClient(timeout=3600) as http,
        http.stream(
            "POST", f"http://127.0.0.1:{gateway.port}/v1/recognize", content=body(), headers=headers
        ) as response,
    ):
        async for line in response.aiter_lines():
            if line.strip():
                message = json.loads(line)
                last = message.get("type", "")
                milestones += message.get("type") == "event" and message.get("name") == "SR Milestone"
    wall = time.monotonic() - began
    sampler.running = False
    sampler.join()
    direct = await asyncio.to_thread(direct_grpc, "upload", f"127.0.0.1:{simulator.port}", str(seconds))
    return {
        "audio_s": seconds,
        "status": response.status_code,
        "last_message": last,
        "milestones": milestones,
        "gateway_wall_s": round(wall, 3),
        "direct_grpc_wall_s": round(direct["wall_s"], 3),
        "ratio": round(wall / direct["wall_s"], 3),
        "peak_rss_growth_mib": round((sampler.peak - baseline) / 2**20, 2),
    }


async def idle_memory(gateway: Proc, n: int) -> dict[str, Any]:
    before = rss_bytes(gateway.pid)
    sockets = await idle_sessions(f"ws://127.0.0.1:{gateway.port}/v1/stream", n)
    await asyncio.sleep(1.0)
    after = rss_bytes(gateway.pid)
    await asyncio.gather(*(ws.close() for ws in sockets))
    return {
        "sessions": n,
        "rss_growth_mib": round((after - before) / 2**20, 2),
        "kib_per_session": round((after - before) / 1024 / n, 1),
    }


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def pinning(pin: bool) -> dict[str, list[int]] | None:
    """With ``pin`` and at least two cores: the process under test (the gateway, and the bare receiver
    it is compared with) gets a core of its own; the load generator and the simulator share the rest.
    The bench pins itself first, so every child starts on the shared cores."""
    cores = sorted(os.sched_getaffinity(0))
    if not pin or len(cores) < 2:
        return None
    plan = {"under_test": cores[:1], "load_and_simulator": cores[1:]}
    os.sched_setaffinity(0, plan["load_and_simulator"])
    return plan


def pinned(proc: Proc, plan: dict[str, list[int]] | None) -> Proc:
    if plan is not None:
        os.sched_setaffinity(proc.pid, plan["under_test"])
    return proc


def launch(args: argparse.Namespace, workdir: Path, simulator: Proc, root: Path | None = None) -> Proc:
    env = dict(item.split("=", 1) for item in args.gateway_env)
    return pinned(start_gateway(workdir, simulator, root or args.gateway_root, **env), args.plan)


def restart(gateway: Proc, args: argparse.Namespace, workdir: Path, simulator: Proc) -> Proc:
    gateway.stop()
    return launch(args, workdir, simulator)


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    simulator = start_simulator(workdir)
    gateway = launch(args, workdir, simulator)
    bare = pinned(start_bare_ws(workdir), args.plan)
    # The gateway to compare with shares the core under test; it idles while the other one is measured.
    before = launch(args, workdir, simulator, args.compare_root) if args.compare_root else None
    affinity = {
        "gateway": sorted(os.sched_getaffinity(gateway.pid)),
        "simulator": sorted(os.sched_getaffinity(simulator.pid)),
    }
    relay_runs: list[dict[str, Any]] = []
    dialects: list[dict[str, Any]] = []
    compared: list[dict[str, Any]] = []
    try:
        for n in args.sessions:
            relay_runs.append(await relay(gateway, bare, simulator, n, args.seconds, args.phases))
            if args.telephony:
                dialects.append(await telephony(gateway, n, args.seconds))
            if before is not None:
                compared += await before_after(gateway, before, simulator, n, args.seconds, args.phases)
        # Fresh processes for uploads and idle memory: after the runs above the gateway may still be
        # winding sessions down, and its allocator holds freed memory that would hide growth.
        uploads: list[dict[str, Any]] = []
        if args.upload_seconds:
            gateway = restart(gateway, args, workdir, simulator)
            await upload(gateway, simulator, 5.0)  # warm-up, not reported: first-request allocations are not per upload
            uploads = [await upload(gateway, simulator, s) for s in args.upload_seconds]
        memory = None
        if args.idle_sessions > 0:
            gateway = restart(gateway, args, workdir, simulator)
            memory = await idle_memory(gateway, args.idle_sessions)
    finally:
        for proc in (bare, gateway, simulator, *([before] if before else [])):
            proc.stop()
    return {
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "smoke": args.smoke,
        "pinning": args.plan,  # cores: None when not pinned (--no-pin, or a single core)
        "affinity": affinity,  # as read back from the processes
        "gateway_root": str(args.gateway_root),
        "gateway_env": args.gateway_env,
        "frame_ms": FRAME_S * 1000,
        "relay": relay_runs,
        "telephony": dialects,
        "compare_root": str(args.compare_root) if args.compare_root else None,
        "before_after": compared,
        "capacity": capacity(relay_runs),
        "upload": uploads,
        "idle_memory": memory,
        "targets": TARGETS,
        "targets_met": targets_met(relay_runs, uploads, memory, dialects),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the machinery, not the numbers")
    parser.add_argument("--sessions", type=int, nargs="+", default=[10, 25, 50, 100, 200])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--upload-seconds", type=float, nargs="*", default=[600.0, 3600.0], help="upload lengths; none: no uploads"
    )
    parser.add_argument("--idle-sessions", type=int, default=1000, help="0: no idle-memory measurement")
    parser.add_argument(
        "--phases", type=int, default=10, help="send times per 20 ms period the sessions are spread over (1: lockstep)"
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="give the gateway a core of its own, the load and simulator the others (needs 2+ cores)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results/bench.json"))
    parser.add_argument(
        "--gateway-root",
        type=Path,
        default=ROOT,
        help="measure the gateway of another checkout (before/after); the load, simulator and baselines stay",
    )
    parser.add_argument(
        "--compare-root",
        type=Path,
        default=None,
        help="also measure the gateway of this checkout (e.g. a git worktree of an older commit) in the same run: "
        "the before/after table",
    )
    parser.add_argument(
        "--telephony",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="AudioCodes (16 kHz) and Twilio (8 kHz) sessions at every size, next to the native ones",
    )
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the gateway process, e.g. GATEWAY_UPSTREAM_WRITE_RATE=0 (repeatable)",
    )
    args = parser.parse_args()
    if args.smoke:
        args.sessions, args.seconds, args.upload_seconds, args.idle_sessions = [2, 4], 2.0, [10.0, 30.0], 10
        # No least hold and a write rate low enough that 2 and 4 sessions hold 40 and 80 ms: the
        # load-based merging path runs and its figure is exact.
        smoke_env = ["GATEWAY_UPSTREAM_WRITE_INTERVAL_MS=0", "GATEWAY_UPSTREAM_WRITE_RATE=50"]
        args.gateway_env = [*smoke_env, *args.gateway_env]
    args.plan = pinning(args.pin)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_fast(run(args, Path(tmp)))  # the load generator on the gateway's event loop
    args.out.write_text(json.dumps(result, indent=2))
    print(table(result))
    if chart(result, args.out.with_suffix(".png")):
        print(f"chart: {args.out.with_suffix('.png')}")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
