"""A raw webhook receiver for hostile-receiver tests: an asyncio server on 127.0.0.1 whose answer a test
writes (``Answer``: it can trickle, be huge or never come; ``hang`` and ``no_content`` here), its URL
holding a token that must never be logged; and a bare ``WebhookDeliverer`` to aim at it, with its
outcome counts."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from gateway.webhooks.delivery import RetryPolicy, WebhookDeliverer
from gateway.webhooks.signing import WebhookSigner
from gateway.webhooks.targets import WebhookTarget
from tests.support.settings import SECRETS

URL_TOKEN = f"wh-url-token-{secrets.token_hex(8)}"  # a URL may hold a token: it must never be logged
SECRETS.add(URL_TOKEN)


@dataclass
class RawReceiver:
    url: str = ""
    started: list[float] = field(default_factory=list)  # when each POST's connection was accepted
    requests: int = 0  # POSTs read in full
    sent: int = 0  # answer bytes written
    closing: asyncio.Event = field(default_factory=asyncio.Event)  # the test is over: answers stop


Answer = Callable[[RawReceiver, asyncio.StreamWriter], Awaitable[None]]  # after the request is read


async def read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    await reader.readexactly(length)


@contextlib.asynccontextmanager
async def raw_receiver(answer: Answer) -> AsyncIterator[RawReceiver]:
    receiver = RawReceiver()
    handlers: set[asyncio.Task[Any]] = set()
    writers: set[asyncio.StreamWriter] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        writers.add(writer)
        receiver.started.append(time.monotonic())
        try:
            while True:  # keep-alive: one connection may carry several POSTs
                await read_request(reader)
                receiver.requests += 1
                await answer(receiver, writer)
                if receiver.closing.is_set():
                    return
        except (OSError, asyncio.IncompleteReadError):
            pass  # the deliverer hung up
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    receiver.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hooks/{URL_TOKEN}"
    try:
        yield receiver
    finally:
        server.close()
        receiver.closing.set()  # not cancelled: asyncio logs an error for a cancelled stream handler
        for writer in writers:
            writer.transport.abort()
        async with asyncio.timeout(5):
            await asyncio.gather(*handlers, return_exceptions=True)


async def hang(receiver: RawReceiver, writer: asyncio.StreamWriter) -> None:
    await receiver.closing.wait()


async def no_content(receiver: RawReceiver, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    await writer.drain()


def target(url: str) -> WebhookTarget:
    return WebhookTarget(url, WebhookSigner(secrets.token_bytes(32)))


@contextlib.asynccontextmanager
async def deliverer(policy: RetryPolicy, concurrency: int) -> AsyncIterator[WebhookDeliverer]:
    webhooks = WebhookDeliverer(policy, concurrency, CollectorRegistry())
    try:
        yield webhooks
    finally:
        await webhooks.aclose()


def counted(webhooks: WebhookDeliverer, outcome: str) -> float:
    return webhooks.outcomes.labels(outcome=outcome)._value.get()
