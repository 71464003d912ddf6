"""The API documents and pages: a valid, complete OpenAPI (security schemes for every credential kind,
error responses, readable operation ids), one error envelope for every error over real HTTP (FastAPI's
and Starlette's own included), and /docs and /redoc rendering in headless Chromium with the network off.

Chromium is Debian's (driven by Playwright, never a downloaded browser); without it the browser tests
skip, except in CI (``CI=true`` or ``REQUIRE_SYSTEM_BINARIES=1``), where they fail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from gateway.auth import key_digest
from gateway.errors import ErrorCode
from gateway.simulator.server import DataflowSimulator
from tests.support.harness import RunningGateway, running_gateway
from tests.support.settings import settings_for
from tests.support.system import chromium as find_chromium

KEY = "dfg_docs-test-key-0123456789abcdefghijklmnop"
OPERATION_IDS = {
    "recognize", "mintToken", "healthz", "readyz", "metrics", "drain", "swaggerUi", "redoc", "docsAsset",
    "asyncapi", "index", "staticFile",
}  # fmt: skip
CREDENTIAL_SCHEMES = {"ApiKey", "Bearer", "BrowserToken", "QueryToken", "AdminToken"}
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
PROBE = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"


def operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {op["operationId"]: op for item in document["paths"].values() for op in item.values()}


async def test_openapi_is_valid_and_documents_credentials_and_errors(simulator: DataflowSimulator) -> None:
    settings = settings_for(simulator, auth="required", allow_insecure_no_auth=False,
                            api_keys=[{"name": "k", "sha256": key_digest(KEY)}])  # fmt: skip
    async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        document = (await http.get("/openapi.json")).json()
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    ops = operations(document)
    assert set(ops) == OPERATION_IDS
    assert set(document["components"]["securitySchemes"]) == CREDENTIAL_SCHEMES
    assert document["components"]["securitySchemes"]["QueryToken"] == {
        **document["components"]["securitySchemes"]["QueryToken"], "in": "query", "name": "token"}  # fmt: skip
    assert "/t/<API key>/" in document["components"]["securitySchemes"]["ApiKey"]["description"]
    # Auth is required here: no anonymous alternative ({}) on the client APIs.
    assert ops["recognize"]["security"] == [{"ApiKey": []}, {"Bearer": []}, {"BrowserToken": []}, {"QueryToken": []}]
    assert {"BrowserToken": []} not in ops["mintToken"]["security"]  # a browser token cannot mint another
    assert ops["drain"]["security"][0] == {"AdminToken": []}
    assert ops["healthz"]["security"] == [] and ops["metrics"]["security"] == []
    # What each route can answer, every error in the envelope, FastAPI's {"detail": [...]} nowhere.
    expected = {
        "recognize": {"400", "401", "403", "405", "408", "413", "415", "422", "429", "502", "503", "504"},
        "mintToken": {"400", "401", "403", "408", "413", "422", "429", "501"},  # 408/413: the body's bounds
        "drain": {"401", "408", "413", "422"},
        "staticFile": {"400", "404"},
        "docsAsset": {"400", "404"},
    }
    for op_id, statuses in expected.items():
        errors = {s for s in ops[op_id]["responses"] if int(s) >= 400}
        assert errors == statuses, op_id
        for status in statuses:
            schema = ops[op_id]["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (op_id, status)
    assert "HTTPValidationError" not in str(document)
    codes = document["components"]["schemas"]["ErrorCode"]["enum"]
    assert set(codes) == {c.value for c in ErrorCode}


async def test_anonymous_access_is_documented_when_auth_is_off(simulator: DataflowSimulator) -> None:
    async with running_gateway(settings_for(simulator)) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        ops = operations((await http.get("/openapi.json")).json())
    assert {} in ops["recognize"]["security"]
    assert {} not in ops["mintToken"]["security"]  # minting always needs an API key


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code and set(body["error"]) == {"code", "message", "retryable"}
    assert body["error"]["message"]
    return body


async def test_every_kind_of_error_answers_in_the_envelope(
    simulator: DataflowSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_gateway(settings_for(simulator)) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        # Starlette's router: an unknown path, a known path with the wrong method (Allow kept).
        assert_envelope(await http.get("/no/such/path"), 404, "not_found")
        wrong = await http.get("/v1/tokens")
        assert_envelope(wrong, 405, "method_not_allowed")
        assert wrong.headers["allow"] == "POST"
        # FastAPI's request validation: a body, a query parameter.
        body = assert_envelope(await http.post("/v1/tokens", json={"ttlSeconds": "soon"}), 422, "invalid_parameters")
        assert "ttlSeconds" in body["error"]["message"]
        not_json = await http.post("/v1/tokens", content=b"{not", headers={"content-type": "application/json"})
        assert_envelope(not_json, 422, "invalid_parameters")
        assert_envelope(await http.post("/internal/drain?budget_s=soon"), 422, "invalid_parameters")
        # An HTTPException raised by a route (the demo page is off with a real upstream).
        assert_envelope(await http.get("/static/demo.js"), 404, "not_found")
        assert_envelope(await http.get("/docs/assets/%2E%2E%2Fsettings.py"), 404, "not_found")
        assert_envelope(await http.get("/docs/assets/swagger-ui.js"), 404, "not_found")  # not in the list
        # The gateway's own refusals were already enveloped; still so.
        assert_envelope(await http.get("/asyncapi.yaml", headers={"Host": "evil.example"}), 400, "invalid_host")
        # An unhandled exception: 500 in the envelope, not Starlette's plain text.
        monkeypatch.setattr("gateway.routes.health.upstream_status", _explode)
        assert_envelope(await http.get("/healthz"), 500, "internal_error")
        assert gw.gateway.registry.draining is False  # the 422 drain did nothing


def _explode(*_: object) -> None:
    raise RuntimeError("a bug")


# --- pages ---------------------------------------------------------------------------------------


async def test_docs_pages_load_only_files_the_gateway_serves(simulator: DataflowSimulator) -> None:
    async with running_gateway(settings_for(simulator)) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        for page_path, assets in [("/docs", ["swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"]),
                                  ("/redoc", ["redoc.standalone.js", "favicon.png"])]:  # fmt: skip
            page = await http.get(page_path)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert "http://" not in page.text and "https://" not in page.text and "//cdn" not in page.text
            policy = page.headers["content-security-policy"]
            assert (
                "default-src 'none'" in policy and "img-src 'self' data:;" in policy and "connect-src 'self';" in policy
            )
            for asset in assets:
                assert f"/docs/assets/{asset}" in page.text
                served = await http.get(f"/docs/assets/{asset}")
                assert served.status_code == 200, asset
                assert len(served.content) > 1000, asset
        assert (
            (await http.get("/docs/assets/swagger-ui-bundle.js")).headers["content-type"].startswith("text/javascript")
        )


@pytest.fixture
async def offline_page(tmp_path: Path) -> AsyncIterator[Any]:
    """A page in headless Chromium that can reach 127.0.0.1 and nothing else: every other host name
    resolves to nothing, and any connection that would leave goes to a proxy port that refuses."""
    chromium = find_chromium()
    from playwright.async_api import async_playwright

    args = [
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-quic",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--proxy-server=http://127.0.0.1:9",  # the discard port: nothing listens, connections are refused
    ]  # fmt: skip
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=chromium,
            headless=True,
            args=args,
            viewport={"width": 1200, "height": 1000},
        )  # fmt: skip  (a fresh --user-data-dir: Playwright passes the directory itself)
        try:
            page = await context.new_page()
            page.set_default_timeout(20_000)
            page.requested = []
            page.on("request", lambda request: page.requested.append(request.url))
            page.failed = {}
            page.on("requestfailed", lambda request: page.failed.update({request.url: request.failure}))
            page.problems = []
            page.on("pageerror", lambda error: page.problems.append(f"page error: {error}"))
            page.on("console", lambda m: page.problems.append(m.text) if m.type == "error" else None)
            yield page
        finally:
            await context.close()


async def _prove_offline(page: Any) -> None:
    """The browser really has no network beyond loopback: opening a CDN's file fails at the network."""
    from playwright.async_api import Error as PlaywrightError

    probe = await page.context.new_page()
    with pytest.raises(PlaywrightError, match=r"net::ERR_"):
        await probe.goto(PROBE)
    await probe.close()


@pytest.fixture
async def docs_gateway(simulator: DataflowSimulator) -> AsyncIterator[RunningGateway]:
    async with running_gateway(settings_for(simulator)) as gw:
        yield gw


@pytest.mark.needs_binary
async def test_swagger_ui_renders_every_operation_offline(offline_page: Any, docs_gateway: RunningGateway) -> None:
    page = offline_page
    await _prove_offline(page)
    await page.goto(f"{docs_gateway.http_url}/docs")
    # A function, not an expression: Playwright evaluates an expression again on every poll, and the
    # page's CSP forbids eval (a function is evaluated once, on the first check, and then called).
    await page.wait_for_function("() => document.querySelectorAll('.opblock').length >= 12")
    paths = await page.eval_on_selector_all(".opblock-summary-path", "nodes => nodes.map(n => n.textContent.trim())")
    assert {"/v1/recognize", "/v1/tokens", "/metrics", "/internal/drain"} <= {p.replace("\u200b", "") for p in paths}
    # The Authorize dialog lists the credential kinds.
    await page.click(".btn.authorize")
    await page.wait_for_selector(".modal-ux .auth-container")
    dialog = await page.inner_text(".modal-ux")
    for scheme in ("ApiKey", "Bearer", "BrowserToken", "QueryToken", "AdminToken"):
        assert scheme in dialog, scheme
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "docs-swagger-offline.png"))
    foreign = [url for url in page.requested if not url.startswith((docs_gateway.http_url, "data:", "blob:"))]
    assert foreign == []  # nothing asked for anything elsewhere
    assert page.problems == []


@pytest.mark.needs_binary
async def test_redoc_renders_every_operation_offline(offline_page: Any, docs_gateway: RunningGateway) -> None:
    page = offline_page
    await _prove_offline(page)
    await page.goto(f"{docs_gateway.http_url}/redoc")
    await page.wait_for_function("() => document.body.innerText.includes('Mint a browser token')")  # see above
    text = await page.inner_text("body")
    for summary in ("Recognise an uploaded recording", "Prometheus metrics", "Start draining this replica"):
        assert summary in text, summary
    await page.screenshot(path=str(ARTIFACTS / "docs-redoc-offline.png"))
    foreign = [url for url in page.requested if not url.startswith((docs_gateway.http_url, "data:", "blob:"))]
    # ReDoc's "Built with Redoc" badge is an image on a CDN: the page's Content-Security-Policy stops
    # it inside the browser, before any network.
    assert {url: page.failed.get(url) for url in foreign} == {"https://cdn.redoc.ly/redoc/logo-mini.svg": "csp"}
    assert [p for p in page.problems if "Content Security Policy" not in p] == []
