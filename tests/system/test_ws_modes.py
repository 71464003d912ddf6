"""Every WebSocket test runs with the fast path on and off (issue 18; tests/support/ws_mode.py): the
mode reaches in-process gateways and gateway processes, both ids exist, and no module that uses a
WebSocket client is left out."""

from __future__ import annotations

import ast
import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gateway.connections.pongs import BoundedControlProtocol
from gateway.server import websocket_protocol
from gateway.simulator.server import DataflowSimulator
from gateway.ws_protocol import FastReceiveProtocol
from tests.support import ws_mode
from tests.support.gateway_process import gateway_process, upstream_env
from tests.support.harness import RunningGateway, next_message, read_all, ws_connect
from tests.support.lb_stack import metric, metric_values
from tests.support.native_client import start_message

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
FRAMES = 25  # 0.5 s of 20 ms 16 kHz pcm16 frames


async def stream_silence(url: str) -> int | None:
    """One short native session, paced like a client: the audio is what the fast path takes."""
    async with ws_connect(url) as ws:
        await ws.send(start_message())
        await next_message(ws, "started")
        for _ in range(FRAMES):
            await ws.send(bytes(640))
            await asyncio.sleep(0.004)
        await ws.send(json.dumps({"type": "finalize"}))
        return (await read_all(ws)).close_code


@pytest.mark.ws
async def test_the_mode_reaches_in_process_gateways_and_gateway_processes(
    gw: RunningGateway, simulator: DataflowSimulator, tmp_path: Path, ws_mode_env: str, request: pytest.FixtureRequest
) -> None:
    fast = ws_mode_env == ws_mode.FAST
    assert request.node.callspec.id.startswith(ws_mode_env)
    # In-process: the settings, the protocol uvicorn runs, and which path the frames took.
    assert gw.gateway.settings.ws_fast_path is fast
    protocol = FastReceiveProtocol if fast else BoundedControlProtocol
    for runs in (websocket_protocol(gw.gateway.settings), gw.server.config.ws):
        assert isinstance(runs, type) and runs.__mro__[1] is protocol  # paced by GATEWAY_WS_FRAMES_PER_S
    assert await stream_silence(gw.ws_url()) == 1000
    registry = gw.gateway.metrics.registry
    async with asyncio.timeout(5):  # counted when the connection ends, just after the client saw the close
        while not registry.get_sample_value("dataflow_gateway_ws_messages_total", {"path": "queued"}):
            await asyncio.sleep(0.01)
    fast_frames = registry.get_sample_value("dataflow_gateway_ws_messages_total", {"path": "fast"}) or 0.0
    assert (fast_frames > 0) is fast, fast_frames

    # A gateway process: its environment, and the same path for its frames.
    async with gateway_process(tmp_path, upstream_env(simulator)) as process:
        environ = Path(f"/proc/{process.process.pid}/environ").read_bytes().split(b"\0")
        assert f"{ws_mode.ENV}={ws_mode.MODES[ws_mode_env]}".encode() in environ
        assert await stream_silence(process.ws_url()) == 1000
        async with httpx.AsyncClient() as http, asyncio.timeout(5):
            while True:
                values = metric_values((await http.get(f"{process.http_url}/metrics")).text)
                if metric(values, "dataflow_gateway_ws_messages_total", path="queued"):
                    break
                await asyncio.sleep(0.05)
        process_fast = metric(values, "dataflow_gateway_ws_messages_total", path="fast")
        assert (process_fast > 0) is fast, process_fast


def test_a_ws_test_is_collected_once_per_mode_and_other_tests_once() -> None:
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "tests/system/test_ws_modes.py", "tests/adapters/test_fast_path.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    ids = set(re.findall(r"^(tests/\S+::\S+)$", collected.stdout, re.M))
    proof = "tests/system/test_ws_modes.py::test_the_mode_reaches_in_process_gateways_and_gateway_processes"
    paced = "tests/adapters/test_fast_path.py::test_paced_audio_takes_the_fast_path_and_every_digit_comes_back"
    for test in (proof, paced):
        assert {f"{test}[{mode}]" for mode in ws_mode.MODES} <= ids, sorted(ids)
    this = "tests/system/test_ws_modes.py::test_a_ws_test_is_collected_once_per_mode_and_other_tests_once"
    assert this in ids and not any(i.startswith(f"{this}[") for i in ids)
    unit = "tests/adapters/test_fast_path.py::test_binary_dialects_fast_audio_is_streaming_for_binary_frames"
    assert unit in ids


#: What makes a test module a WebSocket user: the websockets package, the suite's WebSocket clients and
#: what drives one (the benchmark's load), or a gateway behind a load balancer or in a container. A
#: browser's WebSockets reach an in-process gateway, whose upgrades the run-time check counts.
WS_MODULES = ("websockets", "tests.support.raw_ws", "tests.support.audiohook_client", "tests.support.lb_stack",
              "tests.support.containers", "tests.perf")  # fmt: skip
WS_NAMES = {"ws_connect", "dtmf_session", "send_audio", "dtmf_round_trip", "stream_digits"}
WS_TEXT = ("tests/perf/bench.py", "tests.perf.bench")


def uses_websockets(tree: ast.Module, source: str) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(alias.name.startswith(WS_MODULES) for alias in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module.startswith(WS_MODULES) or any(alias.name in WS_NAMES for alias in node.names):
                return True
            if node.module == "tests.support" and any(a.name in ("raw_ws", "audiohook_client") for a in node.names):
                return True
    return any(text in source for text in WS_TEXT)


def ws_marked(tree: ast.Module) -> bool:
    """A ``ws`` mark in the module's pytestmark or on one of its tests or classes. Which tests of a
    partly marked module open WebSockets is checked when they run (conftest's
    ``only_ws_tests_open_websockets``)."""
    return any(
        isinstance(node, ast.Attribute) and node.attr == ws_mode.MARKER
        and isinstance(node.value, ast.Attribute) and node.value.attr == "mark"
        for node in ast.walk(tree)
    )  # fmt: skip


def test_every_module_using_a_websocket_client_runs_in_both_modes() -> None:
    users = []
    unmarked = []
    for path in sorted(TESTS.rglob("test_*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        if uses_websockets(tree, source):
            users.append(path.name)
            if not ws_marked(tree):
                unmarked.append(str(path.relative_to(ROOT)))
    assert not unmarked, f"modules that use a WebSocket client but have no pytest.mark.ws test: {unmarked}"
    # The detection itself still sees the suite's WebSocket modules.
    assert {"test_native_stream.py", "test_abuse.py", "test_bench_smoke.py", "test_faults.py"} <= set(users)
    assert {"test_soak.py", "test_container.py", "test_load_balancer.py", "test_audiohook.py"} <= set(users)


GUARDED = """
import pytest
from websockets.client import ClientProtocol
from websockets.uri import parse_uri


def test_unmarked_handshake():
    ClientProtocol(parse_uri("ws://127.0.0.1:1/"))


@pytest.mark.ws
def test_marked_handshake():
    ClientProtocol(parse_uri("ws://127.0.0.1:1/"))


def test_no_handshake():
    pass
"""


def test_an_unmarked_test_that_opens_a_websocket_fails(tmp_path: Path) -> None:
    """The run-time half of the check: every client handshake and every upgrade an in-process gateway
    sees is counted (tests/support/ws_mode.py), and conftest fails an unmarked test that moved the count."""
    (tmp_path / "test_guarded.py").write_text(GUARDED)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-v", "--rootdir",
         str(tmp_path), "-c", str(ROOT / "pyproject.toml"), str(tmp_path / "test_guarded.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    out = run.stdout
    assert run.returncode == 1, out[-3000:] + run.stderr[-3000:]
    assert "test_unmarked_handshake PASSED" in out and "test_unmarked_handshake ERROR" in out, out[-3000:]
    assert "opened a WebSocket but is not marked 'ws'" in out, out[-3000:]
    for mode in ws_mode.MODES:
        assert f"test_marked_handshake[{mode}] PASSED" in out, out[-3000:]
    assert "test_no_handshake PASSED" in out and "test_no_handshake[" not in out, out[-3000:]
    assert "1 error" in out.splitlines()[-1], out[-500:]
