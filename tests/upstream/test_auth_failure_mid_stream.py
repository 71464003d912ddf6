"""A live stream that Data Flow ends as unauthenticated or permission denied (mid-call, after StartResponse)
says nothing of the credential the next Start carries: a static token was marked refused and logged at
ERROR as "cannot be renewed, replace it" (any client could set that off against the simulator), and a
fetched token would be dropped. Only a refusal at Start drops the token. Real gRPC, the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
from pydantic import SecretStr

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import StartRequest
from gateway.errors import UpstreamAuthFailed
from gateway.simulator.server import DataflowSimulator
from gateway.upstream.channel import UpstreamClient
from gateway.upstream.token import StaticTokenProvider
from tests.support.settings import SIM_TOKEN, settings_for

FORMAT = AudioFormat("pcm16", 16000, 1)
REFUSED_LINE = "Data Flow refused the static upstream token"


class CountingProvider(StaticTokenProvider):
    """A static token that counts the times the stream gave it up."""

    def __init__(self, token: SecretStr) -> None:
        super().__init__(token)
        self.invalidated = 0

    def invalidate(self, token: SecretStr) -> None:
        self.invalidated += 1
        super().invalidate(token)


async def ended_by(client: UpstreamClient, fault: str) -> Exception:
    stream = client.stream(FORMAT, deadline_s=30)
    try:
        await stream.start(StartRequest(project="demo", audio=FORMAT, settings={"SimulatorFault": fault}))
        while True:
            await stream.send_audio(bytes(640))
            async for _ in stream.items():
                pass
    except UpstreamAuthFailed as exc:
        return exc
    finally:
        await stream.aclose()


@pytest.mark.parametrize("status", ["UNAUTHENTICATED", "PERMISSION_DENIED"])
async def test_a_live_stream_ended_as_unauthenticated_keeps_the_token(
    simulator: DataflowSimulator, caplog: pytest.LogCaptureFixture, status: str
) -> None:
    tokens = CountingProvider(SecretStr(SIM_TOKEN))
    client = UpstreamClient(settings_for(simulator), tokens)
    try:
        with caplog.at_level(logging.INFO):
            error = await ended_by(client, f"abort:100:{status}")
        assert getattr(error, "grpc_status", None) == status
        assert tokens.invalidated == 0
        assert not [r for r in caplog.records if REFUSED_LINE in r.getMessage()]
        # A refusal at Start still drops it, and says so once however many sessions meet it.
        wrong = CountingProvider(SecretStr("not-the-token"))
        refused = UpstreamClient(settings_for(simulator), wrong)
        try:
            for _ in range(3):
                with pytest.raises(UpstreamAuthFailed):
                    await refused.stream(FORMAT, deadline_s=30).start(StartRequest(project="demo", audio=FORMAT))
        finally:
            await refused.aclose()
        assert wrong.invalidated == 3
        assert [r.levelname for r in caplog.records if REFUSED_LINE in r.getMessage()] == ["ERROR"]
    finally:
        await client.aclose()


@pytest.mark.parametrize("torn_down_first", [False, True])
async def test_a_live_stream_whose_writer_met_the_refusal_first_keeps_the_token(
    simulator: DataflowSimulator, caplog: pytest.LogCaptureFixture, torn_down_first: bool
) -> None:
    """Audio flowing in real time: the writer meets the status first and ends; the reader reports it after
    (a session tears the stream down first when its sending side failed). "Refused at Start" was read
    from the writer being gone, so this dropped the token."""
    tokens = CountingProvider(SecretStr(SIM_TOKEN))
    client = UpstreamClient(settings_for(simulator), tokens)
    stream = client.stream(FORMAT, deadline_s=30)
    try:
        fault = {"SimulatorFault": "abort:300:UNAUTHENTICATED"}
        await stream.start(StartRequest(project="demo", audio=FORMAT, settings=fault))
        with pytest.raises(UpstreamAuthFailed):
            while True:  # 20 ms of audio every 20 ms, until the stream fails
                await stream.send_audio(bytes(640))
                await asyncio.sleep(0.02)
        if torn_down_first:
            stream.cancel()
            await asyncio.sleep(0)
        with contextlib.suppress(UpstreamAuthFailed):
            async for _ in stream.items():
                pass
    finally:
        await stream.aclose()
        await client.aclose()
    assert tokens.invalidated == 0
    assert not [r for r in caplog.records if REFUSED_LINE in r.getMessage()]
