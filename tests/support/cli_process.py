"""Runs the real ``dataflow-gateway`` command (``python -m gateway``) as a subprocess, bounded in time,
with only the ``GATEWAY_*`` variables a test gives it (and no .env: it runs in a temporary directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")} | env
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], env=full, cwd=cwd, capture_output=True, text=True, timeout=timeout_s,
        check=False,
    )  # fmt: skip
