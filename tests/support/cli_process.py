"""Runs the real ``dataflow-gateway`` command (``python -m gateway``) as a subprocess, bounded in time,
with only the ``GATEWAY_*`` variables a test gives it (and no .env: it runs in a temporary directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(
    args: list[str], env: dict[str, str], cwd: Path, timeout_s: float = 30, *, nofile: int | None = None
) -> subprocess.CompletedProcess[str]:
    """``nofile``: the command's open-file limit (soft and hard), set by a small Python step that then
    becomes the command (exec), as ``ulimit -n`` would."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")} | env
    command = [sys.executable, "-m", "gateway", *args]
    if nofile is not None:
        limit = f"import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, {nofile})); "
        command = [sys.executable, "-c", limit + "os.execv(sys.argv[1], sys.argv[1:])", *command]
    return subprocess.run(command, env=full, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False)
