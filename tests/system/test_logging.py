"""Logs of a real gateway process: every stderr line JSON with structured access lines, and no
credential in any line at debug level, whatever request carried it and whichever way it failed."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from gateway.auth import MAX_PROJECT_CHARS, key_digest
from gateway.logs.config import resolve_format
from gateway.logs.filters import Redactor
from gateway.logs.formats import MAX_TRACEBACK_CHARS, JsonFormatter, TextFormatter
from gateway.logs.redact import MASK, MAX_FIELD_CHARS
from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from tests.support import signals, telephony
from tests.support.audiohook_client import sign, upgrade_headers
from tests.support.cli_process import run_cli
from tests.support.gateway_process import GatewayProcess, gateway_process, upstream_env
from tests.support.harness import Transcript, next_message, read_all, running_gateway, ws_connect
from tests.support.native_client import start_message
from tests.support.settings import SECRETS, SIM_TENANT, SIM_TOKEN, settings_for

KEY = "dfg_logsweep_5e4d3c2b1a0f9e8d7c6b"
BAD_KEY = "dfg_wrongkey_0a1b2c3d4e5f6a7b8c9d"
COOKIE = "cookie-secret-3f2e1d0c9b8a"
SIGNING_KEY = "log-sweep-signing-key-0123456789abcdef"
CUSTOM_KEY = "acme-custom-key-7Hq2pL9xW4"  # no known shape: only the gateway's reading of the URL masks it
APP_ORIGIN = "https://app.example.test"
URL_PASSWORD = "url-password-9b8a7c6d5e"
ADMIN_TOKEN_32 = "adm0123456789abcdef0123456789xyz"  # 32 characters, no credential shape
SECRETS.update({KEY, BAD_KEY, COOKIE, SIGNING_KEY, URL_PASSWORD, CUSTOM_KEY, ADMIN_TOKEN_32})
PCM = signals.to_pcm16(signals.utterances(["3"], 16000))
WAV = signals.wav_bytes(signals.utterances(["4"], 8000), 8000)


@pytest.fixture
def sim_config() -> SimulatorConfig:
    """A careless Data Flow: it quotes the gateway's token in rejections and event data."""
    return SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT, echo_token=True)


async def stream(gw: GatewayProcess, path: str = "/v1/stream", start: dict[str, Any] | None = None,
                 **connect: Any) -> Transcript:  # fmt: skip
    async with ws_connect(gw.ws_url(path), **connect) as ws:
        await ws.send(start_message(**(start or {})))
        await next_message(ws, "started")
        for offset in range(0, len(PCM), 3200):
            await ws.send(PCM[offset : offset + 3200])
        await ws.send(json.dumps({"type": "finalize"}))
        return await read_all(ws)


async def refused(gw: GatewayProcess, path: str = "/v1/stream", **connect: Any) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(gw.ws_url(path), **connect):
            pass
    return info.value.response.status_code


def not_json(lines: list[str]) -> list[str]:
    bad = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            bad.append(line)
    return bad


async def raw_handshake(gw: GatewayProcess, extra_headers: str) -> bytes:
    """A WebSocket upgrade written by hand (malformed on purpose); the status line of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(
        f"GET /v1/stream?token={KEY} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n\r\n".encode()
    )
    status = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return status


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"jambonz:{key}".encode()).decode()}


async def touch(gw: GatewayProcess, path: str, **connect: Any) -> int:
    """Open a WebSocket and close it at once: 101 if accepted, else the refusal's status."""
    try:
        async with ws_connect(gw.ws_url(path), **connect):
            return 101
    except InvalidStatus as refusal:
        return refusal.response.status_code


async def stopped(gw: GatewayProcess) -> list[dict[str, Any]]:
    """SIGTERM, wait for the exit, and every stderr line parsed as JSON (a line that is not fails)."""
    gw.process.send_signal(signal.SIGTERM)
    await asyncio.to_thread(gw.process.wait, 15)
    lines = [line for line in gw.log.read_text().splitlines() if line.strip()]
    raw = not_json(lines)
    assert not raw, f"{len(raw)} of {len(lines)} stderr lines are not JSON: {raw[:3]}"
    return [json.loads(line) for line in lines]


@pytest.mark.ws
async def test_every_stderr_line_is_json_with_structured_access_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRPC_VERBOSITY", raising=False)  # the gateway's own default for gRPC's C core
    # Simulator mode: the embedded simulator stands in for Data Flow (a real gRPC server in the process).
    env = {"GATEWAY_LOG_LEVEL": "info", "GATEWAY_LOG_FORMAT": "json"}
    async with gateway_process(tmp_path, env) as gw:
        assert (await stream(gw)).milestones() == ["3"]
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
            upload = await http.post("/v1/recognize?project=demo", content=WAV)
        assert upload.status_code == 200, upload.text
        entries = await stopped(gw)
    assert len(entries) >= 5
    access = [e for e in entries if e["logger"] == "gateway.access"]
    by_method = {e["method"]: e for e in access if e["path"].startswith(("/v1/stream", "/v1/recognize"))}
    ws, post = by_method["WS"], by_method["POST"]
    assert (ws["path"], ws["status"], ws["close_code"]) == ("/v1/stream", 101, 1000)
    assert (post["path"], post["status"]) == ("/v1/recognize?project=demo", 200)
    for entry in (ws, post):
        assert isinstance(entry["duration_ms"], float) and entry["duration_ms"] > 0
        assert len(entry["session_id"]) == 32  # the session the request started
    raw = gw.log.read_text()
    assert "color_message" not in raw and "\x1b[" not in raw
    assert not [e for e in entries if e["logger"] == "uvicorn.access"]  # replaced by gateway.access


@pytest.mark.ws
async def test_grpc_core_lines_would_break_json_and_are_quiet_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control for the test above: asked to speak, gRPC's C core writes raw lines to stderr."""
    monkeypatch.setenv("GRPC_VERBOSITY", "info")
    async with gateway_process(tmp_path, {"GATEWAY_LOG_FORMAT": "json"}) as gw:
        assert (await stream(gw)).milestones() == ["3"]
    raw = not_json([line for line in gw.log.read_text().splitlines() if line.strip()])
    assert raw, "gRPC's C core wrote nothing even at info: the JSON check above proves nothing"


@pytest.mark.ws
@pytest.mark.parametrize("ws_implementation", ["websockets-sansio", "websockets"])  # wsproto: not installed
async def test_no_credential_in_any_log_line_at_debug(
    tmp_path: Path, simulator: DataflowSimulator, ws_implementation: str
) -> None:
    env = upstream_env(simulator) | {
        "GATEWAY_WS_IMPLEMENTATION": ws_implementation,
        "GATEWAY_AUTH": "required",
        "GATEWAY_ALLOW_INSECURE_NO_AUTH": "false",
        "GATEWAY_API_KEYS": json.dumps(
            [{"name": "sweep", "sha256": key_digest(KEY)}, {"name": "custom", "sha256": key_digest(CUSTOM_KEY)}]
        ),
        "GATEWAY_TOKEN_SIGNING_KEY": SIGNING_KEY,
        "GATEWAY_ALLOWED_ORIGINS": json.dumps([APP_ORIGIN]),
        "GATEWAY_LOG_LEVEL": "debug",
        "GATEWAY_LOG_FORMAT": "json",
    }
    async with gateway_process(tmp_path, env) as gw:
        assert (await stream(gw, additional_headers={"X-API-Key": KEY, "Cookie": f"sid={COOKIE}"})).milestones()
        assert (await stream(gw, subprotocols=["dataflow-gateway.v1", f"bearer.{KEY}"])).milestones()  # type: ignore[list-item]
        assert (await stream(gw, f"/t/{KEY}/v1/stream")).milestones()
        assert (await stream(gw, f"/v1/stream?token={KEY}&api_key={BAD_KEY}")).milestones()
        assert await refused(gw, additional_headers={"X-API-Key": BAD_KEY}) == 401
        assert await refused(gw, additional_headers={"Authorization": f"Bearer {BAD_KEY}"}) == 401
        assert (await stream(gw, additional_headers={"Authorization": f"Bearer {KEY}"})).milestones()
        assert await refused(gw, subprotocols=["dataflow-gateway.v1", f"bearer.{BAD_KEY}"]) == 401  # type: ignore[list-item]
        assert await refused(gw, f"/t/{BAD_KEY}/v1/stream") == 401
        assert await refused(gw, f"/v1/stream?token={BAD_KEY}") == 401
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
            minted = await http.post("/v1/tokens", json={}, headers={"Authorization": f"Bearer {KEY}"})
            assert minted.status_code == 200, minted.text
            token = minted.json()["token"]
            SECRETS.add(token)
            assert (await stream(gw, subprotocols=["dataflow-gateway.v1", f"bearer.{token}"])).milestones()  # type: ignore[list-item]
            # The path prefix percent-encoded: the gateway reads it decoded, so the log must mask it so.
            for prefix in ("/%74/", "/t%2F", "/%74%2f"):
                for secret in (CUSTOM_KEY, token):
                    assert (await stream(gw, f"{prefix}{secret}/v1/stream")).milestones(), prefix
            ok = await http.post("/v1/recognize?project=demo", content=WAV, headers={"X-API-Key": KEY})
            assert ok.status_code == 200, ok.text
            bad = await http.post("/v1/recognize", content=WAV, headers={"Authorization": f"Bearer {BAD_KEY}"})
            assert bad.status_code == 401
            in_path = await http.post(f"/t/{KEY}/v1/recognize?api_key={KEY}", content=WAV)
            assert in_path.status_code == 200, in_path.text
            # Data Flow refuses the start and quotes the gateway's own token in its text.
            fault = json.dumps({"Settings": {"SimulatorFault": "reject_start"}})
            rejected = await http.post(
                "/v1/recognize", content=WAV, headers={"X-API-Key": KEY, "X-Dataflow-Parameters": fault}
            )
            assert rejected.status_code == 502
            garbage = await http.post("/v1/recognize", content=b"RIFF-not-audio", headers={"X-API-Key": KEY})
            assert garbage.status_code in (415, 422), garbage.text
            assert (await http.get(f"/t/{KEY}/metrics")).status_code == 404
        assert await refused(gw, origin="https://evil.example", additional_headers={"X-API-Key": KEY}) == 403
        # Every dialect's URL with the key in its path, and with a wrong one.
        for dialect in ("/v1/audiocodes", "/project-runner/demo", "/v1/audiohook", "/v1/twilio", "/v1/vonage",
                        "/v1/jambonz", "/v1/jambonz/listen"):  # fmt: skip
            assert await touch(gw, f"/t/{KEY}{dialect}") == 101
            assert await touch(gw, f"/t/{BAD_KEY}{dialect}") == 401
        # jambonz listen's wsAuth: Basic, the key as the password (base64 in the header, never in a line).
        for key, status in ((KEY, 101), (BAD_KEY, 401)):
            assert await touch(gw, "/v1/jambonz/listen", additional_headers=basic(key)) == status
        # A browser's credential in the start message (a page cannot set headers).
        assert (await stream(gw, start={"token": token}, origin=APP_ORIGIN)).milestones()
        async with ws_connect(gw.ws_url(), origin=APP_ORIGIN) as ws:
            await ws.send(start_message(token=BAD_KEY))
            assert (await read_all(ws)).errors() == ["invalid_credential"]
        # A handshake the WebSocket library cannot parse: its debug line carries the exception's text.
        assert await raw_handshake(gw, f"Sec-WebSocket-Protocol: bearer.{token},, @\r\nCookie: sid={COOKIE}")
        entries = await stopped(gw)
    raw = gw.log.read_text()
    paths = {e["path"] for e in entries if e["logger"] == "gateway.access"}
    assert {"/v1/stream?token=[redacted]&api_key=[redacted]", "/t/[redacted]/v1/stream"} <= paths
    assert any(e["msg"].endswith("bearer.[redacted]") for e in entries)  # the subprotocol, masked by entry
    assert sum(e["level"] == "debug" for e in entries) > 20  # debug really is on, uvicorn's lines included
    assert any(e["logger"] == "uvicorn.error" and e["level"] == "debug" for e in entries)
    encoded = {basic(key)["Authorization"][6:] for key in (KEY, BAD_KEY)}
    leaked = sorted(secret[:10] + "…" for secret in SECRETS | {SIM_TOKEN, token} | encoded if secret in raw)
    assert not leaked, f"secrets in the gateway's stderr at debug level: {leaked}"


TWILIO_AUTH_TOKEN = "twilio-auth-token-logsweep-4c3b2a"
AUDIOHOOK_SECRET = base64.b64encode(b"audiohook-secret-logsweep-0123456789").decode()
SECRETS.update({TWILIO_AUTH_TOKEN, AUDIOHOOK_SECRET})


@pytest.mark.ws
@pytest.mark.parametrize("ws_implementation", ["websockets-sansio", "websockets"])
async def test_no_upgrade_signature_in_any_log_line_at_debug(
    tmp_path: Path, simulator: DataflowSimulator, ws_implementation: str
) -> None:
    """At debug the WebSocket library logs every handshake header: X-Twilio-Signature (no nonce: whoever
    reads it replays the upgrade) and AudioHook's Signature must be masked like any credential (a mutant
    that dropped "signature" from the secret-header names wrote both to stderr)."""
    host = "gw.example.test"
    env = upstream_env(simulator) | {
        "GATEWAY_WS_IMPLEMENTATION": ws_implementation,
        "GATEWAY_TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN,
        "GATEWAY_AUDIOHOOK_CLIENT_SECRET": AUDIOHOOK_SECRET,
        "GATEWAY_PUBLIC_HOSTS": json.dumps([host]),
        "GATEWAY_LOG_LEVEL": "debug",
        "GATEWAY_LOG_FORMAT": "json",
    }
    twilio = telephony.twilio_signature(TWILIO_AUTH_TOKEN, f"wss://{host}/v1/twilio")
    audiohook = sign(upgrade_headers("dfg_audiohook-logsweep"), secret_b64=AUDIOHOOK_SECRET, authority=host)
    async with gateway_process(tmp_path, env) as gw:
        assert await touch(gw, "/v1/twilio", additional_headers={"X-Twilio-Signature": twilio}) == 101
        assert await touch(gw, "/v1/audiohook", additional_headers=audiohook) == 101
        entries = await stopped(gw)
    assert sum(e["level"] == "debug" for e in entries) > 5  # debug really is on
    raw = gw.log.read_text()
    signature = audiohook["Signature"].removeprefix("sig1=:").removesuffix(":")
    assert "x-twilio-signature" in raw.lower()  # the header's line is there, its value masked
    leaked = [name for name, value in (("X-Twilio-Signature", twilio), ("Signature", signature)) if value in raw]
    assert not leaked, f"upgrade signatures in the gateway's stderr at debug level: {leaked}"


@pytest.mark.ws
async def test_a_configured_secret_of_32_characters_a_client_quotes_is_masked(
    tmp_path: Path, simulator: DataflowSimulator
) -> None:
    """The process's own secrets are masked by their exact text from 6 characters on: a 32-character
    GATEWAY_ADMIN_TOKEN (no credential shape) that a client sends as its project name, logged on
    "session started" and "session ended", shows as [redacted] in every line."""
    env = upstream_env(simulator) | {
        "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN_32,
        "GATEWAY_LOG_LEVEL": "info",
        "GATEWAY_LOG_FORMAT": "json",
    }
    async with gateway_process(tmp_path, env) as gw:
        async with ws_connect(gw.ws_url()) as ws:
            await ws.send(start_message(project=ADMIN_TOKEN_32))
            await next_message(ws, "started")
            await ws.send(json.dumps({"type": "finalize"}))
            assert (await read_all(ws)).close_code == 1000
        entries = await stopped(gw)
    leaks = [line for line in gw.log.read_text().splitlines() if ADMIN_TOKEN_32 in line]
    assert not leaks, f"{len(leaks)} log lines hold the 32-character admin token, e.g. {leaks[0][:200]}"
    started = [e for e in entries if e["msg"] == "session started"]
    assert MASK in json.dumps(started), f"the project was not logged masked: {started}"


@pytest.mark.ws
async def test_long_client_strings_neither_stall_the_gateway_nor_fill_its_log(
    tmp_path: Path, simulator: DataflowSimulator
) -> None:
    """Masking ran in quadratic time: before any credential check, three handshakes with an 8 100-char
    query held the event loop for 7 s (every session on the replica stalled), and a 40 000-char word
    in a log line took 25 s. Masking is linear now, and a logged string a client chose is cut. The
    second query is for a URL's password: a scheme pattern before ``://`` (the settings report's) was
    retried from every word of ``a-a-a-…`` (0.4 s a line)."""
    env = upstream_env(simulator) | {
        "GATEWAY_AUTH": "required",
        "GATEWAY_ALLOW_INSECURE_NO_AUTH": "false",
        "GATEWAY_API_KEYS": json.dumps(
            [{"name": "sweep", "sha256": key_digest(KEY)}, {"name": "custom", "sha256": key_digest(CUSTOM_KEY)}]
        ),
        "GATEWAY_LOG_LEVEL": "info",
        "GATEWAY_LOG_FORMAT": "json",
    }
    url = f"next=https://ops:{URL_PASSWORD}@idp.example"  # logged as ops:[redacted]@idp.example
    queries = {  # query: how its logged path starts (under uvicorn's request-line limit)
        "x=" + "P" * 8100: "x=PPP",
        f"{url}&u=" + "a-" * 4050: f"next=https%3A%2F%2Fops%3A{MASK}%40idp.example&u=a-a-",
    }
    # The longest project a session may name, every char a place the old masking retried (a longer one,
    # 12 100 chars, is refused: invalid_start, unquoted).
    project = ("tokensecret" * 1100)[:MAX_PROJECT_CHARS]
    refusals_s = {}
    async with gateway_process(tmp_path, env) as gw:
        for query, shown in queries.items():
            began = time.perf_counter()
            for _ in range(3):
                assert await refused(gw, f"/v1/stream?{query}") == 401  # refused, and logged, before any key
            refusals_s[shown] = time.perf_counter() - began
        async with ws_connect(gw.ws_url(), additional_headers={"X-API-Key": KEY}) as ws:
            await ws.send(start_message(project="tokensecret" * 1100))
            refused_start = await next_message(ws, "error")
        assert refused_start["code"] == "invalid_start" and "tokensecret" not in refused_start["message"]
        async with ws_connect(gw.ws_url(), additional_headers={"X-API-Key": KEY}) as ws:
            await ws.send(start_message(project=project))
            await next_message(ws, "started")
            await ws.send(json.dumps({"type": "finalize"}))
            assert (await read_all(ws)).errors() == []
        entries = await stopped(gw)
    slow = {query: f"{took:.1f} s" for query, took in refusals_s.items() if took >= 1.5}
    assert not slow, f"three refused handshakes took that long (the masking's cost): {slow}"
    refused_paths = [e["path"] for e in entries if e["logger"] == "gateway.access" and e["status"] == 401]
    assert len(refused_paths) == 3 * len(queries)
    for path, shown in zip(refused_paths, [shown for shown in queries.values() for _ in range(3)], strict=True):
        assert path.startswith(f"/v1/stream?{shown}") and path.endswith("more]")
        assert len(path) < MAX_FIELD_CHARS + 20
    assert URL_PASSWORD not in gw.log.read_text()
    projects = [e["project"] for e in entries if e.get("msg") in ("session started", "session ended")]
    assert projects and all(p.startswith("tokensecret") and len(p) < MAX_FIELD_CHARS + 20 for p in projects)


@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_a_password_in_a_url_is_masked_in_log_lines(
    tmp_path: Path, simulator: DataflowSimulator, fmt: str
) -> None:
    """A line that prints a URL printed its user information whole: ``drain --url`` through a proxy
    that wants user:password, as an httpx or gRPC error quoting its target would. User and host stay."""
    async with running_gateway(settings_for(simulator, admin_token=SIGNING_KEY)) as gw:
        url = f"http://ops:{URL_PASSWORD}@127.0.0.1:{gw.port}"
        env = {"GATEWAY_LOG_FORMAT": fmt, "GATEWAY_ADMIN_TOKEN": "not-the-admin-token"}
        done = await asyncio.to_thread(run_cli, ["drain", "--url", url, "--no-wait"], env, tmp_path)
    assert done.returncode == 2, done.stderr
    assert URL_PASSWORD not in done.stderr
    [line] = done.stderr.splitlines()
    message = json.loads(line)["msg"] if fmt == "json" else line
    assert f"drain: the gateway at http://ops:[redacted]@127.0.0.1:{gw.port} refused to drain (HTTP 401)" in message


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
def test_a_long_line_with_a_url_password_is_masked_in_linear_time(formatter: logging.Formatter) -> None:
    """``a-a-a-…`` is a word at every dash: the settings report's pattern (a scheme before ``://``) was
    tried from each and scanned to the end: 5.5 s for these 40 000 characters."""
    proxy = f"http://ops:{URL_PASSWORD}@proxy.example:3128"
    try:
        raise httpx.ProxyError(f"no answer from {proxy}")
    except httpx.ProxyError:
        exc_info = sys.exc_info()
    words = "a-" * 20_000
    record = logging.LogRecord("gateway.upstream", logging.WARNING, __file__, 1, "%s via %s", (words, proxy), exc_info)
    began = time.perf_counter()
    assert Redactor().filter(record)
    line = formatter.format(record)
    took = time.perf_counter() - began
    assert took < 0.2, f"masking 40 000 characters took {took:.1f} s"
    assert URL_PASSWORD not in line
    assert line.count(f"http://ops:{MASK}@proxy.example:3128") == 1  # the message is cut; the traceback is not
    assert f"no answer from http://ops:{MASK}@proxy.example:3128" in line


_TRACE_PASSWORD = "trace-password-4d3c2b1a"  # not in SECRETS: the suite's raw record check would see it


def _ping(depth: int) -> None:
    """Two functions calling each other: no two frames in a row alike, so Python folds none of them."""
    if depth == 0:
        raise RuntimeError(f"refused via http://ops:{_TRACE_PASSWORD}@proxy.example:3128: " + "detail " * 4000)
    _pong(depth - 1)


def _pong(depth: int) -> None:
    _ping(depth - 1)


def _deep_bug(*_: object) -> None:
    _ping(400)


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
async def test_a_deep_traceback_is_masked_then_cut_to_its_ends(
    simulator: DataflowSimulator, monkeypatch: pytest.MonkeyPatch, formatter: logging.Formatter
) -> None:
    """A traceback was masked but never cut: 400 frames and a 28 KB message made one 50 KB line (each
    such request another). Now the start and the end (innermost frames, the exception) are kept."""
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)  # what the process's configuration builds (gateway.logs.config)
    handler.addFilter(Redactor())
    handler.setFormatter(formatter)
    logging.getLogger().addHandler(handler)
    # uvicorn's own logging configuration (run by an earlier test's uvicorn.Config) stops "uvicorn" propagating.
    monkeypatch.setattr(logging.getLogger("uvicorn"), "propagate", True)
    try:
        async with running_gateway(settings_for(simulator)) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
            monkeypatch.setattr("gateway.routes.health.upstream_status", _deep_bug)
            assert (await http.get("/healthz")).status_code == 500
    finally:
        logging.getLogger().removeHandler(handler)
    text = lines.getvalue()
    if isinstance(formatter, JsonFormatter):
        [line] = [line for line in text.splitlines() if "Exception in ASGI application" in line]
        trace = json.loads(line)["exc"]
    else:  # the line, then its traceback, up to the next line (which starts with its time)
        found = re.search(r"\S+ ERROR +uvicorn.error: Exception in ASGI application.*?\n(?=\d{4}-)", text, re.S)
        assert found, text[-2000:]
        line = found[0]
        under = line.rstrip("\n").split("\n")[1:]
        assert under and all(part.startswith("  | ") for part in under)  # each marked as the line's own
        trace = "\n".join(part[4:] for part in under) + "\n"
    assert len(line) < MAX_TRACEBACK_CHARS + 2000, len(line)
    assert _TRACE_PASSWORD not in text
    assert trace.startswith("Traceback (most recent call last):")
    marker = re.search(r"\n  \[… \d+ lines of this traceback cut here: (\d+) frames, (\d+) characters …\]\n", trace)
    assert marker and int(marker[1]) > 200 and int(marker[2]) > 20_000, trace
    assert "in _deep_bug" not in trace and trace.count("in _ping") + trace.count("in _pong") > 20  # the innermost
    assert f"RuntimeError: refused via http://ops:{MASK}@proxy.example:3128: detail detail" in trace
    assert trace.rstrip().endswith("more]")  # the message itself cut, and said so


def test_a_traceback_quoting_a_clients_newline_forges_no_text_line() -> None:
    """Text lines escaped what a client sent in the message, but a traceback was appended as it came: an
    exception quoting a client's project ("no such project: demo\n2099-… ERROR …") added a line that read as
    the log's own, and an ESC in it reached the terminal."""
    forged = "2099-01-01T00:00:00.000Z ERROR   gateway.security: admin token accepted"
    try:
        raise ValueError(f"no such project: demo\x1b[2J\u2028x\n{forged}")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("gateway.relay", logging.ERROR, __file__, 1, "start failed", (), exc_info)
    record.stack_info = f"Stack (most recent call last):\n{forged}"
    lines = TextFormatter().format(record).split("\n")
    assert lines[0].endswith("start failed") and all(line.startswith("  | ") for line in lines[1:])
    assert f"  | {forged}" in lines and not any(line.startswith(forged) for line in lines)
    assert "\x1b" not in "".join(lines) and "\u2028" not in "".join(lines) and "\\x1b[2J\\u2028x" in lines[-4]


@pytest.mark.ws
async def test_text_lines_cannot_be_forged_or_drive_the_terminal(tmp_path: Path) -> None:
    """Text format wrote a client's newline and escape sequences as they came: a project or a path
    could add a whole forged ERROR line to the log, or clear an operator's screen."""
    forged = "2099-01-01T00:00:00.000Z ERROR   gateway.security: admin token accepted"
    project = f"demo\x1b[2J\x1b]0;owned\x07\n{forged}"
    async with gateway_process(tmp_path, {"GATEWAY_LOG_LEVEL": "info", "GATEWAY_LOG_FORMAT": "text"}) as gw:
        async with ws_connect(gw.ws_url()) as ws:
            await ws.send(start_message(project=project))
            await next_message(ws, "started")
            await ws.send(json.dumps({"type": "finalize"}))
            assert (await read_all(ws)).errors() == []
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
            assert (await http.get("/nowhere%0A" + forged.replace(" ", "%20"))).status_code == 404
        gw.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(gw.process.wait, 15)
    text = gw.log.read_text()
    assert "\x1b" not in text and "\x07" not in text
    assert not [line for line in text.splitlines() if line.startswith("2099-")], "a client forged a log line"
    session_lines = [line for line in text.splitlines() if "session started" in line or "session ended" in line]
    assert len(session_lines) == 2 and all('project="demo\\u001b[2J' in line for line in session_lines)
    assert any("/nowhere\\n2099-01-01" in line for line in text.splitlines())  # the path, escaped


def test_a_terminal_gets_readable_text_without_escapes() -> None:
    primary, secondary = os.openpty()
    with os.fdopen(secondary, "w") as terminal, open(os.devnull, "w") as pipe_like:
        assert resolve_format("auto", terminal) == "text"
        assert resolve_format("auto", pipe_like) == "json"
        assert resolve_format("json", terminal) == "json"
    os.close(primary)
    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, "GET %s", ("/healthz",), None)
    record.color_message = "\x1b[1mGET\x1b[0m"
    record.status = 200
    line = TextFormatter().format(record)
    assert "GET /healthz" in line and "status=200" in line
    assert "\x1b" not in line
