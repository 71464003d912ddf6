"""A real ``dataflow-gateway serve`` process on a free loopback port, for what only a separate process
shows: its own memory (RSS) and CPU time, its file descriptors and their limit, signals, its stderr."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from gateway.simulator.server import DataflowSimulator
from tests.support import ws_mode
from tests.support.settings import SIM_TENANT, SIM_TOKEN


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class GatewayProcess:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str = "/v1/stream") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.process.pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def cpu_seconds(self) -> float:
        """CPU time the process used so far, user and system, all its threads (proc(5): utime, stime)."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))


def upstream_env(simulator: DataflowSimulator) -> dict[str, str]:
    """The environment that points a gateway process at ``simulator`` (auth off, loopback only)."""
    return {
        "GATEWAY_UPSTREAM_TARGET": simulator.target,
        "GATEWAY_UPSTREAM_TOKEN": SIM_TOKEN,
        "GATEWAY_UPSTREAM_TENANT": SIM_TENANT,
        "GATEWAY_UPSTREAM_METHOD_PATH": simulator.config.method_path,
        "GATEWAY_UPSTREAM_PROTO_MODULE": simulator.config.proto_module,
        "GATEWAY_DEFAULT_PROJECT": "demo",
        "GATEWAY_AUTH": "none",
        "GATEWAY_ALLOW_INSECURE_NO_AUTH": "true",
    }


def serve_command(nofile: int | None = None) -> list[str]:
    """The command that starts the gateway; with ``nofile``, under that open-file limit (soft and hard).
    A small Python step sets it and then becomes the gateway (exec: same process id): ``preexec_fn`` is
    unsafe in a test process that runs threads (gRPC's)."""
    serve = [sys.executable, "-m", "gateway", "serve"]
    if nofile is None:
        return serve
    limit = f"import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, {nofile})); "
    return [sys.executable, "-c", limit + "os.execv(sys.argv[1], sys.argv[1:])", *serve]


@asynccontextmanager
async def gateway_process(
    tmp_path: Path, env: dict[str, str], ready_s: float = 20, *, nofile: int | None = None
) -> AsyncIterator[GatewayProcess]:
    """A gateway process with ``env``; ``nofile``: its RLIMIT_NOFILE (soft and hard), lower than the suite's."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    # The running test's WebSocket mode (tests/support/ws_mode.py) unless the test sets it itself.
    full |= {"GATEWAY_PORT": str(port), "GATEWAY_LOG_LEVEL": "warning", **ws_mode.process_env(), **env}
    log = tmp_path / f"gateway-{port}.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(serve_command(nofile), env=full, stderr=stderr, cwd=tmp_path)
    running = GatewayProcess(process, port, log)
    try:
        async with asyncio.timeout(ready_s), httpx.AsyncClient() as http:
            while True:
                assert process.poll() is None, log.read_text()[-2000:]
                try:
                    if (await http.get(f"{running.http_url}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        yield running
    finally:
        if process.poll() is None:
            process.kill()
        await asyncio.to_thread(process.wait, 10)
