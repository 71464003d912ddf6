"""The benchmark's CI smoke run: every scenario completes and reports every field, sanely.

Never a timing threshold here: the numbers themselves come from full runs (README, Performance).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.perf.report import targets_met

pytestmark = pytest.mark.ws  # opens WebSockets: runs with the fast path on and off

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_run_reports_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        # --compare-root: this same checkout stands in for an older one, to run the before/after machinery
        [sys.executable, "-m", "tests.perf.bench", "--smoke", "--out", str(out), "--compare-root", str(ROOT)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert "| sessions |" in run.stdout
    assert result["machine"]["cores"] >= 1
    if len(os.sched_getaffinity(0)) >= 2:  # pinned by default: the gateway alone on its core
        plan = result["pinning"]
        assert len(plan["under_test"]) == 1 and plan["load_and_simulator"]
        assert not set(plan["under_test"]) & set(plan["load_and_simulator"])
        assert result["affinity"] == {"gateway": plan["under_test"], "simulator": plan["load_and_simulator"]}
    assert [r["sessions"] for r in result["relay"]] == [2, 4]
    for r in result["relay"]:
        assert r["gateway_cpu_ms_per_session_s"] > 0
        assert r["bare_ws_cpu_ms_per_session_s"] >= 0
        assert r["direct_grpc_cpu_ms_per_session_s"] > 0
        assert r["direct_grpc_merged_cpu_ms_per_session_s"] > 0
        assert r["simulator_cpu_ms_per_session_s"] > 0
        assert r["phases"] == min(r["sessions"], 10)
        assert r["gateway_realtime_factor"] >= 0.9  # the window spans the audio (and the closing after it)
        shares = r["gateway_cpu_share_by_thread"]  # the main thread runs the loop; gRPC adds its own threads
        assert set(shares) <= {"event_loop", "grpc_event_engine", "other_threads"}
        assert shares["event_loop"] > 0 and abs(sum(shares.values()) - 1) < 0.01
        # --smoke: no least hold, 50 writes/s: 2 sessions hold 40 ms, 4 hold 80 ms (from the gateway's /metrics)
        assert r["upstream_write_interval_ms"] == 20 * r["sessions"]
        assert r["frames_sent"] == r["sessions"] * 100
        assert r["frames_lost"] == 0
        assert r["sessions_with_lost_events"] == 0
        assert r["unclean_closes"] == 0
        for key in ("event_latency_ms", "client_to_upstream_latency_ms"):
            latency = r[key]
            assert latency["count"] > 0
            assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert result["capacity"]["largest_sessions"] in (0, 2, 4)
    assert result["capacity"]["largest_sessions_audio_in_strict"] <= result["capacity"]["largest_sessions"]
    assert [d["sessions"] for d in result["telephony"]] == [2, 4]
    for d in result["telephony"]:
        assert d["audiocodes_16k_cpu_ms_per_session_s"] > 0 and d["twilio_8k_cpu_ms_per_session_s"] > 0
        assert d["twilio_vs_audiocodes"] > 0 and d["unclean_closes"] == 0
    assert [(r["sessions"], r["scenario"]) for r in result["before_after"]] == [
        (2, "native"), (2, "audiocodes"), (4, "native"), (4, "audiocodes")
    ]  # fmt: skip
    for r in result["before_after"]:
        assert r["before_cpu_ms_per_session_s"] > 0 and r["after_cpu_ms_per_session_s"] > 0
        assert r["after_vs_before"] > 0 and r["before_lost"] == r["after_lost"] == 0
    assert "| after / before |" in run.stdout
    unmeasured = {  # no 50- or 200-session run, no 400-session sweep in a smoke
        "cpu_ms_per_session_s_at_200", "cpu_vs_floor_at_200", "cpu_ms_per_session_s_at_50", "event_p99_ms_at_200",
        "capacity_sessions",
    }  # fmt: skip
    measured = {"twilio_vs_audiocodes", "upload_ratio", "upload_memory_flat", "idle_kib_per_session"}
    assert set(result["targets_met"]) == unmeasured | measured
    assert all(result["targets_met"][k]["met"] is None for k in unmeasured)
    assert all(isinstance(result["targets_met"][k]["met"], bool) for k in measured)
    assert [u["audio_s"] for u in result["upload"]] == [10.0, 30.0]
    for u in result["upload"]:
        assert u["status"] == 200
        assert u["last_message"] == "result"
        assert u["milestones"] > 0
        assert u["gateway_wall_s"] > 0
        assert u["direct_grpc_wall_s"] > 0
        assert u["ratio"] > 0
    assert result["idle_memory"]["sessions"] == 10

    # A relay-only run (--upload-seconds with no lengths, --idle-sessions 0) has neither figure: its
    # verdicts read n/a and the report prints without them (it used to divide by zero).
    verdicts = targets_met(result["relay"], [], None, result["telephony"])
    assert {k: verdicts[k]["met"] for k in ("upload_ratio", "upload_memory_flat", "idle_kib_per_session")} == {
        "upload_ratio": None, "upload_memory_flat": None, "idle_kib_per_session": None
    }  # fmt: skip
    assert verdicts["twilio_vs_audiocodes"] == result["targets_met"]["twilio_vs_audiocodes"]
    relay_only = tmp_path / "relay-only.json"
    relay_only.write_text(json.dumps({**result, "upload": [], "idle_memory": None, "targets_met": verdicts}))
    printed = subprocess.run(
        [sys.executable, "-m", "tests.perf.report", str(relay_only)], cwd=ROOT, capture_output=True, text=True,
        timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr[-3000:]
    assert "Idle sessions" not in printed.stdout and "Idle sessions" in run.stdout
    assert "| upload audio |" not in printed.stdout and "| upload audio |" in run.stdout
    assert "idle_kib_per_session n/a (None)" in printed.stdout


def test_client_json_bench_reports_both_encoders() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tests.perf.client_json", "--number", "200", "--rounds", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    assert set(result["texts"]) == {"english", "chinese"}
    for figures in result["texts"].values():
        assert figures["escaped_us"] > 0 and figures["utf8_us"] > 0 and figures["ratio"] > 0
    assert result["texts"]["english"]["utf8_bytes"] == result["texts"]["english"]["escaped_bytes"]
    assert result["texts"]["chinese"]["utf8_bytes"] < 0.7 * result["texts"]["chinese"]["escaped_bytes"]
