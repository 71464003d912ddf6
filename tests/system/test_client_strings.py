"""Strings a client chose, in the gateway's log lines and result webhooks: whatever characters they hold,
a call still ends and its results go out, every JSON line stays one strict JSON object, a text line stays
one line that cannot drive a terminal, and a client cannot hide a field of its access line or fill the
log by repeating a message."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.simulator.server import DataflowSimulator
from tests.support import telephony
from tests.support.audiohook_client import AudioHookClient, upgrade_headers
from tests.support.gateway_process import GatewayProcess, free_port, gateway_process
from tests.support.harness import next_message, read_all, running_gateway, ws_connect
from tests.support.native_client import start_message
from tests.support.settings import SECRETS, settings_for
from tests.support.webhook_receiver import webhook_receiver

pytestmark = pytest.mark.ws

SECRET = "whsec_" + base64.b64encode(b"client-strings-webhook-secret-32").decode()
SECRETS.add(SECRET)
LONE = "\ud800"  # what JSON's "\ud800" parses to: a lone surrogate, which no UTF-8 encoder takes
#: C1 CSI, NEL, LINE SEPARATOR, RIGHT-TO-LEFT OVERRIDE: a terminal's escape, three line breaks to many
#: readers (Python's splitlines among them), and a reordering of what the reader sees.
UNSAFE = "\u009b\u0085\u2028\u202e"
FORGED = "FORGED 2099-01-01T00:00:00.000Z ERROR gateway.security: admin token accepted"


async def stopped(gw: GatewayProcess) -> str:
    gw.process.send_signal(signal.SIGTERM)
    await asyncio.to_thread(gw.process.wait, 15)
    return gw.log.read_text()


async def test_a_lone_surrogate_in_a_call_id_neither_hangs_the_call_nor_loses_its_results(
    simulator: DataflowSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Encoding the webhook raised on it in the connection's sender: the Twilio socket stayed open (60 s
    measured, until the client gave up), no result was delivered, and two ERROR tracebacks were logged."""
    async with webhook_receiver(SECRET) as receiver:
        settings = settings_for(simulator, webhook_url=receiver.url, webhook_secret=SECRET)
        async with running_gateway(settings) as gw:
            start = json.loads(telephony.twilio_start())
            start["start"]["callSid"] = f"CA{LONE}x"
            async with ws_connect(gw.ws_url("/v1/twilio")) as ws:
                await ws.send(telephony.twilio_connected())
                await ws.send(json.dumps(start))
                for frame in telephony.twilio_media("1"):
                    await ws.send(frame)
                await ws.send(telephony.twilio_stop())
                began = time.perf_counter()
                seen = await read_all(ws, timeout=10)
                took = time.perf_counter() - began
            async with asyncio.timeout(10):
                while len(receiver.accepted) < 2:
                    await asyncio.sleep(0.02)
    assert seen.close_code == 1000 and took < 5, f"closed {seen.close_code} after {took:.1f} s"
    calls = [payload["call"]["callSid"] for payload in receiver.accepted.values()]
    assert calls == ["CA\ufffdx", "CA\ufffdx"]  # the final event and the summary
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_json_lines_stay_strict_json_whatever_a_client_sends(tmp_path: Path) -> None:
    """A lone surrogate was written as "\\ud800": Python reads it, jq, orjson and serde refuse the line
    (jq stops reading the stream there), so a client could blind an operator's ``tail | jq``."""
    async with gateway_process(tmp_path, {"GATEWAY_LOG_LEVEL": "info", "GATEWAY_LOG_FORMAT": "json"}) as gw:
        async with ws_connect(gw.ws_url()) as ws:
            await ws.send(start_message(project=f"demo{LONE}{UNSAFE}"))
            await next_message(ws, "started")
            await ws.send(json.dumps({"type": "finalize"}))
            assert (await read_all(ws)).errors() == []
        raw = await stopped(gw)
    lines = [line for line in raw.splitlines() if line.strip()]
    projects = []
    for line in lines:
        entry: dict[str, Any] = json.loads(line)
        json.dumps(entry, ensure_ascii=False).encode()  # strict UTF-8: raises on a lone surrogate
        projects += [entry["project"]] if "project" in entry else []
    # session started, session ended; the controls written out as text (tests/system/test_log_volume.py)
    assert projects == ["demo\ufffd" + UNSAFE.encode("unicode_escape").decode("ascii")] * 2
    assert raw.isascii()


async def test_text_lines_escape_every_line_break_and_terminal_control(tmp_path: Path) -> None:
    """Text lines escaped ASCII controls only: a path's U+009B (CSI), U+0085 or U+2028 went out raw, so
    a client could start a forged line for many readers or drive an operator's terminal; a field value
    with U+009B was shown bare. And a field whose value the message held was left out: a client that
    put its own address in its path hid ``client=`` from its access line."""
    async with gateway_process(tmp_path, {"GATEWAY_LOG_LEVEL": "info", "GATEWAY_LOG_FORMAT": "text"}) as gw:
        async with ws_connect(gw.ws_url()) as ws:
            await ws.send(start_message(project=f"demo\u009b2J{LONE}"))
            await next_message(ws, "started")
            await ws.send(json.dumps({"type": "finalize"}))
            assert (await read_all(ws)).errors() == []
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
            for char in UNSAFE:
                assert (await http.get(f"/nowhere{char}{FORGED}")).status_code == 404
        port = free_port()
        with socket.create_connection(("127.0.0.1", gw.port), source_address=("127.0.0.1", port)) as conn:
            conn.sendall(f"GET /hide/127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            assert conn.recv(100).startswith(b"HTTP/1.1 404")
        text = await stopped(gw)
    unsafe_left = {f"U+{ord(char):04X}": text.count(char) for char in f"\x1b{UNSAFE}{LONE}" if char in text}
    assert not unsafe_left
    assert not [line for line in text.splitlines() if line.startswith("FORGED")], "a client forged a line"
    assert sum('project="demo\\u009b2J\\ud800"' in line for line in text.splitlines()) == 2
    [hidden] = [line for line in text.splitlines() if "/hide/" in line]
    assert f"client=127.0.0.1:{port}" in hidden


async def test_an_audiohook_client_repeating_error_messages_gets_one_log_line(
    simulator: DataflowSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Each ``error`` message was an INFO line: 5 000 in 0.5 s made 5 000 lines (645 kB) from one call."""
    caplog.set_level(logging.INFO, "gateway.adapters.audiohook")
    async with running_gateway(settings_for(simulator)) as gw:
        headers = upgrade_headers("any-key")
        async with ws_connect(gw.ws_url("/v1/audiohook"), additional_headers=headers) as ws:
            client = AudioHookClient(ws, headers["Audiohook-Session-Id"], headers["Audiohook-Organization-Id"])
            await client.open()
            await client.until("opened")
            for _ in range(2000):
                await client.send("error", {"code": 500, "message": "x"})
            await client.send("ping")
            await client.until("pong")
            await client.send("close", {"reason": "end"})
            await client.until("closed")
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.adapters.audiohook"]
    assert lines == ["AudioHook client error 500"]
