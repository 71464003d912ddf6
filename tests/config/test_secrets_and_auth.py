"""Secrets the gateway would start with and should not (our examples' placeholders, blank ones), and
authentication that would refuse every session: each stops startup with one line naming the variable."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from gateway.app import create_app
from gateway.auth import key_digest
from gateway.cli import main
from gateway.settings import Settings, SettingsError
from gateway.upstream.token import StaticTokenProvider, token_provider_from_settings
from tests.support.env_settings import UPSTREAM, loaded, refused

ROOT = Path(__file__).resolve().parents[2]
KEYS = json.dumps([{"name": "acme", "sha256": key_digest("dfg_rules_test_key")}])
PLACEHOLDER = "a placeholder from an example (it says 'replace-with' or 'change-me')"


def _example_secrets() -> dict[str, str]:
    secret = yaml.safe_load((ROOT / "deploy/k8s/secret.example.yaml").read_text())
    return {k: v for k, v in secret["stringData"].items() if "replace-with" in v}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_TOKEN_SIGNING_KEY", "replace-with-at-least-32-random-bytes"),
        ("GATEWAY_ADMIN_TOKEN", "replace-with-a-long-random-string"),
        ("GATEWAY_TOKEN_SIGNING_KEY", "compose-demo-signing-key-change-me"),  # docker-compose.yml's old fallback
        ("GATEWAY_UPSTREAM_TOKEN", "replace-with-the-data-flow-token"),
        ("GATEWAY_WEBHOOK_SECRET", "whsec_REPLACE_WITH_base64_secret_value"),
    ],
)
def test_a_placeholder_secret_from_our_examples_stops_startup(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """The k8s example's and compose's placeholders were accepted: browser tokens were signed with a key
    anyone can read in this repository (a token for any key name, any life, verified)."""
    [line] = refused(monkeypatch, **{name: value})
    assert line.startswith(f"{name}: {PLACEHOLDER}"), line


def test_every_placeholder_of_the_k8s_example_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    example = _example_secrets()
    assert {"GATEWAY_TOKEN_SIGNING_KEY", "GATEWAY_ADMIN_TOKEN"} <= set(example)
    lines = refused(monkeypatch, **example, GATEWAY_API_KEYS=KEYS)
    assert sorted(line.split(":")[0] for line in lines) == sorted(example), lines


def test_an_api_key_with_a_placeholder_digest_or_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [
        {"name": "backend", "sha256": "0" * 64},  # the k8s example's digest
        {"name": "hooks", "sha256": key_digest("k2"), "webhook_secret": "whsec_change-me-please-now"},
    ]
    lines = refused(monkeypatch, GATEWAY_API_KEYS=json.dumps(keys))
    assert [line.split(":")[0] for line in lines] == [
        "GATEWAY_API_KEYS[hooks].webhook_secret", "GATEWAY_API_KEYS[backend].sha256"]  # fmt: skip


def test_compose_ships_no_signing_key_and_its_empty_default_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in compose and "replace-with" not in compose
    value = yaml.safe_load(compose)["services"]["gateway-1"]["environment"]["GATEWAY_TOKEN_SIGNING_KEY"]
    default = re.fullmatch(r"\$\{GATEWAY_TOKEN_SIGNING_KEY:-(.*)\}", value)
    assert default is not None and default.group(1) == "", value
    assert loaded(monkeypatch, GATEWAY_TOKEN_SIGNING_KEY="").token_signing_key is None


@pytest.mark.parametrize(
    ("name", "value"), [("GATEWAY_ADMIN_TOKEN", " " * 16), ("GATEWAY_TOKEN_SIGNING_KEY", " " * 32)]
)
def test_a_secret_of_only_whitespace_stops_startup(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    """16 spaces passed the admin token's length check, 32 the signing key's."""
    [line] = refused(monkeypatch, **{name: value})
    assert line.startswith(f"{name}: only whitespace"), line


def test_a_blank_upstream_token_is_unset_and_a_padded_one_is_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token of spaces was sent to Data Flow as the credential: every session refused after ready."""
    blank = loaded(monkeypatch, **(UPSTREAM | {"GATEWAY_UPSTREAM_TOKEN": "   "}))
    assert blank.upstream_token is None
    with pytest.raises(SettingsError, match="no Data Flow credential configured"):
        token_provider_from_settings(blank)
    padded = loaded(monkeypatch, GATEWAY_UPSTREAM_TOKEN=" tok-3f9a\n", GATEWAY_UPSTREAM_CLIENT_SECRET="  ")
    assert padded.upstream_token == SecretStr("tok-3f9a") and padded.upstream_client_secret is None


def test_the_token_provider_ignores_a_blank_token_of_settings_built_without_validation() -> None:
    settings = Settings.model_construct(upstream_token=SecretStr("  "), upstream_identity_url="",
                                        upstream_client_id="", upstream_client_secret=None)  # fmt: skip
    with pytest.raises(SettingsError, match="no Data Flow credential configured"):
        token_provider_from_settings(settings)
    assert isinstance(token_provider_from_settings(Settings.model_construct(upstream_token=SecretStr("t "))),
                      StaticTokenProvider)  # fmt: skip


@pytest.mark.parametrize(
    "env",
    [
        {"GATEWAY_AUTH": "required"},
        {"GATEWAY_UPSTREAM_TARGET": "dataflow.example.com:443", "GATEWAY_UPSTREAM_TOKEN": "tok-3f9a"},
    ],
    ids=["required", "default-with-a-real-upstream"],
)
def test_required_authentication_without_api_keys_stops_startup(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    """It started, reported ready and refused every session (a WARNING was the only trace)."""
    [line] = refused(monkeypatch, **env)
    assert line.startswith("GATEWAY_API_KEYS: empty while authentication is required"), line
    assert "dataflow-gateway keygen" in line and "GATEWAY_ALLOW_INSECURE_NO_AUTH" in line
    assert loaded(monkeypatch, GATEWAY_API_KEYS=KEYS).auth_required  # with a key it starts


def test_without_authentication_or_in_simulator_mode_no_key_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not loaded(monkeypatch).auth_required
    assert not loaded(monkeypatch, **UPSTREAM).auth_required


def test_browser_token_life_longer_than_its_maximum_stops_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    """Minted tokens silently got the maximum's life."""
    [line] = refused(monkeypatch, GATEWAY_TOKEN_TTL_S="1000", GATEWAY_TOKEN_MAX_TTL_S="10")
    assert line.startswith("GATEWAY_TOKEN_TTL_S: longer than GATEWAY_TOKEN_MAX_TTL_S"), line
    assert loaded(monkeypatch, GATEWAY_TOKEN_TTL_S="10").token_ttl_s == 10
    # A short maximum alone is a fine choice: the default life (60 s) follows it, as minting clamps it.
    monkeypatch.delenv("GATEWAY_TOKEN_TTL_S")
    assert loaded(monkeypatch, GATEWAY_TOKEN_MAX_TTL_S="30").token_max_ttl_s == 30


@pytest.mark.parametrize("value", ["inf", "Infinity", "nan", "0"])
def test_keygen_refuses_a_budget_no_setting_takes_in_one_line(capsys: pytest.CaptureFixture[str], value: str) -> None:
    """``keygen --audio-seconds-per-minute inf`` ended in a pydantic traceback (README: no setting takes inf)."""
    with pytest.raises(SystemExit) as exited:
        main(["keygen", "--name", "acme", "--audio-seconds-per-minute", value])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].endswith("argument --audio-seconds-per-minute: not a finite number above 0"), err


@pytest.mark.parametrize(
    ("field", "value", "name"),
    [
        ("token_signing_key", "replace-with-at-least-32-random-bytes", "GATEWAY_TOKEN_SIGNING_KEY"),
        ("admin_token", "replace-with-a-long-random-string", "GATEWAY_ADMIN_TOKEN"),
    ],
)
def test_an_app_built_from_settings_made_in_code_refuses_a_placeholder_secret(
    field: str, value: str, name: str
) -> None:
    """An embedding app that builds ``Settings`` itself skips ``load_settings``: its checks of the
    environment, but not the placeholder refusal (a signing key anyone can read verified forged tokens)."""
    settings = Settings(_env_file=None, simulator_mode=True, **{field: SecretStr(value)})  # type: ignore[call-arg]
    with pytest.raises(SettingsError) as refusal:
        create_app(settings)
    [line] = refusal.value.problems
    assert line.startswith(f"{name}: {PLACEHOLDER}"), line
    create_app(Settings(_env_file=None, simulator_mode=True))  # type: ignore[call-arg]  # a real one builds
