"""The memory of single-use browser tokens is bounded (README: remembered "up to 100,000 at once, past which
new single-use tokens get 429 rate_limited"). Scaled down: ``gateway.auth.MAX_SPENT_TOKENS`` patched to 3
before the gateway builds its Authenticator, which reads it once. Without the bound, every spent token
was kept until it expired, however many an attacker with a key minted."""

from __future__ import annotations

import json

import pytest

import gateway.auth
from tests.support.harness import GatewayFactory, RunningGateway, Transcript, read_all, ws_connect
from tests.support.native_client import start_message
from tests.support.settings import SECRETS, browser_auth
from tests.support.tokens import mint_browser_token

pytestmark = pytest.mark.ws

KEY = "dfg_singleuse_5d1c0b9a8f7e46d3c2b1a09f8e7d6c5b"
SIGNING_KEY = "single-use-bound-signing-key-0123456789ab"
APP = "https://app.example.com"
SECRETS.update({KEY, SIGNING_KEY})
CAP = 3


async def mint_single_use(gw: RunningGateway) -> str:
    return await mint_browser_token(gw, KEY, APP)


async def one_session(gw: RunningGateway, token: str) -> Transcript:
    """A browser session whose single-use token rides in its start message; stopped once started."""
    async with ws_connect(gw.ws_url(), origin=APP) as ws:
        await ws.send(start_message(token=token))
        seen = Transcript()
        first = json.loads(await ws.recv())
        seen.messages.append(first)
        if first["type"] == "started":
            await ws.send(json.dumps({"type": "stop"}))
        return await read_all(ws, seen, timeout=5)


async def test_past_the_memorys_cap_new_single_use_tokens_are_rate_limited(
    gateway_factory: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three single-use tokens spent fill a memory of 3: a fourth, never used, is refused rate_limited
    (not started), and the memory still holds 3."""
    monkeypatch.setattr(gateway.auth, "MAX_SPENT_TOKENS", CAP)
    async with gateway_factory(**browser_auth(KEY, SIGNING_KEY, APP)) as gw:
        tokens = [await mint_single_use(gw) for _ in range(CAP + 1)]
        for token in tokens[:CAP]:
            spent = await one_session(gw, token)
            assert spent.of_type("started") and spent.errors() == [], spent.messages
        refused = await one_session(gw, tokens[CAP])
        held = len(gw.gateway.gate.auth._used_tokens)
    assert refused.errors() == ["rate_limited"], f"token {CAP + 1} past a memory of {CAP}: {refused.messages}"
    assert refused.of_type("started") == []
    assert held == CAP, f"the single-use memory holds {held} tokens, its cap is {CAP}"
