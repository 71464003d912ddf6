"""Browser tokens minted by a running gateway, as a backend does (``POST /v1/tokens`` with its API key)."""

from __future__ import annotations

import httpx

from tests.support.harness import RunningGateway
from tests.support.settings import SECRETS


async def mint_browser_token(gw: RunningGateway, key: str, origin: str, *, single_use: bool = True) -> str:
    """A token for ``origin`` (single-use unless told), registered as a secret no log line may show."""
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        body = {"origin": origin, "singleUse": single_use}
        response = await http.post("/v1/tokens", json=body, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    SECRETS.add(token)
    return token
