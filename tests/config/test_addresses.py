"""Addresses, paths and URLs the gateway would start with and then fail on (or use wrongly): each
stops startup with one line naming the variable, never a password in it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway.auth import key_digest
from gateway.config.bounds import is_loopback
from gateway.settings import SettingsError, load_settings
from gateway.upstream.token import token_provider_from_settings
from gateway.webhooks.targets import WebhookTargets
from tests.support.env_settings import UPSTREAM, loaded, refused
from tests.support.settings import offline_settings

WHSEC = "whsec_" + "QUJD" * 8
BAD_URLS = ["https://u:pw-9c1d@hooks.example.com:99999/x", "https:///x", "https://u:pw-9c1d@[bad/x"]


@pytest.mark.parametrize("host", ["", " ", "not a host", "host/path", "-bad.example", "[::1]"])
def test_a_listen_address_that_is_no_address_stops_startup(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    """Empty listened on every interface (0.0.0.0 and ::); 'not a host' failed after startup began, exit 3."""
    [line] = refused(monkeypatch, GATEWAY_HOST=host)
    assert line.startswith("GATEWAY_HOST: not an IP address or host name"), line


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::", "::1", "localhost", "gateway-1", "gw.example.com."])
def test_addresses_and_host_names_are_listen_addresses(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    assert loaded(monkeypatch, GATEWAY_HOST=host).host == host


@pytest.mark.parametrize("path", ["", "dataflow/Stream", "/dataflow", "/dataflow/Stream/", "/a b/Stream", "/x.y./S"])
def test_a_malformed_method_path_stops_startup(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """It only warned: the gateway said ready and every session failed (UNIMPLEMENTED)."""
    [line] = refused(monkeypatch, GATEWAY_UPSTREAM_METHOD_PATH=path)
    assert line.startswith("GATEWAY_UPSTREAM_METHOD_PATH: not a gRPC method path /package.Service/Method"), line


@pytest.mark.parametrize("path", ["/dataflow/Stream", "/sestek.Dataflow/Stream", "/a.b_c.Svc/Run2"])
def test_method_paths_of_a_package_or_none_are_taken(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    assert loaded(monkeypatch, GATEWAY_UPSTREAM_METHOD_PATH=path).upstream_method_path == path


@pytest.mark.parametrize("url", BAD_URLS)
def test_an_identity_url_without_a_usable_host_or_port_names_the_variable(url: str) -> None:
    settings = offline_settings(upstream_identity_url=url, upstream_client_id="c", upstream_client_secret="s")
    with pytest.raises(SettingsError) as caught:
        token_provider_from_settings(settings)
    assert str(caught.value).startswith("GATEWAY_UPSTREAM_IDENTITY_URL: "), caught.value
    assert "pw-9c1d" not in str(caught.value) and "Invalid IPv6 URL" not in str(caught.value)


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_webhook_url_without_a_usable_host_or_port_names_the_variable(url: str) -> None:
    default = offline_settings(webhook_url=url, webhook_secret=SecretStr(WHSEC))
    keyed = offline_settings(webhook_secret=SecretStr(WHSEC),
                             api_keys=[{"name": "acme", "sha256": key_digest("k"), "webhook_url": url}])  # fmt: skip
    for settings, where in ((default, "GATEWAY_WEBHOOK_URL: "), (keyed, "GATEWAY_API_KEYS[acme].webhook_url: ")):
        with pytest.raises(SettingsError) as caught:
            WebhookTargets.from_settings(settings)
        assert str(caught.value).startswith(where), caught.value
        assert "pw-9c1d" not in str(caught.value) and "Invalid IPv6 URL" not in str(caught.value)


def test_a_proxy_variable_that_is_no_url_stops_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 30-frame traceback from inside the app's startup (its password-masking step), and exit 3."""
    lines = refused(monkeypatch, **UPSTREAM, https_proxy="http://ops:pw-9c1d@[bad:3128", http_proxy="p:99999")
    assert lines == [
        "https_proxy: not a URL (http://[user:password@]host:port)",
        "http_proxy: not a URL (http://[user:password@]host:port)",
    ]
    assert loaded(monkeypatch, **UPSTREAM, https_proxy="http://ops:pw@proxy.example:3128", http_proxy="proxy:3128")


def test_a_dotenv_file_that_is_not_utf8_is_one_line_without_its_content(tmp_path: Path) -> None:
    """A 38-line UnicodeDecodeError traceback, quoting the bytes around the bad one."""
    env_file = tmp_path / ".env"
    env_file.write_bytes(b"GATEWAY_MAX_SESSIONS=3\nGATEWAY_UPSTREAM_TOKEN=caf\xe9-secret\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=env_file)
    assert caught.value.problems == [f"{env_file}: not UTF-8 (line 2)"]


@pytest.mark.parametrize(
    ("target", "loopback"),
    [
        ("ipv4:127.0.0.1:50051", True), ("ipv6:[::1]:50051", True), ("dns:///localhost:50051", True),
        ("dns:localhost:50051", True), ("dns://8.8.8.8/127.0.0.1:50051", True), ("unix:/run/dataflow.sock", True),
        ("unix-abstract:dataflow", True), ("127.0.0.1:50051", True), ("[::1]:50051", True), ("localhost", True),
        ("ipv4:127.0.0.1:1,10.0.0.1:1", False), ("dns:///dataflow.example.com:443", False),
        ("dataflow.example.com:443", False), ("vsock:3:50051", False),
    ],
)  # fmt: skip
def test_loopback_targets_written_as_grpc_uris_are_plaintext(
    monkeypatch: pytest.MonkeyPatch, target: str, loopback: bool
) -> None:
    """gRPC URIs of this machine were read as remote names, and the simulator on loopback got TLS."""
    assert is_loopback(target) is loopback
    assert loaded(monkeypatch, **(UPSTREAM | {"GATEWAY_UPSTREAM_TARGET": target})).upstream_is_plaintext() is loopback


def test_an_empty_ca_file_is_unset_and_plaintext_with_a_ca_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert loaded(monkeypatch, GATEWAY_UPSTREAM_CA_FILE="").upstream_ca_file is None
    [line] = refused(monkeypatch, GATEWAY_UPSTREAM_PLAINTEXT="true", GATEWAY_UPSTREAM_CA_FILE="/etc/ssl/roots.pem")
    assert line.startswith("GATEWAY_UPSTREAM_PLAINTEXT: true while GATEWAY_UPSTREAM_CA_FILE is set"), line


def test_a_write_stall_below_the_send_budget_is_refused_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """GATEWAY_HTTP_WRITE_STALL_S=5 was silently taken as 20 (2 x GATEWAY_CLIENT_SEND_TIMEOUT_S)."""
    [line] = refused(monkeypatch, GATEWAY_HTTP_WRITE_STALL_S="5")
    assert line.startswith("GATEWAY_HTTP_WRITE_STALL_S: below 2 x GATEWAY_CLIENT_SEND_TIMEOUT_S"), line
    assert loaded(monkeypatch, GATEWAY_HTTP_WRITE_STALL_S="20").http_write_stall_s == 20
    # Unset, the default is raised as documented: setting only the send budget is not refused.
    monkeypatch.delenv("GATEWAY_HTTP_WRITE_STALL_S")
    assert loaded(monkeypatch, GATEWAY_CLIENT_SEND_TIMEOUT_S="20").http_write_stall_s == 30
