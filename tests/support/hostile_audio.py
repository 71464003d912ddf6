"""Uploads a hostile client would send to the decoder: pictures that decode to gigabytes, absurd
sample rates and channel counts, video next to the audio, and playlists that point elsewhere.

Each is small on the wire; what it costs the gateway is what the tests measure.
"""

from __future__ import annotations

import io
import struct
import tempfile
import zlib
from pathlib import Path

import av
import numpy as np

from tests.support import audio_files, signals


def png(side: int) -> bytes:
    """A black RGB PNG of ``side`` x ``side`` pixels: ~1/1000 of its decoded size (3 bytes a pixel)."""
    packer = zlib.compressobj(9)
    rows = (b"\x00" + bytes(side * 3)) * 64
    data = b"".join(packer.compress(rows) for _ in range(side // 64)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def flac_with_picture(samples: np.typing.ArrayLike, rate: int, picture: bytes, side: int) -> bytes:
    """A FLAC file whose PICTURE metadata block (cover art, as taggers write it) holds ``picture``."""
    flac = audio_files.encoded(samples, rate, "flac", "flac")
    size = int.from_bytes(flac[5:8], "big")
    streaminfo = bytes([flac[4] & 0x7F]) + flac[5 : 8 + size]  # no longer the last metadata block
    mime = b"image/png"
    body = struct.pack(">II", 3, len(mime)) + mime + struct.pack(">IIIIII", 0, side, side, 24, 0, len(picture))
    block = bytes([(flac[4] & 0x80) | 6]) + len(body + picture).to_bytes(3, "big") + body + picture
    return b"fLaC" + streaminfo + block + flac[8 + size :]


def wav_header(rate: int, channels: int, data_bytes: int) -> bytes:
    """A PCM16 WAV header claiming ``rate`` and ``channels`` (any the fields can hold)."""
    align = 2 * channels
    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * align) & 0xFFFFFFFF, align, 16)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", data_bytes)
    return b"RIFF" + struct.pack("<I", len(body) + data_bytes) + body


def wav_claiming(rate: int, channels: int, frames: int = 20000) -> bytes:
    return wav_header(rate, channels, 2 * channels * frames) + bytes(2 * channels * frames)


def mkv_with_video(samples: np.typing.ArrayLike, rate: int, side: int) -> bytes:
    """Matroska with a ``side`` x ``side`` black MJPEG video frame, then an Opus audio track."""
    a = signals.to_int16(np.asarray(samples, dtype=np.float32)).reshape(1, -1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.mkv"
        with av.open(str(path), "w", format="matroska") as box:
            video = box.add_stream("mjpeg", rate=1)
            audio = box.add_stream("libopus", rate=48000, layout="mono")
            assert isinstance(video, av.VideoStream) and isinstance(audio, av.AudioStream)
            video.width = video.height = side
            video.pix_fmt = "yuvj420p"
            frame = av.VideoFrame(side, side, "yuvj420p")
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            for packet in [*video.encode(frame), *video.encode(None)]:
                box.mux(packet)
            source = av.AudioFrame.from_ndarray(a, format="s16", layout="mono")
            source.sample_rate = rate
            resampler = av.AudioResampler("flt", "mono", 48000, frame_size=audio.codec_context.frame_size)
            for piece in [*resampler.resample(source), *resampler.resample(None), None]:
                for packet in audio.encode(piece):
                    box.mux(packet)
        return path.read_bytes()


def playlists(url: str, path: str) -> dict[str, str]:
    """Text files FFmpeg's reference-following demuxers read (HLS, concat, SDP, image2 patterns),
    each naming ``url`` (a listener) and ``path`` (a local file)."""
    port = url.rsplit(":", 1)[1]
    return {
        "m3u8": f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{url}/a.ts\n#EXTINF:1,\nfile:{path}\n#EXT-X-ENDLIST\n",
        "ffconcat": f"ffconcat version 1.0\nfile '{url}/a.wav'\nfile '{path}'\n",
        "sdp": f"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio {port} RTP/AVP 0\n",
        "id3_m3u8": f"ID3\x03\x00\x00\x00\x00\x00\x00#EXTM3U\n#EXTINF:1,\n{url}/a.mp3\n",  # sniffs as MP3
        "wav_m3u8": "RIFF\x00\x00\x00\x00WAVE" + f"#EXTM3U\n#EXTINF:1,\n{url}/a.ts\n",
    }  # fmt: skip


def mkv_with_a_block_of(size: int) -> tuple[bytes, int]:
    """A Matroska Opus file, then a cluster whose one block declares ``size`` bytes: (the bytes up to
    the block's payload, how many zero bytes of payload the client sends after them)."""
    mkv = audio_files.encoded(signals.utterances(["1"], 48000), 48000, "matroska", "libopus")
    head = b"\x81\x00\x00\x80"  # track 1, timecode 0, keyframe
    cluster = b"\x1f\x43\xb6\x75" + b"\x01" + b"\xff" * 7 + b"\xe7\x81\x00"  # size unknown, timecode 0
    block = b"\xa3\x01" + (len(head) + size).to_bytes(7, "big") + head  # a SimpleBlock
    return mkv + cluster + block, size


def mkv_wavpack_silence(channels: int, rate: int, seconds: float) -> bytes:
    """Matroska holding lossless WavPack silence: ``channels`` x ``rate`` costs the decoder (and the mix
    and resampler after it) CPU in proportion, while each block of it compresses to ~2 KB. One block is
    encoded and muxed again and again (WavPack blocks stand alone), so making the file costs nothing."""
    layout = av.AudioLayout(f"{channels} channels")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as out:
        stream = out.add_stream("wavpack", rate=rate)
        stream.layout, stream.format = layout, "s16p"
        # PyAV's plane access is unsafe past 8 planes: a packed frame of zeros, made planar by FFmpeg.
        packed = av.AudioFrame.from_ndarray(np.zeros((1, 4096 * channels), np.int16), format="s16", layout=layout)
        packed.sample_rate, packed.pts = rate, 0
        planar = av.AudioResampler("s16p", layout, rate).resample(packed)
        block = next(packet for frame in [*planar, None] for packet in stream.encode(frame))
        payload, duration, time_base = bytes(block), block.duration, block.time_base
        assert duration, "WavPack blocks carry their duration"
        for i in range(round(rate * seconds / duration)):
            packet = av.Packet(payload)
            packet.stream, packet.time_base, packet.duration = stream, time_base, duration
            packet.pts = packet.dts = i * duration
            out.mux(packet)
    return buffer.getvalue()
