"""A real load-balanced stack on loopback: the simulator, gateway replicas and nginx as subprocesses.

nginx's config is ``deploy/nginx/templates/default.conf.template`` (the file docker-compose uses),
rendered with loopback ports and wrapped in a main config that keeps pid, logs and temp files in a
temporary directory. Without nginx the tests skip, except where ``CI=true`` or
``REQUIRE_SYSTEM_BINARIES=1`` (set by ``.ci/run``, which installs it): there they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ws_mode
from tests.support.system import nginx_main_config, unavailable

ROOT = Path(__file__).resolve().parents[2]
NGINX_TEMPLATE = ROOT / "deploy" / "nginx" / "templates" / "default.conf.template"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        unavailable("the nginx tests", "nginx is not installed (apt-get install nginx)")
    return found


def render_template(text: str, values: dict[str, str]) -> str:
    """envsubst restricted to ``values``, like the nginx image's entrypoint; unknown ${X} is an error."""

    def substitute(match: re.Match[str]) -> str:
        return values[match.group(1)]

    return _PLACEHOLDER.sub(substitute, text)


def nginx_config(workdir: Path, port: int, backends: list[int]) -> Path:
    """Write the rendered template and a main config around it into ``workdir``; returns the main file."""
    values = {"NGINX_PORT": f"127.0.0.1:{port}"}
    values.update({f"GATEWAY_BACKEND_{i}": f"127.0.0.1:{p}" for i, p in enumerate(backends, start=1)})
    (workdir / "gateway.conf").write_text(render_template(NGINX_TEMPLATE.read_text(), values))
    log = f"    log_format attempts '$status $upstream_status';\n    access_log {workdir / 'access.log'} attempts;\n"
    return nginx_main_config(workdir, 1024, log + f"    include {workdir / 'gateway.conf'};\n")


def retried_handshakes(workdir: Path) -> int:
    """WebSocket handshakes nginx passed on after a replica's 503 ("503, 101" in $upstream_status); a
    request is logged when it ends, so for sessions that are over."""
    lines = (workdir / "access.log").read_text().splitlines()
    return sum(1 for line in lines if line.split(" ", 1)[1].startswith("503, 101"))


def nginx_command(binary: str, config: Path, *extra: str) -> list[str]:
    workdir = str(config.parent)
    return [binary, "-p", workdir, "-c", str(config), "-e", str(config.parent / "error.log"), *extra]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def metric_values(text: str) -> Metrics:
    values: Metrics = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def metric(values: Metrics, name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


@dataclass
class Stack:
    """Subprocesses started by a test; ``close()`` kills whatever is still running."""

    workdir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        self._logs.append(log)
        # Its own process group, so close() also reaches children (nginx's workers outlive a killed master).
        process = subprocess.Popen(
            command, env=env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes[name] = process
        return process

    def start_simulator(self, port: int, token: str) -> None:
        self.start("simulator", [sys.executable, "-m", "gateway", "simulator", "--port", str(port), "--token", token],
                   clean_env())  # fmt: skip

    def start_gateway(self, name: str, port: int, upstream_port: int, token: str, drain_budget_s: float) -> None:
        env = clean_env(
            GATEWAY_HOST="127.0.0.1",
            GATEWAY_PORT=str(port),
            GATEWAY_UPSTREAM_TARGET=f"127.0.0.1:{upstream_port}",
            GATEWAY_UPSTREAM_TOKEN=token,
            GATEWAY_DEFAULT_PROJECT="demo",
            GATEWAY_DRAIN_BUDGET_S=str(drain_budget_s),
            GATEWAY_WS_DRAIN_REFUSES_HANDSHAKE="true",  # as in docker-compose.yml: nginx retries those 503s
            GATEWAY_LOG_LEVEL="warning",
            # The relay is under test here, not client authentication.
            GATEWAY_AUTH="none",
            GATEWAY_ALLOW_INSECURE_NO_AUTH="true",
            **ws_mode.process_env(),  # the running test's WebSocket mode (tests/support/ws_mode.py)
        )
        self.start(name, [sys.executable, "-m", "gateway", "serve"], env)

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the group this test created for the process
            process.wait(10)
        for log in self._logs:
            log.close()


def clean_env(**values: str) -> dict[str, str]:
    """The test's environment without GATEWAY_* settings or asyncio debug mode, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_") and k != "PYTHONASYNCIODEBUG"}
    env.update(values)
    return env


async def wait_http_ok(url: str, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    async with asyncio.timeout(timeout), httpx.AsyncClient(timeout=2) as http:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{url}: the process exited with {process.returncode}")
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)


async def scrape(port: int) -> Metrics:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    return metric_values(response.text)
