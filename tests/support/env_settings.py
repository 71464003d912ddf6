"""Reading settings as ``serve`` does (the environment, no .env) and the lines it refuses them with."""

from __future__ import annotations

import pytest

from gateway.settings import Settings, SettingsError, load_settings

#: A real upstream the gateway may use without API keys (startup refuses required auth with none).
UPSTREAM = {"GATEWAY_UPSTREAM_TARGET": "dataflow.example.com:443", "GATEWAY_UPSTREAM_TOKEN": "tok-3f9a",
            "GATEWAY_AUTH": "none", "GATEWAY_ALLOW_INSECURE_NO_AUTH": "true"}  # fmt: skip


def loaded(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(_env_file=None)


def refused(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    """The lines ``load_settings`` refuses ``env`` with; none quotes a secret or a proxy URL of it."""
    with pytest.raises(SettingsError) as caught:
        loaded(monkeypatch, **env)
    text = str(caught.value)
    for name, value in env.items():
        if value.strip() and any(word in name for word in ("TOKEN", "KEY", "SECRET", "proxy")):
            assert value not in text, text
    return caught.value.problems
