"""Compressed uploads a hostile client would send, over real sockets to a gateway running in this
process (so its memory is this process's): what each costs, and what FFmpeg may touch.

Before gateway/audio/ffmpeg_policy.py, a 665 KB FLAC whose cover art is a 15000x15000 PNG cost
+646 MB and 3 s of CPU (FFmpeg's stream probing decoded the picture), and a WAV claiming 2.14 GHz
+45 MB of resampler filter; now neither costs more than a few MB.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any

import httpx
import pytest

from tests.support import audio_files, hostile_audio, signals
from tests.support.harness import RunningGateway
from tests.support.upload_client import URL, multipart, no_decoder_thread_left

MiB = 1024 * 1024


@pytest.fixture
def gw_teardown() -> Callable[[], Awaitable[None]]:
    return no_decoder_thread_left


def rss() -> int:
    with open("/proc/self/status") as status:
        found = re.search(r"VmRSS:\s+(\d+) kB", status.read())
    assert found is not None
    return int(found.group(1)) * 1024


class PeakRss:
    """The highest resident size above the start, sampled every 2 ms while the block runs."""

    def __enter__(self) -> PeakRss:
        self.base = self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.base


async def post(gw: RunningGateway, content: bytes, query: str = "", **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
        return await http.post(URL + query, content=content, headers=headers)


def refused(response: httpx.Response) -> str:
    assert response.status_code == 415, response.text
    message: str = response.json()["error"]["message"]
    assert "<none>" not in message and len(message) < 300
    return message


async def test_cover_art_is_not_decoded(gw: RunningGateway) -> None:
    side = 15000  # decoded: 15000 x 15000 x 3 bytes = 644 MiB
    data = hostile_audio.flac_with_picture(signals.utterances(["1"], 16000), 16000, hostile_audio.png(side), side)
    assert len(data) < 700_000
    with PeakRss() as memory:
        began = time.monotonic()
        response = await post(gw, data)
        took = time.monotonic() - began
    assert response.status_code == 200 and response.json()["transcript"] == {"0": "1"}
    assert memory.growth < 64 * MiB, f"+{memory.growth / MiB:.0f} MiB for a {len(data)} byte upload"
    assert took < 2.0  # the picture alone took 3 s to decode


async def test_a_video_track_next_to_the_audio_is_not_decoded(gw: RunningGateway) -> None:
    data = hostile_audio.mkv_with_video(signals.utterances(["1"], 16000), 16000, 4000)
    response = await post(gw, data)
    assert response.status_code == 200 and response.json()["transcript"] == {"0": "1"}


@pytest.mark.parametrize("rate", [2_140_000_000, 999, 4_000_000])
async def test_an_absurd_sample_rate_is_refused_before_decoding(gw: RunningGateway, rate: int) -> None:
    with PeakRss() as memory:
        message = refused(await post(gw, hostile_audio.wav_claiming(rate, 1)))
    assert f"{rate} Hz" in message and "1000..768000" in message
    assert memory.growth < 16 * MiB, f"+{memory.growth / MiB:.0f} MiB"  # 2.14 GHz cost +45 MiB


async def test_too_many_channels_are_refused_before_decoding(gw: RunningGateway) -> None:
    message = refused(await post(gw, hostile_audio.wav_claiming(16000, 255, frames=1000)))
    assert "255 channels" in message  # was FFmpeg's "Invalid argument returned 22"


async def test_a_codec_outside_the_allowed_ones_is_refused(gw: RunningGateway) -> None:
    data = audio_files.encoded(signals.utterances(["1"], 16000), 16000, "wav", "dfpwm")  # a game codec, 1 bit
    assert "dfpwm" in refused(await post(gw, data))


async def test_a_valid_high_rate_file_still_decodes(gw: RunningGateway) -> None:
    samples = signals.utterances(["1"], 96000)
    high = audio_files.encoded(samples, 96000, "flac", "flac")
    assert (await post(gw, high)).json()["transcript"] == {"0": "1"}


async def test_a_huge_packet_is_not_held_whole(gw: RunningGateway) -> None:
    head, size = hostile_audio.mkv_with_a_block_of(64 * MiB)

    async def body() -> AsyncIterator[bytes]:
        yield head
        zeros = bytes(256 * 1024)
        for _ in range(size // len(zeros)):
            yield zeros

    with PeakRss() as memory:
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
            response = await http.post(URL, content=body())
    assert memory.growth < 40 * MiB, f"+{memory.growth / MiB:.0f} MiB"  # FFmpeg held all 64 MiB of it
    assert "hold no audio packet" in refused(response)


async def test_playlists_and_references_open_nothing(gw: RunningGateway) -> None:
    """HLS, concat, SDP and friends name a listener and a local file: nothing connects, nothing is read.
    A playlist is no audio the gateway sniffs (415), or, declared headerless, its bytes are PCM."""
    connections: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(await reader.read(200))
        writer.close()

    listener = await asyncio.start_server(record, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        for name, text in hostile_audio.playlists(f"http://127.0.0.1:{port}", "/etc/passwd").items():
            body = text.encode("latin-1")
            form, ctype = multipart([("Audio", f"a.{name}", "application/vnd.apple.mpegurl", body)])
            answers: list[tuple[httpx.Response, dict[str, Any]]] = [
                (await post(gw, body), {}),
                (await post(gw, form, **{"content-type": ctype}), {}),
                (await post(gw, body, "?encoding=pcm16&sampleRate=8000"), {"headerless": True}),
            ]
            for response, how in answers:
                assert response.status_code in (200, 415), (name, response.text)
                assert "root:" not in response.text
                if response.status_code == 200:
                    assert how, f"{name} was decoded as audio"
        await asyncio.sleep(0.2)
    finally:
        listener.close()
        await listener.wait_closed()
    assert connections == []
