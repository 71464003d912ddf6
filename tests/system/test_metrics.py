"""/metrics as operators expect it: the process's own figures (process_*, python_*), every error answer
counted by status and error code (uploads and refused WebSocket handshakes included; never a string
the client chose), and no ``*_created`` series."""

from __future__ import annotations

import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus

from gateway.auth import key_digest
from gateway.errors import ErrorCode
from gateway.simulator.server import DataflowSimulator
from tests.support import signals
from tests.support.harness import running_gateway, ws_connect
from tests.support.settings import settings_for

KEY = "dfg_metrics-test-key-0123456789abcdefghijkl"
OTHER_PROJECT = "client-chosen-project-name"


def refused(metrics_text: str) -> dict[tuple[str, str], float]:
    """``requests_refused_total`` as {(status, reason): count}."""
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "dataflow_gateway_requests_refused":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["status"], sample.labels["reason"]] = sample.value
    return counts


async def test_process_metrics_and_no_created_series(simulator: DataflowSimulator) -> None:
    async with running_gateway(settings_for(simulator)) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        await http.get("/no/such/path")  # at least one labelled child
        text = (await http.get("/metrics")).text
    names = {family.name for family in text_string_to_metric_families(text)}
    for expected in ("process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds",
                     "process_start_time_seconds", "python_info", "python_gc_collections"):  # fmt: skip
        assert expected in names, expected
    created = [line for line in text.splitlines() if "_created" in line]
    assert created == []


@pytest.mark.ws
async def test_refused_requests_are_counted_by_status_and_error_code(simulator: DataflowSimulator) -> None:
    settings = settings_for(
        simulator, auth="required", allow_insecure_no_auth=False, auth_failures_per_minute=2, max_upload_bytes=64_000,
        api_keys=[{"name": "k", "sha256": key_digest(KEY), "projects": ["demo"]}],
    )  # fmt: skip
    key = {"X-API-Key": KEY}
    wav = signals.wav_bytes(signals.utterances(["1"], 16000, lead_ms=100, tail_ms=100), 16000)
    async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.http_url, timeout=20) as http:
        statuses = [
            (await http.post("/v1/recognize", headers=key, content=b"not audio at all" * 64)).status_code,  # 415
            (await http.post("/v1/recognize", headers=key, content=b"\x00" * 200_000)).status_code,  # 413
            (await http.post("/v1/recognize?sampleRate=5", headers=key, content=wav)).status_code,  # 422
            (await http.post(f"/v1/recognize?project={OTHER_PROJECT}", headers=key, content=wav)).status_code,  # 403
            (await http.post("/v1/recognize", content=wav)).status_code,  # 401 missing
            (await http.post("/v1/recognize", headers={"X-API-Key": "dfg_wrong1"}, content=wav)).status_code,
            (await http.post("/v1/recognize", headers={"X-API-Key": "dfg_wrong2"}, content=wav)).status_code,
            (await http.post("/v1/recognize", headers={"X-API-Key": "dfg_wrong3"}, content=wav)).status_code,  # 429
            (await http.get("/v1/recognize")).status_code,  # 405
        ]
        with pytest.raises(InvalidStatus) as handshake:  # a WebSocket handshake refused with an HTTP status
            async with ws_connect(gw.ws_url()):
                pass
        gw.gateway.drain(30)
        draining = await http.post("/v1/recognize", headers=key, content=wav)
        text = (await http.get("/metrics")).text
    assert statuses == [415, 413, 422, 403, 401, 401, 401, 429, 405]
    assert handshake.value.response.status_code == 401
    assert draining.status_code == 503
    counts = refused(text)
    assert counts == {
        ("415", "unsupported_audio_format"): 1,
        ("413", "upload_too_large"): 1,
        ("422", "invalid_parameters"): 1,
        ("403", "project_not_allowed"): 1,
        ("401", "missing_credential"): 2,  # the upload and the WebSocket handshake
        ("401", "invalid_credential"): 2,
        ("429", "auth_throttled"): 1,
        ("405", "method_not_allowed"): 1,
        ("503", draining.json()["error"]["code"]): 1,
    }
    reasons = {reason for _, reason in counts}
    assert reasons <= {code.value for code in ErrorCode}  # a closed set
    assert OTHER_PROJECT not in text and "dfg_wrong" not in text
    assert re.search(r'dataflow_gateway_requests_refused_total\{reason="[a-z_]+",status="\d{3}"\}', text)
