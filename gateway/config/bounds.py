"""Setting types whose limits the plain field constraints do not say: each bound is where a larger or
shorter value would let the gateway start, report ready, and then fail (or be unsafe) at run time.

Used as whole annotations (``Annotated[...]`` at the top), so the settings' fields keep their plain types.
:func:`is_loopback` reads a setting's value the same way for the settings and their checks.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr

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


def _hs256_key(value: SecretStr | None) -> SecretStr | None:
    if value is not None and 0 < len(value.get_secret_value().encode()) < HS256_MIN_KEY_BYTES:
        raise ValueError(f"an HS256 key needs at least {HS256_MIN_KEY_BYTES} bytes (RFC 7518 3.2)")
    return value


#: A language code as Genesys's AudioHook client validates it (purecloudlabs/audiohook-reference-implementation,
#: app/audiohook/src/protocol/validators.ts, languageCodeRegex), and how many ``opened`` may list.
LANGUAGE_CODE_PATTERN = r"^[a-z]{2,3}-[A-Za-z]{2,3}$"
MAX_LANGUAGES = 200

#: An admin token anyone may guess in a few thousand tries is no lock (a throttled address still gets
#: its share per minute, and an attacker has many addresses).
ADMIN_TOKEN_MIN_CHARS = 16


def _long_enough(value: SecretStr | None) -> SecretStr | None:
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


def is_loopback(target: str) -> bool:
    """Is ``target`` (host or host:port, as GATEWAY_UPSTREAM_TARGET) on this machine (empty: the simulator)?"""
    host = target.rsplit(":", 1)[0].strip("[]") if ":" in target else target
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: Targets gRPC takes as URIs, passed on as they are (README: Upstream connections).
GRPC_URI_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


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


def _dataflow_rate(value: int) -> int:
    # An int (not a Literal) so the environment's "8000" parses; Data Flow takes only these two.
    if value not in (8000, 16000):
        raise ValueError("Data Flow accepts 8000 or 16000")
    return value


#: The browser tokens' signing key: unset or empty (no browser tokens), or at least 32 bytes.
SigningKey = Annotated[SecretStr | None, AfterValidator(_hs256_key)]
#: The operator endpoints' bearer token: unset, or at least 16 characters (an empty one let no caller
#: drain: the preStop hook got 401; a short one can be guessed).
AdminToken = Annotated[SecretStr | None, AfterValidator(_long_enough)]
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
