"""Configurations the real command refuses before anything starts: one line naming the variable (no
traceback, no secret), exit status 2 — and ``settings`` refuses exactly what ``serve`` refuses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.cli_process import run_cli

UPSTREAM = {"GATEWAY_UPSTREAM_TARGET": "dataflow.example.com:443", "GATEWAY_UPSTREAM_TOKEN": "tok-5e2b-hidden",
            "GATEWAY_AUTH": "none", "GATEWAY_ALLOW_INSECURE_NO_AUTH": "true"}  # fmt: skip


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    [line] = done.stderr.splitlines()
    return line


def test_a_proxy_variable_that_is_no_url_is_one_line_before_the_app_starts(tmp_path: Path) -> None:
    """It was a 30-frame traceback from the app's startup (the step that masks the proxy's password), exit 3."""
    env = UPSTREAM | {"https_proxy": "http://ops:pw-77ab@[bad:3128", "http_proxy": "", "grpc_proxy": ""}
    done = run_cli(["serve"], env, tmp_path)
    assert one_line(done) == "https_proxy: not a URL (http://[user:password@]host:port)"
    assert "pw-77ab" not in done.stderr


def test_a_dotenv_file_that_is_not_utf8_is_one_line_without_its_content(tmp_path: Path) -> None:
    """It was a 38-line UnicodeDecodeError traceback quoting the bytes around the bad one."""
    (tmp_path / ".env").write_bytes(b"GATEWAY_MAX_SESSIONS=3\n# caf\xe9\nGATEWAY_UPSTREAM_TOKEN=tok-5e2b-hidden\n")
    for command in ("serve", "settings"):
        done = run_cli([command], {}, tmp_path)
        assert one_line(done) == ".env: not UTF-8 (line 2)"
        assert "caf" not in done.stderr and "tok-5e2b" not in done.stderr


@pytest.mark.parametrize(
    ("env", "start"),
    [
        ({"GATEWAY_DRAIN_BUDGET_S": "20000"}, "GATEWAY_DRAIN_BUDGET_S: "),  # one of serve's preflight checks
        ({"GATEWAY_AUTH": "required"}, "GATEWAY_API_KEYS: empty while authentication is required"),
        ({"GATEWAY_HOST": ""}, "GATEWAY_HOST: "),
        (UPSTREAM | {"GATEWAY_UPSTREAM_IDENTITY_URL": "https://id.example.com:99999/token",
                     "GATEWAY_UPSTREAM_TOKEN": "", "GATEWAY_UPSTREAM_CLIENT_ID": "c",
                     "GATEWAY_UPSTREAM_CLIENT_SECRET": "s-5e2b-hidden"}, "GATEWAY_UPSTREAM_IDENTITY_URL: "),
    ],
    ids=["drain-budget", "auth-without-keys", "empty-host", "identity-port"],
)  # fmt: skip
def test_settings_refuses_what_serve_refuses_with_the_same_line(
    tmp_path: Path, env: dict[str, str], start: str
) -> None:
    """``dataflow-gateway settings`` exited 0 for configurations ``serve`` refused (it skipped preflight)."""
    serve = one_line(run_cli(["serve"], env, tmp_path))
    settings = run_cli(["settings"], env, tmp_path)
    assert serve.startswith(start), serve
    assert one_line(settings) == serve and settings.stdout == ""
    assert "hidden" not in serve
