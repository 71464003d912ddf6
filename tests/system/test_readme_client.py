"""README's own streaming client, run as written, against a real gateway: a recording sent as fast as
the socket takes it is paced (never cut off) and every digit group comes back; the client reads the
WAV's rate and channels, so 8 kHz stereo works as 16 kHz mono does."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from pathlib import Path

import pytest

from gateway.auth import key_digest
from tests.support import signals
from tests.support.harness import GatewayFactory

pytestmark = pytest.mark.ws  # opens WebSockets: runs with the fast path on and off

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_client() -> str:
    """The first Python block of README (the quick-start client)."""
    match = re.search(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert match is not None
    assert "wave.open" in match.group(1)
    return match.group(1)


async def run_client(
    tmp_path: Path, wav: bytes, url: str, timeout_s: float, env: dict[str, str] | None = None
) -> tuple[int, list[str], float, str]:
    """The client's exit code, its printed lines, how long it took and what it wrote to stderr."""
    client, audio = tmp_path / "client.py", tmp_path / "audio.wav"
    client.write_text(readme_client(), encoding="utf-8")
    audio.write_bytes(wav)
    began = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(client), str(audio), url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})},
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        raise
    assert proc.returncode is not None
    assert err.decode() == "" or proc.returncode == 0 or "Error" not in err.decode(), err.decode()[-2000:]
    return proc.returncode, out.decode().splitlines(), time.monotonic() - began, err.decode()


GROUPS = [f"{i % 10}{(i * 3) % 10}{(i * 7 + 1) % 10}" for i in range(15)]  # 15 digit groups


async def test_a_90_s_recording_sent_as_fast_as_possible_returns_every_digit(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    samples = signals.utterances(GROUPS, 16000, pause_ms=5600, tail_ms=4000)
    duration_s = len(samples) / 16000
    assert 89.0 <= duration_s <= 92.0
    async with gateway_factory(max_audio_rate_x=3.0, audio_rate_burst_ms=10000) as gw:
        code, lines, took_s, _ = await run_client(tmp_path, signals.wav_bytes(samples, 16000), gw.ws_url(), 90)
    assert code == 0  # the README client only exits 0 when the gateway closed 1000
    assert lines == [f"0 {group}" for group in GROUPS]  # every group, once, in order
    assert took_s >= (duration_s - 10) / 3 - 1  # paced to 3x real time after the 10 s burst, not refused


async def test_the_readme_client_takes_an_8_khz_stereo_wav(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    left, right = signals.utterances(["147"], 8000), signals.utterances(["2580"], 8000)
    n = min(len(left), len(right))
    wav = signals.wav_bytes(signals.interleave(left[:n], right[:n]), 8000)
    async with gateway_factory() as gw:
        code, lines, _, _ = await run_client(tmp_path, wav, gw.ws_url(), 30)
    assert code == 0
    assert sorted(lines) == ["0 147", "1 2580"]


async def test_the_readme_client_sends_its_key_and_says_why_a_start_was_refused(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    key = "dfg_readme-client-key-0123456789abcdef"
    wav = signals.wav_bytes(signals.utterances(["369"], 16000), 16000)
    keys = [{"name": "readme", "sha256": key_digest(key)}]
    async with gateway_factory(auth="required", api_keys=keys, default_project="") as gw:
        code, lines, _, err = await run_client(tmp_path, wav, gw.ws_url(), 30, env={"GATEWAY_KEY": key})
    # Authenticated (no 401), its start names no project and none is configured: the client prints why.
    assert code == 1 and lines == []
    said = err.strip().splitlines()[-1]
    assert said.startswith("invalid_start: ") and "project" in said, err[-2000:]
    async with gateway_factory(auth="required", api_keys=keys) as gw:
        code, lines, _, _ = await run_client(tmp_path, wav, gw.ws_url(), 30, env={"GATEWAY_KEY": key})
    assert (code, lines) == (0, ["0 369"])
