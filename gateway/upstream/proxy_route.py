"""Whether the upstream connections go through an HTTP CONNECT proxy, decided on the configured name.

gRPC core takes its proxy from ``grpc_proxy``, ``https_proxy`` or ``http_proxy`` (the first one set,
lower case only) and skips it for the hosts listed in ``no_grpc_proxy``, or else ``no_proxy``. It decides
on each channel's target, and the pool's targets are the addresses it resolved itself. So, with grpcio
1.85, gRPC sent ``CONNECT 127.0.0.1:PORT`` where the operator had configured a name. An egress proxy that
allows destinations by name refuses that, and a ``no_proxy`` entry naming Data Flow's host was ignored
(the session went through the proxy anyway). The decision is therefore taken here, on the name:

* proxied: the pool does not resolve the name, and each connection dials it by name (the proxy
  resolves it, and spreads connections if it can);
* not proxied: the pool resolves and dials addresses, with gRPC's own proxy lookup turned off, so a
  resolved address is never sent to a proxy the name was excluded from.

``no_proxy`` entries are read as gRPC reads them since its boundary-aware matching: ``.example.com``
matches that domain and its subdomains, ``example.com`` that host only, ``*`` every host. An IP-literal
or URI target is left to gRPC's own rules (CIDR entries included).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.config.startup import PROXY_VARIABLES  # checked there before anything starts
from gateway.logs.redact import proxy_url_shown

NO_PROXY_VARIABLES = ("no_grpc_proxy", "no_proxy")


@dataclass(frozen=True)
class ProxyRoute:
    variable: str | None  # where gRPC takes its proxy from (None: no proxy is configured)
    proxy: str  # the proxy's URL as a log line may show it ("" without one)
    proxied: bool  # the connections go through it

    def describe(self, target: str) -> str | None:
        """One line for the log when a proxy is configured, None when none is."""
        if self.variable is None:
            return None
        if self.proxied:
            return (
                f"Data Flow is reached through the HTTP CONNECT proxy in {self.variable} ({self.proxy}): "
                f"{target} is dialled by name for the proxy to resolve, and its stream cap is not probed"
            )
        return f"Data Flow is excluded from the proxy in {self.variable} by no_proxy: {target} is dialled directly"


def route_for(host: str | None, environ: Mapping[str, str]) -> ProxyRoute:
    """The route to ``host`` (the configured name; None for an IP literal or a gRPC URI)."""
    variable = next((name for name in PROXY_VARIABLES if environ.get(name)), None)
    if variable is None:
        return ProxyRoute(None, "", proxied=False)
    shown = proxy_url_shown(environ[variable])
    exclusions = next((environ[name] for name in NO_PROXY_VARIABLES if environ.get(name)), "")
    return ProxyRoute(variable, shown, proxied=host is None or not excluded(host, exclusions))


def excluded(host: str, no_proxy: str) -> bool:
    """``host`` is listed in a ``no_proxy`` value."""
    host = host.lower().rstrip(".")
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if entry == "*" or entry == host:
            return True
        if entry.startswith(".") and (host == entry[1:] or host.endswith(entry)):
            return True
    return False
