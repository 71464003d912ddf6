"""Processes under measurement: start them on free loopback ports, read their CPU time and RSS."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
BENCH_TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (the process's own accounting)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def thread_cpu_seconds(pid: int) -> dict[int, tuple[str, float]]:
    """Each live thread's name and user + system CPU time, from /proc (threads that ended are gone)."""
    threads: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # ended between the listing and the read
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        threads[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / _TICKS)
    return threads


def thread_role(pid: int, tid: int, name: str) -> str:
    """What a gateway thread is for: its event loop (the main thread), gRPC's C-core I/O threads (named
    by gRPC), or the rest (gRPC's completion-queue poller, executors: Python does not name OS threads)."""
    if tid == pid:
        return "event_loop"
    return "grpc_event_engine" if name.startswith("event_engine") else "other_threads"


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE


@dataclass
class Proc:
    name: str
    port: int
    popen: subprocess.Popen[bytes]
    log: Path = field(default_factory=Path)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def _spawn(name: str, args: list[str], env: dict[str, str], port: int, workdir: Path, root: Path = ROOT) -> Proc:
    log = workdir / f"{name}.log"
    full_env = {**os.environ, "PYTHONPATH": str(root), **env}
    popen = subprocess.Popen(
        [sys.executable, *args], env=full_env, stdout=subprocess.DEVNULL, stderr=log.open("wb"), cwd=workdir
    )
    proc = Proc(name, port, popen, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"{name} did not listen on {port}")


def start_simulator(workdir: Path) -> Proc:
    port = free_port()
    args = ["-m", "gateway", "simulator", "--port", str(port), "--token", BENCH_TOKEN, "--bench-stamps"]
    return _spawn("simulator", args, {}, port, workdir)


def start_gateway(workdir: Path, simulator: Proc, root: Path = ROOT, **extra: str) -> Proc:
    """The gateway of the checkout at ``root`` (another one than this: a before/after comparison)."""
    port = free_port()
    env = {
        "GATEWAY_PORT": str(port),
        "GATEWAY_UPSTREAM_TARGET": f"127.0.0.1:{simulator.port}",
        "GATEWAY_UPSTREAM_TOKEN": BENCH_TOKEN,
        "GATEWAY_DEFAULT_PROJECT": "bench",
        "GATEWAY_AUTH": "none",
        "GATEWAY_ALLOW_INSECURE_NO_AUTH": "true",
        "GATEWAY_MAX_SESSIONS": "5000",
        "GATEWAY_IDLE_TIMEOUT_S": "600",
        "GATEWAY_LOG_LEVEL": "warning",
        "GATEWAY_MAX_UPLOAD_BYTES": str(2**40),
        **extra,
    }
    return _spawn("gateway", ["-m", "gateway", "serve"], env, port, workdir, root)


def start_bare_ws(workdir: Path) -> Proc:
    port = free_port()
    return _spawn("bare-ws", ["-m", "tests.perf.bare_ws", str(port)], {}, port, workdir)
