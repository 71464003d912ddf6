"""The container image, built and run for real by a Docker daemon (no image registry, no network
inside the build).

1. The image runs with a read-only root filesystem as its non-root user (uid 10001), answers
   ``/healthz``, streams one session through the embedded simulator with a real websocket client,
   and ``docker stop`` drains: the live session is told ``draining`` and closed with 1001 when the
   budget ends, and the process exits 0 within the budget plus its goodbyes.
2. docker-compose.yml's topology (simulator, two gateway replicas, nginx) comes up from the compose
   file's own service definitions, run with ``docker run`` on one network: Debian's docker.io ships
   no compose v2, and its docker-compose 1.29 rejects the file's compose-spec keys (``name``,
   ``depends_on.restart``). A session passes through nginx while one replica is stopped.

Every step's duration is printed (CI has 90 minutes); containers and networks are removed however
a test ends.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import yaml
from websockets.asyncio.client import ClientConnection

from tests.support.containers import (
    IMAGE,
    NGINX_IMAGE,
    ROOT,
    Timings,
    build_images,
    container,
    docker,
    dtmf_audio,
    inspect,
    logs,
    network,
    published_port,
    require_docker,
    stream_digits,
    wait_healthz,
)
from tests.support.harness import next_message, read_all, ws_connect

DRAIN_BUDGET_S = 2.0
CLIENT_SEND_TIMEOUT_S = 2.0
GROUPS = ["12", "345", "6#"]

pytestmark = [pytest.mark.needs_binary, pytest.mark.timeout(1500), pytest.mark.ws]


@pytest.fixture(scope="module")
def timings() -> Iterator[Timings]:
    measured = Timings({})
    yield measured
    print(f"\nFIGURE container steps: {measured.report()}")


@pytest.fixture(scope="module")
def images(timings: Timings) -> None:
    require_docker()
    build_images(timings)


def gateway_run_args(**env: str) -> list[str]:
    """What the Kubernetes manifests ask for: read-only root, /tmp only, no capabilities."""
    args = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    return args


async def test_image_runs_read_only_non_root_streams_a_session_and_drains_on_docker_stop(
    images: None, timings: Timings
) -> None:
    env = {
        "GATEWAY_AUTH": "none",
        "GATEWAY_ALLOW_INSECURE_NO_AUTH": "true",
        "GATEWAY_DRAIN_BUDGET_S": str(DRAIN_BUDGET_S),
        "GATEWAY_CLIENT_SEND_TIMEOUT_S": str(CLIENT_SEND_TIMEOUT_S),
    }
    with container(*gateway_run_args(**env), "-p", "127.0.0.1::8080", IMAGE) as name:
        with timings.step("single container up"):
            port = published_port(name)
            health = await wait_healthz(f"http://127.0.0.1:{port}", name)
        assert health["status"] == "ok" and health["upstream"] == {"status": "ok", "channel": True, "token": True}
        config = inspect(name)
        assert config["HostConfig"]["ReadonlyRootfs"] is True  # type: ignore[index]
        assert docker("exec", name, "id", "-u") == "10001"
        wrote = docker("exec", name, "sh", "-c", "touch /opt/venv/x /app/x 2>&1; echo $?", check=False)
        assert wrote.endswith("1"), f"the root filesystem must not be writable: {wrote}"

        with timings.step("one session"):
            finals, close_code = await stream_digits(f"ws://127.0.0.1:{port}/v1/stream", GROUPS)
        assert (finals, close_code) == (GROUPS, 1000)

        async with ws_connect(f"ws://127.0.0.1:{port}/v1/stream") as live:
            await live.send('{"type": "start", "audio": {"encoding": "pcm16", "sampleRate": 16000}}')
            await next_message(live, "started")
            sending = asyncio.create_task(stream_in_real_time(live))
            stopped_at = time.monotonic()
            with timings.step("docker stop (drain)"):
                stop = asyncio.create_task(asyncio.to_thread(docker, "stop", "-t", "30", name, timeout=60))
                transcript = await read_all(live, timeout=30)
                await stop
            stop_s = time.monotonic() - stopped_at
            sending.cancel()
        errors = [m["code"] for m in transcript.messages if m.get("type") == "error"]
        state: dict[str, Any] = inspect(name)["State"]  # type: ignore[assignment]
        print(f"FIGURE docker stop: drained in {stop_s:.2f} s (budget {DRAIN_BUDGET_S} s), exit {state['ExitCode']}")
        assert errors[:1] == ["draining"] and transcript.close_code == 1001, (errors, transcript.close_code)
        assert state["ExitCode"] == 0 and not state["OOMKilled"], state
        # The budget, then up to CLIENT_SEND_TIMEOUT_S of goodbyes and uvicorn's shutdown: never the 30 s kill.
        assert DRAIN_BUDGET_S - 0.5 <= stop_s < DRAIN_BUDGET_S + CLIENT_SEND_TIMEOUT_S + 5


async def stream_in_real_time(ws: ClientConnection) -> None:
    audio = dtmf_audio(["1"] * 40)
    for offset in range(0, len(audio), 1280):
        await ws.send(audio[offset : offset + 1280])
        await asyncio.sleep(0.04)


# --- docker-compose.yml's topology ------------------------------------------------------------------


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} (the defaults: no .env) and $$ (a literal $)."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", value).replace("$$", "$")


def compose_run_args(service: dict[str, Any], alias: str, net: str, image: str) -> list[str]:
    """``docker run`` arguments for one compose service: environment, command, entrypoint, volumes
    and the same lock-down (read-only root, tmpfs, capabilities, no-new-privileges)."""
    args = ["--network", net, "--network-alias", alias]
    for key, value in service.get("environment", {}).items():
        args += ["-e", f"{key}={interpolate(str(value))}"]
    if service.get("read_only"):
        args.append("--read-only")
    for option, key in (("--tmpfs", "tmpfs"), ("--cap-drop", "cap_drop"), ("--security-opt", "security_opt")):
        for value in service.get(key, []):
            args += [option, value]
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        args += ["-v", ":".join([str((ROOT / source).resolve()), target, *mode])]
    if "stop_grace_period" in service:
        args += ["--stop-timeout", str(int(float(service["stop_grace_period"].removesuffix("s"))))]
    command = [interpolate(str(part)) for part in service.get("command", [])]
    if "entrypoint" in service:
        executable, *leading = service["entrypoint"]
        args += ["--entrypoint", executable]
        command = leading + command
    return [*args, image, *command]


async def test_compose_topology_passes_a_session_through_nginx_while_one_replica_is_stopped(
    images: None, timings: Timings
) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services: dict[str, Any] = compose["services"]
    assert set(services) == {"simulator", "gateway-1", "gateway-2", "nginx"}
    with ExitStack() as stack:
        with timings.step("compose topology up"):
            net = stack.enter_context(network())
            names: dict[str, str] = {}
            for service in ("simulator", "gateway-1", "gateway-2", "nginx"):
                image = NGINX_IMAGE if service == "nginx" else IMAGE
                publish = ["-p", "127.0.0.1::8080"] if service != "simulator" else []
                args = compose_run_args(services[service], service, net, image)
                names[service] = stack.enter_context(container(*publish, *args))
            ports = {service: published_port(names[service]) for service in ("gateway-1", "gateway-2", "nginx")}
            for service, port in ports.items():
                await wait_healthz(f"http://127.0.0.1:{port}", names[service])
        lb = f"ws://127.0.0.1:{ports['nginx']}/v1/stream"
        with timings.step("sessions through nginx"):
            both = await asyncio.gather(*(stream_digits(lb, GROUPS) for _ in range(2)))
        assert both == [(GROUPS, 1000)] * 2

        with timings.step("replica stopped (drain)"):
            docker("stop", "-t", "50", names["gateway-1"], timeout=90)
        with timings.step("sessions with one replica"):
            after = [await stream_digits(lb, GROUPS) for _ in range(3)]
        assert after == [(GROUPS, 1000)] * 3, "nginx must send every session to the replica still running"
        served = [logs(names[replica]).count('"msg": "session started"') for replica in ("gateway-1", "gateway-2")]
        print(f"FIGURE compose topology: sessions served by gateway-1/gateway-2: {served[0]}/{served[1]}")
        assert served[1] >= 3 and sum(served) == 5, "the sessions after the stop were served by gateway-2"
