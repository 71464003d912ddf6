"""The benchmark's verdicts and output: latency summaries, capacity, targets, the table and the chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

TARGETS = {"cpu_ms_per_session_s": 1.0, "event_p99_ms_at_200": 5.0, "upload_ratio": 1.2, "idle_kib_per_session": 100}
CAPACITY_P99_MS = 20.0


def summary_ms(values_us: list[int]) -> dict[str, float]:
    if not values_us:
        return {"count": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    data = np.asarray(values_us, dtype=np.float64) / 1000
    p50, p90, p99 = np.percentile(data, [50, 90, 99])
    return {
        "count": len(values_us),
        "p50": round(float(p50), 3),
        "p90": round(float(p90), 3),
        "p99": round(float(p99), 3),
        "max": round(float(data.max()), 3),
    }


def capacity(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Largest N that met the latency bound with nothing lost; audio-in is allowed the merge hold it was given."""

    def sound(r: dict[str, Any]) -> bool:
        return r["frames_lost"] == 0 and r["sessions_with_lost_events"] == 0 and r["unclean_closes"] == 0

    events_ok = [r for r in runs if sound(r) and r["event_latency_ms"]["p99"] <= CAPACITY_P99_MS]
    with_hold = [
        r["sessions"]
        for r in events_ok
        if r["client_to_upstream_latency_ms"]["p99"] <= CAPACITY_P99_MS + r["upstream_write_interval_ms"]
    ]
    strict = [r["sessions"] for r in events_ok if r["client_to_upstream_latency_ms"]["p99"] <= CAPACITY_P99_MS]
    return {
        "criterion": f"events p99 <= {CAPACITY_P99_MS:g} ms, audio in p99 <= {CAPACITY_P99_MS:g} ms + the "
        "upstream write interval the gateway applied, no lost frames or events, clean closes",
        "largest_sessions": max(with_hold, default=0),
        "largest_sessions_audio_in_strict": max(strict, default=0),
    }


def targets_met(runs: list[dict[str, Any]], uploads: list[dict[str, Any]], memory: dict[str, Any]) -> dict[str, Any]:
    """Each target against this run: the figure it is held to, and whether it was met (None: not measured)."""
    largest = max(runs, key=lambda r: r["sessions"], default=None)
    at_200 = next((r for r in runs if r["sessions"] == 200), None)
    cpu = largest["gateway_cpu_ms_per_session_s"] if largest else None
    p99 = at_200["event_latency_ms"]["p99"] if at_200 else None
    ratio = max((u["ratio"] for u in uploads), default=None)
    growth = [u["peak_rss_growth_mib"] for u in uploads]
    return {
        "cpu_ms_per_session_s": {"at_sessions": largest["sessions"] if largest else None, "value": cpu,
                                 "met": None if cpu is None else cpu <= TARGETS["cpu_ms_per_session_s"]},
        "event_p99_ms_at_200": {"value": p99, "met": None if p99 is None else p99 <= TARGETS["event_p99_ms_at_200"]},
        "upload_ratio": {"value": ratio, "met": None if ratio is None else ratio <= TARGETS["upload_ratio"]},
        # Flat: the longest upload may not take more than 2 MiB beyond the shortest one.
        "upload_memory_flat": {"value": growth, "met": None if len(growth) < 2 else max(growth) - growth[0] <= 2.0},
        "idle_kib_per_session": {"value": memory["kib_per_session"],
                                 "met": memory["kib_per_session"] <= TARGETS["idle_kib_per_session"]},
    }  # fmt: skip


def table(result: dict[str, Any]) -> str:
    lines = [
        "| sessions | write interval ms | gateway CPU ms/session-s | bare WS | direct gRPC per frame / merged | "
        "simulator | event p50/p99 ms | in p50/p99 ms | lost |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["relay"]:
        ev, inbound = r["event_latency_ms"], r["client_to_upstream_latency_ms"]
        lines.append(
            f"| {r['sessions']} | {r['upstream_write_interval_ms']:g} | {r['gateway_cpu_ms_per_session_s']} | "
            f"{r['bare_ws_cpu_ms_per_session_s']} | {r['direct_grpc_cpu_ms_per_session_s']} / "
            f"{r['direct_grpc_merged_cpu_ms_per_session_s']} | {r['simulator_cpu_ms_per_session_s']} | "
            f"{ev['p50']}/{ev['p99']} | {inbound['p50']}/{inbound['p99']} | "
            f"{r['frames_lost']} frames, {r['sessions_with_lost_events']} sessions |"
        )
    lines.append("")
    lines.append("| upload audio | gateway s | direct gRPC s | ratio | peak RSS growth MiB |")
    lines.append("|---:|---:|---:|---:|---:|")
    for u in result["upload"]:
        lines.append(
            f"| {u['audio_s']:g} s | {u['gateway_wall_s']} | {u['direct_grpc_wall_s']} | {u['ratio']} | "
            f"{u['peak_rss_growth_mib']} |"
        )
    m = result["idle_memory"]
    cap = result["capacity"]
    lines.append(
        f"\nIdle sessions: {m['sessions']} → {m['kib_per_session']} KiB each. "
        f"Capacity ({cap['criterion']}): {cap['largest_sessions']} sessions "
        f"({cap['largest_sessions_audio_in_strict']} with audio in p99 ≤ {CAPACITY_P99_MS:g} ms)."
    )
    lines.append("Targets: " + ", ".join(f"{k} {'met' if v['met'] else 'NOT met' if v['met'] is False else 'n/a'}"
                                         f" ({v['value']})" for k, v in result["targets_met"].items()))  # fmt: skip
    return "\n".join(lines)


def chart(result: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    runs = result["relay"]
    xs = [r["sessions"] for r in runs]
    fig, (cpu, lat) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (
        ("gateway_cpu_ms_per_session_s", "gateway"),
        ("bare_ws_cpu_ms_per_session_s", "bare WS"),
        ("direct_grpc_cpu_ms_per_session_s", "direct gRPC"),
    ):
        cpu.plot(xs, [r[key] for r in runs], marker="o", label=label)
    cpu.set(xlabel="sessions", ylabel="CPU ms per session-second", title="Relay cost")
    cpu.legend()
    lat.plot(xs, [r["event_latency_ms"]["p99"] for r in runs], marker="o", label="events p99")
    lat.plot(xs, [r["client_to_upstream_latency_ms"]["p99"] for r in runs], marker="o", label="audio in p99")
    lat.set(xlabel="sessions", ylabel="ms", title="Latency")
    lat.legend()
    fig.tight_layout()
    fig.savefig(path)
    return True
