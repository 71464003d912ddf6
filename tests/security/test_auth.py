"""Client authentication, browser tokens, origin checks and abuse limits over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.app import create_app
from gateway.auth import FailedAuthThrottle, key_binding, key_digest
from gateway.settings import SettingsError
from gateway.simulator.server import DataflowSimulator
from tests.support import signals
from tests.support.cli_process import run_cli
from tests.support.harness import RunningGateway, Transcript, next_message, read_all, running_gateway, ws_connect
from tests.support.native_client import start_message
from tests.support.settings import SECRETS, settings_for

ACME_KEY = "dfg_acme_3b1f0c9e5d7a44c8b2f6e0a1d9c8b7a6"
TINY_KEY = "dfg_tiny_77e2c1d0a9b84f3e8c6d5b4a39281706"
SIGNING_KEY = "signing-key-for-tests-0123456789abcdef"
APP_ORIGIN = "https://app.example.com"
OTHER_ORIGIN = "https://other.example.com"
ADMIN_TOKEN = "adm-9c1e-5a07d3b2"
SECRETS.update({ACME_KEY, TINY_KEY, SIGNING_KEY, ADMIN_TOKEN})


@pytest.fixture
def gw_settings() -> dict[str, Any]:
    """``gw`` requires auth; a test adds overrides with ``parametrize("gw", [{...}], indirect=True)``."""
    return {
        "auth": "required",
        "api_keys": [
            {"name": "acme", "sha256": key_digest(ACME_KEY), "projects": ["demo"], "max_sessions": 2},
            {"name": "tiny", "sha256": key_digest(TINY_KEY), "audio_seconds_per_minute": 2},
        ],
        "token_signing_key": SIGNING_KEY,
        "allowed_origins": [APP_ORIGIN, OTHER_ORIGIN],
        "ack_interval_ms": 100,
    }


async def denied(url: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(url, **kwargs):
            pass
    response = info.value.response
    return response.status_code, json.loads(response.body or b"{}")


async def digits_through(gw: RunningGateway, digits: str = "31", start: dict[str, Any] | None = None,
                         **connect: Any) -> Transcript:  # fmt: skip
    pcm = signals.to_pcm16(signals.utterances([digits], 16000))
    async with ws_connect(gw.ws_url(), **connect) as ws:
        await ws.send(start_message(**(start or {})))
        await next_message(ws, "started")
        for offset in range(0, len(pcm), 3200):
            await ws.send(pcm[offset : offset + 3200])
        await ws.send(json.dumps({"type": "finalize"}))
        return await read_all(ws)


async def mint(gw: RunningGateway, key: str = ACME_KEY, **body: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        response = await http.post("/v1/tokens", json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    minted: dict[str, Any] = response.json()
    SECRETS.add(minted["token"])
    return minted


# --- who may connect ----------------------------------------------------------------------------------


@pytest.mark.ws
async def test_no_credential_is_refused_before_accept(gw: RunningGateway, simulator: DataflowSimulator) -> None:
    status, body = await denied(gw.ws_url())
    assert (status, body["error"]["code"]) == (401, "missing_credential")
    assert not simulator.records  # the upstream was never opened


@pytest.mark.ws
async def test_bad_key_is_refused(gw: RunningGateway, simulator: DataflowSimulator) -> None:
    status, body = await denied(gw.ws_url(), additional_headers={"X-API-Key": "dfg_not_a_key"})
    assert (status, body["error"]["code"]) == (401, "invalid_credential")
    assert not simulator.records


@pytest.mark.ws
@pytest.mark.parametrize(
    "connect",
    [
        {"additional_headers": {"Authorization": f"Bearer {ACME_KEY}"}},
        {"additional_headers": {"X-API-Key": ACME_KEY}},
        {"subprotocols": ["dataflow-gateway.v1", f"bearer.{ACME_KEY}"]},
    ],
    ids=["authorization", "x-api-key", "subprotocol"],
)
async def test_api_key_in_every_accepted_place(gw: RunningGateway, connect: dict[str, Any]) -> None:
    assert (await digits_through(gw, "57", **connect)).milestones() == ["57"]


@pytest.mark.ws
async def test_path_secret_and_query_token_are_accepted_and_never_logged(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    token = (await mint(gw))["token"]
    path_url = gw.ws_url(f"/t/{ACME_KEY}/v1/stream")
    query_url = gw.ws_url(f"/v1/stream?token={token}")
    twice_url = gw.ws_url(f"/v1/stream?token=stale&project=other&token={token}&project=demo")  # the last counts
    for url in (path_url, query_url, twice_url):
        async with ws_connect(url) as ws:
            await ws.send(start_message())
            assert (await next_message(ws, "started"))["type"] == "started"
    server_lines = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("uvicorn", "gateway")))
    assert "/v1/stream" in server_lines  # the access log did record the requests...
    assert ACME_KEY not in server_lines  # ...without the secrets
    assert token not in server_lines


@pytest.mark.ws
async def test_disallowed_origin_gets_403(gw: RunningGateway, simulator: DataflowSimulator) -> None:
    status, body = await denied(
        gw.ws_url(), origin="https://evil.example", additional_headers={"X-API-Key": ACME_KEY}
    )  # fmt: skip
    assert (status, body["error"]["code"]) == (403, "origin_not_allowed")
    assert not simulator.records


@pytest.mark.ws
async def test_browser_token_from_its_origin(gw: RunningGateway) -> None:
    minted = await mint(gw, origin=APP_ORIGIN)
    assert minted["subprotocols"][0] == "dataflow-gateway.v1"
    via_protocol = await digits_through(gw, "24", origin=APP_ORIGIN, subprotocols=minted["subprotocols"])
    assert via_protocol.milestones() == ["24"]
    in_start = await digits_through(gw, "68", start={"token": minted["token"]}, origin=APP_ORIGIN)
    assert in_start.milestones() == ["68"]


async def expect_refusal(gw: RunningGateway, code: str, close: int, start: dict[str, Any] | None = None,
                         **connect: Any) -> None:  # fmt: skip
    async with ws_connect(gw.ws_url(), **connect) as ws:
        with contextlib.suppress(ConnectionClosed):  # a key at its cap is refused on connecting, before its start
            await ws.send(start_message(**(start or {})))
        result = await read_all(ws)
    assert result.errors() == [code]
    assert result.close_code == close


@pytest.mark.ws
async def test_expired_forged_wrong_origin_and_wrong_project_tokens(
    gw: RunningGateway, simulator: DataflowSimulator
) -> None:
    now = int(time.time())
    claims = {"iss": "dataflow-gateway", "aud": "dataflow-gateway/session", "sub": "acme", "iat": now - 600,
              "exp": now - 300, "jti": "x1", "prj": ["demo"]}  # fmt: skip
    expired = jwt.encode(claims, SIGNING_KEY, algorithm="HS256")
    forged = jwt.encode({**claims, "exp": now + 300}, "not-the-signing-key-but-long-enough-32b", algorithm="HS256")
    await expect_refusal(gw, "token_expired", 1008, start={"token": expired}, origin=APP_ORIGIN)
    await expect_refusal(gw, "invalid_credential", 1008, start={"token": forged}, origin=APP_ORIGIN)
    bound = (await mint(gw, origin=APP_ORIGIN))["token"]
    status, body = await denied(
        gw.ws_url(), origin=OTHER_ORIGIN, subprotocols=["dataflow-gateway.v1", f"bearer.{bound}"]
    )
    assert (status, body["error"]["code"]) == (403, "origin_mismatch")
    narrow = (await mint(gw, projects=["demo"]))["token"]
    await expect_refusal(gw, "project_not_allowed", 1008, start={"token": narrow, "project": "billing"},
                         origin=APP_ORIGIN)  # fmt: skip
    assert not simulator.records


@pytest.mark.ws
async def test_a_token_signed_with_the_key_but_not_one_this_gateway_mints_is_refused(
    gw: RunningGateway, simulator: DataflowSimulator
) -> None:
    """A token for a key that is not configured (removed: revoked, or any name at all) or living longer than
    GATEWAY_TOKEN_MAX_TTL_S (900 s here) was accepted whenever its signature verified: with a leaked or
    example signing key, anyone could start sessions for ten years."""
    now = int(time.time())
    (acme,) = [spec for spec in gw.gateway.settings.api_keys if spec.name == "acme"]
    claims = {"iss": "dataflow-gateway", "aud": "dataflow-gateway/session", "sub": "acme", "iat": now,
              "exp": now + 300, "jti": "y1", "prj": ["demo"], "kb": key_binding(SIGNING_KEY, acme)}  # fmt: skip
    fine = jwt.encode(claims, SIGNING_KEY, algorithm="HS256")
    assert (await digits_through(gw, "7", start={"token": fine}, origin=APP_ORIGIN)).milestones() == ["7"]
    simulator.records.clear()
    for forged in ({**claims, "sub": "anyone"}, {**claims, "sub": "revoked-key"},
                   {**claims, "exp": now + 10 * 365 * 86400}, {**claims, "iat": now - 1000}):  # fmt: skip
        token = jwt.encode(forged, SIGNING_KEY, algorithm="HS256")
        await expect_refusal(gw, "invalid_credential", 1008, start={"token": token}, origin=APP_ORIGIN)
    assert not simulator.records


@pytest.mark.ws
async def test_single_use_token_cannot_be_reused(gw: RunningGateway) -> None:
    token = (await mint(gw, singleUse=True))["token"]
    assert (await digits_through(gw, "1", start={"token": token}, origin=APP_ORIGIN)).milestones() == ["1"]
    await expect_refusal(gw, "token_reused", 1008, start={"token": token}, origin=APP_ORIGIN)


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"token_max_ttl_s": 7200}], indirect=True)
async def test_a_long_lived_single_use_token_is_refused_for_its_whole_life(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spent tokens were remembered for a fixed hour: a two-hour token (GATEWAY_TOKEN_MAX_TTL_S=7200)
    started a second session an hour after its first. The gateway's clock is moved on 3700 s (PyJWT
    keeps the real one, so the token still verifies)."""
    import gateway.auth

    token = (await mint(gw, singleUse=True, ttlSeconds=7200))["token"]
    assert (await digits_through(gw, "1", start={"token": token}, origin=APP_ORIGIN)).milestones() == ["1"]

    class AnHourLater:
        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def time() -> float:
            return time.time() + 3700

    monkeypatch.setattr(gateway.auth, "time", AnHourLater)
    await expect_refusal(gw, "token_reused", 1008, start={"token": token}, origin=APP_ORIGIN)


async def test_token_endpoint_denials(gw: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        anonymous = await http.post("/v1/tokens", json={})
        assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "missing_credential")
        wider = await http.post("/v1/tokens", json={"projects": ["billing"]}, headers={"X-API-Key": ACME_KEY})
        assert (wider.status_code, wider.json()["error"]["code"]) == (403, "project_not_allowed")
        token = (await mint(gw))["token"]
        chained = await http.post("/v1/tokens", json={}, headers={"Authorization": f"Bearer {token}"})
        assert (chained.status_code, chained.json()["error"]["code"]) == (403, "api_key_required")


@pytest.mark.parametrize("gw", [{"token_signing_key": None}], indirect=True)
async def test_minting_without_a_signing_key_is_501_not_an_upstream_failure(gw: RunningGateway) -> None:
    """A setting of this gateway that is off: it was 503 ``upstream_unavailable``, Data Flow's failure to a
    client (and in the metrics) though Data Flow had nothing to do with it."""
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        response = await http.post("/v1/tokens", json={}, headers={"X-API-Key": ACME_KEY})
    assert response.status_code == 501
    error = response.json()["error"]
    assert (error["code"], error["retryable"]) == ("tokens_not_configured", False)
    assert "GATEWAY_TOKEN_SIGNING_KEY" in error["message"] and "retry-after" not in response.headers


async def test_a_minted_token_is_never_cached(gw: RunningGateway) -> None:
    """The answer carries a bearer credential; it had no Cache-Control at all, so a shared cache
    between the key holder's server and the gateway could keep the token and hand it to others."""
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        response = await http.post("/v1/tokens", json={}, headers={"X-API-Key": ACME_KEY})
    assert response.status_code == 200
    SECRETS.add(response.json()["token"])
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


async def test_a_minted_token_says_when_it_expires_as_its_exp_does(gw: RunningGateway) -> None:
    """``expiresAt`` is the JWT's ``exp``, whole seconds; it was sent as a float (``1796393337.0``)."""
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        response = await http.post("/v1/tokens", json={"ttlSeconds": 30}, headers={"X-API-Key": ACME_KEY})
        schema = (await http.get("/openapi.json")).json()["components"]["schemas"]["TokenResponse"]
    assert response.status_code == 200
    minted = response.json()
    SECRETS.add(minted["token"])
    exp = jwt.decode(minted["token"], options={"verify_signature": False})["exp"]
    assert type(minted["expiresAt"]) is int and minted["expiresAt"] == exp
    assert abs(exp - time.time() - 30) <= 2
    assert schema["properties"]["expiresAt"]["type"] == "integer"


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"token_max_ttl_s": 120}], indirect=True)
async def test_a_token_asked_for_longer_than_the_max_ttl_lives_the_max_and_works(gw: RunningGateway) -> None:
    """``ttlSeconds`` past GATEWAY_TOKEN_MAX_TTL_S is cut to it: the token says it expires at most the max
    from now, and its handshake is accepted (a mutant minted the hour asked for, a token the gateway's own
    check then refused or a credential living longer than an operator allowed)."""
    minted = await mint(gw, ttlSeconds=3600)
    exp = jwt.decode(minted["token"], options={"verify_signature": False})["exp"]
    assert minted["expiresAt"] == exp
    assert 120 - 3 <= exp - time.time() <= 120 + 2
    async with ws_connect(gw.ws_url(), subprotocols=minted["subprotocols"], origin=APP_ORIGIN) as ws:
        await ws.send(start_message())
        await next_message(ws, "started")


# --- limits ----------------------------------------------------------------------------------------------


@pytest.mark.ws
async def test_per_key_concurrency(gw: RunningGateway) -> None:
    headers = {"X-API-Key": ACME_KEY}
    first = await ws_connect(gw.ws_url(), additional_headers=headers)
    second = await ws_connect(gw.ws_url(), additional_headers=headers)
    for ws in (first, second):
        await ws.send(start_message())
        await next_message(ws, "started")
    await expect_refusal(gw, "rate_limited", 1013, additional_headers=headers)
    await first.close()
    await second.close()


def test_keys_without_a_session_cap_are_named_at_startup(caplog: pytest.LogCaptureFixture, gw: RunningGateway) -> None:
    """Tenants share a replica: a key without max_sessions may take every slot from the others (the fixture's
    "tiny" has none, "acme" has 2)."""
    lines = [r.getMessage() for r in caplog.get_records("setup") if r.levelno == logging.WARNING]
    assert any("without max_sessions" in line and line.endswith(": tiny") for line in lines), lines


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"max_sessions": 6}], indirect=True)
async def test_a_keys_connections_count_against_its_cap_before_their_start(gw: RunningGateway) -> None:
    """A native handshake with a key took a slot of the replica's but counted against its key only at its
    start: a key at its cap of 2 held four more slots with handshakes that never started (each for the
    start timeout, reopened at will), and every other tenant got capacity_exceeded."""
    acme = {"X-API-Key": ACME_KEY}
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(2):
            ws = await stack.enter_async_context(ws_connect(gw.ws_url(), additional_headers=acme))
            await ws.send(start_message())
            await next_message(ws, "started")
        for _ in range(4):  # never start: each is refused on connecting, its slot never taken
            idle = await stack.enter_async_context(ws_connect(gw.ws_url(), additional_headers=acme))
            refusal = json.loads(await asyncio.wait_for(idle.recv(), 2))
            assert refusal["type"] == "error" and refusal["code"] == "rate_limited", refusal
        for _ in range(4):  # another tenant still finds the replica's other four slots
            ws = await stack.enter_async_context(ws_connect(gw.ws_url(), additional_headers={"X-API-Key": TINY_KEY}))
            await ws.send(start_message())
            await next_message(ws, "started")


@pytest.mark.ws
@pytest.mark.parametrize(
    "gw", [{"max_audio_rate_x": 8.0, "audio_rate_burst_ms": 500, "ack_interval_ms": 50}], indirect=True
)
async def test_audio_faster_than_real_time_is_paced_not_refused(gw: RunningGateway) -> None:
    """3 s of audio sent at once against 8x: held about (3 - 0.5) / 8 s, all of it arrives, closes 1000."""
    async with ws_connect(gw.ws_url(), additional_headers={"X-API-Key": ACME_KEY}) as ws:
        await ws.send(start_message())
        await next_message(ws, "started")
        began = time.monotonic()
        for _ in range(30):
            await ws.send(bytes(3200))
        await ws.send(json.dumps({"type": "finalize"}))
        result = await read_all(ws)
        held = time.monotonic() - began
    assert result.errors() == []
    assert result.close_code == 1000
    assert [m["audioMs"] for m in result.of_type("closed")] == [3000.0]
    assert held >= 0.25
    assert any(m["paused"] for m in result.of_type("ack"))


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"max_audio_rate_x": 100.0}], indirect=True)
async def test_audio_budget_per_minute(gw: RunningGateway) -> None:
    headers = {"X-API-Key": TINY_KEY}
    async with ws_connect(gw.ws_url(), additional_headers=headers) as ws:
        await ws.send(start_message())
        await next_message(ws, "started")
        for _ in range(30):  # 3 s of audio against a 2 s budget
            await ws.send(bytes(3200))
        result = await read_all(ws)
    assert result.errors() == ["audio_budget_spent"]
    assert result.close_code == 1008
    await expect_refusal(gw, "audio_budget_spent", 1013, additional_headers=headers)


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"auth_failures_per_minute": 3}], indirect=True)
async def test_failed_auth_is_throttled(gw: RunningGateway) -> None:
    """Past the limit, wrong credentials from that address get 429 with a Retry-After its text agrees
    with; a valid key from the same address (other clients behind one proxy) still gets in."""
    for _ in range(3):
        assert (await denied(gw.ws_url(), additional_headers={"X-API-Key": "dfg_wrong"}))[0] == 401
    status, body = await denied(gw.ws_url(), additional_headers={"X-API-Key": "dfg_wrong_again"})
    assert (status, body["error"]["code"]) == (429, "auth_throttled")
    retry = int(body["error"]["message"].rsplit("retry in ", 1)[1].split()[0])
    assert 55 <= retry <= 60
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        refused = await http.post("/v1/recognize", headers={"X-API-Key": "dfg_wrong_3"}, content=b"")
    assert refused.status_code == 429
    assert abs(int(refused.headers["retry-after"]) - retry) <= 1
    assert (await digits_through(gw, "1", additional_headers={"X-API-Key": ACME_KEY})).milestones() == ["1"]


@pytest.mark.parametrize("gw", [{"trusted_proxies": ["127.0.0.1"]}], indirect=True)
async def test_the_failed_credential_table_is_bounded_however_many_addresses_fail(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attacker who varies its address (here, named by a trusted proxy's X-Forwarded-For) cannot grow
    the table of failing addresses past FailedAuthThrottle.MAX_ADDRESSES (scaled to 5): the oldest go."""
    monkeypatch.setattr(FailedAuthThrottle, "MAX_ADDRESSES", 5)
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        for n in range(40):
            headers = {"X-API-Key": f"dfg_wrong_{n}", "X-Forwarded-For": f"198.51.100.{n + 1}"}
            refused = await http.post("/v1/tokens", json={}, headers=headers)
            assert refused.status_code == 401, refused.text
    held = len(gw.gateway.gate.throttle)
    assert held == 5, f"40 failing addresses, MAX_ADDRESSES 5: the table holds {held}"


@pytest.mark.parametrize("gw", [{"trusted_proxies": ["127.0.0.1"], "auth_failures_per_minute": 3}], indirect=True)
async def test_an_ipv6_client_is_throttled_by_its_64(gw: RunningGateway) -> None:
    """One host holds a whole /64: 60 wrong keys, each from another address of one /64, were all checked
    (401) and never throttled. Another /64 is another client; an IPv4 client of a dual-stack listener
    (``::ffff:a.b.c.d``) or behind a NAT64 gateway (``64:ff9b::/96``, RFC 6052) is its IPv4 address."""

    async def status(address: str, n: int) -> int:
        headers = {"X-API-Key": f"dfg_wrong_{n}", "X-Forwarded-For": address}
        async with httpx.AsyncClient(base_url=gw.http_url) as http:
            return (await http.post("/v1/tokens", json={}, headers=headers)).status_code

    one_64 = [await status(f"2001:db8:5:1::{n + 1:x}", n) for n in range(5)]
    other_64 = await status("2001:db8:5:2::1", 9)
    mapped = [
        await status(address, n)
        for n, address in enumerate(["::ffff:192.0.2.44", "64:ff9b::c000:22c", "192.0.2.44", "192.0.2.44"])
    ]
    assert one_64 == [401, 401, 401, 429, 429] and other_64 == 401
    assert mapped == [401, 401, 401, 429]


@pytest.mark.parametrize(
    "gw", [{"admin_token": ADMIN_TOKEN, "auth_failures_per_minute": 3, "trusted_proxies": ["127.0.0.1"]}], indirect=True
)
async def test_admin_token_guesses_are_throttled_like_any_credential(gw: RunningGateway) -> None:
    """Wrong admin tokens on /internal/drain were never throttled: 50 guesses from one address all got a
    plain 401 with GATEWAY_AUTH_FAILURES_PER_MINUTE=3, so a short token could be guessed. Then the right
    token still drained from the throttled address: 429 for a wrong guess and 202 for the right one let
    guessing go on at line rate (200 guesses in 0.15 s). A throttled address's admin token is not even
    compared now; the operator's, from another address, drains."""
    guesser = {"X-Forwarded-For": "198.51.100.7"}
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        guesses = [
            await http.post("/internal/drain", headers={**guesser, "Authorization": f"Bearer guess-{i}"})
            for i in range(5)
        ]
        assert [g.status_code for g in guesses] == [401, 401, 401, 429, 429]
        assert guesses[-1].json()["error"]["code"] == "auth_throttled"
        assert 55 <= int(guesses[-1].headers["retry-after"]) <= 60
        documented = (await http.get("/openapi.json")).json()["paths"]["/internal/drain"]["post"]["responses"]
        assert "429" in documented, sorted(documented)  # the OpenAPI document listed 401, 408, 413, 422 only
        assert gw.gateway.registry.draining is False
        guessed = await http.post("/internal/drain", headers={**guesser, "Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert guessed.status_code == 429 and gw.gateway.registry.draining is False  # right, and not compared
        operator = {"X-Forwarded-For": "192.0.2.10", "Authorization": f"Bearer {ADMIN_TOKEN}"}
        right = await http.post("/internal/drain", headers=operator)
        assert right.status_code == 202
        assert gw.gateway.registry.draining is True


@pytest.mark.ws
async def test_denials_are_visible_in_metrics(gw: RunningGateway) -> None:
    await denied(gw.ws_url())
    await denied(gw.ws_url(), origin="https://evil.example", additional_headers={"X-API-Key": ACME_KEY})
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        text = (await http.get("/metrics")).text
    assert 'dataflow_gateway_denials_total{reason="missing_credential"} 1.0' in text
    assert 'dataflow_gateway_denials_total{reason="origin_not_allowed"} 1.0' in text


def test_auth_none_needs_simulator_mode_or_the_insecure_flag(simulator: DataflowSimulator) -> None:
    with pytest.raises(SettingsError, match="only allowed in simulator mode"):
        create_app(settings_for(simulator, auth="none", allow_insecure_no_auth=False))
    assert create_app(settings_for(simulator, auth="none", allow_insecure_no_auth=True)) is not None


@pytest.mark.parametrize(
    ("entry", "named"),
    [({"projets": ["demo"]}, "projets"), ({"max_sesions": 3}, "max_sesions"),
     ({"audio_seconds_per_minute": "Infinity"}, "audio_seconds_per_minute")],
)  # fmt: skip
def test_a_key_entry_with_an_unknown_field_or_an_endless_budget_stops_startup(
    tmp_path: Path, entry: dict[str, Any], named: str
) -> None:
    """A misspelt field was ignored (the key ran any project, any number of sessions); Infinity was taken."""
    keys = [{"name": "acme", "sha256": key_digest(ACME_KEY), **entry}]
    done = run_cli(["serve"], {"GATEWAY_AUTH": "required", "GATEWAY_API_KEYS": json.dumps(keys)}, tmp_path)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"GATEWAY_API_KEYS[0].{named}: "), line


def test_keygen_prints_a_key_and_a_config_entry_that_accepts_it(capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.auth import ApiKeySpec, Authenticator
    from gateway.cli import main

    assert (
        main(["keygen", "--name", "ops", "--project", "demo", "--max-sessions", "3", "--session-start-rate", "1.5"])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    key = lines[0].rsplit(": ", 1)[1]
    SECRETS.add(key)
    entry = ApiKeySpec.model_validate_json(lines[1].split(": ", 1)[1])
    assert key not in lines[1]  # only the hash goes into configuration
    principal = Authenticator([entry], "", required=True).authenticate(key)
    assert (principal.name, principal.projects, principal.max_sessions) == ("ops", frozenset({"demo"}), 3)
    assert entry.session_start_rate == 1.5


@pytest.mark.ws
async def test_with_auth_off_a_stray_bearer_token_is_ignored(simulator: DataflowSimulator) -> None:
    """Legacy clients may still send their old Data Flow token; with auth off it must not refuse them."""
    async with running_gateway(settings_for(simulator)) as gw:
        connect = {"additional_headers": {"Authorization": "Bearer old-dataflow-token"}}
        assert (await digits_through(gw, "9", **connect)).milestones() == ["9"]


def test_upstream_sample_rate_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.settings import Settings, load_settings

    monkeypatch.setenv("GATEWAY_UPSTREAM_SAMPLE_RATE_HZ", "8000")
    assert Settings(_env_file=None).upstream_sample_rate_hz == 8000  # type: ignore[call-arg]
    monkeypatch.setenv("GATEWAY_UPSTREAM_SAMPLE_RATE_HZ", "11025")
    with pytest.raises(SettingsError, match="GATEWAY_UPSTREAM_SAMPLE_RATE_HZ"):
        load_settings(_env_file=None)


@pytest.mark.ws
async def test_an_origin_that_is_not_ascii_is_refused_not_a_server_error(gw: RunningGateway) -> None:
    """With auth on and no public hosts, an Origin other than the allowed ones was compared to the Host
    with hmac.compare_digest, which raises TypeError for non-ASCII text: a 500 and a traceback in the log
    for any caller without a credential (the handshake got uvicorn's plain-text 500, uncounted)."""
    origin = b"Origin: http://\xe9vil.example\r\n"
    requests = [
        b"POST /v1/tokens HTTP/1.1\r\nHost: gw.example.com\r\n" + origin + b"Content-Length: 2\r\n\r\n{}",
        b"GET /v1/stream HTTP/1.1\r\nHost: gw.example.com\r\n" + origin + b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ]
    for request in requests:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            writer.write(request)
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
        finally:
            writer.close()
        assert head.startswith(b"HTTP/1.1 403 "), head


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"max_sessions": 3}], indirect=True)
async def test_callers_without_a_credential_cannot_fill_the_replica(gw: RunningGateway) -> None:
    """A handshake with an allowed Origin and no credential is accepted (a browser may send its token in
    the start message; anyone can send that Origin), but it holds no session slot until its token comes.
    Three such sockets on a 3-session replica leave it ready and a keyed client is served; they have a
    cap of their own (a fourth is refused), one whose token then arrives takes a slot as it starts, and a
    drain tells them to go away like live sessions."""
    registry = gw.gateway.registry
    idle = [await ws_connect(gw.ws_url(), origin=APP_ORIGIN) for _ in range(3)]
    async with asyncio.timeout(2):
        while len(registry.waiting) < 3:
            await asyncio.sleep(0.01)
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        assert (await http.get("/readyz")).status_code == 200
        scraped = (await http.get("/metrics")).text
    assert registry.active == 0
    assert "dataflow_gateway_connections_waiting_for_credential 3.0" in scraped.splitlines()
    assert (await digits_through(gw, "5", additional_headers={"X-API-Key": ACME_KEY})).milestones() == ["5"]
    async with ws_connect(gw.ws_url(), origin=APP_ORIGIN) as fourth:
        refused = await read_all(fourth)
    assert refused.errors() == ["capacity_exceeded"] and refused.close_code == 1013

    token = (await mint(gw, origin=APP_ORIGIN))["token"]
    await idle[0].send(start_message(token=token))
    await next_message(idle[0], "started")
    assert (registry.active, len(registry.waiting)) == (1, 2)
    for ws in idle:
        await ws.close()
    async with asyncio.timeout(2):
        while registry.active or registry.waiting:
            await asyncio.sleep(0.01)

    late = await ws_connect(gw.ws_url(), origin=APP_ORIGIN)  # a drain tells waiting connections too
    async with asyncio.timeout(2):
        while not registry.waiting:
            await asyncio.sleep(0.01)
    drain = gw.gateway.drain(0.2)
    gone = await read_all(late)
    await drain
    assert gone.errors() == ["going_away"] and gone.close_code == 1001
