"""System programs some tests need (nginx, chromium, docker): found, or the test skips with what to
install — except in CI (``CI=true`` or ``REQUIRE_SYSTEM_BINARIES=1``, set by ``.ci/run``, which
installs them), where a missing program fails the test instead of hiding it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

REQUIRED = os.environ.get("CI", "").lower() == "true" or os.environ.get("REQUIRE_SYSTEM_BINARIES") == "1"


def unavailable(what: str, reason: str) -> NoReturn:
    """Skip (a laptop without the program) or fail (CI, where it must be there) with ``reason``."""
    if REQUIRED:
        pytest.fail(f"{what} are required here (CI): {reason}")
    pytest.skip(reason)


def chromium() -> str:
    """Debian's chromium, driven through Playwright for Python."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        unavailable("browser tests", "Playwright for Python is not installed (pip install -e '.[test]')")
    if found is None:
        unavailable("browser tests", "Debian's chromium is not installed (apt-get install chromium)")
    return found


def nginx_main_config(workdir: Path, connections: int, http: str) -> Path:
    """A main nginx.conf that keeps everything (pid, logs, temp files) in ``workdir``; ``http`` is the
    body of its ``http`` block. Returns the file."""
    user = "user root root;\n" if os.geteuid() == 0 else ""  # workers would otherwise run as nobody
    temp = "".join(
        f"    {kind}_temp_path {workdir / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = workdir / "nginx.conf"
    main.write_text(
        f"{user}worker_processes 1;\npid {workdir / 'nginx.pid'};\nerror_log {workdir / 'error.log'} warn;\n"
        f"events {{ worker_connections {connections}; }}\nhttp {{\n{temp}{http}}}\n"
    )
    return main
