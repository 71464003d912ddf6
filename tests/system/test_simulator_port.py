"""An occupied ``GATEWAY_SIMULATOR_PORT`` (the embedded simulator, no upstream configured) is a settings
error: one line naming the variable, exit 2, as an occupied ``GATEWAY_PORT`` is one clear line. It was a
traceback from inside the app's startup, "Application startup failed" and exit 3."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support.cli_process import run_cli
from tests.support.gateway_process import free_port


def test_an_occupied_simulator_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_cli(["serve"], {"GATEWAY_PORT": str(free_port()), "GATEWAY_SIMULATOR_PORT": str(port)}, tmp_path, 20)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("GATEWAY_SIMULATOR_PORT:")
    assert f"127.0.0.1:{port}" in lines[0] and "already in use" in lines[0]
    assert "Traceback" not in done.stderr


def test_the_settings_command_beside_a_running_simulator_probes_no_port(tmp_path: Path) -> None:
    """``dataflow-gateway settings`` (run beside a live gateway: docker exec) must not find its port taken."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_cli(["settings"], {"GATEWAY_SIMULATOR_PORT": str(port)}, tmp_path, 20)
    assert done.returncode == 0, done.stderr
    assert "GATEWAY_SIMULATOR_PORT" in done.stdout
