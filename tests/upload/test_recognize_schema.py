"""Schemathesis over the OpenAPI of POST /v1/recognize: generated requests (bodies of every
documented media type, multipart, query and header values) get no 5xx, and every answer conforms
to the documented statuses, content types and schemas.

Schemathesis drives a synchronous HTTP client, so the gateway and the simulator run on their own
event loop in a background thread for this module.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks

from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from tests.support.harness import running_gateway
from tests.support.settings import SECRETS, SIM_TENANT, SIM_TOKEN, settings_for

# POST /v1/tokens answers 501 without a signing key (a configuration error, not what is tested here).
SIGNING_KEY = "schemathesis-signing-key-0123456789abcdef"
SECRETS.add(SIGNING_KEY)


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    url: Future[str] = Future()
    stop = threading.Event()

    async def serve() -> None:
        sim = DataflowSimulator(SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT))
        await sim.start()
        try:
            async with running_gateway(
                settings_for(sim, max_upload_bytes=256 * 1024, token_signing_key=SIGNING_KEY)
            ) as gw:
                url.set_result(gw.http_url)
                while not stop.is_set():
                    await asyncio.sleep(0.05)
        finally:
            await sim.stop(None)

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:
            if not url.done():
                url.set_exception(exc)

    thread = threading.Thread(target=run, name="schemathesis-gateway", daemon=True)
    thread.start()
    yield url.result(timeout=15)
    stop.set()
    thread.join(timeout=20)
    assert not thread.is_alive()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_recognize_has_no_server_errors_and_matches_its_schema(gateway_url: str, mode: GenerationMode) -> None:
    api = schemathesis.openapi.from_url(f"{gateway_url}/openapi.json")
    operation = api["/v1/recognize"]["POST"]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: schemathesis.Case) -> None:
        # Schema-valid is not decodable: random bytes typed audio/wav are rightly a 415, so "positive
        # data must be accepted" does not apply here. Nor is schema-invalid undecodable: the body's own
        # bytes are the truth, not its declared types (a multipart Audio part typed anything, a query
        # string the schema did not foresee), so a decodable body is rightly recognised and "negative
        # data must be refused" does not apply either. Everything else does, no 5xx first of all.
        excluded = [checks.positive_data_acceptance, checks.negative_data_rejection]
        case.call_and_validate(timeout=30, excluded_checks=excluded)

    check()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_other_operation_has_no_server_errors_and_matches_its_schema(
    gateway_url: str, mode: GenerationMode
) -> None:
    api = schemathesis.openapi.from_url(f"{gateway_url}/openapi.json")
    # Draining would refuse the rest of this module's uploads (tests/system/test_docs.py covers drain).
    others = [op.ok() for op in api.get_all_operations()]
    others = [op for op in others if op.label not in ("POST /v1/recognize", "POST /internal/drain")]
    assert len(others) == 10
    if mode is GenerationMode.NEGATIVE:  # only a body can be invalid (any string is a valid path segment)
        others = [op for op in others if op.definition.raw.get("requestBody")]
        assert [op.label for op in others] == ["POST /v1/tokens"]
    for operation in others:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(timeout=30, excluded_checks=[checks.positive_data_acceptance])

        check()
