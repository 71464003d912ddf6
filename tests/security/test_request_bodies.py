"""Request bodies outside the uploads are bounded in size and time, over real sockets: a raw HTTP/1.1
client sends what httpx cannot (a head that declares 256 MiB and sends none of it, a body a byte at a
time) and reads the answer while the body is still owed. Uploads keep streaming past both bounds."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.auth import key_digest
from tests.support import signals
from tests.support.harness import RunningGateway
from tests.support.settings import SECRETS
from tests.support.upload_client import pieces

KEY = "dfg_bodies_5e1d7c3a9b0f42e6a8c4d2b0f1e3a5c7"
SECRETS.add(KEY)
CAP = 4096  # GATEWAY_MAX_CONTROL_MESSAGE_BYTES for these gateways
TIMEOUT_S = 1.0  # GATEWAY_START_TIMEOUT_S for these gateways
MiB = 1024 * 1024


@pytest.fixture
def gw_settings() -> dict[str, Any]:
    return {
        "auth": "required",
        "api_keys": [{"name": "bodies", "sha256": key_digest(KEY), "projects": ["demo"]}],
        "token_signing_key": "signing-key-for-body-tests-0123456789",
        "max_control_message_bytes": CAP,
        "start_timeout_s": TIMEOUT_S,
    }


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    closed: bool  # the gateway closed the connection after answering
    after_s: float

    @property
    def code(self) -> str:
        return str(self.body.get("error", {}).get("code"))


class RawRequest:
    """One request over a plain socket; the body goes out piece by piece, at the test's pace."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.opened = time.monotonic()

    @classmethod
    async def open(cls, gw: RunningGateway, path: str, headers: dict[str, str]) -> RawRequest:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{gw.port}", *(f"{k}: {v}" for k, v in headers.items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        return cls(reader, writer)

    async def send(self, data: bytes, chunked: bool = False) -> None:
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        await self.writer.drain()

    async def answer(self, timeout_s: float = 5.0) -> Answer:
        async with asyncio.timeout(timeout_s):
            head = await self.reader.readuntil(b"\r\n\r\n")
            after_s = time.monotonic() - self.opened
            lines = head.decode("latin-1").split("\r\n")
            headers = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        try:
            closed = await asyncio.wait_for(self.reader.read(1), 1.0) == b""
        except TimeoutError:
            closed = False  # kept alive
        return Answer(int(lines[0].split()[1]), json.loads(body or b"{}"), closed, after_s)

    def close(self) -> None:
        self.writer.close()


async def refused_counts(gw: RunningGateway) -> str:
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        text = (await http.get("/metrics")).text
    return "\n".join(line for line in text.splitlines() if line.startswith("dataflow_gateway_requests_refused_total"))


@pytest.mark.parametrize("path", ["/v1/tokens", f"/t/{KEY}/v1/tokens", "/internal/drain", "/nowhere"])
async def test_a_declared_body_over_the_cap_is_refused_before_a_byte_is_read(gw: RunningGateway, path: str) -> None:
    headers = {"X-API-Key": KEY, "Content-Type": "application/json", "Content-Length": str(256 * MiB),
               "Expect": "100-continue"}  # fmt: skip
    request = await RawRequest.open(gw, path, headers)
    try:
        answer = await request.answer()  # no 100 Continue first: the client never sends the body
    finally:
        request.close()
    assert (answer.status, answer.code, answer.closed) == (413, "message_too_big", True)
    assert str(CAP) in answer.body["error"]["message"]
    assert not gw.gateway.registry.draining  # the drain endpoint never ran
    assert 'reason="message_too_big",status="413"' in await refused_counts(gw)


async def test_a_declared_body_one_byte_over_the_cap_is_refused_at_once(gw: RunningGateway) -> None:
    """The declared length is held to the cap itself: one byte over is 413 before a byte is read, with no
    100 Continue first (a mutant allowed up to twice the cap to be declared: the client was invited to
    send the body, and the gateway waited for it)."""
    headers = {"X-API-Key": KEY, "Content-Type": "application/json", "Content-Length": str(CAP + 1),
               "Expect": "100-continue"}  # fmt: skip
    request = await RawRequest.open(gw, "/v1/tokens", headers)
    try:
        answer = await request.answer()
    finally:
        request.close()
    assert (answer.status, answer.code, answer.closed) == (413, "message_too_big", True)
    assert answer.after_s < TIMEOUT_S / 2


async def test_a_streamed_body_is_cut_off_at_the_cap(gw: RunningGateway) -> None:
    headers = {"X-API-Key": KEY, "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    request = await RawRequest.open(gw, "/v1/tokens", headers)
    try:
        await request.send(b'{"projects":["' + b"a" * (CAP - 14), chunked=True)  # exactly CAP: not yet refused
        await request.send(b"a", chunked=True)  # one byte over; the body's end is never sent
        answer = await request.answer()
    finally:
        request.close()
    assert (answer.status, answer.code, answer.closed) == (413, "message_too_big", True)


async def test_a_body_of_exactly_the_cap_is_read_and_a_token_minted(gw: RunningGateway) -> None:
    body = b'{"projects":["demo"]}'.ljust(CAP)  # JSON padded with spaces to the limit
    headers = {"X-API-Key": KEY, "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        declared = await http.post("/v1/tokens", content=body, headers=headers)
        streamed = await http.post("/v1/tokens", content=pieces(body, 1000), headers=headers)
    for response in (declared, streamed):
        assert response.status_code == 200, response.text
        SECRETS.add(response.json()["token"])


async def test_a_dribbled_body_gets_408_after_the_start_timeout(gw: RunningGateway) -> None:
    body = b'{"projects":["demo"]}'.ljust(40)
    headers = {"X-API-Key": KEY, "Content-Type": "application/json", "Content-Length": str(len(body))}
    request = await RawRequest.open(gw, "/v1/tokens", headers)

    async def dribble() -> None:  # 10 s for the whole body at this pace
        for byte in body:
            await request.send(bytes([byte]))
            await asyncio.sleep(0.25)

    sender = asyncio.create_task(dribble())
    try:
        answer = await request.answer()
    finally:
        sender.cancel()
        request.close()
    assert (answer.status, answer.code, answer.closed) == (408, "start_timeout", True)
    assert TIMEOUT_S <= answer.after_s < TIMEOUT_S + 1.5  # one deadline for the body, not one per byte


async def test_an_anonymous_caller_is_refused_before_its_body_is_read(gw: RunningGateway) -> None:
    headers = {"Content-Type": "application/json", "Content-Length": str(CAP)}
    request = await RawRequest.open(gw, "/v1/tokens", headers)
    try:
        answer = await request.answer()  # none of the body is ever sent
    finally:
        request.close()
    assert (answer.status, answer.code) == (401, "missing_credential")
    assert answer.after_s < TIMEOUT_S  # not the body's timeout


async def test_an_invalid_body_from_a_key_holder_is_still_a_422(gw: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        response = await http.post("/v1/tokens", json={"ttlSeconds": -1}, headers={"X-API-Key": KEY})
    assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_parameters")
    assert "body.ttlSeconds" in response.json()["error"]["message"]


async def test_a_coded_body_is_refused_unread_and_a_bodiless_request_is_not(gw: RunningGateway) -> None:
    """These routes take small JSON: a gzipped one is 415 naming ``identity``, not a parse error."""
    body = gzip.compress(json.dumps({"ttlSeconds": 60}).encode())
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        for coding in ("gzip", "br", "identity, gzip"):
            headers = {"X-API-Key": KEY, "Content-Encoding": coding, "Content-Type": "application/json"}
            response = await http.post("/v1/tokens", content=body, headers=headers)
            assert (response.status_code, response.json()["error"]["code"]) == (415, "unsupported_content_encoding")
            assert response.headers["accept-encoding"] == "identity"
            assert response.headers["connection"] == "close"
        plain = await http.post(
            "/v1/tokens", json={"ttlSeconds": 60}, headers={"X-API-Key": KEY, "Content-Encoding": "identity"}
        )
        assert plain.status_code == 200, plain.text
        probe = await http.get("/healthz", headers={"Content-Encoding": "gzip"})  # no body: nothing to refuse
        assert probe.status_code == 200


@pytest.mark.parametrize("path", ["/v1/recognize", f"/t/{KEY}/v1/recognize"])
async def test_uploads_stream_past_the_cap_and_the_timeout(gw: RunningGateway, path: str) -> None:
    wav = signals.wav_bytes(signals.utterances(["12", "34"], 8000), 8000, "pcm16")
    assert len(wav) > 10 * CAP
    headers = {"Content-Type": "audio/wav", **({} if path.startswith("/t/") else {"X-API-Key": KEY})}
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
        # ~2 s of body: longer than the start timeout that bounds every other route's body
        response = await http.post(path, content=pieces(wav, len(wav) // 20, pause_s=0.1), headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["transcript"] == {"0": "12 34"}
    assert time.monotonic() - started > TIMEOUT_S
