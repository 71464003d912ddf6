"""Checks of a configuration the process is about to run with, beyond each value's own shape: what only
fails once sessions come (authentication with no key), our examples' placeholder secrets, a proxy
variable no URL parser takes, and a .env file that is not UTF-8. Each problem is one line naming the
variable (never a secret's value). :func:`gateway.settings.load_settings` runs them; objects built
directly (tests: a gateway whose keys are given to its authenticator) are not checked."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

from gateway.config.bounds import is_placeholder
from gateway.config.environment import variable_name

#: Where gRPC (the first one set) and the webhooks' HTTP client (httpx: any case) take a proxy from.
PROXY_VARIABLES = ("grpc_proxy", "https_proxy", "http_proxy")
_CLIENT_PROXY_VARIABLES = ("all_proxy", "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")

#: deploy/k8s/secret.example.yaml's API key digest.
_PLACEHOLDER_DIGEST = "0" * 64

#: Secrets the operator makes up (the others come from Data Flow, Genesys, Twilio or a webhook receiver).
_GENERATED = ("GATEWAY_TOKEN_SIGNING_KEY", "GATEWAY_ADMIN_TOKEN")
_RANDOM = "use a random value (openssl rand -hex 32)"

NO_KEYS = (
    "GATEWAY_API_KEYS: empty while authentication is required (GATEWAY_AUTH=required, or unset with a real "
    "upstream): every session would be refused. Create a key with 'dataflow-gateway keygen --name NAME' and "
    "add its entry, or set GATEWAY_AUTH=none with GATEWAY_ALLOW_INSECURE_NO_AUTH=true"
)


def dotenv_problem(env_file: object) -> str | None:
    """Why ``env_file`` cannot be read as settings (its content never quoted), or None."""
    if not isinstance(env_file, str | Path) or not Path(env_file).is_file():
        return None
    data = Path(env_file).read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return f"{env_file}: not UTF-8 (line {line})"
    return None


def proxy_problems(environ: Mapping[str, str]) -> list[str]:
    """A proxy variable that is set but no URL (a bracket left open, a port that is not one): gRPC and
    the log line that shows the proxy failed on it inside the app's startup, with a traceback."""
    problems = []
    for name in (*PROXY_VARIABLES, *_CLIENT_PROXY_VARIABLES):
        value = environ.get(name, "")
        if not value:
            continue
        try:
            parts = urlsplit(value if "://" in value else f"http://{value}")
            parts.port  # noqa: B018 - raises for a port that is not a number from 0 to 65535
        except ValueError:
            parts = urlsplit("")
        if not parts.hostname:
            problems.append(f"{name}: not a URL (http://[user:password@]host:port)")
    return problems


def _secrets(settings: BaseModel) -> list[tuple[str, str]]:
    """(variable, value) of every secret, API keys' ones named by the key: GATEWAY_API_KEYS[name].field."""
    found = []
    for field in type(settings).model_fields:
        value = getattr(settings, field)
        if isinstance(value, SecretStr):
            found.append((variable_name(field), value.get_secret_value()))
        elif isinstance(value, list) and value and isinstance(value[0], SecretStr):
            found += [(f"{variable_name(field)}[{i}]", v.get_secret_value()) for i, v in enumerate(value)]
        elif field == "api_keys":
            for key in value:
                for name in type(key).model_fields:
                    if isinstance(secret := getattr(key, name), SecretStr):
                        found.append((f"GATEWAY_API_KEYS[{key.name}].{name}", secret.get_secret_value()))
    return found


def placeholder_problems(settings: BaseModel) -> list[str]:
    problems = [
        f"{where}: a placeholder from an example (it says 'replace-with' or 'change-me'): "
        + (_RANDOM if where in _GENERATED else "put the real value")
        for where, value in _secrets(settings)
        if is_placeholder(value)
    ]
    keys: list[Any] = getattr(settings, "api_keys", [])
    problems += [
        f"GATEWAY_API_KEYS[{key.name}].sha256: the example's placeholder (all zeros): use the digest"
        " 'dataflow-gateway keygen' prints"
        for key in keys
        if key.sha256 == _PLACEHOLDER_DIGEST
    ]
    return problems


def startup_problems(settings: BaseModel, environ: Mapping[str, str], *, auth_required: bool) -> list[str]:
    problems = placeholder_problems(settings)
    if auth_required and not getattr(settings, "api_keys", []):
        problems.append(NO_KEYS)
    return problems + proxy_problems(environ)
