"""What an upload's bytes may make FFmpeg do: one demuxer, audio decoders only, no other file or URL,
and audio within sane bounds before anything is allocated for it.

* The demuxer is the one the container was sniffed as (``format_whitelist``): a demuxer that follows
  references (HLS, concat, SDP, image2 ...) is never reached, whatever the bytes say.
* No protocol is whitelisted (``protocol_whitelist``): the upload comes through the gateway's own
  I/O callback, so a demuxer that tried to open a path or URL (an MP4 ``dref``) is refused.
* Only :data:`AUDIO_DECODERS` are opened (``codec_whitelist``), in FFmpeg's stream probing too:
  cover art (a FLAC ``PICTURE`` block, an MP3 ``APIC``) and video tracks are never decoded. A
  650 KB FLAC whose 15000x15000 PNG cover was decoded while probing cost +646 MB and 3 s of CPU.
* A stream claiming more than :data:`MAX_CHANNELS` channels or a rate outside
  :data:`FILE_RATE_MIN`..:data:`FILE_RATE_MAX` is refused before it is decoded (a WAV claiming
  2.1 GHz cost +45 MB of resampler filter for no audio at all), and so is a decoded frame over
  :data:`MAX_FRAME_BYTES`.
* At most :data:`MAX_HELD_BYTES` of the file may go by without an audio packet.
"""

from __future__ import annotations

from typing import Final

import av

FILE_RATE_MIN: Final = 1000
FILE_RATE_MAX: Final = 768_000
#: FFmpeg holds a packet whole (a Matroska block, an Ogg packet across pages, an ID3 picture) until
#: it is complete: at most this much of an upload is read with no packet of its audio stream coming
#: out: more than FLAC's largest metadata block (a 16 MiB cover). A 200 MB Matroska block was held whole.
MAX_HELD_BYTES: Final = 24 * 1024 * 1024
#: Seventh-order ambisonics is 64 channels (third order 16, 22.2 sound 24); counts FFmpeg knows no
#: layout for are mixed by :mod:`gateway.audio.mixdown`. 60 s at 8 kHz of 64 took 0.3 s CPU and
#: +9 MiB; WAV could claim 65535, which only a hostile file does.
MAX_CHANNELS: Final = 64
#: Channels x samples x 4 bytes (float) of one decoded frame, which the mix may copy: the largest
#: legitimate files make. FFmpeg's PCM demuxer cuts frames of up to 65536 samples (at 768 kHz), 64 x
#: 65536 x 4 = 16 MiB: such a WAV peaked at +48 MiB (FFmpeg's own 24-channel mix of it: +50). FLAC's
#: largest is 8 x 65535 x 4 = 2 MiB, Vorbis 64 x 8192 x 4 = 2 MiB, WavPack 32 x 131072 x 4 = 16 MiB.
MAX_FRAME_BYTES: Final = 16 * 1024 * 1024

NO_PROTOCOL: Final = "none"  # no protocol has this name: FFmpeg may open nothing by name

_DECODERS: Final = """
    aac aac_fixed aac_latm ac3 ac3_fixed eac3 dca alac flac wavpack
    opus libopus vorbis libvorbis speex libspeex
    mp1 mp1float mp2 mp2float mp3 mp3float mp3adu mp3adufloat
    amrnb amrwb libopencore_amrnb libopencore_amrwb gsm gsm_ms g722 g723_1 g726 g726le g729 ilbc
    adpcm_ima_wav adpcm_ima_qt adpcm_ms adpcm_yamaha adpcm_ima_oki adpcm_ct adpcm_g726 adpcm_g726le
    mace3 mace6 wmav1 wmav2 wmapro wmavoice
"""
#: FFmpeg decoders an upload may use (PCM of every kind too): the codecs of the containers uploads
#: take, not the ~200 game, video and legacy audio decoders FFmpeg also has.
AUDIO_DECODERS: Final[frozenset[str]] = frozenset(
    _DECODERS.split() + [name for name in av.codecs_available if name.startswith("pcm_")]
)


class Refused(Exception):
    """The upload's audio is outside what the decoder takes (the message says what and why)."""


def open_options(demuxer: str) -> dict[str, str]:
    """``container_options`` for ``av.open``: the demuxer, decoders and protocols allowed."""
    return {
        "format_whitelist": demuxer,
        "codec_whitelist": ",".join(sorted(AUDIO_DECODERS)),
        "protocol_whitelist": NO_PROTOCOL,
    }


def audio_stream(container: av.container.InputContainer) -> av.AudioStream:
    """The first audio stream with an allowed decoder and sane parameters (others are ignored)."""
    streams = container.streams.audio
    if not streams:
        raise Refused("the file has no audio stream")
    codecs = []
    for stream in streams:
        codec = stream.codec_context.name if stream.codec_context is not None else "unknown"
        if codec in AUDIO_DECODERS:
            check(stream.codec_context.sample_rate or None, stream.codec_context.channels or None)
            return stream
        codecs.append(codec)
    raise Refused(f"the {codecs[0][:32]} codec is not taken (uploads: PCM, ADPCM, FLAC, Opus, Vorbis, MP3, AAC ...)")


def check(sample_rate: int | None, channels: int | None) -> None:
    """Refuse a rate or channel count the gateway does not decode (None: not known yet)."""
    if sample_rate is not None and not FILE_RATE_MIN <= sample_rate <= FILE_RATE_MAX:
        raise Refused(f"a sample rate of {sample_rate} Hz is outside {FILE_RATE_MIN}..{FILE_RATE_MAX}")
    if channels is not None and not 1 <= channels <= MAX_CHANNELS:
        raise Refused(f"{channels} channels: at most {MAX_CHANNELS} are decoded")


def check_frame(channels: int, samples: int) -> None:
    """Refuse a decoded frame too big to mix (see :data:`MAX_FRAME_BYTES`)."""
    check(None, channels)
    if channels * samples * 4 > MAX_FRAME_BYTES:
        raise Refused(f"a frame of {channels} channels x {samples} samples is over {MAX_FRAME_BYTES} bytes")


def describe(exc: Exception) -> str:
    """A decoder failure as the client is told it: FFmpeg's own words, never a path, cut short."""
    if isinstance(exc, av.FFmpegError):
        text = exc.strerror or type(exc).__name__
    else:
        text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:120] + "…"
