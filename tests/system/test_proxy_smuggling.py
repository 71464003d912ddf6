"""Request smuggling through the project's nginx template, over real sockets: a request asking to upgrade
to something other than WebSocket (``Upgrade: h2c``, which some HTTP clients send on every request),
with a body. nginx passed the Upgrade on and the body after the head on its kept-alive connection; the
gateway's parser skipped the body of a request asking to upgrade and read it as the next request, so
the body ran as a request nginx never saw: a path the template answers 404 (``/metrics``,
``/internal/drain``), with an X-Forwarded-For the gateway believes from its trusted proxy. Now nginx
passes only a WebSocket Upgrade, and the gateway refuses such a body itself
(tests/security/test_upgrade_smuggling.py)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.support.flood import converse
from tests.system.test_load_balancer import two_replicas

# The replica's drain, which the template answers 404 and the gateway takes from loopback only: the
# X-Forwarded-For that nginx would have appended to is the attacker's own here.
#: Empty lines before a request line are skipped by the parser: they carry the hidden request past the
#: read that holds the head (the rest of that read was dropped, the reads after it parsed as requests).
PAD = b"\r\n" * 2048
HIDDEN = (
    PAD + b"POST /internal/drain HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
)


@pytest.mark.ws
async def test_a_body_behind_an_h2c_upgrade_never_runs_as_a_request_behind_nginx(tmp_path: Path) -> None:
    proxied = {"GATEWAY_TRUSTED_PROXIES": '["127.0.0.1"]', "GATEWAY_LOG_LEVEL": "info"}
    async with two_replicas(tmp_path, 2.0, **proxied) as (stack, lb_port, port_a, port_b):
        head = (
            b"POST /v1/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: h2c\r\nConnection: upgrade\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(HIDDEN)
        )
        for _ in range(4):  # both replicas, on new and kept-alive upstream connections
            answered = await converse(lb_port, head + HIDDEN)  # in one write, as a client sends it
            statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answered)
            # nginx passes no Upgrade now: the gateway reads a POST with a (non-JSON) body and answers it
            assert len(statuses) == 1 and statuses[0] != b"400", answered
        # a request after them on the same kept-alive upstream connections is a request of its own
        assert re.findall(rb"HTTP/1\.1 (\d{3}) ", await converse(lb_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
        async with httpx.AsyncClient(timeout=5) as http:
            for port in (port_a, port_b):  # neither replica was drained (both were, before)
                assert (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
        for name in ("gateway-a", "gateway-b"):
            log = stack.log(name)
            assert "/internal/drain" not in log and "draining" not in log, log[-2000:]
            assert "Unsupported upgrade" not in log  # nginx passed none on
