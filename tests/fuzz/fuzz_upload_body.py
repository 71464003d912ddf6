"""Upload request parsing: Content-Type, the Parameters JSON, the declared headerless format, and
Data Flow's multipart body (``Parameters`` + ``Audio``) cut into arbitrary chunks.

The first byte picks the part: 0 a Content-Type header, 1 a Parameters JSON, 2 a multipart body.
Declared errors: ``BadRequest`` and subclasses (422/415).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import parse_start
from gateway.errors import BadRequest
from gateway.upload.body import MultipartAudio, media_type, parse_parameters
from gateway.upload.source import declared_audio
from gateway.upload.spool import SpoolBudget
from tests.fuzz.common import run, split_points

BOUNDARY = "fuzzb0undary"


def one_input(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % 3, data[1:]
    try:
        if mode == 0:
            content_type = media_type(body.decode("latin-1"))
            declared = declared_audio(
                encoding=None, sample_rate=None, channels=None, content_type=content_type, parameters=None
            )
            if declared is not None:
                declared.hint().format.validate()
        elif mode == 1:
            parameters = parse_parameters(body, "Parameters")
            parse_start(parameters, default_audio=AudioFormat("pcm16", 16000, 1))
            declared = declared_audio(
                encoding=None, sample_rate=None, channels=None, content_type=("", {}), parameters=parameters
            )
            if declared is not None:
                declared.hint().format.validate()
        else:
            run(_multipart(body))
    except BadRequest:
        pass


async def _multipart(body: bytes) -> None:
    _, chunks = split_points(body)

    async def stream() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    multipart = MultipartAudio(stream(), BOUNDARY, SpoolBudget(len(body)))
    await multipart.open()
    assert multipart.parameters is None or isinstance(multipart.parameters, dict)
    total = 0
    async for audio in multipart.audio():
        total += len(audio)
    assert total <= len(body)


def seeds() -> list[bytes]:
    params = json.dumps({"Language": "en-US", "Audio": {"Encoding": "ulaw", "SampleRate": 8000}}).encode()
    part = f"--{BOUNDARY}\r\nContent-Disposition: form-data; name="
    multipart = (
        f'{part}"Parameters"\r\nContent-Type: application/json\r\n\r\n'.encode()
        + params
        + f'\r\n{part}"Audio"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'.encode()
        + b"RIFF"
        + bytes(40)
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return [b"\x00audio/L16; rate=8000; channels=2", b"\x00audio/basic", b"\x01" + params, b"\x02\x07" + multipart]
