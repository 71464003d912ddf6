"""What the webhook deliverer logs, over real 127.0.0.1 sockets: drops a burst at a time (one WARNING per
webhook was ~17 lines a second with a receiver down), every drop still counted by the metric; and the
proxy environment it follows (httpx's trust_env, kept on purpose), said once, never with its password."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry

from gateway.logs.redact import proxy_environment
from gateway.webhooks.delivery import RetryPolicy, WebhookDeliverer
from tests.support.gateway_process import free_port
from tests.support.raw_webhook_receiver import URL_TOKEN, counted, deliverer, raw_receiver, target
from tests.support.settings import SECRETS

PROXY_PASSWORD = f"proxy-pw-{secrets.token_hex(6)}"
SECRETS.add(PROXY_PASSWORD)
_PROXY_NAMES = ["http_proxy", "https_proxy", "all_proxy", "no_proxy"]
_SUMMARY = re.compile(r"(\d+) more webhooks dropped in the last [\d.]+ s \((.+)\); the metric counts each")


async def server_error(_: object, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()


async def test_drops_are_logged_a_burst_at_a_time_and_every_one_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    """A receiver answering 500, one that is not there (a closed port) and a full queue, for 1.6 s: every
    drop counted, the first logged at once, the rest told per 0.4 s window, with their reasons."""
    caplog.set_level(logging.INFO, logger="gateway.webhooks")
    policy = RetryPolicy(attempts=1, window_s=10, timeout_s=2)
    webhooks = WebhookDeliverer(policy, 4, CollectorRegistry(), max_pending=80, drop_window_s=0.4)
    closed = f"http://127.0.0.1:{free_port()}/hooks/{URL_TOKEN}"
    submitted = 0
    async with raw_receiver(server_error) as failing:
        try:
            began = time.monotonic()
            while time.monotonic() - began < 1.6:
                burst = 100 if submitted == 200 else 20  # once past the cap of 80 pending
                for i in range(burst):
                    webhooks.submit(target((failing.url, closed)[i % 2]), {"type": "event", "text": f"call-{i}"})
                submitted += burst
                await asyncio.sleep(0.05)
            async with asyncio.timeout(10):
                while webhooks.pending:
                    await asyncio.sleep(0.02)
        finally:
            await webhooks.aclose()  # tells what the open window counted
    dropped = counted(webhooks, "dropped")
    took = time.monotonic() - began
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert dropped == submitted and submitted >= 500, (dropped, submitted)
    assert counted(webhooks, "delivered") == 0
    # One line at once, then at most one per window (and one at close): not one per webhook.
    assert 2 <= len(warnings) <= 2 + took / 0.4, warnings
    summaries = [_SUMMARY.fullmatch(line) for line in warnings[1:]]
    assert all(summaries), [w for w, m in zip(warnings[1:], summaries, strict=True) if not m]
    assert 1 + sum(int(m[1]) for m in summaries if m) == dropped, warnings  # the lines account for every drop
    reasons = " ".join(m[2] for m in summaries if m)
    for reason in ("receiver answered an error (5xx, 408, 425, 429)", "receiver unreachable or too slow",
                   "pending limit reached"):  # fmt: skip
        assert reason in reasons, reasons
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("gateway")]
    assert not any(URL_TOKEN in line or "call-" in line for line in ours)


@dataclass
class RecordingProxy:
    """An HTTP forward proxy on 127.0.0.1 that forwards nothing: it records each request line and its
    Proxy-Authorization, answers 204 to a POST for ``/ok`` and hangs up on any other."""

    port: int = 0
    seen: list[tuple[str, str]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            auth = next((line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("proxy-auth")), "")
            self.seen.append((lines[0], auth))
            length = next((int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length")), 0)
            await reader.readexactly(length)
            if lines[0].split()[1].endswith("/ok"):
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def recording_proxy() -> AsyncIterator[RecordingProxy]:
    proxy = RecordingProxy()
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        server.close()


async def test_webhooks_follow_the_proxy_environment_and_never_log_its_password(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """HTTP_PROXY with a user and password: POSTs go through the proxy (which here answers for a host that
    does not exist), with Proxy-Authorization; NO_PROXY hosts go direct; the log says which proxy, masked."""
    for name in _PROXY_NAMES:  # whatever the machine running the tests has
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    caplog.set_level(logging.DEBUG)  # every logger, httpx's and httpcore's included
    async with recording_proxy() as proxy, raw_receiver(server_error) as direct:
        monkeypatch.setenv("HTTP_PROXY", f"http://ops:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with deliverer(RetryPolicy(attempts=1, timeout_s=2), concurrency=2) as webhooks:
            webhooks.submit(target(f"http://receiver.invalid/hooks/{URL_TOKEN}/ok"), {"type": "event"})
            webhooks.submit(target(f"http://receiver.invalid/hooks/{URL_TOKEN}/hang-up"), {"type": "event"})
            webhooks.submit(target(direct.url), {"type": "event"})
            async with asyncio.timeout(10):
                while webhooks.pending:
                    await asyncio.sleep(0.02)
            outcomes = (counted(webhooks, "delivered"), counted(webhooks, "dropped"))
    assert outcomes == (1, 2), outcomes
    basic = "Basic " + base64.b64encode(f"ops:{PROXY_PASSWORD}".encode()).decode()
    assert sorted(proxy.seen) == [(f"POST http://receiver.invalid/hooks/{URL_TOKEN}/{end} HTTP/1.1", basic)
                                  for end in ("hang-up", "ok")], proxy.seen  # fmt: skip
    assert direct.requests == 1  # NO_PROXY: straight to the receiver
    said = [r.getMessage() for r in caplog.records if "proxy environment" in r.getMessage()]
    assert said == [f"webhooks follow the proxy environment: http_proxy=http://ops:[redacted]@127.0.0.1:"
                    f"{proxy.port}, no_proxy=127.0.0.1"], said  # fmt: skip
    for record in caplog.records:
        assert PROXY_PASSWORD not in f"{record.getMessage()} {record.__dict__}", record.getMessage()


def test_a_proxy_url_is_shown_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    assert proxy_environment() == ""
    monkeypatch.setenv("HTTPS_PROXY", f"ops:{PROXY_PASSWORD}@proxy.internal:3128")  # no scheme: http
    monkeypatch.setenv("ALL_PROXY", f"socks5://{PROXY_PASSWORD}@socks.internal:1080")  # a user name alone
    assert (
        proxy_environment() == "https_proxy=http://ops:[redacted]@proxy.internal:3128, "
        "all_proxy=socks5://[redacted]@socks.internal:1080"
    )


async def test_an_unusable_proxy_environment_drops_and_counts_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A proxy URL httpx cannot use (an unknown scheme; socks5:// without socksio is alike) raised out of
    every delivery task: nothing counted, an asyncio "exception never retrieved" per webhook."""
    for name in _PROXY_NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"ftp://ops:{PROXY_PASSWORD}@127.0.0.1:1")
    caplog.set_level(logging.DEBUG)
    async with deliverer(RetryPolicy(attempts=2, backoff_s=0.01), concurrency=2) as webhooks:
        for _ in range(3):
            webhooks.submit(target(f"http://receiver.invalid/hooks/{URL_TOKEN}"), {"type": "event"})
        async with asyncio.timeout(10):
            while webhooks.pending:
                await asyncio.sleep(0.02)
        outcomes = (counted(webhooks, "dropped"), counted(webhooks, "retried"))
    assert outcomes == (3, 3), outcomes
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["webhooks cannot be sent: the proxy environment is not usable (ValueError): "
                      "http_proxy=ftp://ops:[redacted]@127.0.0.1:1"], errors  # fmt: skip
    for record in caplog.records:
        assert PROXY_PASSWORD not in f"{record.getMessage()} {record.__dict__}", record.getMessage()


async def ok(_: object, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()


async def test_httpx_request_lines_name_the_receiver_origin_only(caplog: pytest.LogCaptureFixture) -> None:
    """A receiver's URL may carry its credential in the path: httpx's own INFO line (shown when an embedding
    application turns httpx up) printed the whole URL. It now names scheme, host and port only."""
    caplog.set_level(logging.DEBUG)  # every logger, httpx's and httpcore's included
    async with raw_receiver(ok) as receiver, deliverer(RetryPolicy(attempts=1, timeout_s=2), 1) as webhooks:
        webhooks.submit(target(f"{receiver.url}/x?sig={URL_TOKEN}"), {"type": "event"})
        async with asyncio.timeout(10):
            while webhooks.pending:
                await asyncio.sleep(0.02)
        assert counted(webhooks, "delivered") == 1
    origin = receiver.url.split("/hooks/")[0]
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert lines == [f'HTTP Request: POST {origin}/… "HTTP/1.1 200 OK"'], lines
    leaked = [r.getMessage() for r in caplog.records if URL_TOKEN in f"{r.getMessage()} {r.__dict__}"]
    assert not leaked, leaked
