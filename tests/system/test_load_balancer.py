"""Two gateway replicas behind a real nginx (the compose config), one of them drained mid-stream.

40 live sessions stream DTMF audio in real time through nginx. Replica A gets SIGTERM: every one
of its sessions is told (error ``draining``); half of them finish their current utterance and
finalize (all milestones, close 1000, within the budget), the other half keep streaming and are
closed with ``going_away`` + 1001 when the budget ends. Sessions on replica B never notice.

New sessions while A drains: A answers their handshakes with 503 ``going_away`` before accepting
them (``GATEWAY_WS_DRAIN_REFUSES_HANDSHAKE``, as in docker-compose.yml), and nginx
(``proxy_next_upstream http_503``) retries each on B: no client sees a refusal. After A has exited,
its port refuses connections: nginx retries a new session that meets it on B
(``proxy_next_upstream error``), and its passive health check (``max_fails``/``fail_timeout``) then
skips A. No new session is refused. Both replicas' /metrics must account for every session and every
refused handshake.

The other tests: a rolling restart (A restarted and ready, B drained at once) refuses no new
session; nginx passes the client's Host with its port, and request heads as large as the gateway
takes, and answers one too large for it in the gateway's error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.server import uvicorn_config
from tests.support import signals
from tests.support.harness import Transcript, read_all, ws_connect
from tests.support.lb_stack import (
    NGINX_TEMPLATE,
    Stack,
    metric,
    nginx_binary,
    nginx_command,
    nginx_config,
    retried_handshakes,
    scrape,
    wait_http_ok,
)
from tests.support.lb_stack import free_port as _free_port
from tests.support.settings import offline_settings

SIMULATOR_TOKEN = "lb-test-simulator-token"
NO_REPLICA = "no gateway replica can take this request now"  # the template's @no_replica answer

RATE = 16000
FRAME_BYTES = RATE * 2 * 40 // 1000  # 40 ms of pcm16
BUDGET_S = 4.0
SESSIONS = 40
KEYS = "0123456789*#"
STARTED = "dataflow_gateway_sessions_started_total"
ENDED = "dataflow_gateway_sessions_ended_total"
ACTIVE = "dataflow_gateway_sessions_active"
DENIED = "dataflow_gateway_denials_total"

pytestmark = [pytest.mark.needs_binary, pytest.mark.timeout(90)]


def session_audio(index: int, groups: int) -> tuple[list[str], bytes, list[int]]:
    """Digit groups, their pcm16 audio, and the byte offset where each group's utterance ends."""
    digits = [KEYS[(index * 3 + g) % 12] + KEYS[(index * 3 + g + 5) % 12] for g in range(groups)]
    parts = [signals.silence(300, RATE)]
    for group in digits:
        parts += [signals.dtmf(group, RATE), signals.silence(900, RATE)]
    ends = list(itertools.accumulate(len(p) * 2 for p in parts))[2::2]
    return digits, signals.to_pcm16(np.concatenate(parts)), ends


@dataclass
class Client:
    """One client session through nginx and what it saw."""

    index: int
    groups: int = 5
    role: str = "plain"  # plain | wrap_up | linger
    digits: list[str] = field(default_factory=list)
    sent_groups: int = 0
    transcript: Transcript = field(default_factory=Transcript)
    refusals: list[Transcript] = field(default_factory=list)
    closed_at: float = 0.0

    async def connect(self, url: str) -> ClientConnection | None:
        """Open and start a session; None (refusal recorded) when the replica sends going_away."""
        ws = await ws_connect(url)
        audio = {"encoding": "pcm16", "sampleRate": RATE, "channels": 1}
        try:
            await ws.send(json.dumps({"type": "start", "project": "demo", "audio": audio}))
            async with asyncio.timeout(10):
                while True:
                    message = json.loads(await ws.recv())
                    self.transcript.messages.append(message)
                    if message["type"] == "started":
                        return ws
                    if message["type"] == "error":
                        break
        except ConnectionClosed:
            pass
        refusal = await read_all(ws, self.transcript)
        self.refusals.append(refusal)
        self.transcript = Transcript()
        return None

    async def stream(self, ws: ClientConnection, *, paced: bool, on_notice: itertools.count[int] | None) -> None:
        """Send the audio (real time if ``paced``), then finalize; read everything until the close."""
        self.digits, pcm, ends = session_audio(self.index, self.groups)
        notice = asyncio.Event()
        reader = asyncio.create_task(self._read(ws, notice))
        began = time.monotonic()
        offset = 0
        try:
            while offset < len(pcm) or self.role == "linger":
                if notice.is_set() and self.role == "plain" and on_notice is not None:
                    self.role = "wrap_up" if next(on_notice) % 2 == 0 else "linger"
                    if self.role == "wrap_up":  # finish the current utterance at once, then finalize
                        end = next(e for e in ends if e >= offset)
                        await ws.send(pcm[offset:end])
                        offset = end
                        break
                frame = pcm[offset : offset + FRAME_BYTES] or bytes(FRAME_BYTES)  # lingering: silence
                await ws.send(frame)
                offset += FRAME_BYTES
                if paced:
                    await asyncio.sleep(max(0.0, began + offset / (RATE * 2) - time.monotonic()))
            self.sent_groups = sum(1 for e in ends if e <= offset)
            await ws.send(json.dumps({"type": "finalize"}))
        except ConnectionClosed:
            pass
        await reader
        self.closed_at = time.monotonic()

    async def _read(self, ws: ClientConnection, notice: asyncio.Event) -> None:
        try:
            async for frame in ws:
                message = json.loads(frame)
                self.transcript.messages.append(message)
                if message.get("type") == "error" and message["code"] == "draining":
                    notice.set()
        except ConnectionClosed:
            pass
        await ws.wait_closed()
        self.transcript.close_code = ws.close_code


async def run_new_session(client: Client, url: str) -> bool:
    """A short new session (audio as fast as flow control allows); False if it was refused."""
    ws = await client.connect(url)
    if ws is None:
        return False
    await client.stream(ws, paced=False, on_notice=None)
    return True


def assert_finished(client: Client, errors: list[str]) -> None:
    t = client.transcript
    assert t.close_code == 1000, (client.index, client.role, t.messages[-3:])
    assert t.errors() == errors, (client.index, client.role)
    assert t.of_type("closed")[-1]["reason"] == "finalized"
    assert t.milestones() == client.digits[: client.sent_groups], (client.index, client.role)


async def test_nginx_accepts_the_rendered_config(tmp_path: Path) -> None:
    nginx = nginx_binary()
    config = nginx_config(tmp_path, _free_port(), [_free_port(), _free_port()])
    checked = subprocess.run(nginx_command(nginx, config, "-t"), capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr


def test_nginx_keeps_within_the_gateways_http_limits() -> None:
    """nginx closes an idle pooled connection to a replica before the gateway does (uvicorn's
    keep-alive): a request sent on one the gateway is closing would get 502, and a POST no retry. And
    one header line as large as the gateway's whole head limit fits nginx's buffer."""
    template = NGINX_TEMPLATE.read_text()
    upstream = template[template.index("upstream dataflow_gateway {") :]
    upstream = upstream[: upstream.index("\n}")]
    idle = re.search(r"^\s*keepalive_timeout (\d+)s;", upstream, re.MULTILINE)
    assert idle is not None, "the upstream block sets no keepalive_timeout (nginx's default: 60 s)"
    settings = offline_settings()
    assert int(idle.group(1)) < uvicorn_config(settings).timeout_keep_alive
    buffers = re.search(r"^\s*large_client_header_buffers (\d+) (\d+)k;", template, re.MULTILINE)
    assert buffers is not None
    assert int(buffers.group(2)) * 1024 >= settings.max_request_head_bytes


@dataclass
class SettingsStack(Stack):
    """A Stack whose gateways get ``settings`` (GATEWAY_* values) on top of lb_stack's."""

    settings: dict[str, str] = field(default_factory=dict)
    simulator_port: int = 0

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        if env is not None and name.startswith("gateway"):
            env = {**env, **self.settings}
        return super().start(name, command, env)


@contextlib.asynccontextmanager
async def two_replicas(
    tmp_path: Path, drain_budget_s: float, **settings: str
) -> AsyncIterator[tuple[SettingsStack, int, int, int]]:
    """The simulator, replicas A and B and nginx in front of them, all ready: (stack, nginx, A, B ports).
    ``settings``: GATEWAY_* values for both replicas; ``{lb_port}`` in one becomes nginx's port."""
    nginx = nginx_binary()
    token = SIMULATOR_TOKEN
    sim_port, port_a, port_b, lb_port = (_free_port() for _ in range(4))
    values = {name: value.replace("{lb_port}", str(lb_port)) for name, value in settings.items()}
    stack = SettingsStack(tmp_path, settings=values, simulator_port=sim_port)
    try:
        stack.start_simulator(sim_port, token)
        stack.start_gateway("gateway-a", port_a, sim_port, token, drain_budget_s)
        stack.start_gateway("gateway-b", port_b, sim_port, token, drain_budget_s)
        config = nginx_config(tmp_path, lb_port, [port_a, port_b])
        stack.start("nginx", nginx_command(nginx, config, "-g", "daemon off;"))
        for name, port in (("gateway-a", port_a), ("gateway-b", port_b)):
            await wait_http_ok(f"http://127.0.0.1:{port}/readyz", stack.processes[name])
        await wait_http_ok(f"http://127.0.0.1:{lb_port}/healthz", stack.processes["nginx"])
        yield stack, lb_port, port_a, port_b
    finally:
        stack.close()


@pytest.mark.ws
async def test_drain_one_replica_behind_nginx(tmp_path: Path) -> None:
    async with two_replicas(tmp_path, BUDGET_S) as (stack, lb_port, port_a, port_b):
        await check_stack(stack, lb_port, port_a, port_b)


async def check_stack(stack: Stack, lb_port: int, port_a: int, port_b: int) -> None:
    url = f"ws://127.0.0.1:{lb_port}/v1/stream"
    async with httpx.AsyncClient() as http:  # the operator endpoints are not reachable through the LB
        assert (await http.post(f"http://127.0.0.1:{lb_port}/internal/drain")).status_code == 404
        assert (await http.get(f"http://127.0.0.1:{lb_port}/metrics")).status_code == 404
        assert (await http.get(f"http://127.0.0.1:{lb_port}/readyz")).status_code == 404  # as the ingress keeps it

    # 40 live sessions, spread over both replicas.
    clients = [Client(i) for i in range(SESSIONS)]
    sockets = await asyncio.gather(*(c.connect(url) for c in clients))
    assert all(ws is not None for ws in sockets), "a session was refused before any drain"
    notices = itertools.count()
    streams = [
        asyncio.create_task(c.stream(ws, paced=True, on_notice=notices))  # type: ignore[arg-type]
        for c, ws in zip(clients, sockets, strict=True)
    ]
    await asyncio.sleep(1.5)
    before_a, before_b = await scrape(port_a), await scrape(port_b)
    started_a, started_b = metric(before_a, STARTED, dialect="native"), metric(before_b, STARTED, dialect="native")
    assert started_a + started_b == SESSIONS
    assert min(started_a, started_b) >= SESSIONS // 4, (started_a, started_b)

    # Drain replica A mid-stream.
    gateway_a = stack.processes["gateway-a"]
    gateway_a.send_signal(signal.SIGTERM)
    drain_began = time.monotonic()
    async with httpx.AsyncClient() as http:
        while (await http.get(f"http://127.0.0.1:{port_a}/readyz")).status_code == 200:
            await asyncio.sleep(0.02)
    # New sessions while A drains: A refuses their handshakes with 503, and nginx retries each on B.
    probes = [Client(100 + i, groups=2) for i in range(6)]
    landed = await asyncio.gather(*(p.connect(url) for p in probes))
    assert all(ws is not None for ws in landed), [p.refusals for p in probes]
    probe_streams = [asyncio.create_task(p.stream(ws, paced=False, on_notice=None))  # type: ignore[arg-type]
                     for p, ws in zip(probes, landed, strict=True)]  # fmt: skip

    # Every session on A was told; the wrap-up half finishes within the budget. A still answers
    # /metrics (readiness is 503), and accounts for each of its sessions and refusals.
    async with asyncio.timeout(2):  # each writer picks its role at its next frame
        while sum(c.role != "plain" for c in clients) < started_a:
            await asyncio.sleep(0.02)
    on_a = [c for c in clients if c.role != "plain"]
    wrap_ups = [c for c in on_a if c.role == "wrap_up"]
    lingering = [c for c in on_a if c.role == "linger"]
    async with asyncio.timeout(BUDGET_S):
        await asyncio.gather(*(t for c, t in zip(clients, streams, strict=True) if c.role == "wrap_up"))
    during = await scrape(port_a)
    assert time.monotonic() - drain_began < BUDGET_S, "too slow to observe the drain within its budget"
    assert len(on_a) == started_a
    assert metric(during, STARTED, dialect="native") == started_a
    assert metric(during, ENDED, dialect="native", outcome="finalized") == len(wrap_ups)
    assert metric(during, ACTIVE, dialect="native") == len(lingering)
    retried = metric(during, DENIED, reason="going_away")  # handshakes A refused; nginx sent each to B
    assert metric(during, "dataflow_gateway_draining") == 1
    for client in wrap_ups:
        assert_finished(client, ["draining"])
        assert client.closed_at - drain_began < BUDGET_S

    # The budget ends: the rest are told to go away, then A exits.
    assert await asyncio.to_thread(gateway_a.wait, BUDGET_S + 10) == -signal.SIGTERM
    await asyncio.gather(*(t for c, t in zip(clients, streams, strict=True) if c.role == "linger"))
    for client in lingering:
        t = client.transcript
        assert t.errors() == ["draining", "going_away"], client.index
        assert t.of_type("closed")[-1]["reason"] == "going_away"
        assert t.close_code == 1001
        assert client.digits[: len(t.milestones())] == t.milestones()
        assert BUDGET_S - 0.5 < client.closed_at - drain_began < BUDGET_S + 1.5

    # A is gone: new sessions all land on B (one that meets A's closed port is retried there).
    late = [Client(200 + i, groups=2) for i in range(10)]
    served = await asyncio.gather(*(run_new_session(c, url) for c in late))
    assert all(served), "a new session was refused after the drained replica exited"
    await asyncio.gather(*streams, *probe_streams)
    for client in [c for c in clients if c.role == "plain"]:
        assert_finished(client, [])
        assert client.sent_groups == client.groups
    for client in [*probes, *late]:
        assert_finished(client, [])

    after_b = await scrape(port_b)
    new_sessions = len(probes) + len(late)
    assert metric(after_b, STARTED, dialect="native") == started_b + new_sessions
    assert metric(after_b, ENDED, dialect="native", outcome="finalized") == started_b + new_sessions
    assert metric(after_b, ACTIVE, dialect="native") == 0
    assert metric(after_b, DENIED, reason="going_away") == 0
    assert retried_handshakes(stack.workdir) == retried
    assert "Traceback" not in stack.log("gateway-a") + stack.log("gateway-b")


@pytest.mark.ws
async def test_nginx_retries_a_draining_replicas_handshakes_on_the_other(tmp_path: Path) -> None:
    """A drains with no session: nginx's least_conn can put at most one of two open sessions on B
    before it tries A, so A refuses at least one handshake (503) and nginx serves it from B. With
    both draining, a client gets 503 ``going_away`` in the gateway's error shape, whether the answer
    is B's own or nginx's (no live replica: its error_page)."""
    async with two_replicas(tmp_path, 10.0) as (_, lb_port, port_a, port_b):
        url = f"ws://127.0.0.1:{lb_port}/v1/stream"
        async with httpx.AsyncClient() as http:
            assert (await http.post(f"http://127.0.0.1:{port_a}/internal/drain")).status_code == 202
        sessions = [await Client(i).connect(url) for i in range(2)]  # one after the other, both kept open
        assert all(ws is not None for ws in sessions)
        on_a, on_b = await scrape(port_a), await scrape(port_b)
        assert metric(on_a, STARTED, dialect="native") == 0
        assert metric(on_b, STARTED, dialect="native") == 2
        retried = metric(on_a, DENIED, reason="going_away")
        assert retried >= 1

        async with httpx.AsyncClient() as http:
            assert (await http.post(f"http://127.0.0.1:{port_b}/internal/drain")).status_code == 202
        for _ in range(2):
            with pytest.raises(InvalidStatus) as refused:
                await ws_connect(url)
            response = refused.value.response
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "1"
            assert json.loads(response.body)["error"]["code"] == "going_away"
        for ws in sessions:
            await ws.close()  # type: ignore[union-attr]
        async with asyncio.timeout(5):
            while retried_handshakes(tmp_path) < retried:  # logged as each session ends
                await asyncio.sleep(0.05)
        assert retried_handshakes(tmp_path) == retried


async def short_session(url: str) -> str:
    """Open a session, start it and finalize at once: "started", or how it was refused."""
    try:
        async with ws_connect(url) as ws:
            audio = {"encoding": "pcm16", "sampleRate": RATE, "channels": 1}
            await ws.send(json.dumps({"type": "start", "project": "demo", "audio": audio}))
            async with asyncio.timeout(10):
                message = json.loads(await ws.recv())
                if message["type"] != "started":
                    return f"{message['type']} {message.get('code')}"
                await ws.send(json.dumps({"type": "finalize"}))
                async for _ in ws:
                    pass
            return "started"
    except InvalidStatus as exc:
        return f"HTTP {exc.response.status_code} {bytes(exc.response.body)[:120]!r}"
    except ConnectionClosed as exc:
        return f"closed {exc}"


@pytest.mark.ws
async def test_rolling_restart_behind_nginx_refuses_no_session(tmp_path: Path) -> None:
    """A rolling restart as an operator scripts it: restart A, wait for its /readyz 200, drain B at
    once. nginx marked A failed while it was down (its closed port) and marks B at its first draining
    503: with only ``max_fails``/``fail_timeout`` it had "no live upstreams" until A's mark expired
    and answered @no_replica's 503 to the new sessions for seconds (37 here), although A was ready.
    A new session every 0.1 s through nginx, from A's SIGTERM until 1.5 s after B has exited: every
    one starts."""
    async with two_replicas(tmp_path, 2.0) as (stack, lb_port, port_a, port_b):
        url = f"ws://127.0.0.1:{lb_port}/v1/stream"
        # B drains for its whole budget: it holds a session (opened on B directly) that never ends.
        holder = Client(300, role="linger")
        held = await holder.connect(f"ws://127.0.0.1:{port_b}/v1/stream")
        assert held is not None
        holding = asyncio.create_task(holder.stream(held, paced=True, on_notice=None))

        began = time.monotonic()
        outcomes: list[tuple[float, str]] = []
        stop = asyncio.Event()

        async def one(at: float) -> None:
            outcomes.append((at, await short_session(url)))

        async def new_sessions() -> None:
            tasks = []
            while not stop.is_set():
                tasks.append(asyncio.create_task(one(time.monotonic() - began)))
                await asyncio.sleep(0.1)
            await asyncio.gather(*tasks)

        load = asyncio.create_task(new_sessions())
        gateway_a = stack.processes["gateway-a"]
        gateway_a.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(gateway_a.wait, 10) == -signal.SIGTERM
        await asyncio.sleep(0.5)  # new sessions meet A's closed port (nginx marks A failed)
        stack.start_gateway("gateway-a-again", port_a, stack.simulator_port, SIMULATOR_TOKEN, 2.0)
        await wait_http_ok(f"http://127.0.0.1:{port_a}/readyz", stack.processes["gateway-a-again"])
        gateway_b = stack.processes["gateway-b"]
        gateway_b.send_signal(signal.SIGTERM)  # at once: A is ready
        b_drains = time.monotonic() - began
        assert await asyncio.to_thread(gateway_b.wait, 10) == -signal.SIGTERM
        b_exited = time.monotonic() - began
        await asyncio.sleep(1.5)  # and new sessions while B's port is closed
        stop.set()
        await load
        await holding

        after = [o for at, o in outcomes if at >= b_drains]
        assert len(after) >= 20, (b_drains, b_exited, len(outcomes))  # B's drain (2 s) and 1.5 s after it
        assert [o for _, o in outcomes if NO_REPLICA in o] == []
        assert [(round(at, 1), o) for at, o in outcomes if o != "started"] == [], (b_drains, b_exited)
        assert holder.transcript.errors() == ["draining", "going_away"]


@pytest.mark.ws
async def test_nginx_passes_the_host_with_its_port(tmp_path: Path) -> None:
    """The gateway compares the Host it is given with GATEWAY_PUBLIC_HOSTS (host or host:port), a
    same-origin page's Origin, Twilio's signed URL and AudioHook's @authority: nginx must pass it as the
    client sent it. ``proxy_set_header Host $host`` dropped the port: "gw.example.test:<port>" was
    refused 400 invalid_host behind nginx."""
    public = '["gw.example.test:{lb_port}"]'
    async with two_replicas(tmp_path, 2.0, GATEWAY_PUBLIC_HOSTS=public) as (_, lb_port, _a, _b):
        async with ws_connect(f"ws://gw.example.test:{lb_port}/v1/stream", host="127.0.0.1", port=lb_port) as ws:
            assert ws.response.status_code == 101
        # The port is compared: another one is not this gateway's.
        with pytest.raises(InvalidStatus) as refused:
            await ws_connect(f"ws://gw.example.test:{lb_port + 1}/v1/stream", host="127.0.0.1", port=lb_port)
        assert refused.value.response.status_code == 400
        assert json.loads(refused.value.response.body)["error"]["code"] == "invalid_host"


@pytest.mark.ws
async def test_nginx_takes_the_request_heads_the_gateway_takes(tmp_path: Path) -> None:
    """nginx's default header buffers (4 8k) refused a header line over 8 KiB with its own HTML 400;
    the gateway takes heads up to GATEWAY_MAX_REQUEST_HEAD_BYTES (16 KiB). A 9 KiB Cookie passes; a
    20 KiB one, or a 20 KiB request line, gets 431 request_head_too_large in the gateway's error shape,
    whether nginx answers (a line over its buffer) or the gateway (a head over its limit, in lines
    nginx takes)."""
    async with two_replicas(tmp_path, 2.0) as (_, lb_port, _a, _b):
        base = f"127.0.0.1:{lb_port}"
        cookie_9k = {"Cookie": "sso=" + "c" * 9 * 1024}
        cookie_20k = {"Cookie": "sso=" + "c" * 20 * 1024}
        three_lines_7k = {f"X-Big-{i}": "h" * 7 * 1024 for i in range(3)}
        async with httpx.AsyncClient(timeout=10) as http:
            passed = await http.get(f"http://{base}/healthz", headers=cookie_9k)
            assert passed.status_code == 200, passed.text[:200]
            assert passed.headers["content-type"].startswith("application/json")
            long_target = "/healthz?pad=" + "p" * 20 * 1024  # nginx: a request line over its buffer (414)
            for target, headers in (("/healthz", cookie_20k), ("/healthz", three_lines_7k), (long_target, {})):
                refused = await http.get(f"http://{base}{target}", headers=headers)
                assert refused.status_code == 431, refused.text[:200]
                assert refused.headers["content-type"].startswith("application/json")
                assert refused.json()["error"]["code"] == "request_head_too_large"
                assert refused.json()["error"]["retryable"] is False
        async with ws_connect(f"ws://{base}/v1/stream", additional_headers=cookie_9k) as ws:
            assert ws.response.status_code == 101
        with pytest.raises(InvalidStatus) as too_large:
            await ws_connect(f"ws://{base}/v1/stream", additional_headers=cookie_20k)
        assert too_large.value.response.status_code == 431
        assert json.loads(too_large.value.response.body)["error"]["code"] == "request_head_too_large"
