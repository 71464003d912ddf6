"""The simulator's credentials, the suite's secrets and the gateway settings every test starts from."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from gateway.auth import key_digest
from gateway.settings import Settings
from gateway.simulator.server import DataflowSimulator

SIM_TOKEN = "sim-token-5f0c2d9a-never-log-me"
SIM_TENANT = "7c1f9a52-0000-4000-8000-0000000000aa"

#: Every secret the suite uses; tests add the ones they mint. None may appear in a server log line.
SECRETS: set[str] = {SIM_TOKEN}


def settings_for(simulator: DataflowSimulator, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "upstream_target": simulator.target,
        "upstream_token": SecretStr(SIM_TOKEN),
        "upstream_tenant": SIM_TENANT,
        "upstream_method_path": simulator.config.method_path,
        "upstream_proto_module": simulator.config.proto_module,
        "default_project": "demo",
        # Relay tests run without client auth; tests/security/test_auth.py turns it on explicitly.
        "auth": "none",
        "allow_insecure_no_auth": True,
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def browser_auth(key: str, signing_key: str, origin: str, **extra: object) -> dict[str, object]:
    """Overrides for browser-token tests: auth required, one API key ``key`` (name "acme", project "demo")
    that mints tokens signed with ``signing_key`` for pages on ``origin``; ``extra`` added on top."""
    return {
        "auth": "required",
        "api_keys": [{"name": "acme", "sha256": key_digest(key), "projects": ["demo"]}],
        "token_signing_key": signing_key,
        "allowed_origins": [origin],
        **extra,
    }


def offline_settings(**overrides: object) -> Settings:
    """Settings for unit tests that open no upstream connection (no simulator, no auth)."""
    values: dict[str, object] = {
        "_env_file": None,
        "auth": "none",
        "allow_insecure_no_auth": True,
        "upstream_target": "127.0.0.1:1",  # never dialled
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def simulator_settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, upstream_target="", **overrides)  # type: ignore[call-arg]
