"""Token endpoints that answer badly: too big, compressed into something too big, trickled, nested
beyond what the JSON parser survives. A raw HTTP/1.1 server on a free port (uvicorn cannot send
these), so the provider meets them over a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from pydantic import SecretStr

from gateway.errors import UpstreamAuthFailed
from gateway.upstream.oauth import MAX_ANSWER_BYTES, ClientCredentialsTokenProvider

CLIENT_SECRET = "cs-TOPSECRET-answers"
MB = 1024 * 1024

#: Writes the answer to one request (status line onwards).
Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawIdentity:
    url: str = ""
    answer: Answer | None = None
    requests: int = 0
    sent: list[int] = field(default_factory=list)  # body bytes written per request (before the client hung up)
    handlers: set[asyncio.Task[None]] = field(default_factory=set)  # cancelled at teardown

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            await self._answer(reader, writer)
        finally:
            writer.close()
            self.handlers.discard(task)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            self.requests += 1
            self.sent.append(0)
            assert self.answer is not None
            await self.answer(writer)


@pytest.fixture
async def raw_identity() -> AsyncIterator[RawIdentity]:
    identity = RawIdentity()
    server = await asyncio.start_server(identity.handle, "127.0.0.1", 0)
    identity.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/connect/token"
    yield identity
    server.close()
    for handler in list(identity.handlers):
        handler.cancel()
    await asyncio.gather(*identity.handlers, return_exceptions=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.wait_closed(), 5)


def provider_for(
    identity: RawIdentity,
    *,
    fetch_timeout_s: float = 5.0,
    attempts: int = 1,
    clock: Callable[[], float] = time.monotonic,
) -> ClientCredentialsTokenProvider:
    return ClientCredentialsTokenProvider(
        url=identity.url,
        client_id="gateway-client",
        client_secret=SecretStr(CLIENT_SECRET),
        scope="Wagtail",
        refresh_margin_s=300.0,
        fetch_timeout_s=fetch_timeout_s,
        attempts=attempts,
        clock=clock,
    )


def head(length: int | None, *extra: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/json", "Connection: close", *extra]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def padded_token_answer(identity: RawIdentity, pad_bytes: int, *, chunked: bool = False) -> Answer:
    """A valid token answer with ``pad_bytes`` of padding in it, streamed a megabyte at a time."""
    prefix, suffix = b'{"access_token":"tok-huge","expires_in":3600,"pad":"', b'"}'

    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(head(None if chunked else len(prefix) + pad_bytes + len(suffix)))
        pieces = [prefix, *([b"a" * MB] * (pad_bytes // MB)), suffix]
        for piece in pieces:
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            await writer.drain()
            identity.sent[-1] += len(piece)
        if chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    return answer


async def traced(call: Callable[[], Awaitable[SecretStr]]) -> tuple[BaseException | SecretStr, int]:
    """What the call returned or raised, and the peak of memory allocated during it."""
    tracemalloc.start()
    try:
        try:
            outcome: BaseException | SecretStr = await call()
        except Exception as exc:
            outcome = exc
        return outcome, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def fetched_traced(identity: RawIdentity) -> tuple[BaseException | SecretStr, int]:
    """One token fetch from ``identity`` by a fresh provider: its outcome and the memory peak during it."""
    provider = provider_for(identity)
    try:
        return await traced(provider.get)
    finally:
        await provider.aclose()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_oversized_answer_is_refused_without_reading_it(raw_identity: RawIdentity, chunked: bool) -> None:
    raw_identity.answer = padded_token_answer(raw_identity, 64 * MB, chunked=chunked)
    outcome, peak = await fetched_traced(raw_identity)
    assert isinstance(outcome, UpstreamAuthFailed), outcome
    assert "too large" in outcome.message
    assert outcome.retryable
    assert peak < 8 * MB  # (it held the whole 64 MB body, and more, before)
    assert raw_identity.sent[0] < 32 * MB  # the provider hung up rather than draining the body


async def test_a_compressed_answer_is_bounded_once_decompressed(raw_identity: RawIdentity) -> None:
    body = gzip.compress(b'{"access_token":"tok-bomb","expires_in":3600,"pad":"' + b"a" * (64 * MB) + b'"}')

    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(head(len(body), "Content-Encoding: gzip") + body)
        await writer.drain()

    raw_identity.answer = answer
    outcome, peak = await fetched_traced(raw_identity)
    assert isinstance(outcome, UpstreamAuthFailed), outcome
    assert "too large" in outcome.message
    assert peak < 8 * MB


async def test_an_answer_just_under_the_limit_is_accepted(raw_identity: RawIdentity) -> None:
    raw_identity.answer = padded_token_answer(raw_identity, 0)
    token_answer = {"access_token": "tok-" + "j" * (MAX_ANSWER_BYTES - 100), "expires_in": 60}
    body = json.dumps(token_answer).encode()
    assert len(body) <= MAX_ANSWER_BYTES

    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(head(len(body)) + body)
        await writer.drain()

    raw_identity.answer = answer
    provider = provider_for(raw_identity)
    try:
        assert (await provider.get()).get_secret_value() == token_answer["access_token"]
    finally:
        await provider.aclose()


async def test_a_trickled_answer_is_bounded_in_time(raw_identity: RawIdentity) -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(head(10_000))
        for _ in range(10_000):  # one byte every 50 ms: each read succeeds, the whole never ends
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.05)

    raw_identity.answer = answer
    provider = provider_for(raw_identity, fetch_timeout_s=0.5, attempts=2)
    started = time.monotonic()
    try:
        with pytest.raises(UpstreamAuthFailed, match="timeout"):
            await provider.get()
    finally:
        await provider.aclose()
    assert time.monotonic() - started < 2.0  # two 0.5 s attempts and a 0.2 s back-off
    assert raw_identity.requests == 2


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("status", ["200 OK", "503 Service Unavailable"])
async def test_json_nested_too_deep_is_a_failed_attempt_and_the_cached_token_still_serves(
    raw_identity: RawIdentity, status: str
) -> None:
    good = b'{"access_token":"tok-good","expires_in":3600}'
    deep = b"[" * 50_000  # within the size limit; past what Python's JSON parser can recurse into
    answers = iter([good, deep, deep])

    async def answer(writer: asyncio.StreamWriter) -> None:
        body = next(answers)
        writer.write(head(len(body), status="200 OK" if body is good else status) + body)
        await writer.drain()

    raw_identity.answer = answer
    clock = Clock()
    provider = provider_for(raw_identity, clock=clock)
    try:
        first = await provider.get()
        clock.now += 3400  # in the refresh window: the refresh meets the deep answer
        assert await provider.get() == first  # still valid: served while the identity service misbehaves
        async with asyncio.timeout(10):  # the refresh behind it fails
            while provider._inflight is not None:
                await asyncio.sleep(0.01)
        assert await provider.get() == first
        clock.now += 1000  # expired; the next refresh fails the same way: a typed error, not RecursionError
        with pytest.raises(UpstreamAuthFailed) as caught:
            await provider.get()
        assert caught.value.retryable
    finally:
        await provider.aclose()
    assert raw_identity.requests == 3


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compressed_answer_within_the_limit_is_accepted(raw_identity: RawIdentity, encoding: str) -> None:
    """Asked for ``identity``, a server may compress anyway: a small answer still works."""
    plain = b'{"access_token":"tok-zipped","expires_in":3600}'
    body = gzip.compress(plain) if encoding == "gzip" else zlib.compress(plain)

    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(head(len(body), f"Content-Encoding: {encoding}") + body)
        await writer.drain()

    raw_identity.answer = answer
    provider = provider_for(raw_identity)
    try:
        assert (await provider.get()).get_secret_value() == "tok-zipped"
    finally:
        await provider.aclose()
