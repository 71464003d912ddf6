"""nginx as a TLS gRPC proxy in front of a simulator, the way Data Flow is reached in production.

The CA and the server certificate (for ``localhost``) are minted per test with trustme; the gateway
trusts them through ``GATEWAY_UPSTREAM_CA_FILE``. nginx keeps its defaults for streams per
connection (``http2_max_concurrent_streams`` 128) and requests per connection
(``keepalive_requests`` 1000, then GOAWAY) unless a test passes others. Its access log records,
per gRPC request, the connection's serial number and how many requests that connection had carried.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.support.lb_stack import Stack, free_port, nginx_binary, nginx_command
from tests.support.system import nginx_main_config

HOSTNAME = "localhost"  # the name in the certificate and in GATEWAY_UPSTREAM_TARGET


@dataclass
class GrpcProxy:
    port: int
    ca_file: Path
    access_log: Path

    @property
    def target(self) -> str:
        return f"{HOSTNAME}:{self.port}"

    def requests_by_connection(self) -> Counter[int]:
        """gRPC requests nginx answered, by client connection (its serial number)."""
        counts: Counter[int] = Counter()
        if self.access_log.exists():
            for line in self.access_log.read_text().splitlines():
                connection, _ = line.split(" ", 1)
                counts[int(connection)] += 1
        return counts

    def statuses(self) -> Counter[str]:
        """HTTP status and grpc-status of every request, e.g. ``"200 0"``."""
        lines = self.access_log.read_text().splitlines() if self.access_log.exists() else []
        fields = [line.split(" ") for line in lines]
        # grpc-status comes as a trailer, or as a header in a trailers-only answer; nginx logs "-" for absent.
        return Counter(f"{http} {(header + trailer).replace('-', '')}" for _, _, http, header, trailer in fields)


def proxy_config(workdir: Path, port: int, upstream_port: int, cert: Path, key: Path, extra: str) -> Path:
    http = (
        "    log_format grpc '$connection $connection_requests $status '\n"
        "                    '$sent_http_grpc_status $sent_trailer_grpc_status';\n"
        f"    access_log {workdir / 'access.log'} grpc;\n"
        "    server {\n"
        f"        listen 127.0.0.1:{port} ssl http2;\n"
        f"        ssl_certificate {cert};\n"
        f"        ssl_certificate_key {key};\n"
        f"{extra}"
        "        location / {\n"
        f"            grpc_pass grpc://127.0.0.1:{upstream_port};\n"
        "        }\n"
        "    }\n"
    )
    return nginx_main_config(workdir, 4096, http)


async def wait_listening(port: int, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                return
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def grpc_tls_proxy(workdir: Path, upstream_port: int, extra: str = "") -> AsyncIterator[GrpcProxy]:
    """nginx terminating TLS and proxying gRPC to ``127.0.0.1:upstream_port``; ``extra`` adds server
    directives (none: nginx's defaults)."""
    binary = nginx_binary()
    ca = trustme.CA()
    server = ca.issue_cert(HOSTNAME)  # the name only: the gateway dials an address and must check the name
    ca_file, cert, key = workdir / "ca.pem", workdir / "server.pem", workdir / "server.key"
    ca.cert_pem.write_to_path(str(ca_file))
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    port = free_port()
    config = proxy_config(workdir, port, upstream_port, cert, key, extra)
    stack = Stack(workdir)
    try:
        stack.start("nginx", nginx_command(binary, config, "-g", "daemon off;"))
        await wait_listening(port)
        yield GrpcProxy(port, ca_file, workdir / "access.log")
    finally:
        stack.close()
