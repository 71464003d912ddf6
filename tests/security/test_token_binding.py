"""Browser tokens carry no more than the API key that minted them has now, and outlive a signing-key
rotation only where the operator says so (GATEWAY_TOKEN_VERIFY_KEYS).

Before: a key configured to run no project (``"projects": []``) minted tokens for any project; a key
replaced under the same name left its old tokens working with the old projects and limits; one
signing key both minted and verified, so a rolling change of it refused every browser whose token was
minted on a replica with the other key; and a token kept starting sessions after its expiry on a
socket that runs one session after another (AudioCodes)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.auth import key_digest
from tests.security.test_auth import APP_ORIGIN, SECRETS, digits_through
from tests.support.audiocodes_client import start as audiocodes_start
from tests.support.audiocodes_client import until
from tests.support.harness import GatewayFactory, RunningGateway, ws_connect
from tests.support.native_client import start_message

pytestmark = pytest.mark.ws  # opens WebSockets: runs with the fast path on and off

KEY = "dfg_binding_3b1f0c9e5d7a44c8b2f6e0a1d9c8b7a6"
NEW_KEY = "dfg_binding_rotated_0123456789abcdef012345"
NO_PROJECT_KEY = "dfg_noproj_77e2c1d0a9b84f3e8c6d5b4a39281706"
OLD_SIGNING = "old-signing-key-for-tests-0123456789abcdef"
NEW_SIGNING = "new-signing-key-for-tests-0123456789abcdef"
SECRETS.update({KEY, NEW_KEY, NO_PROJECT_KEY, OLD_SIGNING, NEW_SIGNING})


def acme(key: str = KEY, **fields: Any) -> dict[str, Any]:
    return {"name": "acme", "sha256": key_digest(key), "projects": ["demo", "billing"], **fields}


def settings(*keys: dict[str, Any], signing: str = OLD_SIGNING, **more: Any) -> dict[str, Any]:
    return {"auth": "required", "api_keys": list(keys), "token_signing_key": signing,
            "allowed_origins": [APP_ORIGIN], **more}  # fmt: skip


async def mint(gw: RunningGateway, key: str = KEY, **body: Any) -> str:
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        response = await http.post("/v1/tokens", json=body, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    token = str(response.json()["token"])
    SECRETS.add(token)
    return token


async def first_answer(gw: RunningGateway, token: str, project: str = "demo") -> dict[str, Any]:
    """The first message a session started with ``token`` gets (``started`` or its refusal)."""
    protocols = ["dataflow-gateway.v1", f"bearer.{token}"]
    async with ws_connect(gw.ws_url(), subprotocols=protocols, origin=APP_ORIGIN) as ws:
        with contextlib.suppress(ConnectionClosed):  # a key at its cap is refused on connecting, before its start
            await ws.send(start_message(project=project))
        return dict(json.loads(await asyncio.wait_for(ws.recv(), 10)))


async def refused_status(gw: RunningGateway, token: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        await first_answer(gw, token)
    return refused.value.response.status_code


async def test_a_key_that_may_run_no_project_mints_tokens_for_none(gateway_factory: GatewayFactory) -> None:
    """``"projects": []`` means no project; its token's projects were null, read as "any"."""
    async with gateway_factory(**settings(acme(), {"name": "none", "sha256": key_digest(NO_PROJECT_KEY),
                                                   "projects": []})) as gw:  # fmt: skip
        token = await mint(gw, NO_PROJECT_KEY)
        answers = [await first_answer(gw, token, project) for project in ("demo", "secret-project")]
    assert jwt.decode(token, options={"verify_signature": False})["prj"] == []
    assert [a.get("code") for a in answers] == ["project_not_allowed"] * 2, answers


async def test_a_key_replaced_under_its_name_revokes_the_old_keys_tokens(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(**settings(acme())) as gw:
        token = await mint(gw)
        assert (await first_answer(gw, token))["type"] == "started"
    async with gateway_factory(**settings(acme(NEW_KEY))) as gw:  # acme's key replaced, same name
        assert await refused_status(gw, token) == 401
        assert (await first_answer(gw, await mint(gw, NEW_KEY)))["type"] == "started"


async def test_a_token_gets_the_projects_and_limits_its_key_has_now(gateway_factory: GatewayFactory) -> None:
    """The same key, narrowed after the token was minted (projects, max_sessions): the token is too."""
    async with gateway_factory(**settings(acme())) as gw:
        token = await mint(gw)  # for demo and billing, any number of sessions
    async with gateway_factory(**settings(acme(projects=["demo"], max_sessions=1))) as gw:
        assert (await first_answer(gw, token, "billing")).get("code") == "project_not_allowed"
        protocols = ["dataflow-gateway.v1", f"bearer.{token}"]
        async with ws_connect(gw.ws_url(), subprotocols=protocols, origin=APP_ORIGIN) as first:
            await first.send(start_message(project="demo"))
            assert json.loads(await asyncio.wait_for(first.recv(), 10))["type"] == "started"
            second = await first_answer(gw, token)
    assert second.get("code") == "rate_limited", second  # the key's max_sessions now: 1


async def test_a_signing_key_rotation_in_two_steps_refuses_no_token(gateway_factory: GatewayFactory) -> None:
    """The rotation README gives: (1) every replica verifies the new key too, still signing with the old;
    (2) every replica signs with the new key and verifies the old. During each rolling change a replica
    of the step before meets one of the step after: a token either mints verifies on the other."""
    step_0 = settings(acme())
    step_1 = settings(acme(), token_verify_keys=[NEW_SIGNING])
    step_2 = settings(acme(), signing=NEW_SIGNING, token_verify_keys=[OLD_SIGNING])
    for before, after in ((step_0, step_1), (step_1, step_2)):
        async with gateway_factory(**before) as old, gateway_factory(**after) as new:
            for minting, starting in ((old, new), (new, old)):
                answer = await first_answer(starting, await mint(minting))
                assert answer["type"] == "started", answer
    # Without the first step, a replica still on the old key refuses every token the new key signed.
    async with gateway_factory(**step_0) as old, gateway_factory(**step_2) as new:
        assert await refused_status(old, await mint(new)) == 401
        assert (await digits_through(new, "7", start={"token": await mint(old)}, origin=APP_ORIGIN)).milestones() == [
            "7"
        ]


async def test_a_token_an_earlier_version_minted_is_taken_with_the_keys_projects_now(
    gateway_factory: GatewayFactory,
) -> None:
    """A rolling upgrade: tokens without the key binding (an earlier version's) still start sessions, held
    to the key's current projects; a binding that does not match is refused."""
    async with gateway_factory(**settings(acme(projects=["demo"]))) as gw:
        minted = jwt.decode(await mint(gw), options={"verify_signature": False})
        earlier = {k: v for k, v in minted.items() if k != "kb"} | {"prj": None, "jti": "earlier-1"}
        token = jwt.encode(earlier, OLD_SIGNING, algorithm="HS256")
        SECRETS.add(token)
        assert (await first_answer(gw, token))["type"] == "started"
        assert (await first_answer(gw, token, "billing")).get("code") == "project_not_allowed"
        forged = jwt.encode(minted | {"kb": "0" * 32, "jti": "forged-1"}, OLD_SIGNING, algorithm="HS256")
        SECRETS.add(forged)
        assert await refused_status(gw, forged) == 401


async def test_an_expired_token_starts_no_further_session_on_its_socket(gateway_factory: GatewayFactory) -> None:
    """A 1 s token on AudioCodes: its first session starts; once it expired (plus the 5 s leeway), the
    next start on the same socket is refused token_expired (it started, at +6.4 s and +13.4 s)."""
    async with gateway_factory(**settings(acme())) as gw:
        token = await mint(gw, ttlSeconds=1)
        headers = {"Authorization": f"Bearer {token}"}
        async with ws_connect(gw.ws_url("/v1/audiocodes?project=demo"), additional_headers=headers) as ws:
            await ws.send(audiocodes_start(16000))
            await until(ws, "started")
            await ws.send(json.dumps({"type": "stop"}))
            await until(ws, "end")
            await asyncio.sleep(6.5)  # past exp and the 5 s leeway
            await ws.send(audiocodes_start(16000))
            reply = await next_of(ws, lambda m: m.get("type") in ("started", "error"))
    assert reply["type"] == "error" and str(reply["reason"]).startswith("token_expired"), reply


async def next_of(ws: Any, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if wanted(message):
            return dict(message)
