"""What the published documents show is what the gateway does.

Every example in the served OpenAPI document and in the AsyncAPI document validates against the
schema it illustrates (and the check is shown to catch one that does not); the documented
``/v1/recognize`` errors are what real requests get (codes, messages, schemas, header fields); the
documented WebSocket limits (the library's 1009, the non-fatal ``message_too_big`` before a start, the
control-message cap measured on the JSON written to Data Flow), the lenient ``start`` and the close
codes listed for the codes that end a ``/v1/stream`` session hold against a real gateway.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7, DRAFT202012
from websockets.exceptions import ConnectionClosed

from gateway.auth import key_digest
from gateway.dataflow.messages import build_request
from gateway.errors import ErrorCode, GatewayError
from tests.support import signals
from tests.support.harness import GatewayFactory, Transcript, next_message, ws_connect
from tests.support.settings import SECRETS

KEY = "documented-examples-key-0123456789"
SECRETS.add(KEY)
ROOT = "urn:document"
RECOGNIZE = "/v1/recognize"
_SCHEMA_WORDS = {"type", "properties", "$ref", "anyOf", "allOf", "oneOf", "items", "const", "enum"}


# --- checking examples against their schemas ---------------------------------------------------------


def _rooted(node: Any) -> Any:
    """``node`` with its local ``$ref``s (``#/…``) pointing into the registered document."""
    if isinstance(node, dict):
        return {k: (ROOT + v if k == "$ref" and isinstance(v, str) and v.startswith("#") else _rooted(v))
                for k, v in node.items()}  # fmt: skip
    if isinstance(node, list):
        return [_rooted(v) for v in node]
    return node


def _validator(document: dict[str, Any], schema: dict[str, Any], *, asyncapi: bool) -> Any:
    spec = DRAFT7 if asyncapi else DRAFT202012
    registry: Registry[Any] = Registry().with_resource(ROOT, Resource.from_contents(document, spec))
    cls = jsonschema.Draft7Validator if asyncapi else jsonschema.Draft202012Validator
    return cls(_rooted(schema), registry=registry)


def _problems(document: dict[str, Any], schema: dict[str, Any], example: Any, *, asyncapi: bool) -> list[str]:
    return [e.message[:200] for e in _validator(document, schema, asyncapi=asyncapi).iter_errors(example)]


def _examples_of(node: dict[str, Any], *, media: bool) -> Iterator[tuple[str, Any]]:
    if "example" in node:
        yield "example", node["example"]
    examples = node.get("examples")
    if media and isinstance(examples, dict):  # a media type's or a parameter's: {name: {value}}
        for name, example in examples.items():
            if "value" in example:
                yield f"examples/{name}", example["value"]
    elif not media and isinstance(examples, list):  # a schema's: a list of values
        for i, value in enumerate(examples):
            yield f"examples/{i}", value


def openapi_examples(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(where, schema, example) for every example of the OpenAPI document: those of media types and
    parameters (against their ``schema``) and those of schemas (against the schema itself)."""

    def walk(node: Any, where: str, parent: str) -> Iterator[tuple[str, dict[str, Any], Any]]:
        if isinstance(node, dict):
            if "schema" in node and isinstance(node["schema"], dict):
                for name, value in _examples_of(node, media=True):
                    yield f"{where}/{name}", node["schema"], value
            elif parent != "properties" and _SCHEMA_WORDS & node.keys():
                for name, value in _examples_of(node, media=False):
                    yield f"{where}/{name}", node, value
            for key, value in node.items():
                if key not in ("example", "examples"):
                    yield from walk(value, f"{where}/{key}", key)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, f"{where}/{i}", parent)

    yield from walk(document, "", "")


def asyncapi_examples(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(where, schema, example) for every message example (against the message's payload) and every
    ``examples`` list of a payload or component schema (against that schema)."""

    def walk(node: Any, where: str, parent: str) -> Iterator[tuple[str, dict[str, Any], Any]]:
        if isinstance(node, dict):
            if parent != "properties" and _SCHEMA_WORDS & node.keys():
                for name, value in _examples_of(node, media=False):
                    yield f"{where}/{name}", node, value
            for key, value in node.items():
                if key != "examples":
                    yield from walk(value, f"{where}/{key}", key)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, f"{where}/{i}", parent)

    for name, message in document["components"]["messages"].items():
        for i, example in enumerate(message.get("examples", [])):
            yield f"messages/{name}/examples/{i}", message["payload"], example["payload"]
        yield from walk(message["payload"], f"messages/{name}/payload", "")
    yield from walk(document["components"]["schemas"], "schemas", "")


def asyncapi_document() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(resources.files("gateway").joinpath("asyncapi.yaml").read_text("utf-8"))
    return doc


async def served_openapi(factory: GatewayFactory, **overrides: Any) -> dict[str, Any]:
    async with factory(**overrides) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        document: dict[str, Any] = (await http.get("/openapi.json")).json()
    return document


def _answers(document: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = document["paths"][RECOGNIZE]["post"]["responses"]
    return responses


def documented_codes(document: dict[str, Any], status: int) -> dict[str, dict[str, Any]]:
    """The example bodies documented for ``status`` of POST /v1/recognize, by their error code."""
    media = _answers(document)[str(status)]["content"]["application/json"]
    bodies = [e["value"] for e in media.get("examples", {}).values()] + (
        [media["example"]] if "example" in media else []
    )
    return {body["error"]["code"]: body for body in bodies}


def conforms(document: dict[str, Any], answer: httpx.Response) -> dict[str, Any]:
    """``answer`` (an error of POST /v1/recognize) against its documented status: its body validates
    against the declared schema, its code is one of the documented examples, every header field declared
    required is present. Returns the body."""
    declared = _answers(document).get(str(answer.status_code))
    assert declared is not None, f"status {answer.status_code} is not documented"
    body: dict[str, Any] = answer.json()
    schema = declared["content"]["application/json"]["schema"]
    assert not _problems(document, schema, body, asyncapi=False), body
    assert body["error"]["code"] in documented_codes(document, answer.status_code), (answer.status_code, body)
    for name, header in declared.get("headers", {}).items():
        if header.get("required"):
            assert name.lower() in answer.headers, (answer.status_code, name, dict(answer.headers))
    return body


# --- the examples -----------------------------------------------------------------------------------------


async def test_every_openapi_example_validates_against_its_schema(gateway_factory: GatewayFactory) -> None:
    document = await served_openapi(gateway_factory)
    checked = {where: _problems(document, schema, example, asyncapi=False)
               for where, schema, example in openapi_examples(document)}  # fmt: skip
    assert {where: problems for where, problems in checked.items() if problems} == {}
    # The walk reaches what matters (a walk that finds nothing proves nothing).
    recognize = "/paths//v1/recognize/post/responses"  # where: the keys joined by "/"
    for must in ("/components/schemas/RecognizeResult/example",
                 f"{recognize}/413/content/application/json/examples/audio_too_long",
                 f"{recognize}/401/content/application/json/examples/invalid_credential",
                 f"{recognize}/403/content/application/json/examples/project_not_allowed",
                 f"{recognize}/405/content/application/json/examples/method_not_allowed"):  # fmt: skip
        assert must in checked, (must, sorted(checked)[:20])
    assert len(checked) >= 20


async def test_the_check_catches_an_example_that_breaks_its_schema(gateway_factory: GatewayFactory) -> None:
    """The RecognizeResult example as it was (a Speech Started event without ``text``) is reported."""
    document = copy.deepcopy(await served_openapi(gateway_factory))
    example = document["components"]["schemas"]["RecognizeResult"]["example"]
    example["events"][0].pop("text")
    failing = [where for where, schema, value in openapi_examples(document)
               if _problems(document, schema, value, asyncapi=False)]  # fmt: skip
    assert failing == ["/components/schemas/RecognizeResult/example"]


def test_every_asyncapi_example_validates_against_its_payload_schema() -> None:
    document = asyncapi_document()
    checked = {where: _problems(document, schema, example, asyncapi=True)
               for where, schema, example in asyncapi_examples(document)}  # fmt: skip
    assert {where: problems for where, problems in checked.items() if problems} == {}
    assert {"messages/DataflowErrorResponse/examples/0", "messages/DataflowErrorResponse/examples/1",
            "messages/NativeStart/examples/0"} <= checked.keys()  # fmt: skip
    # ... and would catch a broken one: the legacy ErrorResponse without its code.
    legacy = dict(document["components"]["messages"]["DataflowErrorResponse"]["examples"][1]["payload"])
    del legacy["error-code"]
    assert _problems(document, document["components"]["messages"]["DataflowErrorResponse"]["payload"], legacy,
                     asyncapi=True)  # fmt: skip


# --- POST /v1/recognize answers what its document says -----------------------------------------------------


def _auth(**extra: Any) -> dict[str, Any]:
    return {
        "auth": "required",
        "allow_insecure_no_auth": False,
        "api_keys": [{"name": "acme", "sha256": key_digest(KEY), "projects": ["demo"]}],
        **extra,
    }


def _wav(seconds: float) -> bytes:
    groups = ["123", "456"]
    samples = signals.utterances(groups, 16000, tail_ms=int(seconds * 1000))
    return signals.wav_bytes(samples, 16000)


async def test_401_and_403_answers_are_the_documented_examples(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(**_auth()) as gw, httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
        document: dict[str, Any] = (await http.get("/openapi.json")).json()
        wav = _wav(0.5)
        missing = await http.post(RECOGNIZE, content=wav)
        unknown = await http.post(RECOGNIZE, content=wav, headers={"X-API-Key": "not-a-key-of-this-gateway"})
        other = await http.post(f"{RECOGNIZE}?project=other", content=wav, headers={"X-API-Key": KEY})
        allowed = await http.post(RECOGNIZE, content=wav, headers={"X-API-Key": KEY})
    assert (missing.status_code, unknown.status_code, other.status_code) == (401, 401, 403)
    assert allowed.status_code == 200, allowed.text  # the key itself works: the refusals are the checks'
    documented_401, documented_403 = documented_codes(document, 401), documented_codes(document, 403)
    # The documented examples are exactly what the gateway answers (code, message, retryable).
    assert conforms(document, missing) == documented_401["missing_credential"]
    assert conforms(document, unknown) == documented_401["invalid_credential"]
    assert conforms(document, other) == documented_403["project_not_allowed"]
    assert set(documented_401) | set(documented_403) <= {c.value for c in ErrorCode}
    assert "unauthorized" not in documented_401 and "forbidden" not in documented_403


async def test_429_auth_throttled_is_documented_with_retry_after(gateway_factory: GatewayFactory) -> None:
    async with (
        gateway_factory(**_auth(auth_failures_per_minute=1)) as gw,
        httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http,
    ):
        document: dict[str, Any] = (await http.get("/openapi.json")).json()
        answers = [await http.post(RECOGNIZE, content=b"x", headers={"X-API-Key": "wrong-key"}) for _ in range(3)]
    throttled = answers[-1]
    assert throttled.status_code == 429, [a.status_code for a in answers]
    body = conforms(document, throttled)
    assert body["error"]["code"] == "auth_throttled" and body["error"]["retryable"] is True
    assert int(throttled.headers["retry-after"]) >= 1
    assert _answers(document)["429"]["headers"]["Retry-After"]["required"] is True
    assert {"rate_limited", "audio_budget_spent", "auth_throttled"} <= documented_codes(document, 429).keys()


async def test_405_carries_allow_post_as_documented(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory() as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        document: dict[str, Any] = (await http.get("/openapi.json")).json()
        answers = [await http.get(RECOGNIZE), await http.put(RECOGNIZE, content=b"x")]
    declared = _answers(document)["405"]
    assert declared["headers"]["Allow"]["required"] is True
    for answer in answers:
        assert answer.status_code == 405
        assert answer.headers["allow"] == "POST"
        assert conforms(document, answer) == documented_codes(document, 405)["method_not_allowed"]


async def test_413_audio_too_long_carries_the_documented_partial_result(gateway_factory: GatewayFactory) -> None:
    async with (
        gateway_factory(max_session_s=2, drain_budget_s=1) as gw,
        httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http,
    ):
        document: dict[str, Any] = (await http.get("/openapi.json")).json()
        answer = await http.post(RECOGNIZE, content=_wav(3), headers={"Content-Type": "audio/wav"})
    assert answer.status_code == 413, answer.text
    body = conforms(document, answer)
    assert body["error"] == {"code": "audio_too_long", "retryable": False,
                             "message": "the audio is longer than the limit of 2 s; the rest was not sent"}  # fmt: skip
    result = {"$ref": "#/components/schemas/RecognizeResult"}
    assert not _problems(document, result, body, asyncapi=False)  # the error *and* the result, not the envelope only
    example = documented_codes(document, 413)["audio_too_long"]
    assert example.keys() == body.keys()  # the documented body has the fields the real one has, no more
    assert body["transcript"]["0"].startswith("123") and body["events"]


@pytest.mark.parametrize(
    ("fault", "settings", "status", "code", "retry_after"),
    [
        ("abort:0:UNAUTHENTICATED", {}, 502, "upstream_auth_failed", "1"),
        ("reject_start", {}, 502, "upstream_rejected", None),
        ("slow_start:3000", {"upstream_start_timeout_s": 0.5}, 504, "upstream_timeout", "1"),
    ],
)
async def test_upstream_failures_are_answered_as_documented(
    gateway_factory: GatewayFactory,
    fault: str,
    settings: dict[str, Any],
    status: int,
    code: str,
    retry_after: str | None,
) -> None:
    params = {"X-Dataflow-Parameters": json.dumps({"Settings": {"SimulatorFault": fault}})}
    async with gateway_factory(**settings) as gw, httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
        document: dict[str, Any] = (await http.get("/openapi.json")).json()
        answer = await http.post(RECOGNIZE, content=_wav(0.5), headers=params)
    assert answer.status_code == status, answer.text
    assert conforms(document, answer)["error"]["code"] == code
    assert answer.headers.get("retry-after") == retry_after
    if retry_after is not None:
        assert "Retry-After" in _answers(document)[str(status)]["headers"]


async def test_415_unsupported_content_encoding_names_the_declared_header(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory() as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        document: dict[str, Any] = (await http.get("/openapi.json")).json()
        answer = await http.post(RECOGNIZE, content=_wav(0.5), headers={"Content-Encoding": "br"})
    assert answer.status_code == 415
    assert conforms(document, answer)["error"]["code"] == "unsupported_content_encoding"
    assert "Accept-Encoding" in _answers(document)["415"]["headers"]
    assert answer.headers["accept-encoding"] == "gzip, deflate"


# --- /v1/stream does what the AsyncAPI document and the README say -----------------------------------------


def ending_close_codes() -> dict[str, set[int]]:
    """The codes NativeError's description says END a /v1/stream session, with their close codes."""
    text = asyncapi_document()["components"]["messages"]["NativeError"]["description"]
    found: dict[str, set[int]] = {}
    for bullet in re.findall(r"^\* (\d{4}) — (.*?)(?=^\* |^\S|\Z)", text, re.M | re.S):
        for code in re.findall(r"`([a-z_]+)`", bullet[1]):
            found.setdefault(code, set()).add(int(bullet[0]))
    return found


def test_the_codes_said_to_end_a_session_are_real_and_complete() -> None:
    listed = ending_close_codes()
    assert set(listed) <= {c.value for c in ErrorCode}, set(listed) - {c.value for c in ErrorCode}
    expected = {"max_duration": 1008, "capacity_exceeded": 1013, "rate_limited": 1013, "upstream_timeout": 1011,
                "upstream_auth_failed": 1011, "project_not_allowed": 1008, "token_reused": 1008,
                "invalid_credential": 1008, "going_away": 1001, "idle_timeout": 1008, "start_timeout": 1008,
                "client_too_slow": 1008, "upstream_unavailable": 1011, "upstream_rejected": 1011,
                "upstream_protocol_error": 1011, "internal_error": 1011}  # fmt: skip
    for code, close in expected.items():
        assert close in listed.get(code, set()), (code, listed.get(code))

    # A code that is a class's own code closes with that class's close code.
    def classes(cls: type[GatewayError]) -> Iterator[type[GatewayError]]:
        for sub in cls.__subclasses__():
            yield sub
            yield from classes(sub)

    everyone = [GatewayError, *(c for c in classes(GatewayError) if c.__module__.startswith("gateway."))]
    by_default = {cls.code.value: cls.ws_close_code for cls in everyone}
    assert by_default["max_duration" if "max_duration" in by_default else "limit_reached"] == 1008
    for code, closes in listed.items():
        if code in by_default:
            assert by_default[code] in closes, (code, by_default[code], closes)


async def _session_end(ws: Any) -> tuple[list[dict[str, Any]], int | None]:
    messages: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(15):
            async for frame in ws:
                if isinstance(frame, str):
                    messages.append(json.loads(frame))
    except ConnectionClosed:
        pass
    await ws.wait_closed()
    return messages, ws.close_code


@pytest.mark.ws
async def test_ending_errors_close_with_the_documented_codes(gateway_factory: GatewayFactory) -> None:
    listed = ending_close_codes()
    async with gateway_factory(max_session_s=1, drain_budget_s=0.5) as gw, ws_connect(gw.ws_url()) as ws:
        await ws.send(json.dumps({"type": "start"}))  # max_duration
        messages, close = await _session_end(ws)
    errors = [m["code"] for m in messages if m["type"] == "error"]
    assert errors == ["max_duration"] and messages[-1]["type"] == "closed" and close in listed["max_duration"]
    async with gateway_factory(max_sessions=1) as gw, ws_connect(gw.ws_url()) as first:  # capacity_exceeded
        await first.send(json.dumps({"type": "start"}))
        await next_message(first, "started")
        async with ws_connect(gw.ws_url()) as second:  # refused at once, before its start
            messages, close = await _session_end(second)
    assert [m["code"] for m in messages if m["type"] == "error"] == ["capacity_exceeded"]
    assert close in listed["capacity_exceeded"]
    async with gateway_factory(**_auth()) as gw, ws_connect(gw.ws_url(), additional_headers={"X-API-Key": KEY}) as ws:
        await ws.send(json.dumps({"type": "start", "project": "other"}))  # project_not_allowed
        messages, close = await _session_end(ws)
    assert [m["code"] for m in messages if m["type"] == "error"] == ["project_not_allowed"]
    assert messages[-1] == {"type": "closed", "reason": "project_not_allowed", "audioMs": 0}
    assert close in listed["project_not_allowed"]


@pytest.mark.ws
async def test_a_message_over_the_websocket_limit_gets_1009_from_the_library_and_no_message(
    gateway_factory: GatewayFactory,
) -> None:
    async with gateway_factory(max_ws_message_bytes=4096) as gw, ws_connect(gw.ws_url()) as ws:
        await ws.send(json.dumps({"type": "start"}))
        await next_message(ws, "started")
        await ws.send(b"\0" * 4098)
        messages, close = await _session_end(ws)
    assert close == 1009
    assert ws.close_reason is not None and "exceeds limit of 4096 bytes" in ws.close_reason, ws.close_reason
    assert [m for m in messages if m["type"] in ("error", "closed")] == []


def _padded(message: dict[str, Any], size: int) -> str:
    """``message`` (with a ``"PAD"`` string somewhere) padded to ``size`` bytes of UTF-8."""
    text = json.dumps(message, separators=(",", ":"))
    return text.replace('"PAD"', '"' + "a" * (size - len(text.encode()) + 3) + '"')


@pytest.mark.ws
async def test_a_start_over_the_control_cap_is_a_non_fatal_message_too_big(gateway_factory: GatewayFactory) -> None:
    cap = 1024
    over = _padded({"type": "start", "settings": {"Pad": "PAD"}}, cap + 1)
    at_cap = _padded({"type": "start", "settings": {"Pad": "PAD"}}, cap)
    assert (len(over.encode()), len(at_cap.encode())) == (cap + 1, cap)
    async with gateway_factory(max_control_message_bytes=cap) as gw, ws_connect(gw.ws_url()) as ws:
        await ws.send(over)
        error = await next_message(ws, "error")
        assert error == {"type": "error", "code": "message_too_big", "retryable": False,
                         "message": f"a message before the start may be at most {cap} bytes"}  # fmt: skip
        await ws.send(at_cap)  # the socket stayed open: a start that fits starts the session
        await next_message(ws, "started")
        await ws.send(json.dumps({"type": "stop"}))
        messages, close = await _session_end(ws)
    assert close == 1000 and messages[-1]["type"] == "closed"


def _upstream_size(message: dict[str, Any]) -> int:
    return len(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode())


@pytest.mark.ws
async def test_the_control_cap_is_measured_on_the_utf8_json_written_to_data_flow(
    gateway_factory: GatewayFactory,
) -> None:
    cap = 1024

    def settings(size: int) -> dict[str, Any]:
        """Settings with 'ş' (2 bytes of UTF-8, a 6-byte escape in the client's JSON) whose Update, as
        written to Data Flow, is ``size`` bytes."""
        base = {"AgentName": "ş" * 300}
        fill = size - _upstream_size(build_request("Update", Settings={**base, "Pad": ""}))
        return {**base, "Pad": "a" * fill}

    def event(size: int) -> dict[str, Any]:
        base: dict[str, Any] = {"Name": "Note", "Data": {"Text": "ş" * 300, "Pad": ""}}
        base["Data"]["Pad"] = "a" * (size - _upstream_size({"Event": base}))
        return base

    assert _upstream_size(build_request("Update", Settings=settings(cap))) == cap
    assert _upstream_size({"Event": event(cap + 1)}) == cap + 1
    async with gateway_factory(max_control_message_bytes=cap) as gw, ws_connect(gw.ws_url()) as ws:
        await ws.send(json.dumps({"type": "start"}))
        await next_message(ws, "started")
        fits = json.dumps({"type": "update", "settings": settings(cap)})  # ASCII escapes: far over cap as sent
        assert len(fits.encode()) > cap + 1000
        await ws.send(fits)
        answer = await next_message(ws, "response")
        assert (answer["name"], answer["ok"]) == ("UpdateResponse", True)
        await ws.send(json.dumps({"type": "update", "settings": settings(cap + 1)}, ensure_ascii=False))
        error = await next_message(ws, "error")
        assert error["code"] == "message_too_big" and f"of {cap + 1} bytes" in error["message"], error
        await ws.send(json.dumps({"type": "event", "event": event(cap)}))
        await ws.send(json.dumps({"type": "ping", "id": 1}))
        before_pong = Transcript()
        await next_message(ws, "pong", skipped=before_pong)
        assert [m for m in before_pong.messages if m["type"] == "error"] == []  # the event at the cap went
        await ws.send(json.dumps({"type": "event", "event": event(cap + 1)}))
        error = await next_message(ws, "error")
        assert error["code"] == "message_too_big" and f"of {cap + 1} bytes" in error["message"], error
        await ws.send(json.dumps({"type": "stop"}))
        _, close = await _session_end(ws)
    assert close == 1000  # neither refusal ended the session


@pytest.mark.ws
async def test_start_accepts_numbers_as_strings_and_the_usual_boolean_spellings(
    gateway_factory: GatewayFactory,
) -> None:
    """As the NativeStart description says (pydantic's lax mode, kept for existing clients)."""
    description = asyncapi_document()["components"]["messages"]["NativeStart"]["description"]
    assert '"16000"' in description and '"yes"' in description
    start = {"type": "start", "audio": {"encoding": "pcm16", "sampleRate": "16000", "channels": True},
             "interim": "yes", "raw": "off"}  # fmt: skip
    async with gateway_factory() as gw:
        for audio in (start["audio"], {"sampleRate": 16000.0, "channels": "1"}):
            async with ws_connect(gw.ws_url()) as ws:
                await ws.send(json.dumps({**start, "audio": audio}))
                started = await next_message(ws, "started")
                assert (started["audio"]["sampleRate"], started["audio"]["channels"]) == (16000, 1)
                await ws.send(json.dumps({"type": "stop"}))
                await _session_end(ws)
