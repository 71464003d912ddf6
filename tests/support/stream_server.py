"""A grpc.aio server on 127.0.0.1 serving one bidirectional RPC by its path, for tests that play Data Flow
themselves (a hostile upstream, a vendor's contract)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc


async def serve_stream(
    behaviour: Callable[..., Any], method_path: str, options: list[tuple[str, Any]] | None = None
) -> tuple[grpc.aio.Server, int]:
    """A started server on a free port answering ``method_path`` with ``behaviour(requests, context)``
    (a coroutine, or an async generator of responses): the server and its port."""
    server = grpc.aio.server(options=options or [])
    handler = grpc.stream_stream_rpc_method_handler(behaviour)

    class _Generic(grpc.GenericRpcHandler):  # type: ignore[type-arg]
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:  # type: ignore[type-arg]
            return handler if details.method == method_path else None

    server.add_generic_rpc_handlers((_Generic(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port
