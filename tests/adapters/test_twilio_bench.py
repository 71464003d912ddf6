"""The Twilio-vs-AudioCodes cost measurement (tests/perf/dialects.py) runs end to end: both dialects
stream, every session ends cleanly, and Twilio gets no text back. No timing threshold here: the
ratio itself comes from a full run (README, Twilio section)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_dialect_cost_measurement_runs() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tests.perf.dialects", "--sessions", "3", "--seconds", "1", "--rounds", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    assert result["audiocodes_cpu_ms_per_session_s"] > 0 and result["twilio_cpu_ms_per_session_s"] > 0
    assert result["twilio_vs_audiocodes"] is not None
    assert result["twilio_text_messages_back"] == 0 and result["unclean_closes"] == 0
