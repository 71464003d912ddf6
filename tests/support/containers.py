"""Real Docker containers for the container tests: the image built offline, containers and networks
that are always removed, and a DTMF session streamed to a published port.

The image is built by ``scripts/build_image.sh`` (a debootstrapped base image, cached by tag, and the
dependencies' wheels from this machine's package index). Without a Docker daemon the tests skip,
except where ``CI=true`` or ``REQUIRE_SYSTEM_BINARIES=1`` (``.ci/run``, which installs docker.io and
starts the daemon): there they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from tests.support import signals, ws_mode
from tests.support.harness import read_all, ws_connect
from tests.support.system import unavailable

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "dataflow-gateway:test"
NGINX_IMAGE = "dataflow-gateway-nginx:bookworm"
BASE_IMAGE = "dataflow-gateway-base:bookworm-python3"  # scripts/docker_base_image.sh's default tag
NGINX_ARGS = f"sudo bash scripts/docker_base_image.sh {NGINX_IMAGE} nginx,gettext-base"
RATE = 16000


def docker(*args: str, timeout: float = 60, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout.strip()


def require_docker() -> None:
    """A reachable daemon, and debootstrap as root unless the base images are already built."""
    try:
        reachable = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        reachable = False
    reason = None
    if not reachable:
        reason = "no Docker daemon (apt-get install docker.io; bash scripts/system_binaries.sh starts dockerd)"
    elif not all(_image_exists(image) for image in (BASE_IMAGE, NGINX_IMAGE)):
        if shutil.which("debootstrap", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") is None:
            reason = "debootstrap is not installed (apt-get install debootstrap): the base images are built with it"
        elif os.geteuid() != 0:
            reason = f"building the base images needs root: sudo bash scripts/docker_base_image.sh; {NGINX_ARGS}"
    if reason is not None:
        unavailable("the container tests", reason)


def _image_exists(image: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True, timeout=20).returncode == 0


@dataclass
class Timings:
    """Seconds spent on each container step, reported at the end of the module."""

    steps: dict[str, float]

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        began = time.monotonic()
        try:
            yield
        finally:
            self.steps[name] = self.steps.get(name, 0.0) + time.monotonic() - began

    def report(self) -> str:
        return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.steps.items())


def build_images(timings: Timings) -> None:
    """The gateway image (base image cached by tag) and the nginx image, both without a registry."""
    with timings.step("base images"):
        for script_args in ([BASE_IMAGE], [NGINX_IMAGE, "nginx,gettext-base"]):
            subprocess.run(["bash", "scripts/docker_base_image.sh", *script_args], cwd=ROOT, check=True,
                           capture_output=True, timeout=600)  # fmt: skip
    with timings.step("image build"):
        built = subprocess.run(["bash", "scripts/build_image.sh", IMAGE], cwd=ROOT, capture_output=True, text=True,
                               timeout=900, check=False)  # fmt: skip
    assert built.returncode == 0, f"image build failed:\n{built.stderr[-3000:]}"


@contextlib.contextmanager
def network() -> Iterator[str]:
    name = f"dfg-test-{secrets.token_hex(4)}"
    docker("network", "create", name)
    try:
        yield name
    finally:
        docker("network", "rm", name, check=False)


@contextlib.contextmanager
def container(*run_args: str) -> Iterator[str]:
    """``docker run -d`` with ``run_args``; the container is removed however the test ends. Every
    container gets the running test's WebSocket mode (tests/support/ws_mode.py; ignored but by gateways)."""
    name = f"dfg-test-{secrets.token_hex(4)}"
    mode = [arg for key, value in ws_mode.process_env().items() for arg in ("-e", f"{key}={value}")]
    docker("run", "-d", "--name", name, *mode, *run_args)
    try:
        yield name
    finally:
        docker("rm", "-f", "-v", name, check=False)


def logs(name: str, tail: int | None = None) -> str:
    """What the container wrote (the gateway logs to stderr), both streams."""
    args = ["docker", "logs", *(["--tail", str(tail)] if tail else []), name]
    done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    return done.stdout + done.stderr


def published_port(name: str, port: int = 8080) -> int:
    return int(docker("port", name, f"{port}/tcp").splitlines()[0].rsplit(":", 1)[1])


def inspect(name: str) -> dict[str, object]:
    found: list[dict[str, object]] = json.loads(docker("inspect", name))
    return found[0]


async def wait_healthz(base_url: str, name: str, timeout: float = 60) -> dict[str, object]:
    """``/healthz``'s body once it answers 200; the container's log if it never does."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                response = await http.get("/healthz")
                if response.status_code == 200:
                    body: dict[str, object] = response.json()
                    return body
            await asyncio.sleep(0.2)
    raise AssertionError(f"{name}: /healthz not 200 within {timeout} s; its log:\n{logs(name, tail=40)}")


def dtmf_audio(groups: list[str]) -> bytes:
    parts = [signals.silence(300, RATE)]
    for group in groups:
        parts += [signals.dtmf(group, RATE), signals.silence(900, RATE)]
    return signals.to_pcm16(np.concatenate(parts))


async def stream_digits(url: str, groups: list[str], timeout: float = 30) -> tuple[list[str], int | None]:
    """One session with a real websocket client: the final transcripts and the close code."""
    start = {"type": "start", "audio": {"encoding": "pcm16", "sampleRate": RATE, "channels": 1}}
    audio = dtmf_audio(groups)
    async with asyncio.timeout(timeout), ws_connect(url) as ws:
        await ws.send(json.dumps(start))
        for offset in range(0, len(audio), 1280):  # 40 ms frames, as fast as the gateway takes them
            await ws.send(audio[offset : offset + 1280])
        await ws.send(json.dumps({"type": "finalize"}))
        transcript = await read_all(ws, timeout=timeout)
    finals = [m["text"] for m in transcript.messages if m.get("type") == "event" and m.get("final")]
    return finals, transcript.close_code
