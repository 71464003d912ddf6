"""Setting types whose limits the plain field constraints do not say: each bound is where a larger or
shorter value would let the gateway start, report ready, and then fail (or be unsafe) at run time.

Used as whole annotations (``Annotated[...]`` at the top), so the settings' fields keep their plain types.
:func:`is_loopback` reads a setting's value the same way for the settings and their checks.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr

# gRPC takes channel options as 32-bit integers (durations in milliseconds), and a stream's deadline
# (GATEWAY_MAX_SESSION_S + GATEWAY_FINALIZE_TIMEOUT_S + 30 s) overflows not far above: past these,
# every session failed (no close frame, or 1011 upstream_timeout at once) while readiness said ready.
GRPC_INT_MAX = 2**31 - 1
GRPC_SECONDS_MAX = GRPC_INT_MAX // 1000

#: A duration gRPC receives: positive, at most ~24.8 days.
GrpcSeconds = Annotated[float, Field(gt=0, le=GRPC_SECONDS_MAX)]
#: A byte count gRPC receives as a channel option.
GrpcBytes = Annotated[int, Field(le=GRPC_INT_MAX)]

#: RFC 7518 3.2: an HS256 key has at least 256 bits; a shorter one is found offline from any minted token.
HS256_MIN_KEY_BYTES = 32


#: Text our own examples put where a secret goes (deploy/k8s/secret.example.yaml, docker-compose.yml):
#: a gateway started with one signed tokens, or guarded /internal, with a key anyone can read on GitHub.
PLACEHOLDER_MARKS = ("replace-with", "change-me")


def is_placeholder(text: str) -> bool:
    """Is ``text`` an example's placeholder rather than a real secret?"""
    folded = text.lower().replace("_", "-")
    return any(mark in folded for mark in PLACEHOLDER_MARKS)


def _not_blank(text: str) -> None:
    # Spaces passed the length checks: 32 of them made an HS256 key, 16 an admin token.
    if text and not text.strip():
        raise ValueError("only whitespace: use a random value (openssl rand -hex 32), or unset it")


def _hs256_key(value: SecretStr | None) -> SecretStr | None:
    if value is None or not value.get_secret_value():
        return None  # empty is unset (a compose file's ${VAR:-} when the operator gave none)
    _not_blank(value.get_secret_value())
    if len(value.get_secret_value().encode()) < HS256_MIN_KEY_BYTES:
        raise ValueError(f"an HS256 key needs at least {HS256_MIN_KEY_BYTES} bytes (RFC 7518 3.2)")
    return value


def _earlier_hs256_key(value: SecretStr) -> SecretStr:
    if not value.get_secret_value():
        raise ValueError("an empty key: list only the keys tokens may still be signed with")
    checked = _hs256_key(value)
    assert checked is not None
    return checked


def _blank_is_unset(value: SecretStr | None) -> SecretStr | None:
    # A credential is sent as configured: surrounding whitespace (a pasted line) is never part of it,
    # and one of only spaces was sent as the token (every session failed with Data Flow's refusal).
    if value is None:
        return None
    stripped = value.get_secret_value().strip()
    return SecretStr(stripped) if stripped else None


def _empty_is_none(value: Any) -> Any:
    # GATEWAY_UPSTREAM_CA_FILE= became Path("."), a directory read as the CA roots.
    return None if isinstance(value, str) and not value.strip() else value


#: A language code as Genesys's AudioHook client validates it (purecloudlabs/audiohook-reference-implementation,
#: app/audiohook/src/protocol/validators.ts, languageCodeRegex), and how many ``opened`` may list.
LANGUAGE_CODE_PATTERN = r"^[a-z]{2,3}-[A-Za-z]{2,3}$"
MAX_LANGUAGES = 200

#: An admin token anyone may guess in a few thousand tries is no lock (a throttled address still gets
#: its share per minute, and an attacker has many addresses).
ADMIN_TOKEN_MIN_CHARS = 16


def _long_enough(value: SecretStr | None) -> SecretStr | None:
    if value is not None:
        _not_blank(value.get_secret_value())
    if value is not None and len(value.get_secret_value()) < ADMIN_TOKEN_MIN_CHARS:
        raise ValueError(
            f"shorter than {ADMIN_TOKEN_MIN_CHARS} characters: use a long random string (openssl rand -hex 32),"
            " or unset it (then only loopback callers may use /internal endpoints)"
        )
    return value


def _proxy(value: str) -> str:
    # uvicorn keeps anything else as a literal that never matches: the proxy would silently not be trusted.
    try:
        ipaddress.ip_network(value) if "/" in value else ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("not an IP address or network (no host names; a network has no host bits set)") from None
    return value


def _origin(value: str) -> str:
    # Compared as the exact string a browser sends: anything else in the list never matches.
    parts = urlsplit(value)
    try:
        default_port = parts.port == {"http": 80, "https": 443}.get(parts.scheme, parts.port)
    except ValueError:
        default_port = True
    if default_port or not parts.hostname or "@" in parts.netloc or value != f"{parts.scheme}://{parts.netloc}".lower():
        raise ValueError(
            "not an Origin as browsers send it: http(s)://host[:port], lower case, no path or default port"
        )
    return value


def _public_host(value: str) -> str:
    parts = urlsplit(f"//{value}")
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        parts = urlsplit("")
    if not parts.hostname or parts.netloc != value or "@" in value:
        raise ValueError("not a host name or host:port (no scheme, path or user)")
    return value


#: Targets gRPC takes as URIs, passed on as they are (README: Upstream connections).
GRPC_URI_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


#: gRPC URI schemes of local sockets: nothing leaves the machine.
_LOCAL_SOCKET_SCHEMES = ("unix:", "unix-abstract:")


def _host_is_loopback(authority: str) -> bool:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    if authority.startswith("["):
        host = authority[1:].partition("]")[0]
    elif authority.count(":") == 1:
        host = authority.partition(":")[0]
    else:
        host = authority
    if host.lower().rstrip(".") in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback(target: str) -> bool:
    """Is ``target`` (GATEWAY_UPSTREAM_TARGET: host, host:port or a gRPC URI) on this machine (empty: the
    simulator)? gRPC URIs are read as gRPC reads them: ``ipv4:``/``ipv6:`` list addresses (all must be
    loopback), ``dns:[//authority/]host:port`` names one host, ``unix:`` sockets are local."""
    if not target:
        return True
    if target.startswith(_LOCAL_SOCKET_SCHEMES):
        return True
    if target.startswith(("ipv4:", "ipv6:")):
        addresses = target.partition(":")[2].split(",")
        return all(address and _host_is_loopback(address) for address in addresses)
    if target.startswith("dns:"):
        rest = target.removeprefix("dns:")
        if rest.startswith("//"):
            rest = rest[2:].partition("/")[2]  # dns://authority/host:port: the DNS server is not the target
        return bool(rest) and _host_is_loopback(rest)
    if target.startswith(GRPC_URI_SCHEMES):
        return False  # vsock: another machine's (a VM's) socket
    return _host_is_loopback(target)


def _upstream_target(value: str) -> str:
    # gRPC reads ``http://host:port`` as a name to resolve and wraps a port past 65535: the gateway
    # started, reported ready, and every session failed (or dialled another port).
    if not value or value.startswith(GRPC_URI_SCHEMES):
        return value
    parts = urlsplit(f"//{value}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if not parts.hostname or parts.netloc != value or "@" in value or port == 0 or value.split() != [value]:
        raise ValueError(
            "not host:port with a port from 1 to 65535 (e.g. dataflow.example.com:443, no scheme such as"
            " https://) nor a gRPC URI (dns:///host:443, ipv4:…, unix:…)"
        )
    return value


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


def _listen_host(value: str) -> str:
    # Empty made uvicorn listen on every interface (0.0.0.0 and ::); a value no resolver takes failed
    # after startup had begun ([Errno -2], exit 3). Names are not resolved here: only their shape.
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    name = value.removesuffix(".")
    if not name or len(name) > 253 or not all(_HOST_LABEL.match(label) for label in name.split(".")):
        raise ValueError("not an IP address or host name (e.g. 127.0.0.1, 0.0.0.0 for every interface, ::1, localhost)")
    return value


_METHOD_PATH = re.compile(r"^/[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*/[A-Za-z_][A-Za-z0-9_]*$")


def _method_path(value: str) -> str:
    # Any other shape is a method no server has: every session failed with UNIMPLEMENTED after ready.
    if not _METHOD_PATH.match(value):
        raise ValueError("not a gRPC method path /package.Service/Method (e.g. /dataflow/Stream)")
    return value


def http_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be POSTed to (None: it can). Never quotes the URL (it may hold a password)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a bracketed host that is no IPv6 address, a port that is no number or too large
        return "not a URL (a host in [ ] that is no IPv6 address, or a port that is not 1 to 65535)"
    if parts.scheme not in ("http", "https"):
        return "not an http or https URL"
    if not parts.hostname:
        return "has no host (https://host[:port]/path)"
    if port == 0:
        return "port 0 cannot be connected to"
    return None


def _dataflow_rate(value: int) -> int:
    # An int (not a Literal) so the environment's "8000" parses; Data Flow takes only these two.
    if value not in (8000, 16000):
        raise ValueError("Data Flow accepts 8000 or 16000")
    return value


#: The browser tokens' signing key: unset or empty (no browser tokens), or at least 32 bytes.
SigningKey = Annotated[SecretStr | None, AfterValidator(_hs256_key)]
#: An earlier signing key that tokens still verify with: at least 32 bytes (an empty entry is a mistake).
EarlierSigningKey = Annotated[SecretStr, AfterValidator(_earlier_hs256_key)]
#: The operator endpoints' bearer token: unset, or at least 16 characters (an empty one let no caller
#: drain: the preStop hook got 401; a short one can be guessed).
AdminToken = Annotated[SecretStr | None, AfterValidator(_long_enough)]
#: A credential sent to Data Flow or its identity service: surrounding whitespace dropped, blank is unset.
Credential = Annotated[SecretStr | None, AfterValidator(_blank_is_unset)]
#: A file path setting: empty is unset.
OptionalPath = Annotated[Path | None, BeforeValidator(_empty_is_none)]
#: The address to listen on: an IP address or a host name.
ListenHost = Annotated[str, AfterValidator(_listen_host)]
#: The Stream RPC's gRPC method path.
MethodPath = Annotated[str, AfterValidator(_method_path)]
#: An entry of the trusted proxies: an IP address or network.
TrustedProxy = Annotated[str, AfterValidator(_proxy)]
#: Data Flow's gRPC endpoint: empty (the simulator), host[:port] or a gRPC URI.
UpstreamTarget = Annotated[str, AfterValidator(_upstream_target)]
#: An allowed Origin (of browser pages on WebSocket handshakes).
Origin = Annotated[str, AfterValidator(_origin)]
#: A host name clients use, as in their Host header.
PublicHost = Annotated[str, AfterValidator(_public_host)]
#: A language code an AudioHook ``opened`` may list (``en-US``).
LanguageCode = Annotated[str, Field(pattern=LANGUAGE_CODE_PATTERN)]
#: The audio rate sent to Data Flow.
DataflowRate = Annotated[int, AfterValidator(_dataflow_rate)]
