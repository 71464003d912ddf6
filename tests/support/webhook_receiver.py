"""A result-webhook receiver on 127.0.0.1 (a free port): verifies every POST with the
``standardwebhooks`` package's own verifier and keeps what it accepted, by webhook id. It can fail the
first N deliveries (503) to exercise retries, or answer slowly."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.requests import Request
from starlette.responses import Response


@dataclass
class WebhookReceiver:
    secret: str
    fail_first: int = 0
    delay_s: float = 0.0
    attempts: list[str] = field(default_factory=list)  # webhook-id of every POST, in arrival order
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)  # webhook-id -> verified payload
    duplicates: list[str] = field(default_factory=list)  # ids accepted more than once
    bad_signatures: int = 0
    in_flight: int = 0
    max_in_flight: int = 0  # most POSTs being answered at once
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = (await request.body()).decode()
        msg_id = request.headers.get("webhook-id", "")
        self.attempts.append(msg_id)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        if len(self.attempts) <= self.fail_first:
            await Response(status_code=503)(scope, receive, send)
            return
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.bad_signatures += 1
            await Response(status_code=401)(scope, receive, send)
            return
        if msg_id in self.accepted:
            self.duplicates.append(msg_id)
        self.accepted[msg_id] = payload
        await Response(status_code=204)(scope, receive, send)

    def payloads(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [p for p in self.accepted.values() if kind is None or p.get("type") == kind]

    async def wait_for(self, done: Callable[[WebhookReceiver], bool], timeout: float = 15) -> None:
        async with asyncio.timeout(timeout):
            while not done(self):
                await asyncio.sleep(0.02)

    def dump(self) -> str:
        return json.dumps(list(self.accepted.values()), indent=1)


@contextlib.asynccontextmanager
async def webhook_receiver(secret: str, **options: Any) -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret, **options)
    # No logging config: uvicorn's own would stop its loggers propagating for every later test.
    config = uvicorn.Config(receiver, host="127.0.0.1", port=0, lifespan="off", log_config=None, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    receiver.port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
