"""``X-Dataflow-Parameters`` holding non-ASCII text: its bytes are read as UTF-8 (as curl and every HTTP
client send them), so Data Flow gets the text the client wrote, as from the multipart Parameters part.
Before, the value was read as latin-1 (the ASGI server's decoding) and ``Şükrü`` reached Data Flow as
``ÅÃ¼krÃ¼`` silently. A value that is not UTF-8 is a 422 that does not echo it."""

from __future__ import annotations

import json

import httpx

from gateway.simulator.server import DataflowSimulator
from tests.support import signals
from tests.support.harness import RunningGateway
from tests.support.upload_client import URL, multipart

WAV = signals.wav_bytes(signals.utterances(["12"], 8000), 8000, "mulaw")
PROJECT = "Şükrü-Çelik-東京"  # the Start's ProjectName is what the simulator records of it


async def test_utf8_header_parameters_reach_data_flow_as_written(
    gw: RunningGateway, simulator: DataflowSimulator
) -> None:
    raw = json.dumps({"ProjectName": PROJECT, "Language": "tr-TR"}, ensure_ascii=False).encode()
    assert raw != raw.decode("latin-1").encode()  # non-ASCII bytes on the wire, as curl sends them
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
        response = await http.post(URL, content=WAV, headers=[(b"X-Dataflow-Parameters", raw)])
        assert response.status_code == 200, response.text
        assert response.json()["transcript"] == {"0": "12"}
        assert simulator.records[-1].project == PROJECT

        # The same JSON in the multipart Parameters part, and ASCII with \u escapes in the header: the same.
        body, ctype = multipart([("Parameters", None, "application/json", raw), ("Audio", "a.wav", "audio/wav", WAV)])
        response = await http.post(URL, content=body, headers={"content-type": ctype})
        assert response.status_code == 200, response.text
        assert simulator.records[-1].project == PROJECT
        escaped = json.dumps({"ProjectName": PROJECT})
        assert escaped.isascii()
        response = await http.post(URL, content=WAV, headers={"X-Dataflow-Parameters": escaped})
        assert response.status_code == 200, response.text
        assert simulator.records[-1].project == PROJECT


async def test_header_parameters_that_are_not_utf8_are_refused_without_echo(
    gw: RunningGateway, simulator: DataflowSimulator
) -> None:
    sessions = len(simulator.records)
    raw = json.dumps({"ProjectName": "Zürich-secret"}, ensure_ascii=False).encode("latin-1")  # ü as one byte 0xFC
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
        response = await http.post(URL, content=WAV, headers=[(b"X-Dataflow-Parameters", raw)])
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_parameters"
    assert "X-Dataflow-Parameters is not UTF-8" in error["message"]
    assert "rich-secret" not in response.text
    assert len(simulator.records) == sessions  # refused before Data Flow was asked
