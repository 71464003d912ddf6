"""gateway/audio/ffmpeg_policy.py against FFmpeg itself: the whitelists it sets hold even for a
demuxer that follows references (uploads never reach one: the demuxer is forced from the sniffed
container; these are the second wall)."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator

import av
import pytest

from gateway.audio import ffmpeg_policy


@pytest.fixture
def listener() -> Iterator[tuple[str, list[bytes]]]:
    """A 127.0.0.1 TCP listener that records what connects to it."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    seen: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(0.5)
                seen.append(conn.recv(200))

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", seen
    stop.set()
    thread.join()
    server.close()


def open_concat(script: str, options: dict[str, str]) -> None:
    with av.open(io.BytesIO(script.encode()), "r", format="concat", container_options={**options, "safe": "0"}):
        pass


def test_no_protocol_is_opened(listener: tuple[str, list[bytes]]) -> None:
    url, seen = listener
    script = f"ffconcat version 1.0\nfile '{url}/a.wav'\n"
    options = ffmpeg_policy.open_options("concat")
    with pytest.raises(av.FFmpegError):
        open_concat(script, options)
    assert seen == []
    unguarded = {k: v for k, v in options.items() if k != "protocol_whitelist"}
    with pytest.raises(av.FFmpegError):
        open_concat(script, unguarded)
    assert len(seen) == 1 and seen[0].startswith(b"GET /a.wav")  # the lever is what stopped it


def test_only_the_sniffed_demuxer_runs() -> None:
    with pytest.raises(av.FFmpegError):
        open_concat("ffconcat version 1.0\nfile '/etc/passwd'\n", ffmpeg_policy.open_options("flac"))


def test_only_audio_decoders_are_allowed() -> None:
    allowed = ffmpeg_policy.AUDIO_DECODERS
    assert {"flac", "opus", "vorbis", "mp3float", "aac", "pcm_s24le", "adpcm_ima_wav", "amrnb"} <= allowed
    assert not allowed & {"png", "mjpeg", "h264", "dfpwm", "hca", "bink"}


@pytest.mark.parametrize(
    ("rate", "channels", "ok"),
    [(8000, 1, True), (768_000, 64, True), (None, None, True), (999, 1, False), (768_001, 1, False),
     (16000, 65, False), (16000, 0, False)],
)  # fmt: skip
def test_bounds(rate: int | None, channels: int | None, ok: bool) -> None:
    if ok:
        ffmpeg_policy.check(rate, channels)
    else:
        with pytest.raises(ffmpeg_policy.Refused):
            ffmpeg_policy.check(rate, channels)


def test_failures_are_described_without_paths_and_cut_short() -> None:
    error = av.InvalidDataError(1094995529, "Invalid data found when processing input", "/srv/secret/path")
    assert ffmpeg_policy.describe(error) == "Invalid data found when processing input"
    assert len(ffmpeg_policy.describe(ValueError("x" * 10_000))) == 121
