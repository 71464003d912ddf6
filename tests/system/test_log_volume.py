"""What a client's requests cost the operator's log, measured in a real gateway process's JSON stderr:
lines and bytes per request stay bounded whatever the client sends (found by a review of log volume).

- A path of control characters the client percent-encoded (3 bytes each) is a 6-byte JSON escape each,
  and the access message repeated up to 8192 characters of it beside the 1024 of the ``path`` field: a
  16 KiB request head was a 38.7 KB line. The path is cut once, before both.
- python-multipart warns before each error it raises, a line per malformed upload at the client's rate
  (its 422 names the reason already), and at any GATEWAY_LOG_LEVEL, ``error`` included.
- The WebSocket library's ``connection open`` INFO line for every socket repeated the access line.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.logs import refused_lines
from gateway.logs.config import logging_config
from tests.support.gateway_process import gateway_process
from tests.support.harness import GatewayFactory, next_message, ws_connect
from tests.support.native_client import start_message
from tests.support.probes import wait_for

UPLOADS = 8  # within the ten refused requests an address has written whole in a window
BAD_MULTIPART = b"--zz\r\nnot a header line\r\n\r\n"
CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def entries(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


async def test_a_long_path_of_encoded_controls_is_one_short_line(tmp_path: Path) -> None:
    env = {"GATEWAY_LOG_LEVEL": "info", "GATEWAY_LOG_FORMAT": "json"}
    async with gateway_process(tmp_path, env) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        path = "/x" + "%01" * 5400  # 16 KiB of request head
        assert (await http.get(path)).status_code == 404
        sent = len(path)
        await wait_for(lambda: '"GET /x' in gw.log.read_text(), 5.0)  # written once the answer is sent
    lines = [line for line in gw.log.read_text().splitlines() if '"gateway.access"' in line and '"GET /x' in line]
    assert len(lines) == 1
    assert len(lines[0].encode()) < 0.8 * sent, f"{len(lines[0].encode())} bytes logged for {sent} sent"  # was 2.4x
    access = json.loads(lines[0])
    assert access["path"].endswith("more]") and access["msg"].startswith("GET /x")
    assert len(access["msg"]) < 6 * 1024 + 100  # 1024 characters cut, each control written out in 4 to 6


async def test_a_malformed_multipart_upload_writes_no_third_party_warning(tmp_path: Path) -> None:
    env = {"GATEWAY_LOG_LEVEL": "info", "GATEWAY_LOG_FORMAT": "json"}
    async with gateway_process(tmp_path, env) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        headers = {"Content-Type": "multipart/form-data; boundary=zz"}
        for _ in range(UPLOADS):
            answer = await http.post("/v1/recognize?project=demo", content=BAD_MULTIPART, headers=headers)
            assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_multipart", answer.text
    logged = entries(gw.log)
    assert not [e for e in logged if e["logger"].startswith("python_multipart")], logged[-3:]
    assert len([e for e in logged if e["logger"] == "gateway.access" and e["status"] == 422]) == UPLOADS


@pytest.mark.parametrize(("level", "root"), [("debug", 30), ("info", 30), ("warning", 30), ("error", 40)])
def test_other_libraries_log_warnings_or_what_the_level_lets_through(level: str, root: int) -> None:
    """``error`` quiets every library's warnings; ``debug`` does not open every library's debug lines."""
    assert logging_config(level, "json")["root"]["level"] == root


@pytest.mark.ws
async def test_a_websocket_writes_its_access_line_and_no_connection_open_line(tmp_path: Path) -> None:
    env = {"GATEWAY_LOG_LEVEL": "info", "GATEWAY_LOG_FORMAT": "json"}
    async with gateway_process(tmp_path, env) as gw:
        async with ws_connect(gw.ws_url()) as ws:
            await ws.send(start_message())
            await next_message(ws, "started")
        await wait_for(lambda: '"method": "WS"' in gw.log.read_text(), 5.0)  # written as the socket closes
    logged = entries(gw.log)
    assert [e["status"] for e in logged if e["logger"] == "gateway.access" and e["method"] == "WS"] == [101]
    assert not [e for e in logged if e["msg"] == "connection open"], [e["msg"] for e in logged]


async def test_json_values_carry_no_terminal_controls(tmp_path: Path) -> None:
    """``jq -r .msg`` wrote a client's OSC (terminal title, clipboard), BEL, U+009B and a bidi override
    to the operator's terminal: they are written out as text in every JSON value now."""
    env = {"GATEWAY_LOG_LEVEL": "info", "GATEWAY_LOG_FORMAT": "json"}
    hostile = "/x%1B%5D0%3Btitle%07%C2%9B2J%E2%80%AEgnp.exe%00%E2%80%A8"
    async with gateway_process(tmp_path, env) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        assert (await http.get(hostile)).status_code == 404
        await wait_for(lambda: '"GET /x' in gw.log.read_text(), 5.0)
    (access,) = [e for e in entries(gw.log) if e["logger"] == "gateway.access" and e["path"].startswith("/x")]
    for value in (access["msg"], access["path"]):
        assert not CONTROLS.search(value), repr(value)
        assert "\\x1b]0;title\\x07\\x9b2J\\u202egnp.exe\\x00\\u2028" in value  # readable, as text


async def test_refused_requests_write_ten_lines_an_address_then_a_count(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every refused request had its access line: a client with no credential wrote the log at its own
    rate (3 800 lines a second from under 1 Mbit/s). Each address has its first ten a window written;
    the rest are counted by status and told when the window ends (a second here, 10 s in production)."""
    monkeypatch.setattr(refused_lines, "WINDOW_S", 1.0)
    caplog.set_level(logging.INFO, logger="gateway.access")  # gateway.access.refused too
    async with gateway_factory() as gw:
        for source, refused in (("127.0.0.2", 40), ("127.0.0.3", 3)):
            transport = httpx.AsyncHTTPTransport(local_address=source)
            async with httpx.AsyncClient(base_url=gw.http_url, transport=transport) as http:
                for _ in range(refused):
                    assert (await http.get("/nowhere")).status_code == 404
                assert (await http.get("/healthz")).status_code == 200  # answered: written whatever the count
        await wait_for(lambda: any("more refused" in r.getMessage() for r in caplog.records), 5.0)
    lines = [r for r in caplog.records if r.name == "gateway.access"]
    written = Counter(str(getattr(r, "client", "")).split(":")[0] for r in lines if getattr(r, "status", 0) == 404)
    assert written == {"127.0.0.2": 10, "127.0.0.3": 3}, written
    assert len([r for r in lines if getattr(r, "path", "") == "/healthz"]) >= 2
    told = [r.getMessage() for r in caplog.records if r.name == "gateway.access.refused"]
    assert told == [
        "Access lines of refused requests past 10 from one address in 1 s are counted, not written (from 127.0.0.2)",
        "29 more refused requests not written in the last 1.0 s (status 404: 29)",
    ], told


async def test_a_window_of_refused_requests_is_told_at_shutdown(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(refused_lines, "WINDOW_S", 600.0)  # no window ends while the gateway runs
    caplog.set_level(logging.INFO, logger="gateway.access")
    async with gateway_factory() as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        for _ in range(13):
            assert (await http.get("/nowhere")).status_code == 404
    told = [r.getMessage() for r in caplog.records if r.name == "gateway.access.refused"]
    assert len(told) == 2 and re.fullmatch(
        r"2 more refused requests not written in the last [\d.]+ s \(status 404: 2\)", told[1]
    )


def test_addresses_past_the_most_share_one_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flood from many addresses grows no map past MOST_ADDRESSES, nor writes a line per address."""
    monkeypatch.setattr(refused_lines, "MOST_ADDRESSES", 2)
    lines = refused_lines.RefusedLines()
    assert lines.admit(("192.0.2.1", 1), 404) and lines.admit(("192.0.2.2", 1), 404)
    newcomers = [lines.admit((f"198.51.100.{n}", 1), 404) for n in range(1, 31)]
    assert newcomers == [True] * refused_lines.LINES_PER_WINDOW + [False] * (30 - refused_lines.LINES_PER_WINDOW)
    assert lines.admit(("192.0.2.1", 1), 404)  # a counted address keeps its own lines
    lines.close()
