"""A client's path cannot make a text access line read as something else. The text format escaped a
path's controls but showed it bare in the message: a path with spaces (``%20``) and ``=`` put a status,
a duration and ``client=`` / ``session_id=`` fields of the client's choosing ahead of the line's own,
where a reader (or a grep for the first ``client=``) takes them. Now a path that is more than one bare
word is quoted, as any field value is; JSON lines keep the path as sent. Real gateway processes (the
handler's masking included), raw sockets as clients."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path

from tests.support.gateway_process import GatewayProcess, gateway_process

FORGED = "/v1/recognize 200 0.4 ms  client=10.9.8.7:4444 session_id=0123abcd x="
WIRE = FORGED.replace(" ", "%20").encode()
_ACCESS = re.compile(r'^\S+ INFO +gateway\.access: GET (?P<path>"(?:[^"\\]|\\.)*") 404 \d+\.\d ms  (?P<fields>.*)$')


async def _get(port: int, target: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer.split(b"\r\n", 1)[0]


async def _stopped(gw: GatewayProcess) -> str:
    gw.process.send_signal(signal.SIGTERM)
    await asyncio.to_thread(gw.process.wait, 15)
    return gw.log.read_text()


async def test_a_path_cannot_forge_the_status_or_fields_of_a_text_access_line(tmp_path: Path) -> None:
    async with gateway_process(tmp_path, {"GATEWAY_LOG_LEVEL": "info", "GATEWAY_LOG_FORMAT": "text"}) as gw:
        assert await _get(gw.port, WIRE) == b"HTTP/1.1 404 Not Found"
        text = await _stopped(gw)
    [line] = [line for line in text.splitlines() if "gateway.access" in line and "10.9.8.7" in line]
    found = _ACCESS.fullmatch(line)  # method, the path quoted whole, the real status and duration, the fields
    assert found, line
    assert json.loads(found["path"]) == FORGED
    # The first (and only) client= and no session_id= outside the quotes: the connection's own.
    assert re.fullmatch(r"client=127\.0\.0\.1:\d+", found["fields"]), line
    outside = re.sub(r'"(?:[^"\\]|\\.)*"', '""', line)
    assert outside.count("client=") == 1 and "session_id=" not in outside, line


async def test_json_access_lines_keep_the_path_as_sent(tmp_path: Path) -> None:
    async with gateway_process(tmp_path, {"GATEWAY_LOG_LEVEL": "info", "GATEWAY_LOG_FORMAT": "json"}) as gw:
        assert await _get(gw.port, WIRE) == b"HTTP/1.1 404 Not Found"
        text = await _stopped(gw)
    [entry] = [e for e in map(json.loads, text.splitlines()) if e.get("path") == FORGED]
    assert entry["msg"].startswith(f"GET {FORGED} 404 ") and entry["status"] == 404, entry
    assert entry["client"].startswith("127.0.0.1:"), entry
