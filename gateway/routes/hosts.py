"""Which host names the client APIs answer to (against DNS rebinding)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import InvalidHost
from gateway.errors.http import error_response

#: The operator's endpoints: they answer any host (probes use the pod's address), never under ``/t/<key>/``.
OPERATOR_PATHS = ("metrics", "internal", "healthz", "readyz")

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def host_name(host: str) -> str:
    """``host`` without its port (``[::1]:8080`` -> ``[::1]``)."""
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class HostGuard:
    """ASGI middleware against DNS rebinding: the client APIs answer only to the configured public
    hosts (and loopback). With none configured: any host while authentication is on (a credential is
    needed anyway), only loopback hosts while it is off. Health, metrics and drain answer any host
    (probes use the pod's address)."""

    def __init__(self, app: ASGIApp, public_hosts: list[str], auth_required: bool) -> None:
        self.app = app
        self.hosts = {h.lower() for h in public_hosts}
        self.any_host = not public_hosts and auth_required

    def allowed(self, host: str) -> bool:
        host = host.strip().lower()
        return self.any_host or host in self.hosts or host_name(host) in self.hosts | LOOPBACK_HOSTS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not scope["path"].lstrip("/").startswith(OPERATOR_PATHS):
            host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
            if not self.allowed(host):
                error = InvalidHost("this gateway does not answer to that host name")
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)
