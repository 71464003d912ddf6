"""Honest configuration, checked on the real command: bad values and unknown GATEWAY_* variables stop
startup with one line per variable (no traceback, no value echoed), --version, and ``settings``."""

from __future__ import annotations

import importlib.util
import json
import resource
from importlib import metadata
from pathlib import Path

import pytest

from gateway.auth import key_digest
from gateway.connections.cap import connection_cap
from tests.support.cli_process import run_cli

SECRET_TOKEN = "upstream-token-7d1e0b-must-stay-hidden"
API_KEY = "dfg_config_test_key_4b7c9d1e2f3a"
HOOK_TOKEN = "hook-query-token-9a8b7c6d"
NO_AUTH = {"GATEWAY_AUTH": "none", "GATEWAY_ALLOW_INSECURE_NO_AUTH": "true"}  # a real upstream, no API keys


def test_invalid_values_and_unknown_variables_stop_startup_one_line_each(tmp_path: Path) -> None:
    env = {"GATEWAY_PORT": "99999", "GATEWAY_MAX_SESIONS": "5", "GATEWAY_LOG_LEVEL": "loud", "GATEWAY_WHATEVER": "1"}
    done = run_cli(["serve"], env, tmp_path)
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(line.split(":")[0] for line in lines) == [
        "GATEWAY_LOG_LEVEL", "GATEWAY_MAX_SESIONS", "GATEWAY_PORT", "GATEWAY_WHATEVER",
    ], lines  # fmt: skip
    assert "GATEWAY_MAX_SESIONS: unknown setting; did you mean GATEWAY_MAX_SESSIONS?" in lines
    assert not any("did you mean" in line for line in lines if line.startswith("GATEWAY_WHATEVER"))
    assert "99999" not in done.stderr and "loud" not in done.stderr  # values are never echoed


def test_a_list_variable_that_is_not_json_names_the_variable(tmp_path: Path) -> None:
    done = run_cli(["serve"], {"GATEWAY_API_KEYS": f"[{API_KEY}"}, tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["GATEWAY_API_KEYS: not valid JSON (a list or object is expected)"]
    assert API_KEY not in done.stderr


def test_version_comes_from_the_package_metadata(tmp_path: Path) -> None:
    done = run_cli(["--version"], {}, tmp_path)
    assert done.returncode == 0
    assert done.stdout.strip() == f"dataflow-gateway {metadata.version('dataflow-gateway')}"


def test_settings_prints_the_effective_configuration_with_secrets_masked(tmp_path: Path) -> None:
    keys = [{"name": "acme", "sha256": key_digest(API_KEY), "webhook_secret": "whsec_" + "QUJD" * 8}]
    env = {
        "GATEWAY_UPSTREAM_TOKEN": SECRET_TOKEN,
        "GATEWAY_API_KEYS": json.dumps(keys),
        "GATEWAY_WEBHOOK_URL": f"https://hooks.example.test/in?token={HOOK_TOKEN}",
        "GATEWAY_WEBHOOK_SECRET": "whsec_" + "QUJD" * 8,  # serve refuses a URL without one: settings too
        "GATEWAY_MAX_SESSIONS": "7",
    }
    done = run_cli(["settings"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert lines["GATEWAY_MAX_SESSIONS"] == "7"
    assert lines["GATEWAY_PORT"] == "8080  # default"
    assert lines["GATEWAY_UPSTREAM_TOKEN"] == "[redacted]"
    for secret in (SECRET_TOKEN, HOOK_TOKEN, key_digest(API_KEY), "QUJD" * 8):
        assert secret not in done.stdout
    shown = run_cli(["settings", "--json"], env, tmp_path)
    values = json.loads(shown.stdout)
    assert values["GATEWAY_API_KEYS"][0]["name"] == "acme"
    assert values["GATEWAY_API_KEYS"][0]["webhook_secret"] == "[redacted]"
    assert SECRET_TOKEN not in shown.stdout


def test_settings_shows_the_connection_cap_in_force_as_the_server_derives_it(tmp_path: Path) -> None:
    """Unset, GATEWAY_MAX_CONNECTIONS was shown empty; the cap in force depends on GATEWAY_MAX_SESSIONS and
    the process's open-file limit: shown too, by the function the server uses, under two limits."""
    env = {"GATEWAY_MAX_SESSIONS": "500"}
    for nofile, figure, why, share in (
        (4096, 1256, "derived: 2 x GATEWAY_MAX_SESSIONS + 256; open-file limit 4096 would allow 3072", 628),
        (
            512,
            384,
            "derived: open-file limit 512 less 128 kept back; 2 x GATEWAY_MAX_SESSIONS + 256 would be 1256",
            192,
        ),
        (128, 64, "derived: open-file limit 128 less 64 kept back; 2 x GATEWAY_MAX_SESSIONS + 256 would be 1256", 32),
    ):
        assert connection_cap(None, 500, soft_limit=nofile) == figure  # what the server would apply
        done = run_cli(["settings"], env, tmp_path, nofile=nofile)
        assert done.returncode == 0, done.stderr
        lines = dict(line.split("=", 1) for line in done.stdout.splitlines())
        assert lines["GATEWAY_MAX_CONNECTIONS"] == f"  # default; in force: {figure} ({why})"
        assert lines["GATEWAY_MAX_CONNECTIONS_PER_ADDRESS"] == f"  # default; in force: {share}"  # half, >= 16
        shown = json.loads(run_cli(["settings", "--json"], env, tmp_path, nofile=nofile).stdout)
        assert shown["GATEWAY_MAX_CONNECTIONS"] is None  # the setting itself: unset
        assert shown["in_force"]["GATEWAY_MAX_CONNECTIONS"] == {"value": figure, "reason": why}
        assert shown["in_force"]["GATEWAY_MAX_CONNECTIONS_PER_ADDRESS"] == {"value": share}
    for value, shown_text, in_force, share in (
        ("0", "none (0: no cap)", None, None),
        ("300", "300 (as set)", 300, 150),
    ):
        env = {"GATEWAY_MAX_CONNECTIONS": value}
        lines = dict(line.split("=", 1) for line in run_cli(["settings"], env, tmp_path).stdout.splitlines())
        assert lines["GATEWAY_MAX_CONNECTIONS"] == f"{value}  # in force: {shown_text}"
        shown = json.loads(run_cli(["settings", "--json"], env, tmp_path).stdout)
        assert shown["in_force"]["GATEWAY_MAX_CONNECTIONS"]["value"] == in_force
        assert shown["in_force"]["GATEWAY_MAX_CONNECTIONS_PER_ADDRESS"]["value"] == share


def test_serve_help_points_to_the_settings_command(tmp_path: Path) -> None:
    done = run_cli(["serve", "--help"], {}, tmp_path)
    assert done.returncode == 0
    assert "dataflow-gateway settings" in " ".join(done.stdout.split())


def test_incomplete_credentials_stop_startup_in_one_line_not_a_traceback(tmp_path: Path) -> None:
    env = {"GATEWAY_UPSTREAM_TARGET": "127.0.0.1:1", "GATEWAY_UPSTREAM_CLIENT_SECRET": SECRET_TOKEN} | NO_AUTH
    done = run_cli(["serve"], env, tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("incomplete Data Flow client credentials"), lines
    assert "GATEWAY_UPSTREAM_IDENTITY_URL" in lines[0]
    assert SECRET_TOKEN not in done.stderr
    hooks = run_cli(["serve"], {"GATEWAY_WEBHOOK_URL": "https://hooks.example.test/in"}, tmp_path)
    assert hooks.returncode == 2, hooks.stderr
    assert len(hooks.stderr.splitlines()) == 1 and "GATEWAY_WEBHOOK" in hooks.stderr, hooks.stderr


def test_a_websocket_implementation_that_is_not_installed_stops_startup(tmp_path: Path) -> None:
    if importlib.util.find_spec("wsproto") is not None:
        pytest.skip("wsproto is installed here")
    done = run_cli(["serve"], {"GATEWAY_WS_IMPLEMENTATION": "wsproto"}, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == ["GATEWAY_WS_IMPLEMENTATION: wsproto is not installed (pip install wsproto)"]


def test_an_unknown_variable_in_the_env_file_stops_startup_too(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GATEWAY_MAX_SESSIONS=3\nGATEWAY_UPSTREAM_TOKN=abc\n")
    done = run_cli(["settings"], {}, tmp_path)
    assert done.returncode == 2, done.stdout
    assert done.stderr.splitlines() == ["GATEWAY_UPSTREAM_TOKN: unknown setting; did you mean GATEWAY_UPSTREAM_TOKEN?"]


def test_values_that_would_only_fail_later_stop_startup(tmp_path: Path) -> None:
    """Each of these was accepted: the gateway started and said ready, then every session failed (gRPC
    takes its channel options as 32-bit integers and its deadline overflowed: no close frame, or 1011
    upstream_timeout at once), drained for ever, signed browser tokens with a guessable key, or refused
    every drain request (an empty admin token: the preStop hook got 401)."""
    env = {
        "GATEWAY_UPSTREAM_KEEPALIVE_INTERVAL_S": "inf",
        "GATEWAY_UPSTREAM_RECONNECT_BACKOFF_MAX_S": "1e12",
        "GATEWAY_UPSTREAM_MAX_MESSAGE_BYTES": str(2**31),
        "GATEWAY_MAX_SESSION_S": "1e10",
        "GATEWAY_FINALIZE_TIMEOUT_S": "Infinity",
        "GATEWAY_TOKEN_SIGNING_KEY": "s3cret-key",
        "GATEWAY_ADMIN_TOKEN": "hunter2-hunter2",  # 15 characters
    }
    done = run_cli(["settings"], env, tmp_path)
    assert done.returncode == 2, done.stdout
    lines = done.stderr.splitlines()
    assert sorted(line.split(":")[0] for line in lines) == sorted(env), lines
    assert "Traceback" not in done.stderr and "s3cret-key" not in done.stderr
    # A drain budget longer than a session may last (the drain endpoint refuses such a budget too).
    budget = run_cli(["serve"], {"GATEWAY_DRAIN_BUDGET_S": "20000"}, tmp_path)
    assert budget.returncode == 2, budget.stderr
    assert budget.stderr.splitlines() == [
        "GATEWAY_DRAIN_BUDGET_S: longer than a session may last (GATEWAY_MAX_SESSION_S)"
    ]
    # A replay buffer shorter than the audio held for Data Flow: a recovery lost audio no result covered.
    replay = run_cli(["serve"], {"GATEWAY_UPSTREAM_REPLAY_MS": "2000", "GATEWAY_UPSTREAM_BUFFER_MS": "3000"}, tmp_path)
    assert replay.returncode == 2, replay.stderr
    assert replay.stderr.splitlines() == [
        "GATEWAY_UPSTREAM_REPLAY_MS: shorter than GATEWAY_UPSTREAM_BUFFER_MS (a recovery replays the audio held "
        "for Data Flow from it: a shorter one loses audio; 0 turns recovery off)"
    ]
    off = run_cli(["settings"], {"GATEWAY_UPSTREAM_REPLAY_MS": "0"}, tmp_path)
    assert off.returncode == 0, off.stderr


@pytest.mark.skipif(resource.getrlimit(resource.RLIMIT_NOFILE)[0] == resource.RLIM_INFINITY, reason="no nofile limit")
def test_a_connection_cap_the_descriptors_cannot_reach_stops_startup(tmp_path: Path) -> None:
    """A cap above what the open-file limit leaves for clients never acts: the process ran out of descriptors
    (EMFILE: new connections closed unanswered, upstream and webhook connections failing) before it."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    done = run_cli(["serve"], {"GATEWAY_MAX_CONNECTIONS": str(soft)}, tmp_path)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"GATEWAY_MAX_CONNECTIONS: {soft} is more than the open-file limit ({soft}) leaves"), line


def test_a_password_in_a_url_setting_is_masked_in_the_report(tmp_path: Path) -> None:
    """A webhook receiver or identity endpoint behind basic auth is configured as https://user:password@host/…
    (httpx sends it as Authorization: Basic); ``settings`` printed that password as it was."""
    env = {
        "GATEWAY_WEBHOOK_URL": f"https://hooks:{HOOK_TOKEN}@hooks.example.test/in",
        "GATEWAY_WEBHOOK_SECRET": "whsec_" + "QUJD" * 8,
        "GATEWAY_UPSTREAM_IDENTITY_URL": f"https://gw:{SECRET_TOKEN}@identity.example.test/connect/token",
    }
    for args in (["settings"], ["settings", "--json"]):
        done = run_cli(args, env, tmp_path)
        assert done.returncode == 0, done.stderr
        assert HOOK_TOKEN not in done.stdout and SECRET_TOKEN not in done.stdout, done.stdout
        assert "hooks.example.test/" in done.stdout and "identity.example.test/connect/token" in done.stdout


def test_a_webhook_url_is_shown_without_its_path(tmp_path: Path) -> None:
    """Many receivers take their credential in the path (https://hooks.example/services/T0/B0/<secret>),
    which no text shape tells from a path: ``settings`` printed it whole (log lines already kept the
    origin only)."""
    env = {
        "GATEWAY_WEBHOOK_URL": f"https://hooks.example.test/services/{HOOK_TOKEN}",
        "GATEWAY_WEBHOOK_SECRET": "whsec_" + "QUJD" * 8,
        "GATEWAY_API_KEYS": json.dumps(
            [{"name": "acme", "sha256": key_digest(API_KEY), "webhook_url": f"https://acme.example.test/{HOOK_TOKEN}"}]
        ),
    }
    for args in (["settings"], ["settings", "--json"]):
        done = run_cli(args, env, tmp_path)
        assert done.returncode == 0, done.stderr
        assert HOOK_TOKEN not in done.stdout, done.stdout
        assert "https://hooks.example.test/…" in done.stdout and "https://acme.example.test/…" in done.stdout


def test_two_api_keys_of_one_name_stop_startup(tmp_path: Path) -> None:
    """Sessions, budgets and webhooks are kept by a key's name: two entries named alike were accepted and
    shared them (one tenant's call results went to the other's receiver)."""
    keys = [
        {"name": "acme", "sha256": key_digest(API_KEY), "webhook_url": "https://a.example.test/in"},
        {"name": "acme", "sha256": key_digest(API_KEY + "b"), "webhook_url": "https://b.example.test/in"},
    ]
    done = run_cli(["settings"], {"GATEWAY_API_KEYS": json.dumps(keys)}, tmp_path)
    assert done.returncode == 2, done.stdout
    [line] = done.stderr.splitlines()
    assert line.startswith("GATEWAY_API_KEYS: two entries have the same name ('acme')"), line
    keys[1]["name"] = "globex"
    keys[1]["sha256"] = keys[0]["sha256"]
    done = run_cli(["settings"], {"GATEWAY_API_KEYS": json.dumps(keys)}, tmp_path)
    assert done.returncode == 2, done.stdout
    [line] = done.stderr.splitlines()
    assert line.startswith("GATEWAY_API_KEYS: two entries have the same sha256"), line
    assert key_digest(API_KEY) not in done.stderr


@pytest.mark.parametrize("target", ["http://127.0.0.1:50555", "127.0.0.1:99999", "dataflow.example:0", "a b:443"])
def test_an_upstream_target_grpc_would_misread_stops_startup(tmp_path: Path, target: str) -> None:
    """gRPC read ``http://host:port`` as a name to resolve and wrapped a port past 65535 (dialling another
    port): the gateway started and said ready, and every session failed."""
    done = run_cli(["settings"], {"GATEWAY_UPSTREAM_TARGET": target}, tmp_path)
    assert done.returncode == 2, done.stdout
    [line] = done.stderr.splitlines()
    assert line.startswith("GATEWAY_UPSTREAM_TARGET: not host:port"), line


@pytest.mark.parametrize("target", ["dataflow.example.com:443", "dataflow", "[::1]:50051", "dns:///dataflow:443"])
def test_upstream_targets_gateway_and_grpc_take(tmp_path: Path, target: str) -> None:
    env = {"GATEWAY_UPSTREAM_TARGET": target, "GATEWAY_UPSTREAM_TOKEN": SECRET_TOKEN} | NO_AUTH
    done = run_cli(["settings"], env, tmp_path)  # settings refuses what serve would: a credential is needed
    assert done.returncode == 0, done.stderr
    assert f"GATEWAY_UPSTREAM_TARGET={target}" in done.stdout


def test_a_trusted_proxy_that_is_not_an_address_stops_startup(tmp_path: Path) -> None:
    """uvicorn keeps an entry that is not an IP address or network as a literal that never matches: a
    proxy named by its host name ("nginx") or a network with host bits ("10.0.0.1/8") was silently not
    trusted, and every client behind it counted as the proxy's one address (the auth throttle's key)."""
    env = {"GATEWAY_TRUSTED_PROXIES": json.dumps(["nginx", "10.0.0.1/8", "10.1.0.0/16", "::1", "192.0.2.7"])}
    done = run_cli(["settings"], env, tmp_path)
    assert done.returncode == 2, done.stdout
    assert [line.split(":")[0] for line in done.stderr.splitlines()] == [
        "GATEWAY_TRUSTED_PROXIES[0]", "GATEWAY_TRUSTED_PROXIES[1]"]  # fmt: skip


def test_origins_and_host_names_that_can_never_match_stop_startup(tmp_path: Path) -> None:
    """A browser sends its Origin as scheme://host[:port], lower case, without the default port or a
    path; a Host header has no scheme. An entry written otherwise never matched: every browser session
    was refused (403 origin_not_allowed), or every request (400), however long the gateway ran."""
    origins = ["https://app.example.com/", "app.example.com", "https://App.example.com", "https://a.example:443",
               "https://ok.example.com", "http://localhost:3000"]  # fmt: skip
    hosts = ["https://gw.example.com", "gw.example.com/v1", "gw.example.com", "gw.example.com:8443", "[::1]:8080"]
    env = {"GATEWAY_ALLOWED_ORIGINS": json.dumps(origins), "GATEWAY_PUBLIC_HOSTS": json.dumps(hosts)}
    done = run_cli(["settings"], env, tmp_path)
    assert done.returncode == 2, done.stdout
    assert sorted(line.split(":")[0] for line in done.stderr.splitlines()) == [
        *(f"GATEWAY_ALLOWED_ORIGINS[{i}]" for i in range(4)),
        "GATEWAY_PUBLIC_HOSTS[0]",
        "GATEWAY_PUBLIC_HOSTS[1]",
    ]


def test_upstream_files_and_secrets_that_cannot_be_used_stop_startup_in_one_line(tmp_path: Path) -> None:
    """A missing or non-PEM CA file, a proto module that is not one, and an AudioHook secret that is not
    base64 each ended startup in a traceback from inside uvicorn's (the missing file's named neither the
    variable nor the path), after the embedded simulator had started."""
    not_pem = tmp_path / "roots.pem"
    not_pem.write_text("not a certificate\n")
    cases = {
        "GATEWAY_UPSTREAM_CA_FILE": str(tmp_path / "missing.pem"),
        "GATEWAY_UPSTREAM_PROTO_MODULE": "json",
        "GATEWAY_AUDIOHOOK_CLIENT_SECRET": "!!!not-base64",
    }
    for name, value in [*cases.items(), ("GATEWAY_UPSTREAM_CA_FILE", str(not_pem))]:
        done = run_cli(["serve"], {name: value}, tmp_path)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
        [line] = done.stderr.splitlines()
        assert line.startswith(f"{name}: "), line
    keys = [{"name": "acme", "sha256": key_digest(API_KEY), "audiohook_client_secret": "%%%"}]
    done = run_cli(["serve"], {"GATEWAY_API_KEYS": json.dumps(keys)}, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "GATEWAY_API_KEYS[acme].audiohook_client_secret: not base64 (paste the client secret as Genesys shows it)"
    ]
