"""Each test reads a clean environment: no GATEWAY_* variable and no proxy from the suite's own."""

from __future__ import annotations

import os

import pytest

from gateway.config.startup import PROXY_VARIABLES

_PROXIES = (*PROXY_VARIABLES, "all_proxy", "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("GATEWAY_") or n in _PROXIES]:
        monkeypatch.delenv(name)
