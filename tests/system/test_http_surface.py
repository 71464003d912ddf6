"""The HTTP surface over real sockets: every answer (pages, JSON, YAML, metrics, every kind of error, a
refused WebSocket handshake) says ``nosniff`` and carries a Content-Security-Policy, and HEAD is answered
wherever GET is, with GET's head and no body."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gateway.auth import key_digest
from gateway.routes.http_conventions import HEADERS
from gateway.simulator.server import DataflowSimulator
from tests.support.harness import running_gateway
from tests.support.settings import settings_for

DEFAULT_POLICY = HEADERS["content-security-policy"]
JSON = {"content-type": "application/json"}


def _explode(*_: object) -> None:
    raise RuntimeError("a bug")


def assert_conventional(response: httpx.Response | Any, what: str, *, page: bool = False) -> None:
    headers = response.headers
    assert headers.get("x-content-type-options") == "nosniff", what
    policy = headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in policy, what
    assert (policy == DEFAULT_POLICY) is not page, what  # a page keeps its own


@pytest.mark.ws
async def test_every_answer_says_nosniff_and_carries_a_policy(
    simulator: DataflowSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        running_gateway(settings_for(simulator, demo_page=True)) as gw,
        httpx.AsyncClient(base_url=gw.http_url) as http,
    ):
        for path in ["/", "/static/demo.js", "/docs", "/redoc"]:
            assert_conventional(await http.get(path), path, page=True)
        answers = {
            "json": await http.get("/healthz"),
            "openapi": await http.get("/openapi.json"),
            "yaml": await http.get("/asyncapi.yaml"),
            "metrics": await http.get("/metrics"),
            "asset": await http.get("/docs/assets/swagger-ui.css"),
            "404": await http.get("/no/such/path"),
            "405": await http.delete("/v1/tokens"),
            "413": await http.post("/v1/tokens", content=b"{" * (1 << 20), headers=JSON),
            "422": await http.post("/v1/recognize", content=b""),
            "400 host": await http.get("/asyncapi.yaml", headers={"Host": "evil.example"}),
        }
        monkeypatch.setattr("gateway.routes.health.upstream_status", _explode)
        answers["500"] = await http.get("/healthz")
        for what, response in answers.items():
            expected = int(what[:3]) if what[0].isdigit() else 200
            assert response.status_code == expected, (what, response.status_code)
            assert_conventional(response, what)
        # A refused WebSocket handshake is an HTTP answer too.
        with pytest.raises(InvalidStatus) as refused:
            async with connect(gw.ws_url(), origin="https://evil.example"):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403
        assert_conventional(refused.value.response, "ws denial")


async def test_head_is_answered_wherever_get_is(simulator: DataflowSimulator) -> None:
    async with (
        running_gateway(settings_for(simulator, demo_page=True)) as gw,
        httpx.AsyncClient(base_url=gw.http_url) as http,
    ):
        document = (await http.get("/openapi.json")).json()
        paths = [p for p, item in document["paths"].items() if "get" in item and "{" not in p]
        paths += ["/openapi.json", "/static/dataflow-gateway.js", "/docs/assets/favicon.png"]
        assert {"/healthz", "/readyz", "/metrics", "/", "/docs", "/asyncapi.yaml"} <= set(paths)
        for path in paths:
            got, head = await http.get(path), await http.head(path)
            assert head.status_code == got.status_code == 200, path
            assert head.content == b"", path
            assert head.headers["content-type"] == got.headers["content-type"], path
            if path != "/metrics":  # its numbers move between the two requests
                assert int(head.headers["content-length"]) == len(got.content), path
        # Not a way around a route's methods: HEAD of a POST route is still refused, in the envelope's head.
        refused = await http.head("/v1/tokens")
        assert refused.status_code == 405 and refused.headers["allow"] == "POST" and refused.content == b""
        assert (await http.head("/no/such/path")).status_code == 404


async def test_a_websocket_path_asked_for_over_plain_http_says_so(simulator: DataflowSimulator) -> None:
    async with running_gateway(settings_for(simulator)) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        for path in ["/v1/stream", "/project-runner/demo", "/t/some-key/v1/twilio", "/v1/audiocodes?x=1"]:
            answer = await http.get(path)
            assert answer.status_code == 426 and answer.headers["upgrade"] == "websocket", path
            assert answer.json()["error"]["code"] == "bad_request"
            assert "WebSocket connections only" in answer.json()["error"]["message"]
        assert (await http.get("/v1/streams")).status_code == 404  # a path that is no endpoint stays 404
        assert (await http.post("/v1/stream")).status_code == 426


async def test_no_answer_redirects_and_a_trailing_slash_is_not_found(simulator: DataflowSimulator) -> None:
    """Starlette redirected ``/docs/`` to an absolute URL built from the request's Host header: with auth on
    and no public hosts configured (any host accepted), ``Host: evil.example`` got ``Location:
    http://evil.example/docs``. Paths are exact now: a trailing slash is a 404 in the error envelope."""
    keys = [{"name": "a", "sha256": key_digest("dfg_http_surface_key")}]  # (our examples' all-zero one is refused)
    settings = settings_for(simulator, demo_page=True, auth="required", api_keys=keys)
    async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        document = (await http.get("/openapi.json")).json()
        exact = [p for p, item in document["paths"].items() if "get" in item and "{" not in p and p != "/"]
        exact += ["/openapi.json", "/static/dataflow-gateway.js", "/docs/assets/favicon.png"]
        for path in exact:  # every GET route still answers, to any host, at its exact path
            assert (await http.get(path, headers={"Host": "evil.example"})).status_code == 200, path
        posts = [p for p, item in document["paths"].items() if "post" in item]
        slashed = [f"{p}/" for p in exact + posts] + ["/t/some-key/v1/recognize/", "/v1/recognize/?token=abc"]
        for path in slashed:
            for method in ("GET", "POST", "HEAD"):
                answer = await http.request(method, path, headers={"Host": "evil.example"})
                assert answer.status_code == 404 and "location" not in answer.headers, (method, path)
                if method != "HEAD":
                    assert answer.json()["error"]["code"] == "not_found", (method, path)
