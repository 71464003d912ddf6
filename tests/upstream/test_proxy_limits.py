"""nginx in front of Data Flow (TLS, ``grpc_pass``): its ``client_max_body_size`` (default 1 MiB) caps the
request body of each gRPC stream, i.e. all the audio of one upstream stream. The README tells operators
to lift it; this pins both halves of that sentence on a real nginx."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import StartRequest
from gateway.errors import UpstreamUnavailable
from gateway.simulator.server import DataflowSimulator
from gateway.upstream.channel import UpstreamClient
from gateway.upstream.token import StaticTokenProvider
from tests.support import signals
from tests.support.grpc_proxy import grpc_tls_proxy
from tests.support.harness import GatewayFactory, read_all, ws_connect
from tests.support.native_client import send_audio, start_message
from tests.support.settings import SIM_TOKEN, settings_for

FMT = AudioFormat("pcm16", 16000, 1)
MIB = 1024 * 1024
CHUNK = 6400  # 200 ms


async def stream_audio(simulator: DataflowSimulator, tmp_path: Path, extra: str, total: int) -> tuple[int, str]:
    """Sends ``total`` bytes of audio through nginx and finalizes: what Data Flow got, and how it ended."""
    async with grpc_tls_proxy(tmp_path, simulator.port, extra) as proxy:
        settings = settings_for(
            simulator, upstream_target=proxy.target, upstream_plaintext=False, upstream_ca_file=proxy.ca_file
        )
        client = UpstreamClient(settings, StaticTokenProvider(SecretStr(SIM_TOKEN)))
        stream = client.stream(FMT, deadline_s=60)
        try:
            await stream.start(StartRequest(project="demo", audio=FMT))
            for _ in range(total // CHUNK):
                await stream.send_audio(b"\x00" * CHUNK)
            await stream.finalize()
            async for _ in stream.items():
                pass
            outcome = "finished"
        except UpstreamUnavailable as exc:
            outcome = exc.message
        finally:
            await stream.aclose()
            await client.aclose()
    return simulator.records[0].audio_bytes, outcome


@pytest.mark.timeout(60)
async def test_nginx_default_body_size_cuts_a_stream_after_one_mib(
    simulator: DataflowSimulator, tmp_path: Path
) -> None:
    received, outcome = await stream_audio(simulator, tmp_path, "", 3 * MIB)
    assert "INTERNAL" in outcome  # nginx resets the stream; a retryable upstream_unavailable (recovery)
    assert received <= MIB  # about 33 s of 16 kHz PCM16 mono
    assert "too large chunked body" in (tmp_path / "error.log").read_text()


@pytest.mark.timeout(60)
async def test_a_stream_longer_than_one_mib_passes_nginx_with_the_limit_lifted(
    simulator: DataflowSimulator, tmp_path: Path
) -> None:
    received, outcome = await stream_audio(simulator, tmp_path, "        client_max_body_size 0;\n", 3 * MIB)
    assert outcome == "finished"
    assert received == 3 * MIB // CHUNK * CHUNK


# --- nginx's per-request timeouts: a silent stretch of a call ---------------------------------------------

GROUPS = ["147", "258", "369", "0*#"]
SILENT_S = 4.0  # twice the timeouts below (nginx's defaults: 60 s each)
TIMEOUTS = "        grpc_read_timeout 2s;\n        client_body_timeout 2s;\n        client_max_body_size 0;\n"


@pytest.mark.ws
@pytest.mark.timeout(90)
async def test_a_call_silent_longer_than_nginx_timeouts_is_cut_and_recovered(
    simulator: DataflowSimulator, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    """nginx ends a gRPC request when Data Flow sends nothing for `grpc_read_timeout`, or the gateway
    nothing for `client_body_timeout` (60 s each by default): a call on hold, a paused AudioHook stream.
    The gateway takes that as an upstream failure and recovers by replay: the client loses nothing."""
    first = signals.to_pcm16(signals.utterances(GROUPS[:2], 16000, pause_ms=500))
    second = signals.to_pcm16(signals.utterances(GROUPS[2:], 16000, pause_ms=500))
    # Both timeouts are 2 s: which one ends the request is a race (the client's is logged at info).
    timeouts = TIMEOUTS + f"        error_log {tmp_path / 'timeouts.log'} info;\n"
    async with grpc_tls_proxy(tmp_path, simulator.port, timeouts) as proxy:
        upstream = dict(upstream_target=proxy.target, upstream_plaintext=False, upstream_ca_file=proxy.ca_file)
        async with gateway_factory(**upstream) as gw, ws_connect(gw.ws_url()) as ws:
            await ws.send(start_message())
            await send_audio(ws, first, 640, pace_s=0.005)
            await asyncio.sleep(SILENT_S)  # nothing either way
            await send_audio(ws, second, 640, pace_s=0.005)
            await ws.send(json.dumps({"type": "finalize"}))
            result = await read_all(ws, timeout=30)
    assert result.close_code == 1000, result.errors()
    assert result.milestones() == GROUPS  # every group once, across the cut
    notices = result.of_type("upstream_recovered")
    assert len(notices) >= 1 and all(n["lostMs"] == 0 for n in notices), notices
    said = (tmp_path / "timeouts.log").read_text()
    assert "upstream timed out" in said or "client timed out" in said, said  # nginx's words for what it did
