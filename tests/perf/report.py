"""The benchmark's verdicts and output: latency summaries, capacity, targets, the table and the chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# Issue 18's figures for the relay (pinned, 16 kHz 20 ms frames, events flowing), the earlier issues' for
# uploads and idle memory.
TARGETS = {
    "cpu_ms_per_session_s_at_200": 1.5,
    "cpu_vs_floor_at_200": 0.7,  # the floor: bare WebSocket receiver + merged direct gRPC client, same run
    "cpu_ms_per_session_s_at_50": 3.5,
    "event_p99_ms_at_200": 20.0,
    "capacity_sessions": 400,
    "twilio_vs_audiocodes": 1.3,
    "upload_ratio": 1.2,
    "idle_kib_per_session": 100,
}
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


def _at(runs: list[dict[str, Any]], n: int) -> dict[str, Any] | None:
    return next((r for r in runs if r["sessions"] == n), None)


def _verdict(value: float | None, target: float, at_least: bool = False) -> dict[str, Any]:
    met = None if value is None else value >= target if at_least else value <= target
    return {"value": value, "target": target, "met": met}


def targets_met(
    runs: list[dict[str, Any]],
    uploads: list[dict[str, Any]],
    memory: dict[str, Any] | None,
    dialects: list[dict[str, Any]],
) -> dict[str, Any]:
    """Each target against this run: the figure, the target, and whether it was met (None: not measured here)."""
    at_200, at_50 = _at(runs, 200), _at(runs, 50)
    twilio = max((d["twilio_vs_audiocodes"] for d in dialects if d["twilio_vs_audiocodes"]), default=None)
    growth = [u["peak_rss_growth_mib"] for u in uploads]
    # Only a sweep that reaches the target size can show the capacity; a smaller one says nothing.
    reached = max((r["sessions"] for r in runs), default=0) >= TARGETS["capacity_sessions"]
    at_200_cpu = at_200["gateway_cpu_ms_per_session_s"] if at_200 else None
    at_200_floor = at_200["gateway_vs_bare_plus_direct"] if at_200 else None
    at_200_p99 = at_200["event_latency_ms"]["p99"] if at_200 else None
    at_50_cpu = at_50["gateway_cpu_ms_per_session_s"] if at_50 else None
    t = TARGETS
    return {
        "cpu_ms_per_session_s_at_200": _verdict(at_200_cpu, t["cpu_ms_per_session_s_at_200"]),
        "cpu_vs_floor_at_200": _verdict(at_200_floor, t["cpu_vs_floor_at_200"]),
        "cpu_ms_per_session_s_at_50": _verdict(at_50_cpu, t["cpu_ms_per_session_s_at_50"]),
        "event_p99_ms_at_200": _verdict(at_200_p99, t["event_p99_ms_at_200"]),
        "capacity_sessions": _verdict(
            capacity(runs)["largest_sessions"] if reached else None, t["capacity_sessions"], at_least=True
        ),
        "twilio_vs_audiocodes": _verdict(twilio, t["twilio_vs_audiocodes"]),
        "upload_ratio": _verdict(max((u["ratio"] for u in uploads), default=None), t["upload_ratio"]),
        # Flat: the longest upload may not take more than 2 MiB beyond the shortest one.
        "upload_memory_flat": {"value": growth, "met": None if len(growth) < 2 else max(growth) - growth[0] <= 2.0},
        "idle_kib_per_session": _verdict(memory["kib_per_session"] if memory else None, t["idle_kib_per_session"]),
    }


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
    shares = [r for r in result["relay"] if r.get("gateway_cpu_share_by_thread")]  # older results lack it
    if shares:
        lines.append("\nGateway CPU by thread: " + "; ".join(
            f"{r['sessions']} sessions: " + ", ".join(f"{role} {share:.0%}" for role, share in
                                                      r["gateway_cpu_share_by_thread"].items())
            for r in shares))  # fmt: skip
    if result.get("telephony"):
        lines += [
            "",
            "| sessions | AudioCodes 16 kHz ms/session-s | Twilio 8 kHz | Twilio / AudioCodes | unclean closes |",
            "|---:|---:|---:|---:|---:|",
        ]
        for d in result["telephony"]:
            ac, tw = d["audiocodes_16k_cpu_ms_per_session_s"], d["twilio_8k_cpu_ms_per_session_s"]
            lines.append(f"| {d['sessions']} | {ac} | {tw} | {d['twilio_vs_audiocodes']} | {d['unclean_closes']} |")
    if result.get("before_after"):
        lines += ["", before_after_table(result["before_after"])]
    if result["upload"]:  # a relay-only run has none: no empty table
        lines += ["", "| upload audio | gateway s | direct gRPC s | ratio | peak RSS growth MiB |"]
        lines.append("|---:|---:|---:|---:|---:|")
    for u in result["upload"]:
        lines.append(
            f"| {u['audio_s']:g} s | {u['gateway_wall_s']} | {u['direct_grpc_wall_s']} | {u['ratio']} | "
            f"{u['peak_rss_growth_mib']} |"
        )
    m = result["idle_memory"]
    cap = result["capacity"]
    idle = f"Idle sessions: {m['sessions']} → {m['kib_per_session']} KiB each. " if m else ""
    lines.append(
        f"\n{idle}"
        f"Capacity ({cap['criterion']}): {cap['largest_sessions']} sessions "
        f"({cap['largest_sessions_audio_in_strict']} with audio in p99 ≤ {CAPACITY_P99_MS:g} ms)."
    )
    lines.append("Targets: " + ", ".join(f"{k} {'met' if v['met'] else 'NOT met' if v['met'] is False else 'n/a'}"
                                         f" ({v['value']})" for k, v in result["targets_met"].items()))  # fmt: skip
    return "\n".join(lines)


def before_after_table(rows: list[dict[str, Any]]) -> str:
    """Gateway CPU per session-second before and after (``--compare-root``), and event latency where measured."""
    lines = ["| sessions | scenario | before ms/session-s | after | after / before | event p50/p99 ms before → after "
             "| lost before / after |", "|---:|---|---:|---:|---:|---|---:|"]  # fmt: skip
    for r in rows:
        latency = "n/a"
        if "after_event_latency_ms" in r:
            was, now = r["before_event_latency_ms"], r["after_event_latency_ms"]
            latency = f"{was['p50']:.0f}/{was['p99']:.0f} → {now['p50']:.0f}/{now['p99']:.0f}"
        lines.append(
            f"| {r['sessions']} | {r['scenario']} | {r['before_cpu_ms_per_session_s']} "
            f"| {r['after_cpu_ms_per_session_s']} | {r['after_vs_before']} | {latency} "
            f"| {r['before_lost']} / {r['after_lost']} |"
        )
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


if __name__ == "__main__":  # print the tables of a result file again: python -m tests.perf.report bench.json
    import json
    import sys

    print(table(json.loads(Path(sys.argv[1]).read_text())))
